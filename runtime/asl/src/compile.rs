//! Compiles a validated state machine onto triggers.
//!
//! Each state gets an opaque id `qN` and persistent triggers on subjects
//! derived from it: `qN` (entered, data = the raw state input), `qN!err`
//! (an error raised in the state, data = `{Error, Cause}`), `qN!tick` (the
//! state's timer chain: Wait, Retry back-off, Task timeout), `qN!done` (a
//! Parallel's or Map's children finished) and `qN/rK` (a Task's function
//! result). Each state keeps a frame in the execution context at
//! `asl.f.<scope>.qN` (its raw input, retry counters, results being
//! collected), where a scope is the top level, a Parallel branch or a Map
//! slot; wiping a scope's object kills every state inside it, which is how a
//! failed branch stops its siblings. `asl.g.qN` is a generation counter that
//! events from timers and invocations are checked against, so that a late
//! timer or result from an abandoned attempt is ignored.
//!
//! All data flow (paths, templates, intrinsics, Choice rules) is generated
//! jq; a data error raises `{Error, Cause}` in jq, caught into the frame's
//! `r.err` and routed through the state's Retry / Catch like a task error.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use trigflow_core::event::{
    TYPE_CHILD_FAILED, TYPE_CHILD_SUCCEEDED, TYPE_FAILED, TYPE_STARTED, TYPE_SUCCEEDED,
};
use trigflow_core::model::{
    Action, Activation, Branch, Condition, EmitSpec, Lifetime, TriggerSpec, Workflow,
};

use crate::AslOptions;
use crate::doc::{
    BatchInput, Batcher, Catcher, Kind, Machine, NumSrc, Operand, PathSpec, Retrier, Rule, State,
    StrSrc, Tmpl, WaitFor, jn_expr,
};
use crate::intrinsic;
use crate::path::{JsonPath, Root, jq_str};

/// Type of the event that enters a state (data = the state's raw input).
pub const TYPE_ENTER: &str = "asl.state.entered";
/// Type of the event that raises an error in a state (data = `{Error, Cause}`).
pub const TYPE_ERROR: &str = "asl.state.error";
/// Type of a state's timer-chain events.
pub const TYPE_TICK: &str = "asl.state.tick";
/// Type of the event that tells a Parallel or Map its children finished.
pub const TYPE_DONE: &str = "asl.state.done";
/// Type of the whole-machine timeout event.
pub const TYPE_MACHINE_TIMEOUT: &str = "asl.execution.timeout";
/// Type of the event that ends a `.waitForTaskToken` task successfully
/// (subject = the task token, data = the task's result).
pub const TYPE_TASK_SUCCESS: &str = "trigflow.task.success";
/// Type of the event that fails a `.waitForTaskToken` task (subject = the
/// task token, data = `{"error", "cause"}`).
pub const TYPE_TASK_FAILURE: &str = "trigflow.task.failure";
/// Type of the event that tells a `.waitForTaskToken` task its worker is
/// alive (subject = the task token), resetting its HeartbeatSeconds timer.
pub const TYPE_TASK_HEARTBEAT: &str = "trigflow.task.heartbeat";
/// Separates a task token's state part from its execution id.
pub(crate) const TOKEN_EXECUTION_SEP: char = '@';

/// Error name of a top-level failure whose `Error` is not a non-empty
/// string; the whole `{Error, Cause}` is then the cause.
pub const UNLISTED_ERROR: &str = "trigflow.asl.Error";

/// Invocation steps rotate over this many subjects per Task, so that a late
/// result of an abandoned attempt (timed out, or its branch failed) does not
/// match the current attempt's subject.
const GENS: u64 = 4;
/// Timer chains split a delay into powers of two up to 2^MAX_BIT ms
/// (about 70 years); the engine's timers take a literal delay.
const MAX_BIT: u32 = 41;

/// jq helpers every generated program starts with.
const PRELUDE: &str = r#"def _err($e; $c): error({"Error": $e, "Cause": $c});
def _rt($c): _err("States.Runtime"; $c);
def _ierr($c): _err("States.IntrinsicFailure"; $c);
def _show: tojson | .[0:200];
def _f($k): if type == "object" and has($k) then .[$k] else _rt("The JSONPath field " + ($k | tojson) + " could not be found in the input " + _show) end;
def _i($n): if type == "array" and $n < length and $n >= -length then .[$n] else _rt("The JSONPath index " + ($n | tostring) + " could not be found in the input " + _show) end;
def _sf($k): if type == "object" and has($k) then .[$k] else empty end;
def _si($n): if type == "array" and $n < length and $n >= -length then .[$n] else empty end;
def _sw: if type == "array" or type == "object" then .[] else empty end;
def _ss($a; $b): if type == "array" then .[$a:$b][] else empty end;
def _su($ix): if type == "array" then . as $x | $ix[] | select(. < ($x | length) and . >= -($x | length)) as $i | $x[$i] else empty end;
def _sd($k): .. | select(type == "object" and has($k)) | .[$k];
def _norm: if type == "object" and has("Error") then . else {"Error": "States.Runtime", "Cause": (if type == "string" then . else tojson end)} end;
def _intr: (if type == "object" and has("Error") then . else {"Error": "States.IntrinsicFailure", "Cause": (if type == "string" then . else tojson end)} end) | error;
def _str: if type == "string" then . else _ierr("expected a string, got " + _show) end;
def _num: if type == "number" then . else _ierr("expected a number, got " + _show) end;
def _int: if type == "number" and . == floor then . else _ierr("expected an integer, got " + _show) end;
def _arr: if type == "array" then . else _ierr("expected an array, got " + _show) end;
def _obj: if type == "object" then . else _ierr("expected an object, got " + _show) end;
def _fmtarg: if type == "string" then . elif type == "object" or type == "array" then _ierr("States.Format arguments must be strings, numbers, booleans or null") else tojson end;
def _fmtdyn($f; $args): ($f | _str | split("{}")) as $p | if ($p | length) - 1 != ($args | length) then _ierr("States.Format: the template has " + (($p | length) - 1 | tostring) + " placeholders but " + ($args | length | tostring) + " arguments follow") else reduce range(1; $p | length) as $i ($p[0]; . + ($args[$i - 1] | _fmtarg) + $p[$i]) end;
def _partition($a; $n): ($a | _arr) as $a | ($n | _int) as $n | if $n <= 0 then _ierr("States.ArrayPartition: the chunk size must be positive") else [range(0; $a | length; $n) as $i | $a[$i:$i + $n]] end;
def _range($a; $b; $s): ($a | _int) as $a | ($b | _int) as $b | ($s | _int) as $s | if $s == 0 then _ierr("States.ArrayRange: the step must not be 0") elif (($b - $a) / $s) >= 1000 then _ierr("States.ArrayRange: more than 1000 items") else [range($a; $b + (if $s > 0 then 1 else -1 end); $s)] end;
def _h($s; $m): reduce ($s | explode[]) as $c (7; (. * $m + $c) % 4294967296);
def _hex($n; $w): [range($w - 1; -1; -1) as $k | ($n / pow(16; $k) | floor) % 16 | if . < 10 then . + 48 else . + 87 end] | implode;
def _uuid($s): _hex(_h($s; 31); 8) + "-" + _hex(_h($s; 37) % 65536; 4) + "-4" + _hex(_h($s; 41) % 4096; 3) + "-" + _hex(8 + _h($s; 43) % 4; 1) + _hex(_h($s; 47) % 4096; 3) + "-" + _hex(_h($s; 53); 8) + _hex(_h($s; 59) % 65536; 4);
def _random($a; $b; $seed; $dflt): ($a | _int) as $a | ($b | _int) as $b | if $b <= $a then _ierr("States.MathRandom: the end must be greater than the start") else $a + (_h(if $seed == null then $dflt else ($seed | tostring) end; 31) % ($b - $a)) end;
def _split($s; $d): ($d | explode) as $d | reduce ($s | explode[]) as $c ({o: [], c: []}; if any($d[]; . == $c) then {o: (.o + [.c]), c: []} else .c += [$c] end) | (.o + [.c]) | map(select(length > 0) | implode);
def _setrp($p; $v): if ($p | length) == 0 then $v elif type == "object" then (if has($p[0]) then .[$p[0]] else {} end | _setrp($p[1:]; $v)) as $x | .[$p[0]] = $x else _err("States.ResultPathMatchFailure"; "Unable to apply ResultPath to the input " + _show) end;
def _ists: type == "string" and test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$");
def _tsp: if _ists then (try fromdateiso8601 catch null) else null end;
def _ts($ms): ($ms / 1000 | floor | todateiso8601 | .[0:19]) + "." + ((($ms % 1000) + 1000) | floor | tostring | .[1:4]) + "Z";
"#;

fn set(key: impl Into<String>, value: impl Into<String>) -> Action {
    Action::SetContext {
        key: key.into(),
        value: value.into(),
    }
}

fn emit(ty: &str, subject: impl Into<String>, data: impl Into<String>) -> Action {
    Action::Emit {
        events: vec![EmitSpec {
            ty: ty.to_owned(),
            subject: Some(subject.into()),
            data: Some(data.into()),
        }],
    }
}

fn choose(branches: Vec<(String, Vec<Action>)>, otherwise: Vec<Action>) -> Action {
    Action::Choose {
        branches: branches
            .into_iter()
            .map(|(when, then)| Branch { when, then })
            .collect(),
        otherwise,
    }
}

fn trigger(
    id: String,
    subjects: Vec<String>,
    types: Vec<&str>,
    condition: Condition,
    actions: Vec<Action>,
) -> Result<TriggerSpec, String> {
    Ok(TriggerSpec {
        id: id
            .parse()
            .map_err(|e| format!("internal: trigger id: {e}"))?,
        on: Activation {
            subjects,
            types: types.into_iter().map(str::to_owned).collect(),
        },
        condition,
        actions,
        on_failure: Vec::new(),
        lifetime: Lifetime::Persistent,
        order: 0,
        context: serde_json::Map::new(),
    })
}

/// Where a scope's end goes.
#[derive(Clone)]
enum End {
    Top,
    Branch {
        par: Frame,
        index: usize,
        count: usize,
        siblings: Vec<String>,
    },
    Slot {
        map: Frame,
        slot_key: String,
        slot: usize,
        siblings: Vec<String>,
        tolerant: bool,
        start: Box<SlotStart>,
    },
}

/// What a Parallel or Map compiled for its children.
enum Kids {
    None,
    Par {
        /// Scope keys (below `asl.f`) of the branches.
        paths: Vec<String>,
        /// Entry ids of the branches.
        starts: Vec<String>,
    },
    Map {
        slots: Vec<Scope>,
    },
    /// A distributed Map: each item runs as a child execution.
    Child {
        /// Subject of the children's start events.
        entry: String,
        /// jq for an item's input over `$items`, `$i` and `$ctx` (with
        /// `Map.Item`), when an ItemSelector is given.
        selector: Option<String>,
    },
}

/// What a Map slot needs to start its next item.
#[derive(Clone)]
struct SlotStart {
    first_q: String,
    selector: Option<String>,
}

/// A state's frame: its id, context key and jq path.
#[derive(Clone)]
struct Frame {
    q: String,
    key: String,
    jq: String,
}

impl Frame {
    fn g(&self) -> String {
        format!("(.context.asl.g.{} // 0)", self.q)
    }
    fn gkey(&self) -> String {
        format!("asl.g.{}", self.q)
    }
}

#[derive(Clone)]
struct Scope {
    /// Dotted key below `asl.f`, e.g. `s0` or `s0.s3`.
    path: String,
    /// jq (over the document) of the innermost Map item, if in a Map.
    item: Option<String>,
    end: End,
}

impl Scope {
    fn alive(&self) -> Option<String> {
        match self.end {
            End::Top => None,
            _ => Some(format!(".context.asl.f.{}.alive == true", self.path)),
        }
    }
}

struct Here<'a> {
    st: &'a State,
    f: Frame,
    scope: Scope,
    names: &'a BTreeMap<String, String>,
}

pub(crate) struct Compiler<'o> {
    opts: &'o AslOptions,
    wf: String,
    triggers: Vec<TriggerSpec>,
    nq: usize,
    ns: usize,
}

/// Compiles a machine; errors are internal (an invalid generated id).
pub(crate) fn compile(m: &Machine, wf: &str, opts: &AslOptions) -> Result<Workflow, String> {
    let mut c = Compiler {
        opts,
        wf: wf.to_owned(),
        triggers: Vec::new(),
        nq: 0,
        ns: 1,
    };
    let top = Scope {
        path: "s0".into(),
        item: None,
        end: End::Top,
    };
    let start_q = c.machine(m, &top)?;
    let mut start = vec![set(
        "asl",
        prog_plain("{start: _ts($doc.now), f: {s0: {}}, g: {}}"),
    )];
    if let Some(t) = m.timeout {
        start.push(Action::Timer {
            delay_ms: (t * 1000.0) as u64,
            event: EmitSpec {
                ty: TYPE_MACHINE_TIMEOUT.into(),
                subject: Some("$asl!timeout".into()),
                data: None,
            },
        });
        c.triggers.push(trigger(
            "$asl.timeout".into(),
            vec!["$asl!timeout".into()],
            vec![TYPE_MACHINE_TIMEOUT],
            Condition::Always,
            vec![Action::Fail {
                error: "States.Timeout".into(),
                error_from: None,
                cause: Some(jq_str("The state machine exceeded its TimeoutSeconds")),
            }],
        )?);
    }
    start.push(emit(TYPE_ENTER, start_q, ".event.data"));
    let mut t = trigger(
        "$asl.start".into(),
        // Only the execution's own start: a child execution (distributed
        // Map) starts on its Map's entry subject instead.
        vec!["$start".into()],
        vec![TYPE_STARTED],
        Condition::Always,
        start,
    )?;
    t.lifetime = Lifetime::Transient;
    c.triggers.insert(0, t);
    Ok(Workflow {
        id: wf
            .parse()
            .map_err(|e| format!("workflow name {wf:?}: {e}"))?,
        version: 1,
        context: serde_json::Map::new(),
        triggers: c.triggers,
    })
}

/// jq helpers of JSONata states, added only to programs that use them (so
/// that JSONPath machines run on engines built without JSONata).
const JPRELUDE: &str = r#"def _jn($e): try jsonata($e) catch _err("States.QueryEvaluationError"; if type == "string" then . else tojson end);
def _jnum($e; $what): _jn($e) | if type == "number" and . >= 0 then . else _err("States.QueryEvaluationError"; $what + " must be a non-negative number, got " + _show) end;
"#;

fn prelude(body: &str) -> String {
    if body.contains("_jn") {
        format!("{PRELUDE}{JPRELUDE}")
    } else {
        PRELUDE.to_owned()
    }
}

/// A program that binds `$doc` (no state context object).
fn prog_plain(body: &str) -> String {
    format!("{}. as $doc | {body}", prelude(body))
}

/// jq building a JSONata value (a JSON value whose `{% ... %}` strings are
/// expressions) over the bindings `$b`.
fn jn_value(v: &Value) -> String {
    match v {
        Value::String(s) => match jn_expr(s) {
            Some(e) => format!("($b | _jn({}))", jq_str(e)),
            None => jq_str(s),
        },
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(jn_value).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(m) => {
            let parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", jq_str(k), jn_value(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => format!("({other})"),
    }
}

/// jq for a JSONata number field (seconds, counts), raising
/// `States.QueryEvaluationError` when it is not a non-negative number.
fn jn_num(e: &str, what: &str) -> String {
    format!("($b | _jnum({}; {}))", jq_str(e), jq_str(what))
}

/// `{out, asg}`: a JSONata state's Output (or `dflt`) and Assign, both
/// evaluated over the same bindings `$b` (Assign does not see its own
/// values, as in Step Functions).
fn jn_outasg(output: Option<&Value>, assign: Option<&Value>, dflt: &str) -> String {
    format!(
        "{{out: ({}), asg: ({})}}",
        output.map_or_else(|| dflt.to_owned(), jn_value),
        assign.map_or_else(|| "null".to_owned(), jn_value)
    )
}

/// Applies an InputPath / OutputPath / ItemsPath to a jq term.
fn apply_path(spec: Option<&PathSpec>, term: &str) -> String {
    match spec {
        None | Some(PathSpec::Default) => term.to_owned(),
        Some(PathSpec::Null) => "{}".to_owned(),
        Some(PathSpec::Path(p)) => get(p, term),
    }
}

/// Reads a path: `$` paths from `data`, `$$` paths from `$ctx`.
fn get(p: &JsonPath, data: &str) -> String {
    match p.root {
        Root::Data => p.jq_get(data),
        Root::Context => p.jq_get("$ctx"),
    }
}

fn result_path(spec: Option<&PathSpec>, raw: &str, res: &str) -> String {
    match spec {
        None | Some(PathSpec::Default) => res.to_owned(),
        Some(PathSpec::Null) => raw.to_owned(),
        Some(PathSpec::Path(p)) => {
            let fields: Vec<Value> = p
                .field_names()
                .unwrap_or_default()
                .into_iter()
                .map(|f| Value::String(f.to_owned()))
                .collect();
            format!("({raw} | _setrp({}; {res}))", Value::Array(fields))
        }
    }
}

/// jq building a payload template over `data`; `site` locates intrinsic
/// calls (see [`intrinsic::call_jq`]).
fn template(t: &Tmpl, data: &str, site: &str) -> String {
    match t {
        Tmpl::Lit(v) => format!("({v})"),
        Tmpl::Obj(fields) => {
            let parts: Vec<String> = fields
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}: {}",
                        jq_str(k),
                        template(v, data, &format!("{site}.{k}"))
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        Tmpl::Arr(items) => {
            let parts: Vec<String> = items
                .iter()
                .enumerate()
                .map(|(i, v)| template(v, data, &format!("{site}[{i}]")))
                .collect();
            format!("[{}]", parts.join(", "))
        }
        Tmpl::Path(p) => get(p, data),
        Tmpl::Call(c) => intrinsic::call_jq(c, data, "$ctx", site),
    }
}

/// jq grouping a distributed Map's item inputs (`per_item`, jq of an
/// array) into ItemBatcher batches `{Items, BatchInput}`.
fn batches(b: &Batcher, per_item: &str, q: &str) -> String {
    let k = match &b.max_items {
        NumSrc::Lit(x) => format!("{x}"),
        NumSrc::Path(p) => format!(
            "({} | if type == \"number\" and . >= 1 then floor else _rt(\"MaxItemsPerBatchPath must select a positive number\") end)",
            get(p, "$in")
        ),
        NumSrc::Expr(e) => format!(
            "({} | if . >= 1 then floor else _err(\"States.QueryEvaluationError\"; \"MaxItemsPerBatch must be at least 1\") end)",
            jn_num(e, "MaxItemsPerBatch")
        ),
    };
    let extra = match &b.input {
        None => "{}".to_owned(),
        Some(BatchInput::Tmpl(t)) => format!(
            "{{BatchInput: {}}}",
            template(t, "$in", &format!("{q}.ItemBatcher.BatchInput"))
        ),
        Some(BatchInput::Jn(v)) => format!("{{BatchInput: {}}}", jn_value(v)),
    };
    format!(
        "(({per_item}) as $sel | {k} as $k | {extra} as $bi | [range(0; $sel | length; $k) as $s | {{Items: $sel[$s:$s + $k]}} + $bi])"
    )
}

/// jq testing whether `$n` (an error name) matches an ErrorEquals list.
fn matches(errors: &[String]) -> String {
    let tests: Vec<String> = errors
        .iter()
        .map(|e| match e.as_str() {
            // Runtime errors cannot be caught or retried in Step Functions.
            "States.ALL" => "($n != \"States.Runtime\" and $n != \"States.DataLimitExceeded\")".to_owned(),
            "States.TaskFailed" => {
                "($n != \"States.Timeout\" and $n != \"States.Runtime\" and $n != \"States.DataLimitExceeded\")".to_owned()
            }
            other => format!("$n == {}", jq_str(other)),
        })
        .collect();
    format!(".event.data.Error as $n | ({})", tests.join(" or "))
}

/// Translates a StringMatches pattern (`*` wildcard, `\*` and `\\`
/// escapes) to an anchored regex.
fn glob_regex(pat: &str) -> String {
    let mut re = String::from("(?s)^");
    let mut it = pat.chars();
    while let Some(c) = it.next() {
        match c {
            '\\' => match it.next() {
                Some(e) => re.push_str(&regex_escape(e)),
                None => re.push_str("\\\\"),
            },
            '*' => re.push_str(".*"),
            c => re.push_str(&regex_escape(c)),
        }
    }
    re.push('$');
    re
}

fn regex_escape(c: char) -> String {
    if "\\.+*?()|[]{}^$#&-~".contains(c) {
        format!("\\{c}")
    } else {
        c.to_string()
    }
}

fn cmp_symbol(op: &str) -> &'static str {
    if op.ends_with("LessThanEquals") {
        "<="
    } else if op.ends_with("GreaterThanEquals") {
        ">="
    } else if op.ends_with("LessThan") {
        "<"
    } else if op.ends_with("GreaterThan") {
        ">"
    } else {
        "=="
    }
}

/// jq for a Choice rule over `$in` (and `$ctx`).
fn rule_jq(r: &Rule) -> String {
    match r {
        Rule::Cond(Value::String(s)) => format!(
            "($b | _jn({}) | if type == \"boolean\" then . else _err(\"States.QueryEvaluationError\"; \"a Condition must give a boolean, got \" + _show) end)",
            jq_str(jn_expr(s).unwrap_or(s))
        ),
        Rule::Cond(other) => format!("({other} == true)"),
        Rule::And(rs) => format!(
            "({})",
            rs.iter().map(rule_jq).collect::<Vec<_>>().join(" and ")
        ),
        Rule::Or(rs) => format!(
            "({})",
            rs.iter().map(rule_jq).collect::<Vec<_>>().join(" or ")
        ),
        Rule::Not(r) => format!("({} | not)", rule_jq(r)),
        Rule::Cmp { var, op, operand } => {
            if op == "IsPresent" {
                let exists = match var.root {
                    Root::Data => var.jq_exists("$in"),
                    Root::Context => var.jq_exists("$ctx"),
                };
                let want = matches!(operand, Operand::Lit(Value::Bool(true)));
                return format!("({exists} == {want})");
            }
            let w = match operand {
                Operand::Lit(v) => format!("({v})"),
                Operand::Path(p) => get(p, "$in"),
            };
            let sym = cmp_symbol(op);
            let test = match op.as_str() {
                "IsNull" => format!("($v == null) == {w}"),
                "IsNumeric" => format!("(($v | type) == \"number\") == {w}"),
                "IsString" => format!("(($v | type) == \"string\") == {w}"),
                "IsBoolean" => format!("(($v | type) == \"boolean\") == {w}"),
                "IsTimestamp" => format!("(($v | _tsp) != null) == {w}"),
                "StringMatches" => match operand {
                    Operand::Lit(Value::String(p)) => format!(
                        "($v | type == \"string\" and test({}))",
                        jq_str(&glob_regex(p))
                    ),
                    _ => "false".to_owned(),
                },
                o if o.starts_with("String") => format!(
                    "{w} as $w | ($v | type) == \"string\" and ($w | type) == \"string\" and $v {sym} $w"
                ),
                o if o.starts_with("Numeric") => format!(
                    "{w} as $w | ($v | type) == \"number\" and ($w | type) == \"number\" and $v {sym} $w"
                ),
                o if o.starts_with("Boolean") => format!(
                    "{w} as $w | ($v | type) == \"boolean\" and ($w | type) == \"boolean\" and $v == $w"
                ),
                _ => format!(
                    "({w} | _tsp) as $b | ($v | _tsp) as $a | $a != null and $b != null and $a {sym} $b"
                ),
            };
            format!("({} as $v | {test})", get(var, "$in"))
        }
    }
}

impl Compiler<'_> {
    fn q(&mut self) -> String {
        let q = format!("q{}", self.nq);
        self.nq += 1;
        q
    }

    fn s(&mut self) -> String {
        let s = format!("s{}", self.ns);
        self.ns += 1;
        s
    }

    fn assign(&mut self, m: &Machine) -> BTreeMap<String, String> {
        m.states
            .iter()
            .map(|s| (s.name.clone(), self.q()))
            .collect()
    }

    /// Compiles a machine in a scope; returns the id of its StartAt state.
    fn machine(&mut self, m: &Machine, scope: &Scope) -> Result<String, String> {
        let names = self.assign(m);
        self.machine_with(m, scope, &names)
    }

    fn machine_with(
        &mut self,
        m: &Machine,
        scope: &Scope,
        names: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        for st in &m.states {
            let q = names
                .get(&st.name)
                .cloned()
                .ok_or_else(|| format!("internal: no id for state {:?}", st.name))?;
            let f = Frame {
                key: format!("asl.f.{}.{q}", scope.path),
                jq: format!(".context.asl.f.{}.{q}", scope.path),
                q,
            };
            let h = Here {
                st,
                f,
                scope: scope.clone(),
                names,
            };
            self.state(&h)?;
        }
        names
            .get(&m.start_at)
            .cloned()
            .ok_or_else(|| format!("internal: StartAt {:?} unknown", m.start_at))
    }

    fn cond(&self, h: &Here<'_>, extra: Option<String>) -> Condition {
        match (h.scope.alive(), extra) {
            (None, None) => Condition::Always,
            (Some(a), None) | (None, Some(a)) => Condition::Expr { expr: a },
            (Some(a), Some(b)) => Condition::Expr {
                expr: format!("({a}) and ({b})"),
            },
        }
    }

    /// The `$$` context object of a state, as jq over `$doc`.
    fn ctx_object(&self, h: &Here<'_>, item: Option<&str>) -> String {
        let wf = jq_str(&self.wf);
        let sm = jq_str(&format!(
            "arn:aws:states:local:000000000000:stateMachine:{}",
            self.wf
        ));
        let ex = jq_str(&format!(
            "arn:aws:states:local:000000000000:execution:{}:",
            self.wf
        ));
        let f = &h.f.jq;
        let mut out = format!(
            "{{\"Execution\": {{\"Id\": ({ex} + ($doc.event.trigflowexecution // \"\")), \"Input\": $doc.context.input, \"Name\": ($doc.event.trigflowexecution // \"\"), \"RoleArn\": null, \"StartTime\": $doc.context.asl.start, \"RedriveCount\": 0}}, \"StateMachine\": {{\"Id\": {sm}, \"Name\": {wf}}}, \"State\": {{\"Name\": {}, \"EnteredTime\": $doc{f}.entered, \"RetryCount\": ($doc{f}.rc // 0)}}",
            jq_str(&h.st.name)
        );
        if let Some(item) = item.or(h.scope.item.as_deref()) {
            let _ = write!(out, ", \"Map\": {{\"Item\": $doc{item}}}");
        }
        if let Kind::Task { callback: true, .. } = h.st.kind {
            let _ = write!(out, ", \"Task\": {{\"Token\": {}}}", Self::token(h, "$doc"));
        }
        out.push('}');
        out
    }

    /// jq for the current task token of a `.waitForTaskToken` state, over
    /// the document `doc`: `qN!tokG@EXECUTION`, so that it names the
    /// attempt (a late answer to an abandoned attempt does not match) and
    /// the execution (a client needs nothing else to answer).
    fn token(h: &Here<'_>, doc: &str) -> String {
        format!(
            "(\"{q}!tok\" + ({doc} | {g} | tostring) + \"{TOKEN_EXECUTION_SEP}\" + ({doc}.event.trigflowexecution // \"\"))",
            q = h.f.q,
            g = h.f.g()
        )
    }

    /// A program for state `h`: prelude, `$doc`, and `$ctx` when used.
    fn prog(&self, h: &Here<'_>, body: &str) -> String {
        self.prog_item(h, None, body)
    }

    fn prog_item(&self, h: &Here<'_>, item: Option<&str>, body: &str) -> String {
        if body.contains("$ctx") {
            format!(
                "{}. as $doc | ({}) as $ctx | {body}",
                prelude(body),
                self.ctx_object(h, item)
            )
        } else {
            prog_plain(body)
        }
    }

    /// Runs `body` into the frame's `r` and branches on success or error.
    fn guarded(&self, h: &Here<'_>, body: &str, on_ok: Vec<Action>) -> Vec<Action> {
        let f = &h.f;
        vec![
            set(
                format!("{}.r", f.key),
                self.prog(h, &format!("try {{ok: ({body})}} catch {{err: _norm}}")),
            ),
            choose(
                vec![(
                    format!("{}.r | has(\"err\")", f.jq),
                    self.raise(h, &format!("{}.r.err", f.jq)),
                )],
                on_ok,
            ),
        ]
    }

    fn ok(h: &Here<'_>) -> String {
        format!("{}.r.ok", h.f.jq)
    }

    /// jq (over `$doc`) of the variables a state sees: its scope's and
    /// every enclosing scope's, inner ones shadowing outer ones. Each
    /// scope's variables live in its frame object (`asl.f.<scope>.v`), so
    /// a Parallel branch or Map item starts with none of its own.
    fn vars_jq(scope: &Scope) -> String {
        let mut parts = Vec::new();
        let mut prefix = String::new();
        for seg in scope.path.split('.') {
            if !prefix.is_empty() {
                prefix.push('.');
            }
            prefix.push_str(seg);
            parts.push(format!("($doc.context.asl.f.{prefix}.v // {{}})"));
        }
        format!("({})", parts.join(" + "))
    }

    /// The JSONata bindings of a state: its variables plus `$states`
    /// (`input`, `context` and the fields in `extra`, e.g. `, result: $res`).
    fn jn_bind(h: &Here<'_>, input: &str, extra: &str) -> String {
        format!(
            "({} + {{states: {{input: {input}, context: $ctx{extra}}}}})",
            Self::vars_jq(&h.scope)
        )
    }

    /// Before `then`: stores the values an Assign evaluated (`asg` of the
    /// frame's result) into the scope's variables.
    fn jn_then(h: &Here<'_>, assigns: bool, then: Vec<Action>) -> Vec<Action> {
        let mut acts = Vec::new();
        if assigns {
            let v = format!("asl.f.{}.v", h.scope.path);
            acts.push(set(
                v.clone(),
                format!("(.context.{v} // {{}}) + ({}.r.ok.asg // {{}})", h.f.jq),
            ));
        }
        acts.extend(then);
        acts
    }

    /// What a state does once its result flow succeeded: go on with its
    /// output (a JSONata state's `out`, after its Assign).
    fn finish_ok(&self, h: &Here<'_>) -> Result<Vec<Action>, String> {
        if h.st.jsonata {
            let out = format!("{}.out", Self::ok(h));
            Ok(Self::jn_then(
                h,
                h.st.jn.assign.is_some(),
                self.transition(h, &out)?,
            ))
        } else {
            self.transition(h, &Self::ok(h))
        }
    }

    /// jq turning a result `res` into the state's output: ResultSelector,
    /// ResultPath and OutputPath, or JSONata's Output and Assign with
    /// `$states.result`.
    fn result_flow(&self, h: &Here<'_>, res: &str) -> String {
        let io = &h.st.io;
        if h.st.jsonata {
            return format!(
                "({res}) as $res | ({}) as $in | {} as $b | {}",
                Self::raw(h),
                Self::jn_bind(h, "$in", ", result: $res"),
                jn_outasg(h.st.jn.output.as_ref(), h.st.jn.assign.as_ref(), "$res")
            );
        }
        let sel = match &io.result_selector {
            Some(t) => template(t, "$res", &format!("{}.ResultSelector", h.f.q)),
            None => "$res".to_owned(),
        };
        format!(
            "({res}) as $res | ({sel}) as $sel | ({}) as $out | {}",
            result_path(io.result_path.as_ref(), &Self::raw(h), "$sel"),
            apply_path(io.output_path.as_ref(), "$out")
        )
    }

    fn raise(&self, h: &Here<'_>, err: &str) -> Vec<Action> {
        vec![emit(TYPE_ERROR, format!("{}!err", h.f.q), err)]
    }

    fn raw(h: &Here<'_>) -> String {
        format!("$doc{}.raw", h.f.jq)
    }

    /// Goes to `Next`, or ends the scope.
    fn transition(&self, h: &Here<'_>, out: &str) -> Result<Vec<Action>, String> {
        match &h.st.next {
            Some(n) => {
                let q = h
                    .names
                    .get(n)
                    .ok_or_else(|| format!("internal: unknown Next {n:?}"))?;
                Ok(vec![emit(TYPE_ENTER, q.clone(), out)])
            }
            None => Ok(self.scope_success(&h.scope, out)),
        }
    }

    fn scope_success(&self, scope: &Scope, out: &str) -> Vec<Action> {
        match &scope.end {
            End::Top => vec![Action::Complete {
                output: Some(out.to_owned()),
            }],
            End::Branch {
                par, index, count, ..
            } => vec![
                set(format!("{}.res.b{index}", par.key), out),
                set(format!("{}.n", par.key), format!("({}.n // 0) + 1", par.jq)),
                choose(
                    vec![(
                        format!("{}.n == {count}", par.jq),
                        vec![emit(
                            TYPE_DONE,
                            format!("{}!done", par.q),
                            format!("{{g: {}}}", par.g()),
                        )],
                    )],
                    Vec::new(),
                ),
            ],
            End::Slot { map, slot_key, .. } => {
                let mut acts = vec![set(
                    format!("{}.res", map.key),
                    format!(
                        "{}.res + {{(.context.{slot_key}.item.Index | tostring): ({out})}}",
                        map.jq
                    ),
                )];
                acts.extend(self.slot_continue(scope));
                acts
            }
        }
    }

    fn scope_failure(&self, scope: &Scope, err: &str) -> Vec<Action> {
        match &scope.end {
            // The engine takes the name from the error itself; an error
            // without a usable name keeps its whole `{Error, Cause}`.
            End::Top => vec![Action::Fail {
                error: UNLISTED_ERROR.into(),
                error_from: Some(format!("({err}).Error")),
                cause: Some(format!(
                    "({err}) | if (.Error | type) == \"string\" and .Error != \"\" then .Cause else . end"
                )),
            }],
            End::Branch { par, siblings, .. } => {
                let mut acts = vec![emit(TYPE_ERROR, format!("{}!err", par.q), err)];
                acts.extend(siblings.iter().map(|s| set(format!("asl.f.{s}"), "{}")));
                acts
            }
            End::Slot {
                map,
                slot_key,
                siblings,
                tolerant,
                ..
            } => {
                let kill = |err: &str| -> Vec<Action> {
                    let mut acts = vec![emit(TYPE_ERROR, format!("{}!err", map.q), err)];
                    acts.extend(siblings.iter().map(|s| set(format!("asl.f.{s}"), "{}")));
                    acts
                };
                if !tolerant {
                    return kill(err);
                }
                let m = &map.jq;
                let exceeded = format!(
                    "({m}.tc != null and {m}.failed > {m}.tc) or ({m}.tp != null and ({m}.failed * 100 / {m}.n) > {m}.tp)"
                );
                let mut acts = vec![
                    set(
                        format!("{}.failed", map.key),
                        format!("({m}.failed // 0) + 1"),
                    ),
                    set(
                        format!("{}.res", map.key),
                        format!(
                            "{m}.res + {{(.context.{slot_key}.item.Index | tostring): ({err})}}"
                        ),
                    ),
                ];
                acts.push(choose(
                    vec![(
                        exceeded,
                        kill(&format!(
                            "{{Error: \"States.ExceedToleratedFailureThreshold\", Cause: (\"The Map failed \" + ({m}.failed | tostring) + \" of \" + ({m}.n | tostring) + \" iterations, more than it tolerates\")}}"
                        )),
                    )],
                    self.slot_continue(scope),
                ));
                acts
            }
        }
    }

    /// After an item finished in a Map slot: count it, start the next item
    /// in this slot, and tell the Map when all are done.
    fn slot_continue(&self, scope: &Scope) -> Vec<Action> {
        let End::Slot { map, .. } = &scope.end else {
            return Vec::new();
        };
        let m = &map.jq;
        vec![
            set(format!("{}.done", map.key), format!("({m}.done // 0) + 1")),
            choose(
                vec![(
                    format!("{m}.next < {m}.n and {} < {m}.mc", slot_no(scope)),
                    self.slot_start(scope),
                )],
                Vec::new(),
            ),
            choose(
                vec![(
                    format!("{m}.done == {m}.n"),
                    vec![emit(
                        TYPE_DONE,
                        format!("{}!done", map.q),
                        format!("{{g: {}}}", map.g()),
                    )],
                )],
                Vec::new(),
            ),
        ]
    }

    /// Starts the Map's next item in the slot `scope`.
    fn slot_start(&self, scope: &Scope) -> Vec<Action> {
        let End::Slot {
            map,
            slot_key,
            start,
            siblings,
            ..
        } = &scope.end
        else {
            return Vec::new();
        };
        let m = &map.jq;
        let sj = format!(".context.{slot_key}");
        let mut fail = vec![emit(
            TYPE_ERROR,
            format!("{}!err", map.q),
            format!("{sj}.in.err"),
        )];
        fail.extend(siblings.iter().map(|s| set(format!("asl.f.{s}"), "{}")));
        vec![
            set(
                slot_key.clone(),
                format!("{{alive: true, item: {{Index: {m}.next, Value: {m}.items[{m}.next]}}}}"),
            ),
            set(format!("{}.next", map.key), format!("{m}.next + 1")),
            set(
                format!("{slot_key}.in"),
                start
                    .selector
                    .clone()
                    .unwrap_or_else(|| format!("{{ok: {sj}.item.Value}}")),
            ),
            choose(
                vec![(format!("{sj}.in | has(\"err\")"), fail)],
                vec![emit(
                    TYPE_ENTER,
                    start.first_q.clone(),
                    format!("{sj}.in.ok"),
                )],
            ),
        ]
    }

    fn children(&mut self, h: &Here<'_>) -> Result<Kids, String> {
        match &h.st.kind {
            Kind::Parallel { branches, .. } => {
                let paths: Vec<String> = branches
                    .iter()
                    .map(|_| format!("{}.{}", h.scope.path, self.s()))
                    .collect();
                let mut starts = Vec::new();
                for (i, b) in branches.iter().enumerate() {
                    let scope = Scope {
                        path: paths[i].clone(),
                        item: h.scope.item.clone(),
                        end: End::Branch {
                            par: h.f.clone(),
                            index: i,
                            count: branches.len(),
                            siblings: paths.clone(),
                        },
                    };
                    starts.push(self.machine(b, &scope)?);
                }
                Ok(Kids::Par { paths, starts })
            }
            Kind::Map {
                processor,
                distributed: true,
                selector,
                ..
            } => {
                // The processor as a machine of its own: a child execution
                // starts it on `entry`, and its end ends the child.
                let path = self.s();
                let scope = Scope {
                    path: path.clone(),
                    item: None,
                    end: End::Top,
                };
                let first = self.machine(processor, &scope)?;
                let entry = format!("{}!child", h.f.q);
                self.triggers.push(trigger(
                    format!("{}!entry", h.f.q),
                    vec![entry.clone()],
                    vec![TYPE_STARTED],
                    Condition::Always,
                    vec![
                        set(
                            "asl",
                            prog_plain(&format!(
                                "{{start: _ts($doc.now), f: {{{path}: {{}}}}, g: {{}}}}"
                            )),
                        ),
                        emit(TYPE_ENTER, first, ".event.data"),
                    ],
                )?);
                let selector = match (&h.st.jn.item_selector, selector) {
                    (Some(v), _) if h.st.jsonata => Some(format!(
                        "{} as $b | {}",
                        Self::jn_bind(h, "$in", ""),
                        jn_value(v)
                    )),
                    (_, Some(t)) => Some(template(t, "$in", &format!("{}.ItemSelector", h.f.q))),
                    _ => None,
                };
                Ok(Kids::Child { entry, selector })
            }
            Kind::Map {
                processor,
                selector,
                max_concurrency,
                tolerated_count,
                tolerated_pct,
                ..
            } => {
                let k = match max_concurrency {
                    Some(NumSrc::Lit(c)) if *c >= 1.0 => (*c as usize).min(self.opts.map_slots),
                    _ => self.opts.map_slots,
                }
                .max(1);
                let paths: Vec<String> = (0..k)
                    .map(|_| format!("{}.{}", h.scope.path, self.s()))
                    .collect();
                let tolerant = tolerated_count.is_some() || tolerated_pct.is_some();
                let mut slots = Vec::new();
                for (j, path) in paths.iter().enumerate() {
                    let names = self.assign(processor);
                    let first_q = names
                        .get(&processor.start_at)
                        .cloned()
                        .ok_or_else(|| "internal: Map StartAt unknown".to_owned())?;
                    let item = format!(".context.asl.f.{path}.item");
                    let jn_selector = h.st.jn.item_selector.as_ref().filter(|_| h.st.jsonata);
                    let selector = if let Some(v) = jn_selector {
                        Some(self.prog_item(
                            h,
                            Some(&item),
                            &format!(
                                "($doc{}.eff) as $in | {} as $b | try {{ok: ({})}} catch {{err: _norm}}",
                                h.f.jq,
                                Self::jn_bind(h, "$in", ""),
                                jn_value(v)
                            ),
                        ))
                    } else {
                        selector.as_ref().map(|t| {
                            self.prog_item(
                                h,
                                Some(&item),
                                &format!(
                                    "($doc{}.eff) as $in | try {{ok: ({})}} catch {{err: _norm}}",
                                    h.f.jq,
                                    template(t, "$in", &format!("{}.ItemSelector", h.f.q))
                                ),
                            )
                        })
                    };
                    let scope = Scope {
                        path: path.clone(),
                        item: Some(item),
                        end: End::Slot {
                            map: h.f.clone(),
                            slot_key: format!("asl.f.{path}"),
                            slot: j,
                            siblings: paths.clone(),
                            tolerant,
                            start: Box::new(SlotStart { first_q, selector }),
                        },
                    };
                    self.machine_with(processor, &scope, &names)?;
                    slots.push(scope);
                }
                Ok(Kids::Map { slots })
            }
            _ => Ok(Kids::None),
        }
    }

    /// The function reference of a Task resource, via the mapping table.
    fn resolve(&self, name: &str) -> String {
        if let Some(f) = self.opts.resources.get(name) {
            return f.clone();
        }
        // `arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]`
        let parts: Vec<&str> = name.split(':').collect();
        if parts.len() >= 7 && parts[2] == "lambda" && parts[5] == "function" {
            let fname = parts[6];
            if let Some(f) = self.opts.resources.get(fname) {
                return f.clone();
            }
        }
        name.to_owned()
    }

    /// The Task's run: input processing, then the invocation(s).
    fn task_run(&self, h: &Here<'_>, task: &TaskSpec<'_>, eff: &str, params: &str) -> Vec<Action> {
        let f = &h.f;
        let q = &f.q;
        let ok = Self::ok(h);
        let resource = task.resource;
        let ms = |n: Option<&NumSrc>, field: &str| match n {
            None => "null".to_owned(),
            Some(NumSrc::Lit(t)) => format!("{}", (t * 1000.0) as u64),
            Some(NumSrc::Path(p)) => format!(
                "({} | if type == \"number\" and . > 0 then . * 1000 | floor else _rt(\"{field} must select a positive number\") end)",
                get(p, "$in")
            ),
            Some(NumSrc::Expr(e)) => format!("({} * 1000 | floor)", jn_num(e, field)),
        };
        let to = ms(task.timeout, "TimeoutSecondsPath");
        let hb = ms(task.heartbeat, "HeartbeatSecondsPath");
        let body = format!("{eff} | {{arg: ({params}), to: {to}, hb: {hb}}}");
        let lambda_invoke = resource.starts_with("arn:aws:states:::lambda:invoke");
        let input = if lambda_invoke {
            format!("{ok}.arg.Payload")
        } else {
            format!("{ok}.arg")
        };
        let invoke = |function: String, k: u64| Action::Invoke {
            function,
            step: Some(format!("{q}/r{k}")),
            input: Some(input.clone()),
            foreach: None,
            count_into: None,
        };
        // Rotating subjects: see GENS.
        let dispatch = |function: &str| {
            choose(
                (0..GENS)
                    .map(|k| {
                        (
                            format!("{} % {GENS} == {k}", f.g()),
                            vec![invoke(function.to_owned(), k)],
                        )
                    })
                    .collect(),
                Vec::new(),
            )
        };
        let static_name = match (&h.st.io.parameters, &h.st.jn.arguments) {
            (Some(Tmpl::Obj(fields)), _) => fields.iter().find_map(|(k, v)| match v {
                Tmpl::Lit(Value::String(s)) if k == "FunctionName" => Some(s.clone()),
                _ => None,
            }),
            (None, Some(Value::Object(args))) => match args.get("FunctionName") {
                Some(Value::String(s)) if jn_expr(s).is_none() => Some(s.clone()),
                _ => None,
            },
            _ => None,
        };
        let call = if !lambda_invoke {
            dispatch(&self.resolve(resource))
        } else if let Some(name) = static_name {
            dispatch(&self.resolve(&name))
        } else {
            // A FunctionName chosen at run time can only go to a function
            // the mapping table names.
            let branches = self
                .opts
                .resources
                .iter()
                .map(|(k, v)| {
                    (
                        format!("{ok}.arg.FunctionName == {}", jq_str(k)),
                        vec![dispatch(v)],
                    )
                })
                .collect();
            choose(
                branches,
                self.raise(
                    h,
                    &format!(
                        "{{Error: \"States.TaskFailed\", Cause: (\"No function is mapped for FunctionName \" + ({ok}.arg.FunctionName | tojson))}}"
                    ),
                ),
            )
        };
        let mut on_ok = vec![set(format!("{}.active", f.key), "true"), call];
        if task.callback && task.heartbeat.is_some() {
            on_ok.push(set(format!("{}.hb", f.key), format!("{ok}.hb")));
            on_ok.extend(self.heartbeat_restart(h));
        }
        if task.timeout.is_some() {
            on_ok.push(set(format!("{}.rem", f.key), format!("{ok}.to")));
            on_ok.push(emit(
                TYPE_TICK,
                format!("{q}!tick"),
                format!("{{g: {}, what: \"timeout\"}}", f.g()),
            ));
        }
        // A new attempt before its input is evaluated, so that the task
        // token in `$$.Task.Token` names this attempt.
        let mut acts = vec![set(f.gkey(), format!("{} + 1", f.g()))];
        acts.extend(self.guarded(h, &body, on_ok));
        acts
    }

    /// (Re)starts a callback task's heartbeat timer chain: a new heartbeat
    /// generation (so the previous chain's ticks are ignored) counting down
    /// the frame's `hb` milliseconds.
    fn heartbeat_restart(&self, h: &Here<'_>) -> Vec<Action> {
        let f = &h.f;
        let g = hb_gen(f);
        vec![
            set(format!("{}.hrem", f.key), format!("{}.hb", f.jq)),
            set(format!("asl.g.{}_hb", f.q), format!("{g} + 1")),
            emit(
                TYPE_TICK,
                format!("{}!hb", f.q),
                format!("{{g: {g}, what: \"heartbeat\"}}"),
            ),
        ]
    }

    /// What a state does when entered (and when a retry re-runs it).
    fn run(&self, h: &Here<'_>, kids: &Kids) -> Result<Vec<Action>, String> {
        let io = &h.st.io;
        let f = &h.f;
        let q = &f.q;
        let raw = Self::raw(h);
        let jn = &h.st.jn;
        let (eff, params) = if h.st.jsonata {
            (
                format!("({raw}) as $in | {} as $b", Self::jn_bind(h, "$in", "")),
                jn.arguments.as_ref().map_or("$in".to_owned(), jn_value),
            )
        } else {
            (
                format!("({}) as $in", apply_path(io.input_path.as_ref(), &raw)),
                io.parameters.as_ref().map_or("$in".to_owned(), |t| {
                    template(t, "$in", &format!("{q}.Parameters"))
                }),
            )
        };
        let ok = Self::ok(h);
        Ok(match &h.st.kind {
            Kind::Pass { .. } if h.st.jsonata => {
                let body = format!(
                    "{eff} | {}",
                    jn_outasg(jn.output.as_ref(), jn.assign.as_ref(), "$in")
                );
                self.guarded(h, &body, self.finish_ok(h)?)
            }
            Kind::Pass { result } => {
                let res = match result {
                    Some(v) => format!("({v})"),
                    None => params,
                };
                let body = format!(
                    "{eff} | ({res}) as $res | ({}) as $out | {}",
                    result_path(io.result_path.as_ref(), &raw, "$res"),
                    apply_path(io.output_path.as_ref(), "$out")
                );
                self.guarded(h, &body, self.transition(h, &ok)?)
            }
            Kind::Task {
                resource,
                callback,
                timeout,
                heartbeat,
                ..
            } => {
                let task = TaskSpec {
                    resource,
                    callback: *callback,
                    timeout: timeout.as_ref(),
                    heartbeat: heartbeat.as_ref(),
                };
                self.task_run(h, &task, &eff, &params)
            }
            Kind::Choice { choices, default } => {
                let mut chain = String::new();
                for (i, c) in choices.iter().enumerate() {
                    let kw = if i == 0 { "if" } else { "elif" };
                    let _ = write!(chain, "{kw} {} then {i} ", rule_jq(&c.rule));
                }
                chain.push_str("else -1 end");
                let body = if h.st.jsonata {
                    // The matched rule's Output / Assign, else the state's.
                    let pick = |f: &dyn Fn(&crate::doc::ChoiceBranch) -> Option<&Value>,
                                state: Option<&Value>,
                                dflt: &str| {
                        let mut out = String::new();
                        for (i, c) in choices.iter().enumerate() {
                            let v = f(c).or(state).map_or_else(|| dflt.to_owned(), jn_value);
                            let _ = write!(out, "if $c == {i} then {v} el");
                        }
                        let v = state.map_or_else(|| dflt.to_owned(), jn_value);
                        let _ = write!(out, "se {v} end");
                        out
                    };
                    format!(
                        "{eff} | ({chain}) as $c | {{c: $c, out: ({}), asg: ({})}}",
                        pick(&|c| c.output.as_ref(), jn.output.as_ref(), "$in"),
                        pick(&|c| c.assign.as_ref(), jn.assign.as_ref(), "null"),
                    )
                } else {
                    format!(
                        "{eff} | {{c: ({chain}), out: ({})}}",
                        apply_path(io.output_path.as_ref(), "$in")
                    )
                };
                let assigns = jn.assign.is_some() || choices.iter().any(|c| c.assign.is_some());
                let target = |name: &str| -> Result<String, String> {
                    h.names
                        .get(name)
                        .cloned()
                        .ok_or_else(|| format!("internal: unknown target {name:?}"))
                };
                let mut branches = Vec::new();
                for (i, c) in choices.iter().enumerate() {
                    branches.push((
                        format!("{ok}.c == {i}"),
                        Self::jn_then(
                            h,
                            assigns,
                            vec![emit(TYPE_ENTER, target(&c.next)?, format!("{ok}.out"))],
                        ),
                    ));
                }
                let otherwise = match default {
                    Some(d) => Self::jn_then(
                        h,
                        assigns,
                        vec![emit(TYPE_ENTER, target(d)?, format!("{ok}.out"))],
                    ),
                    None => self.raise(
                        h,
                        "{Error: \"States.NoChoiceMatched\", Cause: \"No Choice rule matched and no Default is given\"}",
                    ),
                };
                self.guarded(h, &body, vec![choose(branches, otherwise)])
            }
            Kind::Wait(w) => {
                let not_before_now = "if . < 0 then 0 else . end";
                let delay = match w {
                    WaitFor::Seconds(s) => format!("{}", (s * 1000.0) as u64),
                    WaitFor::SecondsPath(p) => format!(
                        "({} | if type == \"number\" and . >= 0 then . * 1000 | floor else _rt(\"SecondsPath must select a non-negative number\") end)",
                        get(p, "$in")
                    ),
                    WaitFor::Timestamp(t) => format!(
                        "(({} | _tsp) * 1000 - $doc.now | floor | {not_before_now})",
                        jq_str(t)
                    ),
                    WaitFor::TimestampPath(p) => format!(
                        "(({} | _tsp) as $t | if $t == null then _rt(\"TimestampPath must select an RFC 3339 timestamp\") else ($t * 1000 - $doc.now | floor | {not_before_now}) end)",
                        get(p, "$in")
                    ),
                    WaitFor::SecondsExpr(e) => {
                        format!("({} * 1000 | floor)", jn_num(e, "Seconds"))
                    }
                    WaitFor::TimestampExpr(e) => format!(
                        "(($b | _jn({})) as $v | ($v | _tsp) as $t | if $t == null then _err(\"States.QueryEvaluationError\"; \"Timestamp must give an RFC 3339 timestamp, got \" + ($v | _show)) else ($t * 1000 - $doc.now | floor | {not_before_now}) end)",
                        jq_str(e)
                    ),
                };
                let body = format!("{eff} | {delay}");
                self.guarded(
                    h,
                    &body,
                    vec![
                        set(format!("{}.rem", f.key), ok.clone()),
                        set(f.gkey(), format!("{} + 1", f.g())),
                        emit(
                            TYPE_TICK,
                            format!("{q}!tick"),
                            format!("{{g: {}, what: \"wake\"}}", f.g()),
                        ),
                    ],
                )
            }
            Kind::Succeed if h.st.jsonata => {
                let body = format!("{eff} | {}", jn_outasg(jn.output.as_ref(), None, "$in"));
                self.guarded(h, &body, self.scope_success(&h.scope, &format!("{ok}.out")))
            }
            Kind::Succeed => {
                let body = format!("{eff} | {}", apply_path(io.output_path.as_ref(), "$in"));
                self.guarded(h, &body, self.scope_success(&h.scope, &ok))
            }
            Kind::Fail { error, cause } => {
                let src = |s: &Option<StrSrc>| match s {
                    None => "null".to_owned(),
                    Some(StrSrc::Lit(v)) => jq_str(v),
                    Some(StrSrc::Path(p)) => format!(
                        "({} | if type == \"string\" then . else tojson end)",
                        get(p, "$in")
                    ),
                    Some(StrSrc::Call(c)) => intrinsic::call_jq(c, "$in", "$ctx", q),
                    Some(StrSrc::Expr(e)) => format!(
                        "($b | _jn({}) | if type == \"string\" then . else tojson end)",
                        jq_str(e)
                    ),
                };
                let bind = if h.st.jsonata {
                    format!(" | {} as $b", Self::jn_bind(h, "$in", ""))
                } else {
                    String::new()
                };
                let body = format!(
                    "({raw}) as $in{bind} | {{Error: {}, Cause: {}}}",
                    src(error),
                    src(cause)
                );
                self.guarded(h, &body, self.scope_failure(&h.scope, &ok))
            }
            Kind::Parallel { .. } => {
                let Kids::Par { paths, starts } = kids else {
                    return Err("internal: Parallel without branches".into());
                };
                let body = format!("{eff} | {params}");
                let mut on_ok = vec![
                    set(
                        f.key.clone(),
                        format!("({} + {{arg: {ok}, res: {{}}, n: 0}}) | del(.r)", f.jq),
                    ),
                    set(f.gkey(), format!("{} + 1", f.g())),
                ];
                for (path, start) in paths.iter().zip(starts) {
                    on_ok.push(set(format!("asl.f.{path}"), "{alive: true}"));
                    on_ok.push(emit(TYPE_ENTER, start.clone(), format!("{}.arg", f.jq)));
                }
                self.guarded(h, &body, on_ok)
            }
            Kind::Map {
                items_path,
                batcher,
                max_concurrency,
                tolerated_count,
                tolerated_pct,
                ..
            } => {
                let (slots, child) = match kids {
                    Kids::Map { slots } => (slots.as_slice(), None),
                    Kids::Child { entry, selector } => (&[][..], Some((entry, selector))),
                    _ => return Err("internal: Map without slots".into()),
                };
                let num = |n: &Option<NumSrc>, dflt: &str| match n {
                    None => dflt.to_owned(),
                    Some(NumSrc::Lit(x)) => format!("{x}"),
                    Some(NumSrc::Path(p)) => format!(
                        "({} | if type == \"number\" and . >= 0 then . else _rt(\"a Map limit path must select a non-negative number\") end)",
                        get(p, "$in")
                    ),
                    Some(NumSrc::Expr(e)) => jn_num(e, "a Map limit"),
                };
                let mc = match max_concurrency {
                    Some(NumSrc::Path(p)) => format!(
                        "({} | if type == \"number\" and . >= 1 then . else 1000000000 end)",
                        get(p, "$in")
                    ),
                    Some(NumSrc::Expr(e)) => format!(
                        "({} | if . >= 1 then . else 1000000000 end)",
                        jn_num(e, "MaxConcurrency")
                    ),
                    Some(NumSrc::Lit(x)) if child.is_some() && *x >= 1.0 => format!("{x}"),
                    _ if child.is_some() => "1000000000".to_owned(),
                    _ => slots.len().to_string(),
                };
                let items = match &jn.items {
                    Some(v) if h.st.jsonata => format!(
                        "({} | if type == \"array\" then . else _err(\"States.QueryEvaluationError\"; \"Items must give an array, got \" + _show) end)",
                        jn_value(v)
                    ),
                    _ => apply_path(Some(items_path), "$in"),
                };
                let inputs = match child {
                    // Each item's input, with `$$.Map.Item` / its JSONata
                    // `$states.context` for the ItemSelector.
                    Some((_, sel)) => {
                        let per_item = format!(
                            "[range(0; $items | length) as $i | ($ctx + {{Map: {{Item: {{Index: $i, Value: $items[$i]}}}}}}) as $ctx | {}]",
                            sel.as_deref().unwrap_or("$items[$i]")
                        );
                        match batcher {
                            None => format!(", inputs: {per_item}"),
                            Some(b) => format!(", inputs: {}", batches(b, &per_item, q)),
                        }
                    }
                    None => String::new(),
                };
                let body = format!(
                    "{eff} | ({items} | if type == \"array\" then . else _rt(\"ItemsPath must select an array\") end) as $items | {{eff: $in, items: $items{inputs}, mc: {mc}, tc: {}, tp: {}}}",
                    num(tolerated_count, "null"),
                    num(tolerated_pct, "null"),
                );
                let fj = &f.jq;
                // A distributed Map counts its children (batches).
                let counted = if child.is_some() { "inputs" } else { "items" };
                let mut on_ok = vec![
                    set(
                        f.key.clone(),
                        format!(
                            "({fj} + {ok} + {{n: ({ok}.{counted} | length), next: 0, done: 0, failed: 0, res: {{}}, active: true}}) | del(.r)"
                        ),
                    ),
                    set(f.gkey(), format!("{} + 1", f.g())),
                    choose(
                        vec![(
                            format!("{fj}.n == 0"),
                            vec![emit(
                                TYPE_DONE,
                                format!("{q}!done"),
                                format!("{{g: {}}}", f.g()),
                            )],
                        )],
                        Vec::new(),
                    ),
                ];
                for (j, slot) in slots.iter().enumerate() {
                    on_ok.push(choose(
                        vec![(
                            format!("{fj}.next < {fj}.n and {j} < {fj}.mc"),
                            self.slot_start(slot),
                        )],
                        Vec::new(),
                    ));
                }
                if let Some((entry, _)) = child {
                    on_ok.extend(Self::spawn_more(h, entry, &format!("{fj}.mc")));
                }
                self.guarded(h, &body, on_ok)
            }
        })
    }

    /// A distributed Map starts up to `count` more items as child
    /// executions. Their completions come back on a subject that rotates
    /// with the Map's generation (see GENS), so that children of an
    /// abandoned run (a retried or failed Map) are not counted.
    fn spawn_more(h: &Here<'_>, entry: &str, count: &str) -> Vec<Action> {
        let f = &h.f;
        let fj = &f.jq;
        let q = &f.q;
        let upto = format!("([{fj}.n, {fj}.next + {count}] | min)");
        let spawn = |k: u64| Action::Spawn {
            foreach: format!("[range({fj}.next; {upto}) as $i | {{i: $i, v: {fj}.inputs[$i]}}]"),
            entry: entry.to_owned(),
            input: Some(".item.v".into()),
            index: Some(".item.i".into()),
            step: Some(format!("{q}!kid{k}")),
        };
        vec![
            choose(
                (0..GENS)
                    .map(|k| (format!("{} % {GENS} == {k}", f.g()), vec![spawn(k)]))
                    .collect(),
                Vec::new(),
            ),
            set(format!("{}.next", f.key), upto),
        ]
    }

    /// A distributed Map's trigger for its children's completions: collect
    /// the result (or, with a tolerance, the error) by item index, start the
    /// next item, and finish when all are done.
    fn child_results(&mut self, h: &Here<'_>, entry: &str, tolerant: bool) -> Result<(), String> {
        let f = &h.f;
        let fj = &f.jq;
        let q = &f.q;
        let idx = "(.event.trigflowindex | tostring)";
        let more = vec![
            choose(
                vec![(
                    format!("{fj}.next < {fj}.n"),
                    Self::spawn_more(h, entry, "1"),
                )],
                Vec::new(),
            ),
            choose(
                vec![(
                    format!("{fj}.done == {fj}.n"),
                    vec![
                        set(format!("{}.active", f.key), "false"),
                        emit(TYPE_DONE, format!("{q}!done"), format!("{{g: {}}}", f.g())),
                    ],
                )],
                Vec::new(),
            ),
        ];
        let mut ok = vec![
            set(
                format!("{}.res", f.key),
                format!("{fj}.res + {{{idx}: .event.data}}"),
            ),
            set(format!("{}.done", f.key), format!("{fj}.done + 1")),
        ];
        ok.extend(more.clone());
        let err = "{Error: (.event.data.error | if type == \"string\" and . != \"\" then . else \"States.TaskFailed\" end), Cause: (.event.data.cause | if type == \"string\" then . elif . == null then \"\" else tojson end)}";
        let failed = if tolerant {
            let exceeded = format!(
                "({fj}.tc != null and {fj}.failed > {fj}.tc) or ({fj}.tp != null and ({fj}.failed * 100 / {fj}.n) > {fj}.tp)"
            );
            let mut acts = vec![
                set(format!("{}.failed", f.key), format!("{fj}.failed + 1")),
                set(
                    format!("{}.res", f.key),
                    format!("{fj}.res + {{{idx}: {err}}}"),
                ),
                set(format!("{}.done", f.key), format!("{fj}.done + 1")),
            ];
            let mut stop = vec![set(format!("{}.active", f.key), "false")];
            stop.extend(self.raise(
                h,
                &format!(
                    "{{Error: \"States.ExceedToleratedFailureThreshold\", Cause: (\"The Map failed \" + ({fj}.failed | tostring) + \" of \" + ({fj}.n | tostring) + \" iterations, more than it tolerates\")}}"
                ),
            ));
            acts.push(choose(vec![(exceeded, stop)], more));
            acts
        } else {
            let mut acts = vec![set(format!("{}.active", f.key), "false")];
            acts.extend(self.raise(h, err));
            acts
        };
        self.triggers.push(trigger(
            format!("{q}!kid"),
            vec![format!("{q}!kid*")],
            vec![TYPE_CHILD_SUCCEEDED, TYPE_CHILD_FAILED],
            self.cond(
                h,
                Some(format!(
                    "{fj}.active == true and .event.subject == (\"{q}!kid\" + ({} % {GENS} | tostring))",
                    f.g()
                )),
            ),
            vec![choose(
                vec![(format!(".event.type == {}", jq_str(TYPE_CHILD_FAILED)), failed)],
                ok,
            )],
        )?);
        Ok(())
    }

    /// Routes an error raised in the state: the first matching retrier
    /// (while it has attempts left), else the first matching catcher, else
    /// up to the enclosing scope.
    fn handler(&self, h: &Here<'_>) -> Result<Vec<Action>, String> {
        let (retry, catch) = h.st.retry_catch();
        let cop = self.catch_or_propagate(h, catch)?;
        if retry.is_empty() {
            return Ok(cop);
        }
        let branches = retry
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let cnt = format!("({}.cnt.r{i} // 0)", h.f.jq);
                (
                    matches(&r.errors),
                    vec![choose(
                        vec![(
                            format!("{cnt} < {}", r.max_attempts),
                            self.retry_actions(h, i, r),
                        )],
                        cop.clone(),
                    )],
                )
            })
            .collect();
        Ok(vec![choose(branches, cop)])
    }

    fn retry_actions(&self, h: &Here<'_>, i: usize, r: &Retrier) -> Vec<Action> {
        let f = &h.f;
        let q = &f.q;
        let c = format!("($doc{}.cnt.r{i} // 0)", f.jq);
        let mut d = format!("({} * pow({}; {c}))", r.interval, r.backoff);
        if let Some(m) = r.max_delay {
            d = format!("([{d}, {m}] | min)");
        }
        if r.jitter {
            // FULL jitter: a uniform fraction of the delay, derived from the
            // event id so that replaying the event gives the same delay.
            d = format!(
                "({d} * (_h($doc.event.id + {}; 31) % 1000) / 1000)",
                jq_str(q)
            );
        }
        vec![
            set(
                format!("{}.rem", f.key),
                prog_plain(&format!("{d} * 1000 | floor")),
            ),
            set(
                format!("{}.cnt.r{i}", f.key),
                format!("({}.cnt.r{i} // 0) + 1", f.jq),
            ),
            set(format!("{}.rc", f.key), format!("({}.rc // 0) + 1", f.jq)),
            set(f.gkey(), format!("{} + 1", f.g())),
            emit(
                TYPE_TICK,
                format!("{q}!tick"),
                format!("{{g: {}, what: \"retry\"}}", f.g()),
            ),
        ]
    }

    fn catch_or_propagate(&self, h: &Here<'_>, catch: &[Catcher]) -> Result<Vec<Action>, String> {
        let f = &h.f;
        let mut branches = Vec::new();
        for c in catch {
            let next = h
                .names
                .get(&c.next)
                .cloned()
                .ok_or_else(|| format!("internal: unknown Catch Next {:?}", c.next))?;
            let (prog, enter) = if h.st.jsonata {
                // Catcher Output (default: the error output) and Assign,
                // with `$states.errorOutput`.
                let body = format!(
                    "({}) as $in | {} as $b | {}",
                    Self::raw(h),
                    Self::jn_bind(h, "$in", ", errorOutput: $doc.event.data"),
                    jn_outasg(c.output.as_ref(), c.assign.as_ref(), "$doc.event.data")
                );
                (
                    self.prog(h, &format!("try {{ok: ({body})}} catch {{err: _norm}}")),
                    Self::jn_then(
                        h,
                        c.assign.is_some(),
                        vec![emit(TYPE_ENTER, next, format!("{}.r.ok.out", f.jq))],
                    ),
                )
            } else {
                let body = result_path(Some(&c.result_path), &Self::raw(h), "$doc.event.data");
                (
                    prog_plain(&format!("try {{ok: ({body})}} catch {{err: _norm}}")),
                    vec![emit(TYPE_ENTER, next, format!("{}.r.ok", f.jq))],
                )
            };
            branches.push((
                matches(&c.errors),
                vec![
                    set(format!("{}.r", f.key), prog),
                    choose(
                        vec![(
                            format!("{}.r | has(\"err\")", f.jq),
                            self.scope_failure(&h.scope, &format!("{}.r.err", f.jq)),
                        )],
                        enter,
                    ),
                ],
            ));
        }
        Ok(vec![choose(
            branches,
            self.scope_failure(&h.scope, ".event.data"),
        )])
    }

    fn state(&mut self, h: &Here<'_>) -> Result<(), String> {
        let f = h.f.clone();
        let q = f.q.clone();
        let enter = [set(
            f.key.clone(),
            prog_plain("{raw: $doc.event.data, entered: _ts($doc.now), rc: 0, cnt: {}}"),
        )];
        let kids = self.children(h)?;
        let run = self.run(h, &kids)?;
        let mut actions = enter.to_vec();
        actions.extend(run.clone());
        self.triggers.push(trigger(
            q.clone(),
            vec![q.clone()],
            vec![TYPE_ENTER],
            self.cond(h, None),
            actions,
        )?);
        // Errors raised in this state: Retry, Catch, or up to the scope.
        let handler = self.handler(h)?;
        self.triggers.push(trigger(
            format!("{q}!err"),
            vec![format!("{q}!err")],
            vec![TYPE_ERROR],
            self.cond(h, None),
            handler,
        )?);
        // The timer chain, for states that wait.
        let (retry, _) = h.st.retry_catch();
        let mut dispatch = Vec::new();
        if !retry.is_empty() {
            dispatch.push(("\"retry\"", run));
        }
        match &h.st.kind {
            Kind::Wait(_) => {
                let body = if h.st.jsonata {
                    format!(
                        "({}) as $in | {} as $b | {}",
                        Self::raw(h),
                        Self::jn_bind(h, "$in", ""),
                        jn_outasg(h.st.jn.output.as_ref(), h.st.jn.assign.as_ref(), "$in")
                    )
                } else {
                    format!(
                        "({}) as $in | {}",
                        apply_path(h.st.io.input_path.as_ref(), &Self::raw(h)),
                        apply_path(h.st.io.output_path.as_ref(), "$in")
                    )
                };
                dispatch.push(("\"wake\"", self.guarded(h, &body, self.finish_ok(h)?)));
            }
            Kind::Task {
                timeout: Some(_), ..
            } => {
                dispatch.push((
                    "\"timeout\"",
                    vec![choose(
                        vec![(
                            format!("{}.active == true", f.jq),
                            vec![
                                set(format!("{}.active", f.key), "false"),
                                set(f.gkey(), format!("{} + 1", f.g())),
                            ]
                            .into_iter()
                            .chain(self.raise(
                                h,
                                "{Error: \"States.Timeout\", Cause: \"The task exceeded its TimeoutSeconds\"}",
                            ))
                            .collect(),
                        )],
                        Vec::new(),
                    )],
                ));
            }
            _ => {}
        }
        if !dispatch.is_empty() {
            let bits = timer_bits(
                &f,
                "rem",
                &format!("{q}!tick"),
                &format!("{{g: {}, what: .event.data.what}}", f.g()),
            );
            let dispatch = choose(
                dispatch
                    .into_iter()
                    .map(|(what, acts)| (format!(".event.data.what == {what}"), acts))
                    .collect(),
                Vec::new(),
            );
            self.triggers.push(trigger(
                format!("{q}!tick"),
                vec![format!("{q}!tick")],
                vec![TYPE_TICK],
                self.cond(h, Some(format!(".event.data.g == {}", f.g()))),
                vec![choose(bits, vec![dispatch])],
            )?);
        }
        self.extra_triggers(h)
    }

    /// Triggers beyond entry, error and timer: Task results, Parallel and
    /// Map completion, and the children's own triggers.
    fn extra_triggers(&mut self, h: &Here<'_>) -> Result<(), String> {
        let f = &h.f;
        let q = &f.q;
        match &h.st.kind {
            Kind::Task {
                resource,
                callback,
                heartbeat,
                ..
            } => {
                let res = if resource.starts_with("arn:aws:states:::lambda:invoke") {
                    "{\"ExecutedVersion\": \"$LATEST\", \"Payload\": $doc.event.data, \"StatusCode\": 200}"
                } else {
                    "$doc.event.data"
                };
                let task_error = "{Error: (.event.data.error | if type == \"string\" and . != \"\" then . else \"States.TaskFailed\" end), Cause: (.event.data.cause // \"\")}";
                // A callback task's function only hands the token on: its
                // answer does not end the task, its failure does.
                let ok = if *callback {
                    Vec::new()
                } else {
                    self.guarded(h, &self.result_flow(h, res), self.finish_ok(h)?)
                };
                let end = vec![
                    set(format!("{}.active", f.key), "false"),
                    set(f.gkey(), format!("{} + 1", f.g())),
                ];
                let mut actions = if *callback { Vec::new() } else { end.clone() };
                let mut failed = if *callback { end.clone() } else { Vec::new() };
                failed.extend(self.raise(h, task_error));
                actions.push(choose(
                    vec![(format!(".event.type == {}", jq_str(TYPE_FAILED)), failed)],
                    ok,
                ));
                if *callback {
                    self.callback_triggers(
                        h,
                        heartbeat.is_some(),
                        &self.result_flow(h, "$doc.event.data"),
                        task_error,
                    )?;
                }
                self.triggers.push(trigger(
                    format!("{q}!res"),
                    vec![format!("{q}/r*")],
                    vec![TYPE_SUCCEEDED, TYPE_FAILED],
                    self.cond(
                        h,
                        Some(format!(
                            "{}.active == true and .event.subject == (\"{q}/r\" + ({} % {GENS} | tostring))",
                            f.jq,
                            f.g()
                        )),
                    ),
                    actions,
                )?);
            }
            Kind::Parallel { branches, .. } => {
                let list: Vec<String> = (0..branches.len())
                    .map(|i| format!("$doc{}.res.b{i}", f.jq))
                    .collect();
                let body = self.result_flow(h, &format!("[{}]", list.join(", ")));
                let acts = self.guarded(h, &body, self.finish_ok(h)?);
                self.triggers.push(trigger(
                    format!("{q}!done"),
                    vec![format!("{q}!done")],
                    vec![TYPE_DONE],
                    self.cond(h, Some(format!(".event.data.g == {}", f.g()))),
                    acts,
                )?);
            }
            Kind::Map {
                distributed,
                tolerated_count,
                tolerated_pct,
                ..
            } => {
                if *distributed {
                    let entry = format!("{q}!child");
                    let tolerant = tolerated_count.is_some() || tolerated_pct.is_some();
                    self.child_results(h, &entry, tolerant)?;
                }
                let body = self.result_flow(
                    h,
                    &format!(
                        "[range(0; $doc{f}.n) as $i | $doc{f}.res[$i | tostring]]",
                        f = f.jq
                    ),
                );
                let acts = self.guarded(h, &body, self.finish_ok(h)?);
                self.triggers.push(trigger(
                    format!("{q}!done"),
                    vec![format!("{q}!done")],
                    vec![TYPE_DONE],
                    self.cond(h, Some(format!(".event.data.g == {}", f.g()))),
                    acts,
                )?);
            }
            _ => {}
        }
        Ok(())
    }
}

impl Compiler<'_> {
    /// A `.waitForTaskToken` task's triggers: the answer sent with its
    /// token (success, failure or heartbeat), and the heartbeat timer.
    fn callback_triggers(
        &mut self,
        h: &Here<'_>,
        heartbeat: bool,
        result_flow: &str,
        task_error: &str,
    ) -> Result<(), String> {
        let f = &h.f;
        let q = &f.q;
        // The result flow runs before the attempt ends, so that a
        // ResultSelector sees the same `$$.Task.Token` as Parameters did.
        let mut success = self.guarded(h, result_flow, self.finish_ok(h)?);
        success.push(set(f.gkey(), format!("{} + 1", f.g())));
        let failure: Vec<Action> = vec![set(f.gkey(), format!("{} + 1", f.g()))]
            .into_iter()
            .chain(self.raise(h, task_error))
            .collect();
        let beat = if heartbeat {
            self.heartbeat_restart(h)
        } else {
            Vec::new()
        };
        let is = |ty: &str| format!(".event.type == {}", jq_str(ty));
        let ending = |acts: Vec<Action>| -> Vec<Action> {
            let mut v = vec![set(format!("{}.active", f.key), "false")];
            v.extend(acts);
            v
        };
        let actions = vec![choose(
            vec![
                (is(TYPE_TASK_SUCCESS), ending(success)),
                (is(TYPE_TASK_FAILURE), ending(failure)),
                (is(TYPE_TASK_HEARTBEAT), beat),
            ],
            Vec::new(),
        )];
        let current = format!(
            "(.event.subject | split(\"{TOKEN_EXECUTION_SEP}\") | .[0]) == (\"{q}!tok\" + ({} | tostring))",
            f.g()
        );
        self.triggers.push(trigger(
            format!("{q}!tok"),
            vec![format!("{q}!tok*")],
            vec![TYPE_TASK_SUCCESS, TYPE_TASK_FAILURE, TYPE_TASK_HEARTBEAT],
            self.cond(h, Some(format!("{}.active == true and {current}", f.jq))),
            actions,
        )?);
        if heartbeat {
            let g = hb_gen(f);
            let bits = timer_bits(
                f,
                "hrem",
                &format!("{q}!hb"),
                &format!("{{g: {g}, what: \"heartbeat\"}}"),
            );
            let expired: Vec<Action> = vec![
                set(format!("{}.active", f.key), "false"),
                set(f.gkey(), format!("{} + 1", f.g())),
            ]
            .into_iter()
            .chain(self.raise(
                h,
                "{Error: \"States.HeartbeatTimeout\", Cause: \"The task sent no heartbeat within its HeartbeatSeconds\"}",
            ))
            .collect();
            self.triggers.push(trigger(
                format!("{q}!hb"),
                vec![format!("{q}!hb")],
                vec![TYPE_TICK],
                self.cond(
                    h,
                    Some(format!(".event.data.g == {g} and {}.active == true", f.jq)),
                ),
                vec![choose(bits, expired)],
            )?);
        }
        Ok(())
    }
}

/// What a Task state's run needs from its definition.
struct TaskSpec<'a> {
    resource: &'a str,
    callback: bool,
    timeout: Option<&'a NumSrc>,
    heartbeat: Option<&'a NumSrc>,
}

/// jq for a state's heartbeat generation.
fn hb_gen(f: &Frame) -> String {
    format!("(.context.asl.g.{}_hb // 0)", f.q)
}

/// The power-of-two timer chain over a frame's countdown `rem` (a context
/// key below the frame): while time remains, the branch that takes the
/// largest bit and schedules the next tick on `subject` with `data`. When
/// no branch holds, the countdown is over.
fn timer_bits(f: &Frame, rem: &str, subject: &str, data: &str) -> Vec<(String, Vec<Action>)> {
    (0..=MAX_BIT)
        .rev()
        .map(|k| {
            let ms = 1u64 << k;
            (
                format!("{}.{rem} >= {ms}", f.jq),
                vec![
                    set(format!("{}.{rem}", f.key), format!("{}.{rem} - {ms}", f.jq)),
                    Action::Timer {
                        delay_ms: ms,
                        event: EmitSpec {
                            ty: TYPE_TICK.into(),
                            subject: Some(subject.to_owned()),
                            data: Some(data.to_owned()),
                        },
                    },
                ],
            )
        })
        .collect()
}

fn slot_no(scope: &Scope) -> usize {
    match &scope.end {
        End::Slot { slot, .. } => *slot,
        _ => 0,
    }
}
