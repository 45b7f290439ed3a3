//! Intrinsic functions, with the examples of the Step Functions developer
//! guide ("Intrinsic functions"): each call's documented input and result.
mod common;
use common::*;
use serde_json::{Value, json};

/// Evaluates `call` in a Pass state's Parameters over `input`.
fn eval(call: &str, input: Value) -> Value {
    let doc = json!({"StartAt": "P", "States": {"P": {"Type": "Pass", "Parameters": {"v.$": call}, "End": true}}});
    output(&run(&doc, input))["v"].clone()
}

#[test]
fn format() {
    assert_eq!(
        eval(
            "States.Format('Hello, my name is {}.', $.name)",
            json!({"name": "Arnav"})
        ),
        json!("Hello, my name is Arnav.")
    );
    assert_eq!(
        eval(
            "States.Format('{} + {} = {}, \\{literal\\} {}', 1, 2.5, true, null)",
            json!({})
        ),
        json!("1 + 2.5 = true, {literal} null")
    );
    // A template from a path.
    assert_eq!(
        eval("States.Format($.t, $.a)", json!({"t": "<{}>", "a": "x"})),
        json!("<x>")
    );
}

#[test]
fn json_string_conversions() {
    assert_eq!(
        eval(
            "States.StringToJson($.escapedJsonString)",
            json!({"escapedJsonString": "{\"foo\": \"bar\"}"})
        ),
        json!({"foo": "bar"})
    );
    assert_eq!(
        eval(
            "States.JsonToString($.unescapedJson)",
            json!({"unescapedJson": {"foo": "bar"}})
        ),
        json!("{\"foo\":\"bar\"}")
    );
}

#[test]
fn arrays() {
    assert_eq!(
        eval(
            "States.Array('Foo', 2020, $.someJson, null)",
            json!({"someJson": {"random": "abcdefg"}})
        ),
        json!(["Foo", 2020, {"random": "abcdefg"}, null])
    );
    let nine = json!({"inputArray": [1, 2, 3, 4, 5, 6, 7, 8, 9], "lookingFor": 5, "index": 5});
    assert_eq!(
        eval("States.ArrayPartition($.inputArray, 4)", nine.clone()),
        json!([[1, 2, 3, 4], [5, 6, 7, 8], [9]])
    );
    assert_eq!(
        eval(
            "States.ArrayContains($.inputArray, $.lookingFor)",
            nine.clone()
        ),
        json!(true)
    );
    assert_eq!(
        eval("States.ArrayContains($.inputArray, 10)", nine.clone()),
        json!(false)
    );
    assert_eq!(
        eval("States.ArrayRange(1, 9, 2)", json!({})),
        json!([1, 3, 5, 7, 9])
    );
    assert_eq!(
        eval("States.ArrayRange(5, 1, -2)", json!({})),
        json!([5, 3, 1])
    );
    assert_eq!(
        eval("States.ArrayGetItem($.inputArray, $.index)", nine.clone()),
        json!(6)
    );
    assert_eq!(eval("States.ArrayLength($.inputArray)", nine), json!(9));
    assert_eq!(
        eval(
            "States.ArrayUnique($.inputArray)",
            json!({"inputArray": [1, 2, 3, 3, 3, 3, 3, 3, 4]})
        ),
        json!([1, 2, 3, 4])
    );
}

#[test]
fn base64() {
    assert_eq!(
        eval(
            "States.Base64Encode($.input)",
            json!({"input": "Data to encode"})
        ),
        json!("RGF0YSB0byBlbmNvZGU=")
    );
    assert_eq!(
        eval(
            "States.Base64Decode($.base64)",
            json!({"base64": "RGF0YSB0byBlbmNvZGU="})
        ),
        json!("Data to encode")
    );
}

#[test]
fn json_merge_is_shallow() {
    assert_eq!(
        eval(
            "States.JsonMerge($.json1, $.json2, false)",
            json!({"json1": {"a": {"a1": 1, "a2": 2}, "b": 2}, "json2": {"a": {"a3": 1, "a4": 2}, "c": 3}})
        ),
        json!({"a": {"a3": 1, "a4": 2}, "b": 2, "c": 3})
    );
}

#[test]
fn math() {
    assert_eq!(
        eval(
            "States.MathAdd($.value1, $.step)",
            json!({"value1": 111, "step": -1})
        ),
        json!(110)
    );
    let x = eval(
        "States.MathRandom($.start, $.end)",
        json!({"start": 1, "end": 999}),
    );
    let n = x.as_i64().expect("an integer");
    assert!((1..999).contains(&n), "{n}");
    // A seed makes the value reproducible.
    let a = eval("States.MathRandom(1, 1000, 42)", json!({}));
    let b = eval("States.MathRandom(1, 1000, 42)", json!({"other": true}));
    assert_eq!(a, b);
}

#[test]
fn string_split() {
    assert_eq!(
        eval(
            "States.StringSplit($.inputString, $.splitter)",
            json!({"inputString": "1,2,3,4,5", "splitter": ","})
        ),
        json!(["1", "2", "3", "4", "5"])
    );
    assert_eq!(
        eval(
            "States.StringSplit($.inputString, $.splitter)",
            json!({"inputString": "This.is+a,test=string", "splitter": ".+,="})
        ),
        json!(["This", "is", "a", "test", "string"])
    );
}

#[test]
fn uuid_is_a_version_4_uuid() {
    let u = eval("States.UUID()", json!({}));
    let s = u.as_str().expect("a string");
    let parts: Vec<&str> = s.split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        vec![8, 4, 4, 4, 12],
        "{s}"
    );
    assert!(parts[2].starts_with('4'), "{s}");
    assert!(
        matches!(parts[3].chars().next(), Some('8' | '9' | 'a' | 'b')),
        "{s}"
    );
    assert!(s.chars().all(|c| c == '-' || c.is_ascii_hexdigit()), "{s}");
}

#[test]
fn nested_calls_and_context_arguments() {
    assert_eq!(
        eval(
            "States.Format('first={} n={}', States.ArrayGetItem($.a, 0), States.ArrayLength($.a))",
            json!({"a": ["x", "y"]})
        ),
        json!("first=x n=2")
    );
    assert_eq!(
        eval("States.Format('{}', $$.State.Name)", json!({})),
        json!("P")
    );
}

#[test]
fn intrinsic_failure_is_catchable() {
    let doc = json!({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "f", "Parameters": {"x.$": "States.ArrayGetItem($.a, 5)"}, "End": true,
              "Catch": [{"ErrorEquals": ["States.IntrinsicFailure"], "ResultPath": "$.err", "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "End": true}
    }});
    let out = output(&run(&doc, json!({"a": [1]})));
    assert_eq!(out["err"]["Error"], json!("States.IntrinsicFailure"));
    assert_eq!(out["a"], json!([1]));
}

#[test]
fn hash_with_every_algorithm() {
    // The developer guide's example: SHA-1 of "input data".
    assert_eq!(
        eval(
            "States.Hash($.Data, $.Algorithm)",
            json!({"Data": "input data", "Algorithm": "SHA-1"})
        ),
        json!("aaff4a450a104cd177d28d18d74485e8cae074b7")
    );
    // Digests of "abc" (FIPS 180-2 test vectors, RFC 1321 for MD5).
    let abc = [
        ("MD5", "900150983cd24fb0d6963f7d28e17f72"),
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
    for (alg, want) in abc {
        assert_eq!(
            eval(&format!("States.Hash($.s, '{alg}')"), json!({"s": "abc"})),
            json!(want),
            "{alg}"
        );
    }
}

#[test]
fn hash_failures_are_intrinsic_failures() {
    for (input, call) in [
        // An algorithm chosen at run time that Step Functions does not have.
        (json!({"s": "abc", "a": "SHA-3"}), "States.Hash($.s, $.a)"),
        // Data that is not a string.
        (json!({"s": 1}), "States.Hash($.s, 'MD5')"),
    ] {
        let doc = json!({"StartAt": "P", "States": {
            "P": {"Type": "Pass", "Parameters": {"v.$": call}, "End": true}}});
        let (error, _) = failure(&run(&doc, input));
        assert_eq!(error, "States.IntrinsicFailure");
    }
}

#[test]
fn a_literal_unknown_hash_algorithm_is_rejected_at_load_time() {
    let doc = json!({"StartAt": "P", "States": {
        "P": {"Type": "Pass", "Parameters": {"v.$": "States.Hash($.s, 'SHA-3')"}, "End": true}}});
    let err = trigflow_asl::load_str(&doc.to_string(), "t.asl.json").expect_err("bad algorithm");
    let p = &err.problems()[0];
    assert_eq!(p.kind, trigflow_asl::ProblemKind::BadIntrinsic);
    assert_eq!(p.path, "States.P.Parameters[\"v.$\"]");
}
