//! The JSONPath subset ASL uses, parsed at load time and translated to jq.
//!
//! Supported: `$`, `$$`, `.name`, `['name']`, `["name"]`, `[n]` (negative
//! counts from the end), `[*]`, `.*`, `[a:b]`, `[i,j,...]`, `..name`.
//! Filters (`[?(...)]`) and script expressions are rejected at load time.

use std::fmt::Write as _;

/// Which document a path starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `$`: the data (state input, task result, ...).
    Data,
    /// `$$`: the context object.
    Context,
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    /// `.name` or `['name']`.
    Field(String),
    /// `[n]`.
    Index(i64),
    /// `[*]` or `.*`.
    Wildcard,
    /// `[a:b]`.
    Slice(Option<i64>, Option<i64>),
    /// `[i,j]`.
    Union(Vec<i64>),
    /// `..name`.
    Deep(String),
}

/// A parsed path.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    /// `$` or `$$`.
    pub root: Root,
    /// The steps.
    pub segs: Vec<Seg>,
}

impl JsonPath {
    /// Whether the path names at most one node (no wildcard, slice, union or
    /// deep scan); such a path yields the node itself, others an array.
    pub fn is_definite(&self) -> bool {
        self.segs
            .iter()
            .all(|s| matches!(s, Seg::Field(_) | Seg::Index(_)))
    }

    /// Whether the path is a reference path (usable in `ResultPath`): a
    /// definite path on `$`.
    pub fn is_reference(&self) -> bool {
        self.root == Root::Data && self.is_definite()
    }

    /// jq that reads this path from `base` (a jq term such as `$in`). A
    /// definite path raises `States.Runtime` when a step is missing; an
    /// indefinite one collects the matches into an array.
    pub fn jq_get(&self, base: &str) -> String {
        let mut out = String::from(base);
        if self.is_definite() {
            for s in &self.segs {
                match s {
                    Seg::Field(k) => {
                        let _ = write!(out, " | _f({})", jq_str(k));
                    }
                    Seg::Index(i) => {
                        let _ = write!(out, " | _i({i})");
                    }
                    _ => {}
                }
            }
            return format!("({out})");
        }
        for s in &self.segs {
            match s {
                Seg::Field(k) => {
                    let _ = write!(out, " | _sf({})", jq_str(k));
                }
                Seg::Index(i) => {
                    let _ = write!(out, " | _si({i})");
                }
                Seg::Wildcard => out.push_str(" | _sw"),
                Seg::Slice(a, b) => {
                    let a = a.map_or("null".to_owned(), |v| v.to_string());
                    let b = b.map_or("null".to_owned(), |v| v.to_string());
                    let _ = write!(out, " | _ss({a}; {b})");
                }
                Seg::Union(ix) => {
                    let list: Vec<String> = ix.iter().map(ToString::to_string).collect();
                    let _ = write!(out, " | _su([{}])", list.join(","));
                }
                Seg::Deep(k) => {
                    let _ = write!(out, " | _sd({})", jq_str(k));
                }
            }
        }
        format!("[{out}]")
    }

    /// jq that tests whether this path exists in `base` (for `IsPresent`).
    pub fn jq_exists(&self, base: &str) -> String {
        format!("(try ({} | true) catch false)", self.jq_get(base))
    }

    /// The field names of a reference path, or `None` if it has indexes
    /// (ResultPath writes create objects, so only fields can be written).
    pub fn field_names(&self) -> Option<Vec<&str>> {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Field(k) => Some(k.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// A JSON string literal, which is also a jq string literal once `\(` cannot
/// occur: JSON escapes backslashes, so it never does.
pub fn jq_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Parses an ASL path. The error says what is wrong and at which character.
pub fn parse(text: &str) -> Result<JsonPath, String> {
    let (root, rest) = if let Some(r) = text.strip_prefix("$$") {
        (Root::Context, r)
    } else if let Some(r) = text.strip_prefix('$') {
        (Root::Data, r)
    } else {
        return Err(format!("path {text:?} must start with `$`"));
    };
    let chars: Vec<char> = rest.chars().collect();
    let at =
        |i: usize| text.len() - rest.len() + chars[..i].iter().map(|c| c.len_utf8()).sum::<usize>();
    let mut segs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                let (name, next) = read_name(&chars, i + 2);
                if name.is_empty() || name == "*" {
                    return Err(format!(
                        "path {text:?}: a deep scan `..` needs a field name (at offset {})",
                        at(i)
                    ));
                }
                segs.push(Seg::Deep(name));
                i = next;
            }
            '.' => {
                let (name, next) = read_name(&chars, i + 1);
                if name.is_empty() {
                    return Err(format!(
                        "path {text:?}: expected a field name after `.` (at offset {})",
                        at(i)
                    ));
                }
                segs.push(if name == "*" {
                    Seg::Wildcard
                } else {
                    Seg::Field(name)
                });
                i = next;
            }
            '[' => {
                let close = find_close(&chars, i + 1)
                    .ok_or_else(|| format!("path {text:?}: unclosed `[` (at offset {})", at(i)))?;
                let inner: String = chars[i + 1..close].iter().collect();
                segs.push(
                    bracket(inner.trim())
                        .map_err(|m| format!("path {text:?}: {m} (at offset {})", at(i)))?,
                );
                i = close + 1;
            }
            c => {
                return Err(format!(
                    "path {text:?}: unexpected {c:?} (at offset {}); expected `.` or `[`",
                    at(i)
                ));
            }
        }
    }
    Ok(JsonPath { root, segs })
}

fn read_name(chars: &[char], from: usize) -> (String, usize) {
    let mut j = from;
    while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
        j += 1;
    }
    (chars[from..j].iter().collect(), j)
}

/// The index of the `]` closing a bracket, skipping quoted text.
fn find_close(chars: &[char], from: usize) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut j = from;
    while j < chars.len() {
        let c = chars[j];
        match quote {
            Some(_) if c == '\\' => j += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ']' => return Some(j),
            None => {}
        }
        j += 1;
    }
    None
}

fn bracket(inner: &str) -> Result<Seg, String> {
    if inner == "*" {
        return Ok(Seg::Wildcard);
    }
    if inner.starts_with('?') || inner.starts_with('(') {
        return Err("filter and script expressions are not supported".into());
    }
    if let Some(q) = inner.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let body = inner
            .strip_prefix(q)
            .and_then(|s| s.strip_suffix(q))
            .ok_or_else(|| format!("unterminated quoted name {inner}"))?;
        let mut name = String::new();
        let mut it = body.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some(e) => name.push(e),
                    None => return Err("a quoted name ends with `\\`".into()),
                }
            } else {
                name.push(c);
            }
        }
        return Ok(Seg::Field(name));
    }
    let int = |s: &str| -> Result<i64, String> {
        s.trim()
            .parse::<i64>()
            .map_err(|_| format!("{:?} is not an integer index", s.trim()))
    };
    if inner.contains(':') {
        let parts: Vec<&str> = inner.split(':').collect();
        if parts.len() > 2 {
            return Err("slices with a step are not supported".into());
        }
        let opt = |s: &str| -> Result<Option<i64>, String> {
            if s.trim().is_empty() {
                Ok(None)
            } else {
                int(s).map(Some)
            }
        };
        return Ok(Seg::Slice(opt(parts[0])?, opt(parts[1])?));
    }
    if inner.contains(',') {
        return Ok(Seg::Union(
            inner.split(',').map(int).collect::<Result<_, _>>()?,
        ));
    }
    Ok(Seg::Index(int(inner)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let p = parse("$.store.book[0]['title']").expect("path");
        assert_eq!(p.root, Root::Data);
        assert_eq!(
            p.segs,
            vec![
                Seg::Field("store".into()),
                Seg::Field("book".into()),
                Seg::Index(0),
                Seg::Field("title".into())
            ]
        );
        assert!(p.is_reference());
        let p = parse("$$.Map.Item.Value").expect("path");
        assert_eq!(p.root, Root::Context);
        assert!(!parse("$.a[*].b").expect("path").is_definite());
        assert_eq!(
            parse("$..price").expect("path").segs,
            vec![Seg::Deep("price".into())]
        );
        assert_eq!(parse("$").expect("path").segs, vec![]);
        assert_eq!(
            parse("$.a[1:3]").expect("path").segs[1],
            Seg::Slice(Some(1), Some(3))
        );
    }

    #[test]
    fn rejects_what_it_cannot_translate() {
        assert!(parse("a.b").is_err());
        assert!(parse("$.a[?(@.x > 1)]").is_err());
        assert!(parse("$.a[").is_err());
        assert!(parse("$.").is_err());
        assert!(parse("$.a[x]").is_err());
    }
}
