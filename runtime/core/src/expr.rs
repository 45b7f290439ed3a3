//! jq expressions, run by jaq.
//!
//! Compiled filters are cached per thread by source text: definitions are
//! compiled once when first used, and evaluation allocates only the values.
//!
//! Besides jq's standard library, expressions have `hash($algorithm)`: the
//! lowercase hex digest of the input string's UTF-8 bytes, for `$algorithm`
//! one of `MD5`, `SHA-1`, `SHA-256`, `SHA-384` or `SHA-512` (jq has no
//! hash functions; front-ends such as ASL's `States.Hash` need them).
//! With the cargo feature `jsonata` they also have `jsonata($expression)`,
//! which evaluates a JSONata expression with the input object's keys bound
//! as variables (see the module `crate::jsonata`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

type Filter = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

/// An expression could not be compiled or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// The text is not valid jq.
    #[error("bad jq expression {expr:?}: {message}")]
    Syntax {
        /// The expression.
        expr: String,
        /// What the parser expected, and where (byte offset).
        message: String,
    },
    /// Running the expression raised an error.
    #[error("jq expression {expr:?} failed: {message}")]
    Runtime {
        /// The expression.
        expr: String,
        /// jq's error.
        message: String,
    },
    /// The expression produced no value.
    #[error("jq expression {expr:?} produced no value")]
    Empty {
        /// The expression.
        expr: String,
    },
}

thread_local! {
    static CACHE: RefCell<HashMap<String, Rc<Filter>>> = RefCell::new(HashMap::new());
}

fn offset_in(code: &str, part: &str) -> usize {
    // `part` is a slice of `code` handed back by the lexer or parser; its
    // address tells where in the text the problem is.
    (part.as_ptr() as usize)
        .saturating_sub(code.as_ptr() as usize)
        .min(code.len())
}

fn compile(code: &str) -> Result<Filter, ExprError> {
    let syntax = |message: String| ExprError::Syntax {
        expr: code.to_owned(),
        message,
    };
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs())
        .chain(trigflow_funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(&arena, File { code, path: () })
        .map_err(|errs| {
            let mut msgs = Vec::new();
            for (_, err) in errs {
                match err {
                    jaq_core::load::Error::Io(e) => {
                        msgs.extend(e.into_iter().map(|(p, m)| format!("{p}: {m}")))
                    }
                    jaq_core::load::Error::Lex(e) => msgs.extend(e.into_iter().map(|(exp, at)| {
                        format!(
                            "expected {} at offset {}",
                            exp.as_str(),
                            offset_in(code, at)
                        )
                    })),
                    jaq_core::load::Error::Parse(e) => {
                        msgs.extend(e.into_iter().map(|(exp, at)| {
                            format!(
                                "expected {} at offset {}",
                                exp.as_str(),
                                offset_in(code, at)
                            )
                        }))
                    }
                }
            }
            syntax(msgs.join("; "))
        })?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let msgs: Vec<String> = errs
                .into_iter()
                .flat_map(|(_, e)| e)
                .map(|(name, undef)| format!("undefined {} `{name}`", undefined_kind(&undef)))
                .collect();
            syntax(msgs.join("; "))
        })
}

/// Native functions trigflow adds to jq.
fn trigflow_funs() -> impl Iterator<Item = jaq_core::native::Fun<data::JustLut<Val>>> {
    let hash = jaq_core::native::run(("hash", jaq_core::native::v(1), |cv| {
        jaq_core::native::unary(cv, |v, alg| hash(&v, &alg))
    }));
    #[cfg(feature = "jsonata")]
    let jsonata = Some(jaq_core::native::run((
        "jsonata",
        jaq_core::native::v(1),
        |cv| jaq_core::native::unary(cv, |v, e| jsonata(&v, &e)),
    )));
    #[cfg(not(feature = "jsonata"))]
    let jsonata = None;
    std::iter::once(hash).chain(jsonata)
}

/// `jsonata($expression)`: see [`crate::jsonata`].
#[cfg(feature = "jsonata")]
fn jsonata(bindings: &Val, expression: &Val) -> Result<Val, jaq_core::Error<Val>> {
    use jaq_std::ValT as _;
    let code = expression
        .as_utf8_bytes()
        .and_then(|b| std::str::from_utf8(b).ok())
        .ok_or_else(|| {
            jaq_core::Error::str(format!(
                "jsonata: the expression must be a string, got {expression}"
            ))
        })?;
    let out = crate::jsonata::evaluate(code, &from_val(bindings)).map_err(jaq_core::Error::str)?;
    Ok(to_val(&out))
}

/// The lowercase hex digest of `bytes` under a named algorithm, or `None`
/// for an unknown algorithm.
pub(crate) fn digest_hex(bytes: &[u8], algorithm: &str) -> Option<String> {
    use sha2::Digest as _;
    let hex = |digest: &[u8]| -> String { digest.iter().map(|b| format!("{b:02x}")).collect() };
    Some(match algorithm {
        "MD5" => hex(&md5::Md5::digest(bytes)),
        "SHA-1" => hex(&sha1::Sha1::digest(bytes)),
        "SHA-256" => hex(&sha2::Sha256::digest(bytes)),
        "SHA-384" => hex(&sha2::Sha384::digest(bytes)),
        "SHA-512" => hex(&sha2::Sha512::digest(bytes)),
        _ => return None,
    })
}

/// The hex digest of a string under a named algorithm (see the module docs).
fn hash(input: &Val, algorithm: &Val) -> Result<Val, jaq_core::Error<Val>> {
    use jaq_std::ValT as _;
    let bytes = input.as_utf8_bytes().ok_or_else(|| {
        jaq_core::Error::str(format!("hash: the input must be a string, got {input}"))
    })?;
    algorithm
        .as_utf8_bytes()
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|a| digest_hex(bytes, a))
        .map(Val::from)
        .ok_or_else(|| {
            jaq_core::Error::str(format!(
                "hash: unknown algorithm {algorithm}; expected MD5, SHA-1, SHA-256, SHA-384 or SHA-512"
            ))
        })
}

fn undefined_kind(u: &jaq_core::compile::Undefined) -> String {
    use jaq_core::compile::Undefined;
    match u {
        Undefined::Mod => "module".into(),
        Undefined::Var => "variable".into(),
        Undefined::Label => "label".into(),
        Undefined::Filter(arity) => format!("filter/{arity}"),
        _ => "symbol".into(),
    }
}

fn cached(code: &str) -> Result<Rc<Filter>, ExprError> {
    if let Some(f) = CACHE.with(|c| c.borrow().get(code).cloned()) {
        return Ok(f);
    }
    let f = Rc::new(compile(code)?);
    CACHE.with(|c| c.borrow_mut().insert(code.to_owned(), f.clone()));
    Ok(f)
}

/// Checks that `code` compiles.
pub fn check(code: &str) -> Result<(), ExprError> {
    cached(code).map(|_| ())
}

fn to_val(v: &Value) -> Val {
    // Val implements Deserialize (jaq-json's `serde` feature); going through
    // serde keeps numbers exact.
    serde_json::from_value::<Val>(v.clone()).unwrap_or(Val::Null)
}

fn from_val(v: &Val) -> Value {
    // jaq prints values as JSON; numbers that JSON cannot hold (NaN) print as
    // null, which is what jq does too.
    serde_json::from_str(&v.to_string()).unwrap_or(Value::Null)
}

/// Runs `code` on `input` and returns its first output.
pub fn eval(code: &str, input: &Value) -> Result<Value, ExprError> {
    let filter = cached(code)?;
    run_first(code, &filter, to_val(input))
}

fn run_first(code: &str, filter: &Filter, input: Val) -> Result<Value, ExprError> {
    let ctx = Ctx::<data::JustLut<Val>>::new(&filter.lut, Vars::new([]));
    let mut out = filter.id.run((ctx, input)).map(unwrap_valr);
    match out.next() {
        Some(Ok(v)) => Ok(from_val(&v)),
        Some(Err(e)) => Err(ExprError::Runtime {
            expr: code.to_owned(),
            message: e.to_string(),
        }),
        None => Err(ExprError::Empty {
            expr: code.to_owned(),
        }),
    }
}

/// Runs `code` once per item, on `base` with `item` and `index` set. The
/// base document is converted to jq values once, not once per item: a
/// foreach over a list that is itself in the document would otherwise cost
/// time quadratic in the list's length.
pub fn eval_each(code: &str, base: &Value, items: Vec<Value>) -> Result<Vec<Value>, ExprError> {
    let filter = cached(code)?;
    let base = match to_val(base) {
        Val::Obj(m) => m,
        _ => Default::default(),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let mut m = (*base).clone();
            m.insert(Val::from("item".to_owned()), to_val(&item));
            m.insert(Val::from("index".to_owned()), Val::from(i));
            run_first(code, &filter, Val::obj(m))
        })
        .collect()
}

/// jq truthiness: everything but `false` and `null` is true. An expression
/// that yields nothing counts as false.
pub fn truthy(code: &str, input: &Value) -> Result<bool, ExprError> {
    match eval(code, input) {
        Ok(v) => Ok(!matches!(v, Value::Null | Value::Bool(false))),
        Err(ExprError::Empty { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_paths_and_std_functions() {
        let doc = json!({"event": {"data": [3, 1, 2]}, "context": {"n": 2}});
        assert_eq!(
            eval(".event.data | sort", &doc).expect("eval"),
            json!([1, 2, 3])
        );
        assert_eq!(eval(".event.data | length", &doc).expect("eval"), json!(3));
        assert!(truthy(".context.n >= 2", &doc).expect("eval"));
        assert!(!truthy(".context.missing", &doc).expect("eval"));
        assert_eq!(
            eval("{a: .context.n}", &doc).expect("eval"),
            json!({"a": 2})
        );
    }

    #[test]
    fn eval_each_binds_item_and_index_over_the_base() {
        let base = json!({"context": {"k": 10}});
        let out = eval_each(
            ".item + .index + .context.k",
            &base,
            vec![json!(1), json!(2)],
        )
        .expect("eval");
        assert_eq!(out, vec![json!(11), json!(13)]);
    }

    #[test]
    fn syntax_errors_say_where() {
        let err = check(".a | ]").expect_err("bad");
        assert!(matches!(err, ExprError::Syntax { .. }), "{err}");
        let err = check("nosuchfn(1)").expect_err("undefined");
        assert!(err.to_string().contains("nosuchfn"), "{err}");
    }

    #[test]
    fn hash_gives_hex_digests() {
        // Digests of "abc" from FIPS 180-2 (SHA) and RFC 1321 (MD5).
        let cases = [
            ("MD5", "900150983cd24fb0d6963f7d28e17f72"),
            ("SHA-1", "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                "SHA-256",
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
            (
                "SHA-384",
                "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
            ),
            (
                "SHA-512",
                "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
            ),
        ];
        for (alg, want) in cases {
            let got = eval(&format!(".s | hash({alg:?})"), &json!({"s": "abc"})).expect("hash");
            assert_eq!(got, json!(want), "{alg}");
        }
        for bad in [r#"1 | hash("MD5")"#, r#""x" | hash("SHA-3")"#] {
            let err = eval(bad, &json!(null)).expect_err("bad hash");
            assert!(matches!(err, ExprError::Runtime { .. }), "{err}");
        }
    }

    #[cfg(feature = "jsonata")]
    #[test]
    fn jsonata_evaluates_over_the_input_bindings() {
        let doc = json!({"a": [1, 2, 3]});
        let got = eval(
            r#"{states: {input: .a}, k: 10} | jsonata("$sum($states.input) * $k")"#,
            &doc,
        )
        .expect("jsonata");
        assert_eq!(got, json!(60));
        let err = eval(r#"{} | jsonata("$error('no')")"#, &doc).expect_err("error");
        assert!(matches!(err, ExprError::Runtime { .. }), "{err}");
    }

    #[test]
    fn runtime_errors_are_reported() {
        let err = eval(".a + 1", &json!({"a": "x"})).expect_err("type error");
        assert!(matches!(err, ExprError::Runtime { .. }));
    }
}
