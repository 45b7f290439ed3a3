//! A node/edge view of a workflow, for drawing (Mermaid).

use std::collections::BTreeMap;

use trigflow_core::event::{TYPE_FAILED, TYPE_STARTED, TYPE_SUCCEEDED};
use trigflow_core::model::{Action, Condition, JoinCount, TriggerSpec, Workflow};

use crate::dag::{Body, Dag};

/// What a node stands for (decides its shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A DAG task calling a function once.
    Task,
    /// A DAG map task (`foreach`).
    Map,
    /// A DAG routing node (`switch`).
    Switch,
    /// A routing-only node (FaaSFlow `END` / `VIRTUAL`).
    Route,
    /// A trigger of a trigger set.
    Trigger,
    /// A function a trigger invokes.
    Function,
    /// The execution's start or end.
    Terminal,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Unique within the graph (a task name, trigger id, ...).
    pub id: String,
    /// Text to show.
    pub label: String,
    /// What it stands for.
    pub kind: NodeKind,
}

/// A directed edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Id of the source node.
    pub from: String,
    /// Id of the target node.
    pub to: String,
    /// Text on the edge (a switch condition, an event type).
    pub label: Option<String>,
}

/// Nodes and edges of a workflow: tasks and dependencies for a DAG; for a
/// trigger set, triggers linked by the events that activate them and the
/// functions they invoke.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    /// The nodes, in a stable order.
    pub nodes: Vec<Node>,
    /// The edges, in a stable order.
    pub edges: Vec<Edge>,
}

fn esc(s: &str) -> String {
    s.replace('"', "#quot;").replace('\n', "<br/>")
}

impl Graph {
    /// Renders as a Mermaid `flowchart TD`. Node ids are `n0`, `n1`, ... so
    /// that any task or trigger name is safe; names appear in the labels.
    pub fn mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        let ids: BTreeMap<&str, String> = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.as_str(), format!("n{i}")))
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            let l = esc(&n.label);
            let shape = match n.kind {
                NodeKind::Task | NodeKind::Trigger => format!("[\"{l}\"]"),
                NodeKind::Map => format!("[[\"{l}\"]]"),
                NodeKind::Switch => format!("{{\"{l}\"}}"),
                NodeKind::Route => format!("([\"{l}\"])"),
                NodeKind::Function => format!("[/\"{l}\"/]"),
                NodeKind::Terminal => format!("((\"{l}\"))"),
            };
            out.push_str(&format!("    n{i}{shape}\n"));
        }
        for e in &self.edges {
            let (Some(a), Some(b)) = (ids.get(e.from.as_str()), ids.get(e.to.as_str())) else {
                continue;
            };
            match &e.label {
                Some(l) => out.push_str(&format!("    {a} -->|\"{}\"| {b}\n", esc(l))),
                None => out.push_str(&format!("    {a} --> {b}\n")),
            }
        }
        out
    }

    fn node(&mut self, id: String, label: String, kind: NodeKind) {
        if !self.nodes.iter().any(|n| n.id == id) {
            self.nodes.push(Node { id, label, kind });
        }
    }

    fn edge(&mut self, from: &str, to: &str, label: Option<String>) {
        let e = Edge {
            from: from.to_owned(),
            to: to.to_owned(),
            label,
        };
        if !self.edges.contains(&e) {
            self.edges.push(e);
        }
    }

    pub(crate) fn of_dag(dag: &Dag) -> Graph {
        let mut g = Graph::default();
        for t in &dag.tasks {
            let (label, kind) = match (&t.body, &t.foreach) {
                (Body::Function(f), None) => (format!("{}\n{f}", t.name), NodeKind::Task),
                (Body::Function(f), Some(_)) => {
                    (format!("{}\nforeach: {f}", t.name), NodeKind::Map)
                }
                (Body::Switch(_), _) => (t.name.clone(), NodeKind::Switch),
                (Body::Pass, _) => (t.name.clone(), NodeKind::Route),
            };
            g.node(t.name.clone(), label, kind);
        }
        for t in &dag.tasks {
            for p in &t.preds {
                let label = match dag.task(p).map(|s| &s.body) {
                    Some(Body::Switch(cases)) => {
                        let conds: Vec<&str> = cases
                            .iter()
                            .filter(|c| c.next == t.name)
                            .map(|c| c.when.as_deref().unwrap_or("default"))
                            .collect();
                        Some(conds.join(" / "))
                    }
                    _ => None,
                };
                g.edge(p, &t.name, label);
            }
        }
        g
    }

    pub(crate) fn of_triggers(wf: &Workflow) -> Graph {
        let mut g = Graph::default();
        g.node("$start".into(), "start".into(), NodeKind::Terminal);
        let mut all: Vec<&TriggerSpec> = Vec::new();
        collect_triggers(&wf.triggers, &mut all);
        for t in &all {
            let cond = match &t.condition {
                Condition::Always => String::new(),
                Condition::Join {
                    count: JoinCount::Fixed(n),
                } => format!("\njoin {n}"),
                Condition::Join {
                    count: JoinCount::From { from },
                } => format!("\njoin {from}"),
                Condition::Quorum { k, m } => format!("\nquorum {k} of {m}"),
                Condition::Threshold { op, threshold, .. } => {
                    format!("\nthreshold {op:?} {threshold}")
                }
                Condition::Window { count, within_ms } => {
                    format!("\n{count} within {within_ms} ms")
                }
                Condition::Expr { expr } => format!("\nif {expr}"),
                Condition::Custom { name, .. } => format!("\ncustom {name}"),
            };
            g.node(
                format!("trigger:{}", t.id),
                format!("{}{cond}", t.id),
                NodeKind::Trigger,
            );
        }
        for t in &all {
            if matches(t, Some("$start"), TYPE_STARTED) {
                g.edge(
                    "$start",
                    &format!("trigger:{}", t.id),
                    Some(TYPE_STARTED.into()),
                );
            }
        }
        for t in &all {
            let from = format!("trigger:{}", t.id);
            let mut actions = Vec::new();
            flatten(&t.actions, &mut actions);
            flatten(&t.on_failure, &mut actions);
            for a in actions {
                match a {
                    Action::Invoke { function, step, .. } => {
                        let step = step.clone().unwrap_or_else(|| t.id.to_string());
                        let fid = format!("fn:{step}:{function}");
                        g.node(
                            fid.clone(),
                            format!("{function}\nstep {step}"),
                            NodeKind::Function,
                        );
                        g.edge(&from, &fid, Some("invoke".into()));
                        for (ty, label) in [(TYPE_SUCCEEDED, "succeeded"), (TYPE_FAILED, "failed")]
                        {
                            for u in &all {
                                if matches(u, Some(&step), ty) {
                                    g.edge(&fid, &format!("trigger:{}", u.id), Some(label.into()));
                                }
                            }
                        }
                    }
                    Action::Emit { events } => {
                        for e in events {
                            for u in &all {
                                if matches(u, e.subject.as_deref(), &e.ty) {
                                    g.edge(&from, &format!("trigger:{}", u.id), Some(e.ty.clone()));
                                }
                            }
                        }
                    }
                    Action::Timer { event, delay_ms } => {
                        for u in &all {
                            if matches(u, event.subject.as_deref(), &event.ty) {
                                g.edge(
                                    &from,
                                    &format!("trigger:{}", u.id),
                                    Some(format!("{} after {delay_ms} ms", event.ty)),
                                );
                            }
                        }
                    }
                    Action::AddTriggers { triggers } => {
                        for u in triggers {
                            g.edge(&from, &format!("trigger:{}", u.id), Some("adds".into()));
                        }
                    }
                    Action::Complete { .. } => {
                        g.node("$end".into(), "end".into(), NodeKind::Terminal);
                        g.edge(&from, "$end", Some("complete".into()));
                    }
                    Action::Fail { error, .. } => {
                        g.node("$end".into(), "end".into(), NodeKind::Terminal);
                        g.edge(&from, "$end", Some(format!("fail {error}")));
                    }
                    Action::SetContext { .. }
                    | Action::RemoveTriggers { .. }
                    | Action::Spawn { .. } => {}
                    Action::Choose { .. } => {}
                }
            }
        }
        g
    }
}

/// Every trigger, including those added by actions.
fn collect_triggers<'a>(ts: &'a [TriggerSpec], out: &mut Vec<&'a TriggerSpec>) {
    for t in ts {
        out.push(t);
        let mut actions = Vec::new();
        flatten(&t.actions, &mut actions);
        flatten(&t.on_failure, &mut actions);
        for a in actions {
            if let Action::AddTriggers { triggers } = a {
                collect_triggers(triggers, out);
            }
        }
    }
}

/// Actions with `choose` branches opened up.
fn flatten<'a>(actions: &'a [Action], out: &mut Vec<&'a Action>) {
    for a in actions {
        out.push(a);
        if let Action::Choose {
            branches,
            otherwise,
        } = a
        {
            for b in branches {
                flatten(&b.then, out);
            }
            flatten(otherwise, out);
        }
    }
}

fn matches(t: &TriggerSpec, subject: Option<&str>, ty: &str) -> bool {
    t.on.matches(subject, ty)
}
