//! Compiles a validated DAG onto triggers, using only the engine's existing
//! conditions and actions.
//!
//! Every edge resolves as *taken* or *dead*. A finished task emits
//! [`TYPE_TASK_DONE`] (data `true`) with subject `task/<name>`; a skipped one
//! emits [`TYPE_TASK_SKIPPED`] (data `false`). A switch emits one event per
//! outgoing edge, subject `edge/<switch>/<target>`, [`TYPE_EDGE_TAKEN`]
//! (`true`) or [`TYPE_EDGE_DEAD`] (`false`). A task's start trigger is a join
//! over its incoming edge subjects with a fixed count; it runs the task if
//! any collected value is `true`, else skips it. Function results arrive on
//! subject `fn/<name>` and are stored at `results.<name>` in the context.

use serde_json::Value;
use trigflow_core::event::{TYPE_FAILED, TYPE_STARTED, TYPE_SUCCEEDED};
use trigflow_core::ids::{InvalidId, TriggerId};
use trigflow_core::model::{
    Action, Activation, Branch, Condition, EmitSpec, JoinCount, Lifetime, TriggerSpec, Workflow,
};

use crate::dag::{Body, Dag, Task};

/// A task finished; its outgoing edges are taken.
pub const TYPE_TASK_DONE: &str = "trigflow.task.done";
/// A task was skipped (no incoming edge taken); its outgoing edges are dead.
pub const TYPE_TASK_SKIPPED: &str = "trigflow.task.skipped";
/// A switch took this edge.
pub const TYPE_EDGE_TAKEN: &str = "trigflow.edge.taken";
/// A switch did not take this edge (or was skipped).
pub const TYPE_EDGE_DEAD: &str = "trigflow.edge.dead";
/// A failed task's retry delay elapsed.
pub const TYPE_TASK_RETRY: &str = "trigflow.task.retry";
/// Subject prefix of task done / skipped events: `task/<name>`.
pub const SUBJECT_TASK_PREFIX: &str = "task/";
/// Subject prefix of switch edge events: `edge/<switch>/<target>`.
pub const SUBJECT_EDGE_PREFIX: &str = "edge/";
/// Subject prefix of function results (the invoke's step): `fn/<name>`.
pub const SUBJECT_FUNCTION_PREFIX: &str = "fn/";

/// Context key under which the compiler keeps its own bookkeeping, apart
/// from the user-visible `results`.
const INTERNAL: &str = "_dag";

fn q(s: &str) -> String {
    Value::from(s).to_string()
}

fn task_subject(t: &str) -> String {
    format!("{SUBJECT_TASK_PREFIX}{t}")
}

fn edge_subject(s: &str, t: &str) -> String {
    format!("{SUBJECT_EDGE_PREFIX}{s}/{t}")
}

fn fn_subject(t: &str) -> String {
    format!("{SUBJECT_FUNCTION_PREFIX}{t}")
}

/// `.context.results["name"]`-style access.
fn result_of(t: &str) -> String {
    format!(".results[{}]", q(t))
}

const DOC: &str = "input: .context.input, results: (.context.results // {})";

/// Wraps a user expression over `{input, results}` into one over the
/// engine's `{event, context, trigger}` document.
fn wrap(code: &str) -> String {
    format!("{{{DOC}}} | ({code})")
}

fn wrap_item(code: &str) -> String {
    format!("{{{DOC}, item: .item, index: .index}} | ({code})")
}

fn wrap_switch(code: &str, switch: &str) -> String {
    format!(
        "{{{DOC}, value: (.context.results // {{}})[{}]}} | ({code})",
        q(switch)
    )
}

fn default_input(task: &Task) -> String {
    match task.preds.as_slice() {
        [] => ".input".into(),
        [one] => result_of(one),
        many => {
            let fields: Vec<String> = many
                .iter()
                .map(|p| format!("{}: {}", q(p), result_of(p)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

fn emit(ty: &str, subject: String, data: &str) -> EmitSpec {
    EmitSpec {
        ty: ty.into(),
        subject: Some(subject),
        data: Some(data.into()),
    }
}

fn trigger(
    id: String,
    on: Activation,
    condition: Condition,
    actions: Vec<Action>,
) -> Result<TriggerSpec, InvalidId> {
    Ok(TriggerSpec {
        id: TriggerId::try_from(id)?,
        on,
        condition,
        actions,
        on_failure: Vec::new(),
        lifetime: Lifetime::Transient,
        order: 0,
        context: serde_json::Map::new(),
    })
}

fn on_subjects(subjects: Vec<String>, types: Vec<String>) -> Activation {
    Activation { subjects, types }
}

/// The subject on which the edge `pred -> task` resolves.
fn in_subject(dag: &Dag, pred: &str, task: &str) -> String {
    if dag.is_switch(pred) {
        edge_subject(pred, task)
    } else {
        task_subject(pred)
    }
}

fn done(task: &str) -> Action {
    Action::Emit {
        events: vec![emit(TYPE_TASK_DONE, task_subject(task), "true")],
    }
}

fn set_result(task: &str, value: String) -> Action {
    Action::SetContext {
        key: format!("results.{task}"),
        value,
    }
}

fn invoke(task: &Task, function: &str) -> Action {
    let input = task.input.clone().unwrap_or_else(|| default_input(task));
    Action::Invoke {
        function: function.to_owned(),
        step: Some(fn_subject(&task.name)),
        input: Some(wrap(&input)),
        foreach: None,
        count_into: None,
    }
}

fn count_key(task: &str) -> String {
    format!("{INTERNAL}.count.{task}")
}

fn count_expr(task: &str) -> String {
    format!(".context.{INTERNAL}.count[{}]", q(task))
}

/// What running the task does (after its start condition decided to run).
fn run_actions(dag: &Dag, task: &Task) -> Vec<Action> {
    let name = &task.name;
    match &task.body {
        Body::Function(f) => match &task.foreach {
            None => vec![invoke(task, f)],
            Some(list) => {
                let input = task.input.clone().unwrap_or_else(|| ".item".into());
                vec![
                    Action::Invoke {
                        function: f.clone(),
                        step: Some(fn_subject(name)),
                        input: Some(wrap_item(&input)),
                        foreach: Some(wrap(list)),
                        count_into: Some(count_key(name)),
                    },
                    // No results will come for an empty list, so the join
                    // would never fire: finish the task here instead.
                    Action::Choose {
                        branches: vec![Branch {
                            when: format!("{} == 0", count_expr(name)),
                            then: vec![set_result(name, "[]".into()), done(name)],
                        }],
                        otherwise: Vec::new(),
                    },
                ]
            }
        },
        Body::Pass => {
            let input = task.input.clone().unwrap_or_else(|| default_input(task));
            vec![set_result(name, wrap(&input)), done(name)]
        }
        Body::Switch(cases) => {
            let input = task.input.clone().unwrap_or_else(|| default_input(task));
            let targets = switch_targets(dag, task);
            let route = |taken: Option<&str>| Action::Emit {
                events: targets
                    .iter()
                    .map(|t| {
                        if Some(t.as_str()) == taken {
                            emit(TYPE_EDGE_TAKEN, edge_subject(name, t), "true")
                        } else {
                            emit(TYPE_EDGE_DEAD, edge_subject(name, t), "false")
                        }
                    })
                    .collect(),
            };
            let mut branches = Vec::new();
            let mut otherwise = vec![route(None)];
            for c in cases {
                match &c.when {
                    Some(w) => branches.push(Branch {
                        when: wrap_switch(w, name),
                        then: vec![route(Some(&c.next))],
                    }),
                    None => {
                        otherwise = vec![route(Some(&c.next))];
                        break;
                    }
                }
            }
            vec![
                set_result(name, wrap(&input)),
                Action::Choose {
                    branches,
                    otherwise,
                },
            ]
        }
    }
}

/// The tasks a switch routes to, in first-case order.
fn switch_targets(dag: &Dag, switch: &Task) -> Vec<String> {
    dag.tasks
        .iter()
        .filter(|t| t.preds.contains(&switch.name))
        .map(|t| t.name.clone())
        .collect()
}

fn skip_actions(dag: &Dag, task: &Task) -> Vec<Action> {
    let events = match &task.body {
        Body::Switch(_) => switch_targets(dag, task)
            .iter()
            .map(|t| emit(TYPE_EDGE_DEAD, edge_subject(&task.name, t), "false"))
            .collect(),
        _ => vec![emit(TYPE_TASK_SKIPPED, task_subject(&task.name), "false")],
    };
    vec![Action::Emit { events }]
}

/// Compiles the DAG to a trigger set.
pub(crate) fn compile(dag: &Dag) -> Result<Workflow, InvalidId> {
    let mut triggers = Vec::new();
    for task in &dag.tasks {
        let name = &task.name;
        let run = run_actions(dag, task);
        if task.preds.is_empty() {
            triggers.push(trigger(
                format!("start/{name}"),
                on_subjects(vec!["$start".into()], vec![TYPE_STARTED.into()]),
                Condition::Always,
                run,
            )?);
        } else {
            let subjects: Vec<String> = task
                .preds
                .iter()
                .map(|p| in_subject(dag, p, name))
                .collect();
            let n = subjects.len() as u64;
            triggers.push(trigger(
                format!("start/{name}"),
                on_subjects(subjects, Vec::new()),
                Condition::Join {
                    count: JoinCount::Fixed(n),
                },
                vec![Action::Choose {
                    branches: vec![Branch {
                        when: "any(.trigger.results[]; . == true)".into(),
                        then: run,
                    }],
                    otherwise: skip_actions(dag, task),
                }],
            )?);
        }
        let Body::Function(function) = &task.body else {
            continue;
        };
        let results_on = on_subjects(vec![fn_subject(name)], vec![TYPE_SUCCEEDED.into()]);
        if task.foreach.is_some() {
            // Results are keyed by zero-padded index; rebuilding the array
            // from the keys keeps `null` results in their place.
            let collect = "[range(0; .trigger.count) as $i \
                 | .trigger.results[(\"0000000000\" + ($i | tostring))[-10:]]]";
            triggers.push(trigger(
                format!("collect/{name}"),
                results_on,
                Condition::Join {
                    count: JoinCount::From {
                        from: count_expr(name),
                    },
                },
                vec![set_result(name, collect.into()), done(name)],
            )?);
        } else {
            triggers.push(trigger(
                format!("done/{name}"),
                results_on,
                Condition::Always,
                vec![set_result(name, ".event.data".into()), done(name)],
            )?);
        }
        let fail = Action::Fail {
            error: "trigflow.TaskFailed".into(),
            error_from: None,
            cause: Some(format!(
                "{{task: {}, error: .event.data.error, cause: .event.data.cause}}",
                q(name)
            )),
        };
        let failed_on = on_subjects(vec![fn_subject(name)], vec![TYPE_FAILED.into()]);
        match &task.retry {
            Some(r) if r.max_attempts > 1 && task.foreach.is_none() => {
                let attempts = format!("(.context.{INTERNAL}.attempts[{}] // 1)", q(name));
                let mut t = trigger(
                    format!("fail/{name}"),
                    failed_on,
                    Condition::Always,
                    vec![Action::Choose {
                        branches: vec![Branch {
                            when: format!("{attempts} < {}", r.max_attempts),
                            then: vec![
                                Action::SetContext {
                                    key: format!("{INTERNAL}.attempts.{name}"),
                                    value: format!("{attempts} + 1"),
                                },
                                Action::Timer {
                                    delay_ms: r.delay_ms,
                                    event: EmitSpec {
                                        ty: TYPE_TASK_RETRY.into(),
                                        subject: Some(format!("retry/{name}")),
                                        data: None,
                                    },
                                },
                            ],
                        }],
                        otherwise: vec![fail],
                    }],
                )?;
                t.lifetime = Lifetime::Persistent;
                triggers.push(t);
                let mut again = trigger(
                    format!("retry/{name}"),
                    on_subjects(vec![format!("retry/{name}")], vec![TYPE_TASK_RETRY.into()]),
                    Condition::Always,
                    vec![invoke(task, function)],
                )?;
                again.lifetime = Lifetime::Persistent;
                triggers.push(again);
            }
            _ => triggers.push(trigger(
                format!("fail/{name}"),
                failed_on,
                Condition::Always,
                vec![fail],
            )?),
        }
    }
    let sinks = dag.sinks();
    let output = dag
        .output
        .clone()
        .unwrap_or_else(|| match sinks.as_slice() {
            [one] => result_of(&one.name),
            many => {
                let fields: Vec<String> = many
                    .iter()
                    .map(|t| format!("{}: {}", q(&t.name), result_of(&t.name)))
                    .collect();
                format!("{{{}}}", fields.join(", "))
            }
        });
    triggers.push(trigger(
        "complete".into(),
        on_subjects(
            sinks.iter().map(|t| task_subject(&t.name)).collect(),
            Vec::new(),
        ),
        Condition::Join {
            count: JoinCount::Fixed(sinks.len() as u64),
        },
        vec![Action::Complete {
            output: Some(wrap(&output)),
        }],
    )?);
    Ok(Workflow {
        id: dag.id.clone(),
        version: dag.version,
        context: serde_json::Map::new(),
        triggers,
    })
}
