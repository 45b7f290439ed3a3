//! Finds the line of a JSON path in YAML text, for semantic errors (serde
//! reports lines only for the errors it finds itself).
//!
//! This scans block-style YAML by indentation, and flow-style `{..}` / `[..]`
//! on one line; it is a best effort: when a segment cannot be found it stops
//! at the deepest one that was.

enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Seg::Key(key));
        }
        while let Some(body) = rest.strip_prefix('[') {
            let Some(end) = body.find(']') else { break };
            if let Ok(i) = body[..end].parse() {
                out.push(Seg::Index(i));
            }
            rest = &body[end + 1..];
        }
    }
    out
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t == "---"
}

/// Column (0-based) where the content starts after any `- ` markers.
fn content_col(line: &str) -> usize {
    let mut col = indent(line);
    let bytes = line.as_bytes();
    while bytes.get(col) == Some(&b'-') && matches!(bytes.get(col + 1), Some(b' ')) {
        col += 2;
        while bytes.get(col) == Some(&b' ') {
            col += 1;
        }
    }
    col
}

fn key_at(rest: &str, key: &str) -> bool {
    for quoted in [key.to_owned(), format!("\"{key}\""), format!("'{key}'")] {
        if let Some(after) = rest.strip_prefix(quoted.as_str())
            && after.trim_start().starts_with(':')
        {
            return true;
        }
    }
    false
}

/// 1-based (line, column) of `path` in `text`.
pub(crate) fn find(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    // The current node: its line, the indent of its children's parent, and
    // whether keys on its own line belong to it (a sequence item `- k: v`).
    let mut line = 0usize;
    let mut parent: isize = -1;
    let mut inclusive = true;
    let mut found: Option<(usize, usize)> = None;
    for seg in segments(path) {
        match seg {
            Seg::Key(k) => {
                // Flow mapping on the current line.
                if found.is_some()
                    && let Some(l) = lines.get(line)
                    && let Some(brace) = l.find('{')
                {
                    let hit = l[brace..]
                        .match_indices(k)
                        .map(|(i, _)| brace + i)
                        .find(|&i| key_at(&l[i..], k));
                    if let Some(i) = hit {
                        found = Some((line, i));
                        continue;
                    }
                }
                let start = if inclusive { line } else { line + 1 };
                let mut hit = None;
                for (l, text) in lines.iter().enumerate().skip(start) {
                    if is_blank(text) {
                        continue;
                    }
                    let col = content_col(text);
                    if l > start && (indent(text) as isize) <= parent && col as isize <= parent {
                        break;
                    }
                    if (col as isize) > parent && key_at(&text[col..], k) {
                        hit = Some((l, col));
                        break;
                    }
                }
                let (l, c) = hit?;
                found = Some((l, c));
                line = l;
                parent = c as isize;
                inclusive = false;
            }
            Seg::Index(i) => {
                // Flow sequence on the key's line: stay there.
                if let Some(l) = lines.get(line)
                    && l.contains('[')
                    && found.is_some()
                {
                    continue;
                }
                let mut n = 0;
                let mut hit = None;
                let mut item_indent: Option<usize> = None;
                for (l, text) in lines
                    .iter()
                    .enumerate()
                    .skip(line + usize::from(found.is_some()))
                {
                    if is_blank(text) {
                        continue;
                    }
                    let ind = indent(text);
                    if (ind as isize) < parent.max(0) && found.is_some() {
                        break;
                    }
                    if text[ind..].starts_with("- ") || text[ind..].trim_end() == "-" {
                        match item_indent {
                            None => item_indent = Some(ind),
                            Some(ii) if ii != ind => continue,
                            _ => {}
                        }
                        if n == i {
                            hit = Some((l, ind));
                            break;
                        }
                        n += 1;
                    } else if item_indent.is_some_and(|ii| ind <= ii) {
                        break;
                    }
                }
                let Some((l, c)) = hit else {
                    return found.map(|(l, c)| (l + 1, c + 1));
                };
                found = Some((l, c));
                line = l;
                parent = c as isize;
                inclusive = true;
            }
        }
    }
    found.map(|(l, c)| (l + 1, c + 1))
}

/// 1-based (line, column) of the first `key:` at or after 1-based `line`.
pub(crate) fn key_from(text: &str, line: usize, key: &str) -> Option<(usize, usize)> {
    text.lines()
        .enumerate()
        .skip(line.saturating_sub(1))
        .find_map(|(l, t)| {
            let col = content_col(t);
            (!is_blank(t) && key_at(&t[col..], key)).then_some((l + 1, col + 1))
        })
}

#[cfg(test)]
mod tests {
    use super::find;

    const DOC: &str = "\
dag: x
tasks:
  split:
    function: a
  count:
    function: b
    depends:
      - split
      - nope
  merge: {function: c, depends: [count]}
triggers:
  - id: t1
    actions:
      - kind: emit
  - id: t2
    condition:
      kind: expr
";

    #[test]
    fn finds_block_keys_and_items() {
        assert_eq!(find(DOC, "tasks.count"), Some((5, 3)));
        assert_eq!(find(DOC, "tasks.count.depends[1]"), Some((9, 7)));
        assert_eq!(find(DOC, "triggers[1].condition.kind"), Some((17, 7)));
        assert_eq!(find(DOC, "triggers[0].id"), Some((12, 5)));
    }

    #[test]
    fn finds_flow_keys_on_their_line() {
        assert_eq!(find(DOC, "tasks.merge.depends[0]"), Some((10, 24)));
        assert_eq!(find(DOC, "tasks.merge.function"), Some((10, 11)));
    }

    #[test]
    fn unknown_path_gives_none_or_deepest() {
        assert_eq!(find(DOC, "nothing"), None);
        assert_eq!(find(DOC, "tasks.count.depends[7]"), Some((7, 5)));
    }
}
