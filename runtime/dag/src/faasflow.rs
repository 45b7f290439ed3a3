//! FaaSFlow `flat_workflow.yaml` documents (the ASPLOS'22 benchmarks),
//! turned into DAGs of stub functions.
//!
//! * Each function becomes `stub:<ms>ms`, `ms = round(runtime * 1000 *
//!   time_scale)`; the stub sleeps and echoes its input as its output.
//! * `pass` and `parallel` edges are dependencies. A `foreach` edge makes the
//!   target a map task over `foreach_keys`, a list of `foreach_width`
//!   numbers that the source's input gets (and its stub echoes).
//! * A task's input is the object merge of its predecessors' outputs (a map
//!   task's array of outputs merges its elements), or the execution input
//!   for a root. So every stub passes the execution input's fields along.
//! * `source: VIRTUAL` and `END` nodes are routing only. A `switch` edge's
//!   conditions are `INPUT.<field>` (truthy field of the switch node's
//!   input, hence of the execution input) or `default`. **Rule:** the first
//!   condition that holds is taken; with an execution input that sets no
//!   flag (e.g. `{}`), `default` is taken. Set a flag (e.g.
//!   `{"illegal_flag": true}`) to take the other branch.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Deserialize;
use serde_json::Value;
use trigflow_core::ids::WorkflowId;

use crate::dag::{Body, Case, Dag, Task, valid_task_name};
use crate::{LoadOptions, ProblemKind, RawProblem};

#[derive(Debug, Deserialize)]
pub(crate) struct FlatDocument {
    functions: Vec<FlatFunction>,
    /// FaaSFlow files carry no name; `workflow` is accepted for one.
    #[serde(default)]
    workflow: Option<String>,
}

#[derive(Debug, Deserialize)]
struct FlatFunction {
    name: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    runtime: Option<f64>,
    #[serde(default)]
    next: Option<FlatNext>,
}

#[derive(Debug, Deserialize)]
struct FlatNext {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    conditions: Vec<String>,
    #[serde(default)]
    nodes: Vec<String>,
}

/// What a FaaSFlow workflow was turned into: stub runtimes, and the static
/// routing rule, so a benchmark can compute the critical path of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct FaasflowInfo {
    /// Stub sleep per task in milliseconds (0 for routing nodes).
    pub stub_ms: BTreeMap<String, u64>,
    /// Tasks that call a (stub) function, as opposed to routing nodes.
    pub functions: BTreeSet<String>,
    /// Tasks in document order, with their incoming edges.
    nodes: Vec<FlowNode>,
}

/// A switch's cases: the field path of `INPUT.x.y` (`None` for `default`)
/// and the target.
type FlowCases = Vec<(Option<Vec<String>>, String)>;

#[derive(Debug, Clone, PartialEq)]
struct FlowNode {
    name: String,
    preds: Vec<String>,
    /// For a switch, its cases.
    switch: Option<FlowCases>,
}

impl FaasflowInfo {
    /// Which tasks run (rather than being skipped) for an execution input,
    /// by the routing rule in the module docs, and each one's finish time
    /// along the longest chain of taken edges.
    fn plan(&self, input: &Value) -> BTreeMap<String, u64> {
        let mut finish: BTreeMap<String, u64> = BTreeMap::new();
        // Edges (from, to) that are taken.
        let mut taken: BTreeSet<(String, String)> = BTreeSet::new();
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut live: BTreeSet<&str> = BTreeSet::new();
        // Nodes are in a DAG (validated); iterate until all are resolved.
        while done.len() < self.nodes.len() {
            let before = done.len();
            for n in &self.nodes {
                if done.contains(n.name.as_str())
                    || !n.preds.iter().all(|p| done.contains(p.as_str()))
                {
                    continue;
                }
                done.insert(&n.name);
                let ins: Vec<&String> = n
                    .preds
                    .iter()
                    .filter(|p| taken.contains(&((*p).clone(), n.name.clone())))
                    .collect();
                if !n.preds.is_empty() && ins.is_empty() {
                    continue;
                }
                live.insert(&n.name);
                let start = ins
                    .iter()
                    .filter_map(|p| finish.get(p.as_str()))
                    .max()
                    .copied()
                    .unwrap_or(0);
                let own = self.stub_ms.get(&n.name).copied().unwrap_or(0);
                finish.insert(n.name.clone(), start + own);
                let succs = self
                    .nodes
                    .iter()
                    .filter(|m| m.preds.contains(&n.name))
                    .map(|m| m.name.clone());
                match &n.switch {
                    None => {
                        for s in succs {
                            taken.insert((n.name.clone(), s));
                        }
                    }
                    Some(cases) => {
                        let chosen = cases.iter().find(|(cond, _)| match cond {
                            None => true,
                            Some(path) => {
                                let v = path.iter().try_fold(input, |v, k| v.get(k));
                                !matches!(v, None | Some(Value::Null) | Some(Value::Bool(false)))
                            }
                        });
                        if let Some((_, t)) = chosen {
                            taken.insert((n.name.clone(), t.clone()));
                        }
                    }
                }
            }
            if done.len() == before {
                break;
            }
        }
        finish.retain(|k, _| live.contains(k.as_str()));
        finish
    }

    /// The function tasks that run for this execution input.
    pub fn tasks_run(&self, input: &Value) -> BTreeSet<String> {
        self.plan(input)
            .into_keys()
            .filter(|t| self.functions.contains(t))
            .collect()
    }

    /// The critical path in milliseconds: the longest chain of stub runtimes
    /// along the edges taken for this execution input. A map task counts
    /// once (its items run in parallel). Orchestration overhead is
    /// end-to-end time minus this.
    pub fn critical_path_ms(&self, input: &Value) -> u64 {
        self.plan(input).into_values().max().unwrap_or(0)
    }
}

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

/// Object merge of the predecessors' outputs (see the module docs).
fn merged(preds: &[String]) -> String {
    if preds.is_empty() {
        return "(.input | if type == \"object\" then . else {} end)".into();
    }
    let outs: Vec<String> = preds
        .iter()
        .map(|p| format!(".results[{}]", q(p)))
        .collect();
    format!(
        "([{}] | map(if type == \"object\" then . \
         elif type == \"array\" then (map(select(type == \"object\")) | add // {{}}) \
         else {{}} end) | add // {{}})",
        outs.join(", ")
    )
}

/// Converts a flat workflow into a DAG.
pub(crate) fn convert(
    doc: &FlatDocument,
    fallback_id: &str,
    opts: &LoadOptions,
) -> Result<(Dag, FaasflowInfo), Vec<RawProblem>> {
    let mut problems: Vec<RawProblem> = Vec::new();
    if !(opts.time_scale.is_finite() && opts.time_scale >= 0.0) {
        problems.push((
            String::new(),
            ProblemKind::Invalid,
            format!(
                "time_scale must be a finite number >= 0, got {}",
                opts.time_scale
            ),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, f) in doc.functions.iter().enumerate() {
        if !valid_task_name(&f.name) {
            problems.push((
                format!("functions[{i}].name"),
                ProblemKind::Invalid,
                format!(
                    "name {:?} may only contain letters, digits, `_` and `-`",
                    f.name
                ),
            ));
        }
        if index.insert(&f.name, i).is_some() {
            problems.push((
                format!("functions[{i}].name"),
                ProblemKind::Invalid,
                format!("function {:?} is defined twice", f.name),
            ));
        }
    }
    // Incoming edges per node, and which node a foreach edge comes from.
    let mut preds: Vec<Vec<String>> = vec![Vec::new(); doc.functions.len()];
    let mut foreach_from: Vec<Option<String>> = vec![None; doc.functions.len()];
    let mut feeds_foreach = vec![false; doc.functions.len()];
    let mut extra: Vec<Task> = Vec::new();
    let mut flow_extra: Vec<FlowNode> = Vec::new();
    let mut switches: HashMap<usize, FlowCases> = HashMap::new();
    for (i, f) in doc.functions.iter().enumerate() {
        let Some(next) = &f.next else { continue };
        let at = format!("functions[{i}].next");
        let kind = next.kind.as_deref().unwrap_or("pass");
        let mut targets = Vec::new();
        for (j, n) in next.nodes.iter().enumerate() {
            match index.get(n.as_str()) {
                Some(&t) => targets.push(t),
                None => problems.push((
                    format!("{at}.nodes[{j}]"),
                    ProblemKind::UnknownTask,
                    format!("unknown function {n:?} in next.nodes"),
                )),
            }
        }
        match kind {
            "pass" | "parallel" | "foreach" => {
                for &t in &targets {
                    if !preds[t].contains(&f.name) {
                        preds[t].push(f.name.clone());
                    }
                    if kind == "foreach" {
                        if foreach_from[t].is_some() {
                            problems.push((
                                at.clone(),
                                ProblemKind::Invalid,
                                format!(
                                    "{:?} is the target of more than one foreach edge",
                                    doc.functions[t].name
                                ),
                            ));
                        }
                        foreach_from[t] = Some(f.name.clone());
                        feeds_foreach[i] = true;
                    }
                }
            }
            "switch" => {
                if next.conditions.len() != next.nodes.len() {
                    problems.push((
                        format!("{at}.conditions"),
                        ProblemKind::Invalid,
                        format!(
                            "a switch needs one condition per node ({} conditions, {} nodes)",
                            next.conditions.len(),
                            next.nodes.len()
                        ),
                    ));
                    continue;
                }
                // A routing node routes itself; a function with a switch
                // edge gets a routing node after it.
                let virtual_node = f.source.as_deref() == Some("VIRTUAL");
                let router = if virtual_node {
                    f.name.clone()
                } else {
                    format!("{}-route", f.name)
                };
                let mut cases = Vec::new();
                for (j, (c, n)) in next.conditions.iter().zip(&next.nodes).enumerate() {
                    let cond = if c == "default" {
                        None
                    } else if let Some(path) = c.strip_prefix("INPUT.") {
                        Some(path.split('.').map(str::to_owned).collect::<Vec<_>>())
                    } else {
                        problems.push((
                            format!("{at}.conditions[{j}]"),
                            ProblemKind::Invalid,
                            format!("condition {c:?} is neither `INPUT.<field>` nor `default`"),
                        ));
                        continue;
                    };
                    if index.contains_key(n.as_str()) {
                        cases.push((cond, n.clone()));
                    }
                }
                for &t in &targets {
                    if !preds[t].contains(&router) {
                        preds[t].push(router.clone());
                    }
                }
                if virtual_node {
                    switches.insert(i, cases);
                } else {
                    extra.push(Task {
                        name: router.clone(),
                        body: Body::Switch(switch_cases(&cases)),
                        preds: vec![f.name.clone()],
                        input: Some(merged(std::slice::from_ref(&f.name))),
                        foreach: None,
                        retry: None,
                    });
                    flow_extra.push(FlowNode {
                        name: router,
                        preds: vec![f.name.clone()],
                        switch: Some(cases),
                    });
                }
            }
            other => problems.push((
                format!("{at}.type"),
                ProblemKind::Invalid,
                format!("unknown edge type {other:?} (expected pass, parallel, foreach or switch)"),
            )),
        }
    }
    let mut tasks = Vec::new();
    let mut info = FaasflowInfo {
        stub_ms: BTreeMap::new(),
        functions: BTreeSet::new(),
        nodes: Vec::new(),
    };
    for (i, f) in doc.functions.iter().enumerate() {
        let routing = matches!(f.source.as_deref(), Some("VIRTUAL" | "END"));
        let p = preds[i].clone();
        let mut input = merged(&p);
        if feeds_foreach[i] {
            input = format!(
                "{input} + {{foreach_keys: [range(0; {})]}}",
                opts.foreach_width
            );
        }
        let (body, foreach, ms) = if let Some(cases) = switches.get(&i) {
            (Body::Switch(switch_cases(cases)), None, 0)
        } else if routing {
            (Body::Pass, None, 0)
        } else {
            let secs = f.runtime.unwrap_or(0.0);
            if !(secs.is_finite() && secs >= 0.0) {
                problems.push((
                    format!("functions[{i}].runtime"),
                    ProblemKind::Invalid,
                    format!("runtime must be a number of seconds >= 0, got {secs}"),
                ));
            }
            let ms = (secs * 1000.0 * opts.time_scale).round().max(0.0) as u64;
            info.functions.insert(f.name.clone());
            let foreach = foreach_from[i]
                .as_ref()
                .map(|src| format!(".results[{}].foreach_keys", q(src)));
            if foreach.is_some() {
                input = format!("({input} | del(.foreach_keys)) + {{foreach_key: .item}}");
            }
            (Body::Function(format!("stub:{ms}ms")), foreach, ms)
        };
        info.stub_ms.insert(f.name.clone(), ms);
        info.nodes.push(FlowNode {
            name: f.name.clone(),
            preds: p.clone(),
            switch: switches.get(&i).cloned(),
        });
        tasks.push(Task {
            name: f.name.clone(),
            body,
            preds: p,
            input: Some(input),
            foreach,
            retry: None,
        });
    }
    for t in &extra {
        info.stub_ms.insert(t.name.clone(), 0);
    }
    tasks.extend(extra);
    info.nodes.extend(flow_extra);
    let name = doc
        .workflow
        .clone()
        .unwrap_or_else(|| fallback_id.to_owned());
    let id = match name.parse::<WorkflowId>() {
        Ok(id) => id,
        Err(e) => {
            problems.push(("workflow".into(), ProblemKind::Invalid, e.to_string()));
            return Err(problems);
        }
    };
    let dag = Dag {
        id,
        version: 1,
        tasks,
        output: None,
    };
    for cycle in dag.cycles() {
        let first = cycle.first().cloned().unwrap_or_default();
        let at = index
            .get(first.as_str())
            .map(|i| format!("functions[{i}]"))
            .unwrap_or_default();
        problems.push((
            at,
            ProblemKind::Cycle,
            format!("cycle: {}", cycle.join(" -> ")),
        ));
    }
    if problems.is_empty() {
        Ok((dag, info))
    } else {
        Err(problems)
    }
}

fn switch_cases(cases: &[(Option<Vec<String>>, String)]) -> Vec<Case> {
    cases
        .iter()
        .map(|(cond, next)| Case {
            when: cond.as_ref().map(|path| {
                let fields: String = path.iter().map(|k| format!("[{}]", q(k))).collect();
                format!(".value{fields}")
            }),
            next: next.clone(),
        })
        .collect()
}
