//! The state machine as nodes and edges, for `trigflow graph`.

use trigflow_dag::{Edge, Graph, Node, NodeKind};

use crate::doc::{Kind, Machine};

fn node(g: &mut Graph, id: String, label: String, kind: NodeKind) {
    if !g.nodes.iter().any(|n| n.id == id) {
        g.nodes.push(Node { id, label, kind });
    }
}

fn edge(g: &mut Graph, from: &str, to: &str, label: Option<String>) {
    let e = Edge {
        from: from.to_owned(),
        to: to.to_owned(),
        label,
    };
    if !g.edges.contains(&e) {
        g.edges.push(e);
    }
}

/// Draws a state machine: one node per state (nested machines prefixed by
/// their parent's id), edges for Next, Choice rules, Default and Catch.
pub(crate) fn of_machine(m: &Machine) -> Graph {
    let mut g = Graph::default();
    node(&mut g, "start".into(), "start".into(), NodeKind::Terminal);
    node(&mut g, "end".into(), "end".into(), NodeKind::Terminal);
    draw(&mut g, m, "", "start", "end");
    g
}

fn draw(g: &mut Graph, m: &Machine, prefix: &str, from: &str, end: &str) {
    let id = |name: &str| format!("{prefix}{name}");
    edge(g, from, &id(&m.start_at), None);
    for s in &m.states {
        let me = id(&s.name);
        let (kind, label) = match &s.kind {
            Kind::Task {
                resource, callback, ..
            } => {
                let suffix = if *callback { ".waitForTaskToken" } else { "" };
                (NodeKind::Task, format!("{}\n{resource}{suffix}", s.name))
            }
            Kind::Choice { .. } => (NodeKind::Switch, s.name.clone()),
            Kind::Map { .. } => (NodeKind::Map, s.name.clone()),
            Kind::Succeed | Kind::Fail { .. } => (NodeKind::Route, s.name.clone()),
            _ => (NodeKind::Route, s.name.clone()),
        };
        node(g, me.clone(), label, kind);
        // Where this state's End goes: a Parallel or Map joins its children.
        let done = match &s.kind {
            Kind::Parallel { branches, .. } => {
                let join = format!("{me}/join");
                node(
                    g,
                    join.clone(),
                    format!("{} (join)", s.name),
                    NodeKind::Route,
                );
                for (i, b) in branches.iter().enumerate() {
                    let p = format!("{me}/{i}/");
                    let first = format!("{p}{}", b.start_at);
                    draw(g, b, &p, &me, &join);
                    if let Some(e) = g.edges.iter_mut().find(|e| e.from == me && e.to == first) {
                        e.label = Some(format!("branch {i}"));
                    }
                }
                join
            }
            Kind::Map { processor, .. } => {
                let join = format!("{me}/join");
                node(
                    g,
                    join.clone(),
                    format!("{} (collect)", s.name),
                    NodeKind::Route,
                );
                let p = format!("{me}/");
                let first = format!("{p}{}", processor.start_at);
                draw(g, processor, &p, &me, &join);
                if let Some(e) = g.edges.iter_mut().find(|e| e.from == me && e.to == first) {
                    e.label = Some("each item".into());
                }
                join
            }
            _ => me.clone(),
        };
        match &s.kind {
            Kind::Choice { choices, default } => {
                for (i, c) in choices.iter().enumerate() {
                    edge(g, &me, &id(&c.next), Some(format!("rule {i}")));
                }
                if let Some(d) = default {
                    edge(g, &me, &id(d), Some("Default".into()));
                }
            }
            Kind::Succeed => edge(g, &me, end, None),
            Kind::Fail { .. } => edge(g, &me, end, Some("fail".into())),
            _ => match &s.next {
                Some(n) => edge(g, &done, &id(n), None),
                None => edge(g, &done, end, None),
            },
        }
        for c in s.retry_catch().1 {
            edge(
                g,
                &me,
                &id(&c.next),
                Some(format!("catch {}", c.errors.join(","))),
            );
        }
    }
}
