//! Functions built into the agent, referenced as `builtin:NAME`: small
//! data steps that need no program on the node (joins that add up a map's
//! results, tests, health checks).
//!
//! | reference | input | output |
//! |---|---|---|
//! | `builtin:echo` | anything | the input |
//! | `builtin:sum` | an array of numbers | their sum (exact for integers) |
//! | `builtin:count` | an array | its length |
//! | `builtin:fail` | anything | a `BuiltinFail` error quoting the input |

use std::sync::Arc;

use serde_json::Value;
use trigflow_core::state::FunctionError;

use crate::agent::Handler;

/// The names `builtin:NAME` may use.
pub const NAMES: &[&str] = &["echo", "sum", "count", "fail"];

fn ferr(error: &str, cause: String) -> FunctionError {
    FunctionError {
        error: error.to_owned(),
        cause,
    }
}

/// Runs built-in `name` on `input`; `None` if there is no such built-in.
pub fn call(name: &str, input: Value) -> Option<Result<Value, FunctionError>> {
    Some(match name {
        "echo" => Ok(input),
        "sum" => sum(&input),
        "count" => match input.as_array() {
            Some(a) => Ok(Value::from(a.len())),
            None => Err(ferr(
                "BadInput",
                format!("builtin:count wants an array, got {input}"),
            )),
        },
        "fail" => Err(ferr(
            "BuiltinFail",
            format!("builtin:fail called with {input}"),
        )),
        _ => return None,
    })
}

fn sum(input: &Value) -> Result<Value, FunctionError> {
    let items = input.as_array().ok_or_else(|| {
        ferr(
            "BadInput",
            format!("builtin:sum wants an array of numbers, got {input}"),
        )
    })?;
    let mut int: Option<i128> = Some(0);
    let mut float = 0.0_f64;
    for (i, item) in items.iter().enumerate() {
        let n = item.as_number().ok_or_else(|| {
            ferr(
                "BadInput",
                format!("builtin:sum: item {i} is not a number: {item}"),
            )
        })?;
        // Integers add exactly; the first non-integer switches to floats.
        int = match (int, n.as_i64(), n.as_u64()) {
            (Some(acc), Some(x), _) => acc.checked_add(i128::from(x)),
            (Some(acc), None, Some(x)) => acc.checked_add(i128::from(x)),
            _ => None,
        };
        float += n.as_f64().unwrap_or(0.0);
    }
    Ok(match int {
        Some(v) => i64::try_from(v)
            .map(Value::from)
            .or_else(|_| u64::try_from(v).map(Value::from))
            .unwrap_or_else(|_| Value::from(float)),
        None => Value::from(float),
    })
}

/// The handler of built-in `name`, for [`crate::Agent::serve_handler`].
pub fn handler(name: &str) -> Option<Handler> {
    if !NAMES.contains(&name) {
        return None;
    }
    let name = name.to_owned();
    Some(Arc::new(move |inv| {
        let result = call(&name, inv.input).unwrap_or_else(|| {
            Err(ferr(
                "UnknownBuiltin",
                format!("no builtin:{name} (known: {})", NAMES.join(", ")),
            ))
        });
        Box::pin(std::future::ready(result))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builtins_compute() {
        assert_eq!(
            call("echo", json!({"a": 1})).map(Result::ok),
            Some(Some(json!({"a": 1})))
        );
        assert_eq!(
            call("sum", json!([1, 2, 3])).map(Result::ok),
            Some(Some(json!(6)))
        );
        assert_eq!(
            call("sum", json!([1, 2.5])).map(Result::ok),
            Some(Some(json!(3.5)))
        );
        assert_eq!(call("sum", json!([])).map(Result::ok), Some(Some(json!(0))));
        assert_eq!(
            call("count", json!([1, 2])).map(Result::ok),
            Some(Some(json!(2)))
        );
        let err = call("sum", json!([1, "x"]))
            .and_then(Result::err)
            .map(|e| e.error);
        assert_eq!(err.as_deref(), Some("BadInput"));
        let err = call("fail", json!(1))
            .and_then(Result::err)
            .map(|e| e.error);
        assert_eq!(err.as_deref(), Some("BuiltinFail"));
        assert!(call("nope", json!(1)).is_none());
        assert!(handler("nope").is_none());
        assert!(NAMES.iter().all(|n| handler(n).is_some()));
    }
}
