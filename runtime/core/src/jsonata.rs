//! JSONata evaluation for jq expressions (cargo feature `jsonata`).
//!
//! Registered as the jq function `jsonata($expression)`: its input is an
//! object whose keys become JSONata variables (`{"states": ..}` binds
//! `$states`), and its output is the expression's value. Front-ends whose
//! source language is JSONata (ASL's `QueryLanguage: JSONata`) generate jq
//! that builds the bindings and calls it, so the engine stays a jq engine.
//!
//! Backed by `jsonata-rs`, with the functions Step Functions adds to
//! JSONata: `$partition(array, size)`, `$range(start, end, step)`,
//! `$hash(string, algorithm)` and `$parse(json_string)`. Numbers are
//! doubles; objects come out with their keys sorted (the library keeps no
//! key order).

use bumpalo::Bump;
use jsonata_rs::{ArrayFlags, Error as JError, FunctionContext, JsonAta, Value as JValue};
use serde_json::{Map, Number, Value};

/// Deepest recursion an expression may reach, so that a runaway recursive
/// lambda fails instead of overflowing the stack.
const MAX_DEPTH: usize = 400;
/// Time limit of one evaluation, in milliseconds.
const TIME_LIMIT_MS: usize = 10_000;

/// Evaluates `expr` with each key of `bindings` (an object) bound as a
/// variable. An undefined result is `null`. Errors are JSONata's messages
/// (code and position).
pub fn evaluate(expr: &str, bindings: &Value) -> Result<Value, String> {
    let arena = Bump::new();
    let jsonata = JsonAta::new(expr, &arena).map_err(|e| e.to_string())?;
    if let Value::Object(vars) = bindings {
        for (k, v) in vars {
            jsonata.assign_var(k, from_json(&arena, v));
        }
    }
    jsonata.register_function("partition", 2, fn_partition);
    jsonata.register_function("range", 3, fn_range);
    jsonata.register_function("hash", 2, fn_hash);
    jsonata.register_function("parse", 1, fn_parse);
    let out = jsonata
        .evaluate_timeboxed(None, Some(MAX_DEPTH), Some(TIME_LIMIT_MS))
        .map_err(|e| e.to_string())?;
    Ok(to_json(out))
}

/// Checks that `expr` parses.
pub fn check(expr: &str) -> Result<(), String> {
    let arena = Bump::new();
    JsonAta::new(expr, &arena)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn from_json<'a>(arena: &'a Bump, v: &Value) -> &'a JValue<'a> {
    match v {
        Value::Null => JValue::null(arena),
        Value::Bool(b) => JValue::bool(*b),
        Value::Number(n) => JValue::number(arena, n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => JValue::string(arena, s),
        Value::Array(items) => {
            let out = JValue::array_with_capacity(arena, items.len(), ArrayFlags::empty());
            for item in items {
                out.push(from_json(arena, item));
            }
            out
        }
        Value::Object(m) => {
            let out = JValue::object_with_capacity(arena, m.len());
            for (k, item) in m {
                out.insert(k, from_json(arena, item));
            }
            out
        }
    }
}

fn number(x: f64) -> Value {
    // Integral doubles print as integers (JSONata has one number type; JSON
    // readers downstream expect `3`, not `3.0`).
    if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
        Value::from(x as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn to_json<'a>(v: &'a JValue<'a>) -> Value {
    match v {
        JValue::Undefined | JValue::Null => Value::Null,
        JValue::Number(x) => number(*x),
        JValue::Bool(b) => Value::Bool(*b),
        JValue::String(s) => Value::String(s.to_string()),
        JValue::Array(..) | JValue::Range(..) => Value::Array(
            v.members()
                .filter(|m| !m.is_undefined())
                .map(to_json)
                .collect(),
        ),
        JValue::Object(m) => {
            let mut entries: Vec<(String, Value)> = m
                .iter()
                .filter(|(_, item)| !item.is_undefined())
                .map(|(k, item)| (k.to_string(), to_json(item)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect::<Map<_, _>>())
        }
        JValue::Regex(_)
        | JValue::Lambda { .. }
        | JValue::NativeFn { .. }
        | JValue::Transformer { .. } => Value::Null,
    }
}

fn fail<'a>(ctx: &FunctionContext<'a, '_>, msg: String) -> jsonata_rs::Result<&'a JValue<'a>> {
    Err(JError::D3137Error(format!("${}: {msg}", ctx.name)))
}

fn arg<'a>(args: &[&'a JValue<'a>], i: usize) -> &'a JValue<'a> {
    args.get(i).copied().unwrap_or_else(JValue::undefined)
}

fn int_arg<'a>(
    ctx: &FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
    i: usize,
) -> Result<i64, String> {
    let v = arg(args, i);
    if v.is_number() && v.as_f64().fract() == 0.0 {
        Ok(v.as_f64() as i64)
    } else {
        Err(format!(
            "argument {} of ${} must be an integer",
            i + 1,
            ctx.name
        ))
    }
}

/// `$partition(array, size)`: the array in chunks of `size`.
fn fn_partition<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let list = arg(args, 0);
    if !list.is_array() {
        return fail(&ctx, "the first argument must be an array".into());
    }
    let size = match int_arg(&ctx, args, 1) {
        Ok(n) if n > 0 => n as usize,
        Ok(_) => return fail(&ctx, "the chunk size must be positive".into()),
        Err(e) => return fail(&ctx, e),
    };
    let items: Vec<&'a JValue<'a>> = list.members().collect();
    let out = JValue::array(ctx.arena, ArrayFlags::empty());
    for chunk in items.chunks(size) {
        let part = JValue::array_with_capacity(ctx.arena, chunk.len(), ArrayFlags::empty());
        for item in chunk {
            part.push(item);
        }
        out.push(part);
    }
    Ok(out)
}

/// `$range(start, end, step)`: integers from `start` to `end` inclusive.
fn fn_range<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let (start, end, step) = match (
        int_arg(&ctx, args, 0),
        int_arg(&ctx, args, 1),
        int_arg(&ctx, args, 2),
    ) {
        (Ok(a), Ok(b), Ok(s)) => (a, b, s),
        (Err(e), ..) | (_, Err(e), _) | (.., Err(e)) => return fail(&ctx, e),
    };
    if step == 0 {
        return fail(&ctx, "the step must not be 0".into());
    }
    if (end - start) / step >= 1000 {
        return fail(&ctx, "more than 1000 items".into());
    }
    let out = JValue::array(ctx.arena, ArrayFlags::empty());
    let mut i = start;
    while (step > 0 && i <= end) || (step < 0 && i >= end) {
        out.push(JValue::number(ctx.arena, i as f64));
        i += step;
    }
    Ok(out)
}

/// `$hash(string, algorithm)`: lowercase hex digest (see `hash` in jq).
fn fn_hash<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let (data, alg) = (arg(args, 0), arg(args, 1));
    if !data.is_string() || !alg.is_string() {
        return fail(&ctx, "both arguments must be strings".into());
    }
    match crate::expr::digest_hex(data.as_str().as_bytes(), &alg.as_str()) {
        Some(hex) => Ok(JValue::string(ctx.arena, &hex)),
        None => fail(
            &ctx,
            format!(
                "unknown algorithm {:?}; expected MD5, SHA-1, SHA-256, SHA-384 or SHA-512",
                alg.as_str()
            ),
        ),
    }
}

/// `$parse(string)`: the JSON value a string holds.
fn fn_parse<'a>(
    ctx: FunctionContext<'a, '_>,
    args: &[&'a JValue<'a>],
) -> jsonata_rs::Result<&'a JValue<'a>> {
    let s = arg(args, 0);
    if !s.is_string() {
        return fail(&ctx, "the argument must be a string".into());
    }
    match serde_json::from_str::<Value>(&s.as_str()) {
        Ok(v) => Ok(from_json(ctx.arena, &v)),
        Err(e) => fail(&ctx, format!("not JSON: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_vars(expr: &str, vars: &[(&str, Value)]) -> Result<Value, String> {
        let obj: Map<String, Value> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        evaluate(expr, &Value::Object(obj))
    }

    #[test]
    fn evaluates_with_bound_variables() {
        let states = json!({"input": {"items": [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}]}});
        let got = eval_vars(
            "$sum($states.input.items.qty) & ':' & $count($states.input.items[qty > 1])",
            &[("states", states)],
        )
        .expect("eval");
        assert_eq!(got, json!("3:1"));
        let got = eval_vars("{'x': $x * 2, 'y': [1..3]}", &[("x", json!(21))]).expect("eval");
        assert_eq!(got, json!({"x": 42, "y": [1, 2, 3]}));
    }

    #[test]
    fn step_functions_extras() {
        assert_eq!(
            eval_vars("$partition([1,2,3,4,5], 2)", &[]).expect("eval"),
            json!([[1, 2], [3, 4], [5]])
        );
        assert_eq!(
            eval_vars("$range(0, 10, 5)", &[]).expect("eval"),
            json!([0, 5, 10])
        );
        assert_eq!(
            eval_vars("$hash('abc', 'MD5')", &[]).expect("eval"),
            json!("900150983cd24fb0d6963f7d28e17f72")
        );
        assert_eq!(
            eval_vars("$parse('{\"a\": [1]}').a[0]", &[]).expect("eval"),
            json!(1)
        );
        assert!(eval_vars("$range(0, 10, 0)", &[]).is_err());
        assert!(eval_vars("$hash('abc', 'SHA-3')", &[]).is_err());
    }

    #[test]
    fn gaps_documented_in_the_asl_readme() {
        // Functions jsonata-rs 0.3.4 lacks, and $random(seed): if one of
        // these starts to work, update runtime/asl/README.md.
        for missing in [
            "$average([1, 2])",
            "$type(1)",
            "$formatNumber(1, '#')",
            "$parseInteger('1', '#')",
            "$random(7)",
        ] {
            assert!(eval_vars(missing, &[]).is_err(), "{missing} works now");
        }
        // A variable named like a built-in function reads as the function.
        assert_eq!(
            eval_vars("$count", &[("count", json!(3))]).expect("eval"),
            Value::Null
        );
        assert!(eval_vars("$uuid()", &[]).expect("uuid").is_string());
    }

    #[test]
    fn errors_and_undefined() {
        assert!(check("$states.input.(").is_err());
        assert_eq!(eval_vars("$nothing.here", &[]).expect("eval"), Value::Null);
        assert!(eval_vars("$error('boom')", &[]).is_err());
    }
}
