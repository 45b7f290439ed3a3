//! The DAG document format and its validation into the internal DAG model
//! that the compiler (and the FaaSFlow converter) share.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use trigflow_core::expr;
use trigflow_core::ids::WorkflowId;

use crate::{ProblemKind, RawProblem};

/// A DAG workflow document: named tasks, their dependencies, optional map
/// (`foreach`) and routing (`switch`) tasks, and the workflow output.
///
/// Every jq expression sees `{input, results}`: the execution input and the
/// outputs of the tasks finished so far (`.results.<task>`).
///
/// ```yaml
/// dag: wordcount
/// tasks:
///   split: {function: "cmd:./split.sh"}
///   count: {function: "cmd:./count.sh", depends: [split], foreach: ".results.split"}
///   merge: {function: "cmd:./merge.sh", depends: [count]}
/// output: ".results.merge"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DagDocument {
    /// The workflow id.
    pub dag: String,
    /// Version of the definition (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The tasks, by name (letters, digits, `_` and `-`).
    pub tasks: BTreeMap<String, TaskDocument>,
    /// jq over `{input, results}` for the workflow output. Default: the
    /// output of the single sink task, or `{sink: output}` for several
    /// (a skipped sink gives `null`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// One task: a function call (optionally mapped over a list), or a routing
/// node (`switch`).
///
/// A task waits for all its incoming edges. It runs if at least one of them
/// was taken; otherwise it is skipped and its outgoing edges are dead (dead
/// path elimination), so a join after a `switch` still completes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskDocument {
    /// Function reference (any string the invoker understands, e.g.
    /// `cmd:./split.sh`, `http://..`, an AWS Lambda ARN, `stub:50ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Tasks that must finish (or be skipped) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
    /// jq over `{input, results}` (plus `item`, `index` for a map task) for
    /// the function input. Default: the single dependency's output, or
    /// `{dep: output}` for several, or `.input` for a task with none; for a
    /// map task `.item`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// jq over `{input, results}` yielding an array: makes this a map task,
    /// one invocation per element; its output is the array of results in
    /// element order (an empty array gives `[]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreach: Option<String>,
    /// Makes this a routing node (no function): the first case whose `when`
    /// holds is taken, every other outgoing edge is dead. Its output is its
    /// input, and `when` also sees that as `.value`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<Vec<CaseDocument>>,
    /// Retry a failed invocation (not for map tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDocument>,
}

/// One case of a `switch`: either `when` + `next`, or `default` alone (last).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseDocument {
    /// jq over `{input, results, value}`; truthy takes this case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// The task this case routes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The task taken when no `when` holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Retry policy of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryDocument {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before each retry, in milliseconds.
    #[serde(default)]
    pub delay_ms: u64,
}

/// The validated DAG the compiler works from.
#[derive(Debug, Clone)]
pub(crate) struct Dag {
    pub id: WorkflowId,
    pub version: u32,
    /// In a stable order (document order, or name order for DAG documents).
    pub tasks: Vec<Task>,
    pub output: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub name: String,
    pub body: Body,
    /// Incoming edges (deduplicated), dependencies first, then switches
    /// routing here.
    pub preds: Vec<String>,
    pub input: Option<String>,
    pub foreach: Option<String>,
    pub retry: Option<RetryDocument>,
}

#[derive(Debug, Clone)]
pub(crate) enum Body {
    Function(String),
    Switch(Vec<Case>),
    /// Routing only: passes its input through (FaaSFlow `END`, `VIRTUAL`).
    Pass,
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    /// `None` is the default case.
    pub when: Option<String>,
    pub next: String,
}

impl Dag {
    pub fn task(&self, name: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.name == name)
    }

    pub fn is_switch(&self, name: &str) -> bool {
        self.task(name)
            .is_some_and(|t| matches!(t.body, Body::Switch(_)))
    }

    /// Tasks nothing depends on.
    pub fn sinks(&self) -> Vec<&Task> {
        let has_succ: BTreeSet<&str> = self
            .tasks
            .iter()
            .flat_map(|t| t.preds.iter().map(String::as_str))
            .collect();
        self.tasks
            .iter()
            .filter(|t| !has_succ.contains(t.name.as_str()))
            .collect()
    }

    /// Every cycle of the graph, one per strongly connected component, as the
    /// task names along it.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let index: HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        // succs[i]: tasks that have task i as a predecessor.
        let mut succs = vec![Vec::new(); self.tasks.len()];
        for (j, t) in self.tasks.iter().enumerate() {
            for p in &t.preds {
                if let Some(&i) = index.get(p.as_str()) {
                    succs[i].push(j);
                }
            }
        }
        let sccs = tarjan(&succs);
        let mut out = Vec::new();
        for scc in sccs {
            let cyclic = scc.len() > 1 || scc.first().is_some_and(|&v| succs[v].contains(&v));
            if !cyclic {
                continue;
            }
            out.push(cycle_in(&succs, &scc, |i| self.tasks[i].name.clone()));
        }
        out
    }
}

/// Tarjan's strongly connected components, iteratively (graphs from files
/// can be deep enough to matter for recursion).
fn tarjan(succs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let n = succs.len();
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next = 0;
    let mut out = Vec::new();
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&mut (v, ref mut k)) = work.last_mut() {
            if let Some(&w) = succs[v].get(*k) {
                *k += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some(&(parent, _)) = work.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut scc = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        scc.push(w);
                        if w == v {
                            break;
                        }
                    }
                    scc.sort_unstable();
                    out.push(scc);
                }
            }
        }
    }
    out
}

/// One concrete cycle inside a strongly connected component, starting and
/// ending at its smallest member.
fn cycle_in(succs: &[Vec<usize>], scc: &[usize], name: impl Fn(usize) -> String) -> Vec<String> {
    let members: BTreeSet<usize> = scc.iter().copied().collect();
    let Some(&start) = scc.first() else {
        return Vec::new();
    };
    // Breadth-first search from start back to start within the component.
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut end = None;
    'search: while let Some(v) = queue.pop_front() {
        for &w in &succs[v] {
            if !members.contains(&w) {
                continue;
            }
            if w == start {
                end = Some(v);
                break 'search;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    let mut path = vec![start];
    let mut cur = end.unwrap_or(start);
    let mut back = Vec::new();
    while cur != start {
        back.push(cur);
        cur = prev.get(&cur).copied().unwrap_or(start);
    }
    path.extend(back.into_iter().rev());
    path.push(start);
    path.into_iter().map(name).collect()
}

/// Task names are used in subjects, trigger ids and context keys.
pub(crate) fn valid_task_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

pub(crate) fn check_expr(path: String, code: &str, problems: &mut Vec<RawProblem>) {
    if let Err(e) = expr::check(code) {
        problems.push((path, ProblemKind::BadExpression, e.to_string()));
    }
}

impl DagDocument {
    /// Validates the document and builds the DAG, or returns every problem.
    pub(crate) fn check(&self) -> Result<Dag, Vec<RawProblem>> {
        let mut problems: Vec<RawProblem> = Vec::new();
        let mut push = |path: String, kind: ProblemKind, msg: String| {
            problems.push((path, kind, msg));
        };
        let id = match self.dag.parse::<WorkflowId>() {
            Ok(id) => Some(id),
            Err(e) => {
                push("dag".into(), ProblemKind::Invalid, e.to_string());
                None
            }
        };
        if self.tasks.is_empty() {
            push(
                "tasks".into(),
                ProblemKind::Invalid,
                "a DAG needs at least one task".into(),
            );
        }
        let mut exprs: Vec<(String, &str)> = Vec::new();
        if let Some(o) = &self.output {
            exprs.push(("output".into(), o));
        }
        // Switches and the tasks they route to, for implicit edges.
        let mut routes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut tasks = Vec::new();
        for (name, t) in &self.tasks {
            let at = format!("tasks.{name}");
            if !valid_task_name(name) {
                push(
                    at.clone(),
                    ProblemKind::Invalid,
                    format!("task name {name:?} may only contain letters, digits, `_` and `-`"),
                );
            }
            let known = |n: &str| self.tasks.contains_key(n);
            let mut seen = BTreeSet::new();
            for (i, d) in t.depends.iter().enumerate() {
                let p = format!("{at}.depends[{i}]");
                if !known(d) {
                    push(
                        p,
                        ProblemKind::UnknownTask,
                        format!("unknown task {d:?} in depends"),
                    );
                } else if !seen.insert(d) {
                    push(
                        p,
                        ProblemKind::Invalid,
                        format!("task {d:?} is listed twice"),
                    );
                }
            }
            for (field, e) in [("input", &t.input), ("foreach", &t.foreach)] {
                if let Some(e) = e {
                    exprs.push((format!("{at}.{field}"), e));
                }
            }
            let body = match (&t.function, &t.switch) {
                (Some(_), Some(_)) => {
                    push(
                        at.clone(),
                        ProblemKind::Invalid,
                        "a task has either a `function` or a `switch`, not both".into(),
                    );
                    None
                }
                (Some(f), None) if f.trim().is_empty() => {
                    push(
                        format!("{at}.function"),
                        ProblemKind::MissingFunction,
                        format!("task {name:?} has an empty function reference"),
                    );
                    None
                }
                (Some(f), None) => Some(Body::Function(f.clone())),
                (None, None) => {
                    push(
                        at.clone(),
                        ProblemKind::MissingFunction,
                        format!("task {name:?} has no `function` (nor a `switch`)"),
                    );
                    None
                }
                (None, Some(cases)) => {
                    if t.foreach.is_some() {
                        push(
                            format!("{at}.foreach"),
                            ProblemKind::Invalid,
                            "a switch cannot have `foreach`".into(),
                        );
                    }
                    if t.retry.is_some() {
                        push(
                            format!("{at}.retry"),
                            ProblemKind::Invalid,
                            "a switch calls no function, so it cannot `retry`".into(),
                        );
                    }
                    if cases.is_empty() {
                        push(
                            format!("{at}.switch"),
                            ProblemKind::Invalid,
                            "a switch needs at least one case".into(),
                        );
                    }
                    let mut out = Vec::new();
                    let mut targets = Vec::new();
                    for (i, c) in cases.iter().enumerate() {
                        let cp = format!("{at}.switch[{i}]");
                        let (when, next, field) = match (&c.when, &c.next, &c.default) {
                            (Some(w), Some(n), None) => {
                                exprs.push((format!("{cp}.when"), w));
                                (Some(w.clone()), n, "next")
                            }
                            (None, None, Some(d)) => {
                                if i + 1 != cases.len() {
                                    push(
                                        cp.clone(),
                                        ProblemKind::Invalid,
                                        "`default` must be the last case".into(),
                                    );
                                }
                                (None, d, "default")
                            }
                            _ => {
                                push(
                                    cp,
                                    ProblemKind::Invalid,
                                    "a case is either `when` + `next` or `default` alone".into(),
                                );
                                continue;
                            }
                        };
                        if !known(next) {
                            push(
                                format!("{cp}.{field}"),
                                ProblemKind::UnknownTask,
                                format!("unknown task {next:?} in {field}"),
                            );
                            continue;
                        }
                        if !targets.contains(&next.as_str()) {
                            targets.push(next.as_str());
                        }
                        out.push(Case {
                            when,
                            next: next.clone(),
                        });
                    }
                    routes.insert(name.as_str(), targets);
                    Some(Body::Switch(out))
                }
            };
            if let Some(r) = &t.retry {
                if r.max_attempts == 0 {
                    push(
                        format!("{at}.retry.max_attempts"),
                        ProblemKind::Invalid,
                        "max_attempts counts the first attempt too, so it must be at least 1"
                            .into(),
                    );
                }
                if t.foreach.is_some() {
                    push(
                        format!("{at}.retry"),
                        ProblemKind::Invalid,
                        "retry is not supported on map (`foreach`) tasks".into(),
                    );
                }
            }
            tasks.push((name, t, body));
        }
        for (path, e) in exprs {
            check_expr(path, e, &mut problems);
        }
        let mut built = Vec::new();
        for (name, t, body) in tasks {
            let mut preds: Vec<String> = Vec::new();
            for (i, d) in t.depends.iter().enumerate() {
                if let Some(targets) = routes.get(d.as_str())
                    && !targets.contains(&name.as_str())
                {
                    problems.push((
                        format!("tasks.{name}.depends[{i}]"),
                        ProblemKind::Invalid,
                        format!("task {name:?} depends on switch {d:?}, which never routes to it"),
                    ));
                }
                if self.tasks.contains_key(d) && !preds.contains(d) {
                    preds.push(d.clone());
                }
            }
            for (s, targets) in &routes {
                if targets.contains(&name.as_str()) && !preds.iter().any(|p| p == s) {
                    preds.push((*s).to_owned());
                }
            }
            // A task with a broken body still takes part in the cycle check
            // (the document is rejected anyway).
            built.push(Task {
                name: name.clone(),
                body: body.unwrap_or(Body::Pass),
                preds,
                input: t.input.clone(),
                foreach: t.foreach.clone(),
                retry: t.retry.clone(),
            });
        }
        let Some(id) = id else {
            return Err(problems);
        };
        let dag = Dag {
            id,
            version: self.version.unwrap_or(1),
            tasks: built,
            output: self.output.clone(),
        };
        for cycle in dag.cycles() {
            let first = cycle.first().cloned().unwrap_or_default();
            problems.push((
                format!("tasks.{first}"),
                ProblemKind::Cycle,
                format!("cycle: {}", cycle.join(" -> ")),
            ));
        }
        if problems.is_empty() {
            Ok(dag)
        } else {
            Err(problems)
        }
    }
}
