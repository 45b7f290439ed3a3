//! ASL intrinsic functions (`States.Format(...)` and friends), parsed at
//! load time and translated to jq.

use serde_json::Value;

use crate::path::{self, JsonPath, Root, jq_str};

/// An argument of an intrinsic call.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// A literal: string, number, boolean or null.
    Lit(Value),
    /// A path on `$` or `$$`.
    Path(JsonPath),
    /// A nested call.
    Call(Call),
}

/// A call: `States.Name(args)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// The name without `States.`.
    pub name: String,
    /// The arguments.
    pub args: Vec<Arg>,
}

/// Every intrinsic the ASL defines, with the argument counts accepted.
const KNOWN: &[(&str, usize, usize)] = &[
    ("Format", 1, usize::MAX),
    ("StringToJson", 1, 1),
    ("JsonToString", 1, 1),
    ("Array", 0, usize::MAX),
    ("ArrayPartition", 2, 2),
    ("ArrayContains", 2, 2),
    ("ArrayRange", 3, 3),
    ("ArrayGetItem", 2, 2),
    ("ArrayLength", 1, 1),
    ("ArrayUnique", 1, 1),
    ("Base64Encode", 1, 1),
    ("Base64Decode", 1, 1),
    ("Hash", 2, 2),
    ("JsonMerge", 3, 3),
    ("MathRandom", 2, 3),
    ("MathAdd", 2, 2),
    ("StringSplit", 2, 2),
    ("UUID", 0, 0),
];

/// The algorithms `States.Hash` accepts.
const HASH_ALGORITHMS: &[&str] = &["MD5", "SHA-1", "SHA-256", "SHA-384", "SHA-512"];

/// Whether a `.$` value is an intrinsic call rather than a path.
pub fn looks_like_call(text: &str) -> bool {
    text.trim_start().starts_with("States.")
}

/// Parses and checks a call (names, argument counts, literal argument
/// types that are known at load time).
pub fn parse(text: &str) -> Result<Call, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser {
        chars: &chars,
        i: 0,
        text,
    };
    p.ws();
    let call = p.call()?;
    p.ws();
    if p.i != chars.len() {
        return Err(format!(
            "intrinsic {text:?}: unexpected text after the call at character {}",
            p.i
        ));
    }
    check(&call)?;
    Ok(call)
}

struct Parser<'a> {
    chars: &'a [char],
    i: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.chars.get(self.i).is_some_and(|c| c.is_whitespace()) {
            self.i += 1;
        }
    }

    fn err(&self, what: &str) -> String {
        format!("intrinsic {:?}: {what} at character {}", self.text, self.i)
    }

    fn call(&mut self) -> Result<Call, String> {
        let start = self.i;
        while self
            .chars
            .get(self.i)
            .is_some_and(|c| c.is_alphanumeric() || *c == '.' || *c == '_')
        {
            self.i += 1;
        }
        let full: String = self.chars[start..self.i].iter().collect();
        let name = full
            .strip_prefix("States.")
            .ok_or_else(|| self.err("expected a `States.` function name"))?
            .to_owned();
        self.ws();
        if self.chars.get(self.i) != Some(&'(') {
            return Err(self.err("expected `(`"));
        }
        self.i += 1;
        let mut args = Vec::new();
        self.ws();
        if self.chars.get(self.i) == Some(&')') {
            self.i += 1;
            return Ok(Call { name, args });
        }
        loop {
            self.ws();
            args.push(self.arg()?);
            self.ws();
            match self.chars.get(self.i) {
                Some(',') => self.i += 1,
                Some(')') => {
                    self.i += 1;
                    return Ok(Call { name, args });
                }
                _ => return Err(self.err("expected `,` or `)`")),
            }
        }
    }

    fn arg(&mut self) -> Result<Arg, String> {
        match self.chars.get(self.i) {
            Some('\'') => {
                self.i += 1;
                let mut s = String::new();
                loop {
                    match self.chars.get(self.i) {
                        None => return Err(self.err("unterminated string")),
                        Some('\\') => {
                            // `\'`, `\{`, `\}` and `\\` are escapes; the
                            // braces stay escaped so that Format can tell a
                            // literal brace from a placeholder.
                            let Some(&e) = self.chars.get(self.i + 1) else {
                                return Err(self.err("a string ends with `\\`"));
                            };
                            if e == '{' || e == '}' {
                                s.push('\\');
                            }
                            s.push(e);
                            self.i += 2;
                        }
                        Some('\'') => {
                            self.i += 1;
                            return Ok(Arg::Lit(Value::String(s)));
                        }
                        Some(&c) => {
                            s.push(c);
                            self.i += 1;
                        }
                    }
                }
            }
            Some('$') => {
                let start = self.i;
                let mut quote: Option<char> = None;
                while let Some(&c) = self.chars.get(self.i) {
                    match quote {
                        Some(q) if c == q => quote = None,
                        Some(_) => {}
                        None if c == '\'' || c == '"' => quote = Some(c),
                        None if c == ',' || c == ')' || c.is_whitespace() => break,
                        None => {}
                    }
                    self.i += 1;
                }
                let text: String = self.chars[start..self.i].iter().collect();
                path::parse(&text).map(Arg::Path)
            }
            Some('S') => self.call().map(Arg::Call),
            Some(_) => {
                let start = self.i;
                while self
                    .chars
                    .get(self.i)
                    .is_some_and(|c| !(*c == ',' || *c == ')' || c.is_whitespace()))
                {
                    self.i += 1;
                }
                let word: String = self.chars[start..self.i].iter().collect();
                match serde_json::from_str::<Value>(&word) {
                    Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Ok(Arg::Lit(v)),
                    _ => Err(self.err(&format!(
                        "{word:?} is not a string, number, boolean, null, path or call"
                    ))),
                }
            }
            None => Err(self.err("expected an argument")),
        }
    }
}

fn check(call: &Call) -> Result<(), String> {
    let Some(&(_, min, max)) = KNOWN.iter().find(|(n, _, _)| *n == call.name) else {
        return Err(format!("unknown intrinsic function States.{}", call.name));
    };
    let n = call.args.len();
    if n < min || n > max {
        let want = if min == max {
            format!("{min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("{min} to {max}")
        };
        return Err(format!(
            "States.{} takes {want} argument(s), got {n}",
            call.name
        ));
    }
    let lit = |i: usize| match call.args.get(i) {
        Some(Arg::Lit(v)) => Some(v),
        _ => None,
    };
    match call.name.as_str() {
        "Format" => match lit(0) {
            Some(Value::String(f)) => {
                let holes = placeholders(f).len() - 1;
                if holes != n - 1 {
                    return Err(format!(
                        "States.Format: the template has {holes} `{{}}` placeholder(s) but {} argument(s) follow",
                        n - 1
                    ));
                }
            }
            Some(_) => return Err("States.Format: the template must be a string".into()),
            None => {}
        },
        "JsonMerge" => {
            if let Some(v) = lit(2)
                && v != &Value::Bool(false)
            {
                return Err("States.JsonMerge: only a shallow merge (false) is supported, as in Step Functions".into());
            }
        }
        "Hash" => {
            if let Some(v) = lit(1)
                && !matches!(v, Value::String(a) if HASH_ALGORITHMS.contains(&a.as_str()))
            {
                return Err(format!(
                    "States.Hash: the algorithm must be one of {}, not {v}",
                    HASH_ALGORITHMS.join(", ")
                ));
            }
        }
        "ArrayRange" => {
            if let Some(Value::Number(s)) = lit(2)
                && s.as_f64() == Some(0.0)
            {
                return Err("States.ArrayRange: the step must not be 0".into());
            }
        }
        _ => {}
    }
    for a in &call.args {
        if let Arg::Call(c) = a {
            check(c)?;
        }
    }
    Ok(())
}

/// Splits a Format template at its `{}` placeholders, resolving `\{` and
/// `\}` to literal braces.
fn placeholders(f: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let chars: Vec<char> = f.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match (chars[i], chars.get(i + 1)) {
            ('\\', Some(&c)) => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
                i += 2;
            }
            ('{', Some('}')) => {
                parts.push(String::new());
                i += 2;
            }
            (c, _) => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
                i += 1;
            }
        }
    }
    parts
}

/// jq for an argument. `data` and `ctx` are the jq terms for `$` and `$$`.
fn arg_jq(a: &Arg, data: &str, ctx: &str, site: &str) -> String {
    match a {
        Arg::Lit(v) => format!("({v})"),
        Arg::Path(p) => match p.root {
            Root::Data => p.jq_get(data),
            Root::Context => p.jq_get(ctx),
        },
        Arg::Call(c) => call_jq(c, data, ctx, site),
    }
}

/// jq for a call. Failures raise `States.IntrinsicFailure` (a missing path
/// stays `States.Runtime`). `site` names the call's place in the document:
/// with the execution and event id it seeds UUID and MathRandom, so that
/// re-applying the same event gives the same value.
pub fn call_jq(c: &Call, data: &str, ctx: &str, site: &str) -> String {
    let a: Vec<String> = c
        .args
        .iter()
        .enumerate()
        .map(|(i, x)| arg_jq(x, data, ctx, &format!("{site}/{i}")))
        .collect();
    let seed = format!(
        "(($doc.event.trigflowexecution // \"\") + \"/\" + $doc.event.id + {})",
        jq_str(site)
    );
    let body = match c.name.as_str() {
        "Format" => match c.args.first() {
            Some(Arg::Lit(Value::String(f))) => {
                let parts = placeholders(f);
                let mut out = jq_str(&parts[0]);
                for (i, part) in parts.iter().enumerate().skip(1) {
                    out = format!("{out} + ({} | _fmtarg) + {}", a[i], jq_str(part));
                }
                out
            }
            _ => {
                let rest = a[1..].join(", ");
                format!("_fmtdyn({}; [{rest}])", a[0])
            }
        },
        "StringToJson" => format!("({} | _str | fromjson)", a[0]),
        "JsonToString" => format!("({} | tojson)", a[0]),
        "Array" => format!("[{}]", a.join(", ")),
        "ArrayPartition" => format!("_partition({}; {})", a[0], a[1]),
        "ArrayContains" => format!("({} | _arr | any(.[]; . == {}))", a[0], a[1]),
        "ArrayRange" => format!("_range({}; {}; {})", a[0], a[1], a[2]),
        "ArrayGetItem" => format!(
            "(({} | _arr) as $a | ({} | _int) as $i | if $i >= 0 and $i < ($a | length) then $a[$i] else _ierr(\"States.ArrayGetItem: index \" + ($i | tostring) + \" is out of range\") end)",
            a[0], a[1]
        ),
        "ArrayLength" => format!("({} | _arr | length)", a[0]),
        "ArrayUnique" => format!(
            "({} | _arr | reduce .[] as $x ([]; if any(.[]; . == $x) then . else . + [$x] end))",
            a[0]
        ),
        "Base64Encode" => format!("({} | _str | @base64)", a[0]),
        "Base64Decode" => format!("({} | _str | @base64d)", a[0]),
        "JsonMerge" => format!("({} | _obj) + ({} | _obj)", a[0], a[1]),
        "MathRandom" => format!(
            "_random({}; {}; {}; {seed})",
            a[0],
            a[1],
            a.get(2).map_or("null", String::as_str)
        ),
        "MathAdd" => format!("(({} | _num) + ({} | _num))", a[0], a[1]),
        "StringSplit" => format!("_split({} | _str; {} | _str)", a[0], a[1]),
        "UUID" => format!("_uuid({seed})"),
        // `hash` is trigflow's native jq function (trigflow_core::expr).
        "Hash" => format!("({} | _str | hash({} | _str))", a[0], a[1]),
        // Unknown names are rejected by `check` at load time.
        other => format!("_ierr(\"States.{other} is not supported\")"),
    };
    format!("(try ({body}) catch _intr)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nested_calls_and_escapes() {
        let c = parse("States.Format('Hello \\'{}\\' \\{x\\}', States.ArrayGetItem($.names, 0))")
            .expect("call");
        assert_eq!(c.name, "Format");
        assert!(matches!(&c.args[1], Arg::Call(inner) if inner.name == "ArrayGetItem"));
        assert_eq!(placeholders("a{}b\\{\\}").len(), 2);
    }

    #[test]
    fn rejects_bad_calls() {
        assert!(parse("States.Nope(1)").is_err());
        assert!(parse("States.ArrayLength(1, 2)").is_err());
        assert!(parse("States.Format('{} {}', 1)").is_err());
        assert!(parse("States.Format('x'").is_err());
        assert!(parse("States.JsonMerge($.a, $.b, true)").is_err());
        assert!(parse("States.Array(foo)").is_err());
        assert!(parse("States.Hash($.a, 'SHA-3')").is_err());
        assert!(parse("States.Hash($.a, 'SHA-256')").is_ok());
    }
}
