//! Bad definitions: every problem reported, each with its kind and location.

use trigflow_dag::{LoadError, LoadOptions, Problem, ProblemKind, load_file, load_str};

fn problems(doc: &str, file: &str) -> Vec<Problem> {
    match load_str(doc, file, &LoadOptions::default()) {
        Err(LoadError::Definition(ps)) => ps,
        Err(other) => panic!("expected definition problems, got {other}"),
        Ok(_) => panic!("expected definition problems, document loaded"),
    }
}

fn find<'a>(ps: &'a [Problem], path: &str) -> &'a Problem {
    ps.iter()
        .find(|p| p.location.path == path)
        .unwrap_or_else(|| panic!("no problem at {path}: {ps:#?}"))
}

const MANY: &str = "\
dag: broken
tasks:
  split:
    function: cmd:split
  count:
    function: cmd:count
    depends:
      - split
      - splt
    input: '.results | ]'
  merge:
    depends: [count]
  route:
    depends: [merge]
    switch:
      - when: .results.merge
        next: nowhere
      - default: merge
";

#[test]
fn every_problem_is_reported_with_kind_and_line() {
    let ps = problems(MANY, "broken.yaml");
    let unknown = find(&ps, "tasks.count.depends[1]");
    assert_eq!(unknown.kind, ProblemKind::UnknownTask);
    assert_eq!(
        (unknown.location.line, unknown.location.column),
        (Some(9), Some(7))
    );
    assert_eq!(unknown.file, "broken.yaml");

    let jq = find(&ps, "tasks.count.input");
    assert_eq!(jq.kind, ProblemKind::BadExpression);
    assert_eq!(jq.location.line, Some(10));

    let missing = find(&ps, "tasks.merge");
    assert_eq!(missing.kind, ProblemKind::MissingFunction);
    assert_eq!(missing.location.line, Some(11));

    let next = find(&ps, "tasks.route.switch[0].next");
    assert_eq!(next.kind, ProblemKind::UnknownTask);
    assert_eq!(next.location.line, Some(17));

    // merge -> route -> merge through the default case.
    let cycle = ps
        .iter()
        .find(|p| p.kind == ProblemKind::Cycle)
        .expect("cycle reported");
    assert!(cycle.message.contains("merge") && cycle.message.contains("route"));
    assert_eq!(ps.len(), 5, "{ps:#?}");

    // One problem per line, `FILE:LINE:COL: ...`.
    let err = LoadError::Definition(ps);
    let text = err.to_string();
    assert_eq!(text.lines().count(), 5);
    assert!(
        text.contains("broken.yaml:9:7: tasks.count.depends[1]: unknown task \"splt\""),
        "{text}"
    );
}

#[test]
fn cycle_names_its_tasks() {
    let ps = problems(
        "
dag: loop
tasks:
  a: {function: f, depends: [c]}
  b: {function: f, depends: [a]}
  c: {function: f, depends: [b]}
  d: {function: f, depends: [d]}
",
        "loop.yaml",
    );
    let cycles: Vec<&Problem> = ps.iter().filter(|p| p.kind == ProblemKind::Cycle).collect();
    assert_eq!(cycles.len(), 2, "{ps:#?}");
    assert!(
        cycles
            .iter()
            .any(|p| p.message == "cycle: a -> b -> c -> a"),
        "{cycles:#?}"
    );
    assert!(
        cycles.iter().any(|p| p.message == "cycle: d -> d"),
        "{cycles:#?}"
    );
}

#[test]
fn yaml_wrong_type_has_line_column_and_path() {
    let ps = problems(
        "
dag: typed
tasks:
  a:
    function: f
    depends: 3
",
        "typed.yaml",
    );
    assert_eq!(ps.len(), 1);
    let p = &ps[0];
    assert_eq!(p.kind, ProblemKind::Shape);
    assert_eq!(p.location.path, "tasks.a.depends");
    assert_eq!(p.location.line, Some(6));
    assert!(p.location.column.is_some());
    assert!(p.to_string().starts_with("typed.yaml:6:"), "{p}");
}

#[test]
fn yaml_unknown_field_is_a_shape_problem() {
    let ps = problems(
        "
dag: typo
tasks:
  a:
    function: f
    depends_on: [b]
",
        "typo.yaml",
    );
    assert_eq!(ps[0].kind, ProblemKind::Shape);
    assert_eq!(ps[0].location.path, "tasks.a.depends_on");
    assert!(ps[0].message.contains("depends_on"), "{}", ps[0].message);
    assert_eq!(ps[0].location.line, Some(6));
}

#[test]
fn json_errors_carry_paths() {
    let ps = problems(
        r#"{"dag": "j", "tasks": {"a": {"function": "f", "depends": [1]}}}"#,
        "j.json",
    );
    assert_eq!(ps[0].kind, ProblemKind::Shape);
    assert_eq!(ps[0].location.path, "tasks.a.depends[0]");
    assert_eq!(ps[0].location.line, Some(1));

    // Semantic problems in JSON are located by path only.
    let ps = problems(
        r#"{"dag": "j", "tasks": {"a": {"function": "f", "depends": ["zz"]}}}"#,
        "j.json",
    );
    assert_eq!(ps[0].kind, ProblemKind::UnknownTask);
    assert_eq!(ps[0].location.line, None);
    assert_eq!(
        ps[0].to_string(),
        "j.json: at tasks.a.depends[0]: unknown task \"zz\" in depends"
    );
}

#[test]
fn syntax_errors_are_their_own_variant() {
    match load_str("dag: x\ntasks: [a\n", "s.yaml", &LoadOptions::default()) {
        Err(LoadError::Syntax { file, line, .. }) => {
            assert_eq!(file, "s.yaml");
            assert!(line >= 2);
        }
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match load_str("{\"dag\": ", "s.json", &LoadOptions::default()) {
        Err(LoadError::Syntax { line, .. }) => assert_eq!(line, 1),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[test]
fn trigger_set_problems_are_located() {
    let ps = problems(
        "
id: bad
triggers:
  - id: a
    condition:
      kind: expr
      expr: '.x | ]'
  - id: a
",
        "t.yaml",
    );
    let jq = find(&ps, "triggers[0].condition.expr");
    assert_eq!(jq.kind, ProblemKind::BadExpression);
    assert_eq!(jq.location.line, Some(7));
    let dup = find(&ps, "triggers[1].id");
    assert_eq!(dup.kind, ProblemKind::Invalid);
    assert_eq!(dup.location.line, Some(8));
}

#[test]
fn trigger_set_shape_errors_come_from_serde() {
    let ps = problems(
        "
id: bad
triggers:
  - id: a
    actions:
      - kind: invoke
        fucntion: x
",
        "t.yaml",
    );
    assert_eq!(ps[0].kind, ProblemKind::Shape);
    assert_eq!(ps[0].location.line, Some(7));
}

#[test]
fn unknown_format_and_bad_switch_cases() {
    let ps = problems("hello: world\n", "x.yaml");
    assert_eq!(ps[0].kind, ProblemKind::UnknownFormat);

    let ps = problems(
        "
dag: sw
tasks:
  s:
    function: f
    switch: [{default: a}]
  t:
    switch:
      - default: a
      - when: .x
        next: a
      - when: .y
  a: {function: f, foreach: .input, retry: {max_attempts: 0}}
",
        "sw.yaml",
    );
    let kinds: Vec<(&str, ProblemKind)> = ps
        .iter()
        .map(|p| (p.location.path.as_str(), p.kind))
        .collect();
    assert!(
        kinds.contains(&("tasks.s", ProblemKind::Invalid)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("tasks.t.switch[0]", ProblemKind::Invalid)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("tasks.t.switch[2]", ProblemKind::Invalid)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("tasks.a.retry.max_attempts", ProblemKind::Invalid)),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("tasks.a.retry", ProblemKind::Invalid)),
        "{kinds:?}"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let err = load_file(
        std::path::Path::new("/nonexistent/wf.yaml"),
        &LoadOptions::default(),
    )
    .expect_err("missing");
    assert!(matches!(err, LoadError::Io { .. }));
}
