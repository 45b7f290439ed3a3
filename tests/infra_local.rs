//! infra/local agrees with the code: the compose file, the Kubernetes
//! manifests, the KEDA ScaledObject and the Dockerfile use the environment
//! variables, flags, stream and consumer names that `trigflow-local` and
//! the `trigflow` CLI define, and every trigflow command line in them is
//! accepted by the real binary (it gets as far as connecting to NATS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use trigflow_local::LocalSettings;
use trigflow_local::data::{MINIO_STREAM, MINIO_SUBJECT, PARTS_PREFIX};
use trigflow_local::names::{
    CALLS_STREAM, DEAD_STREAM, EVENTS_STREAM, TIMER_CONSUMER, TIMERS_STREAM, WORKER_CONSUMER, env,
    flags,
};
use trigflow_local::objstore::env as objstore_env;

fn infra() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../infra/local")
}

fn read(rel: &str) -> String {
    let path = infra().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a file, as JSON values.
fn yaml_docs(rel: &str) -> Vec<Value> {
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|d| {
            use serde::Deserialize as _;
            Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn infra_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![infra()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read infra/local") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The `TRIGFLOW_*` names in `text`.
fn trigflow_vars(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("TRIGFLOW_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // `TRIGFLOW_*` in prose is a pattern, not a name.
        if !name.ends_with('_') {
            out.push(name);
        }
    }
    out
}

#[test]
fn every_trigflow_variable_and_stream_in_infra_exists_in_the_code() {
    let streams = [
        EVENTS_STREAM,
        TIMERS_STREAM,
        CALLS_STREAM,
        DEAD_STREAM,
        MINIO_STREAM,
    ];
    let mut seen = 0;
    for path in infra_files() {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for var in trigflow_vars(&text) {
            seen += 1;
            assert!(
                env::ALL.contains(&var.as_str()) || streams.contains(&var.as_str()),
                "{} names {var}, which is neither a variable trigflow reads ({:?}) \
                 nor one of its streams ({streams:?})",
                path.display(),
                env::ALL
            );
        }
    }
    assert!(seen > 10, "infra/local names only {seen} variables");
}

/// A trigflow container: its arguments and environment.
#[derive(Debug)]
struct Container {
    what: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn compose_containers() -> Vec<Container> {
    let compose = yaml_docs("docker-compose.yml").remove(0);
    let services = compose["services"].as_object().expect("services");
    let mut out = Vec::new();
    for (name, s) in services {
        // YAML merge keys (`<<: *trigflow`) are kept as a `<<` entry.
        let image = s["image"]
            .as_str()
            .or_else(|| s["<<"]["image"].as_str())
            .unwrap_or_default();
        if !image.starts_with("trigflow") {
            continue;
        }
        let env = s["environment"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_owned)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Container {
            what: format!("docker-compose.yml service {name}"),
            args: strings(&s["command"]),
            env,
        });
    }
    out
}

fn k8s_objects() -> Vec<Value> {
    let mut out = Vec::new();
    for path in infra_files() {
        if path.parent().and_then(Path::file_name) == Some("k8s".as_ref())
            && path.extension() == Some("yaml".as_ref())
        {
            let rel = path.strip_prefix(infra()).expect("under infra/local");
            out.extend(yaml_docs(rel.to_str().expect("utf-8")));
        }
    }
    out
}

fn k8s_containers(objects: &[Value]) -> Vec<Container> {
    let mut out = Vec::new();
    for o in objects {
        for c in o["spec"]["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let env = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let name = e["name"].as_str().expect("env name").to_owned();
                    // Values from the downward API are filled in by the
                    // cluster; a node name stands in for them here.
                    let value = e["value"].as_str().unwrap_or("k8s-node").to_owned();
                    (name, value)
                })
                .collect();
            out.push(Container {
                what: format!("k8s {} {}", o["kind"], o["metadata"]["name"]),
                args: strings(&c["args"]),
                env,
            });
        }
    }
    out
}

fn settings_file(objects: &[Value]) -> String {
    objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "trigflow-settings")
        .and_then(|o| o["data"]["trigflow.yaml"].as_str())
        .expect("ConfigMap trigflow-settings with trigflow.yaml")
        .to_owned()
}

#[test]
fn command_lines_use_the_cli_flags_and_valid_settings() {
    let objects = k8s_objects();
    let containers: Vec<Container> = compose_containers()
        .into_iter()
        .chain(k8s_containers(&objects))
        .collect();
    assert_eq!(
        containers.len(),
        5,
        "compose worker + 2 agents, k8s worker + agent: {containers:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("trigflow.yaml");
    std::fs::write(&settings, settings_file(&objects)).expect("settings");
    for c in &containers {
        assert!(
            matches!(c.args.first().map(String::as_str), Some("worker" | "agent")),
            "{}: {:?}",
            c.what,
            c.args
        );
        for a in c.args.iter().filter(|a| a.starts_with("--")) {
            assert!(
                flags::ALL.contains(&a.as_str()),
                "{}: flag {a} is not one of {:?}",
                c.what,
                flags::ALL
            );
        }
        // The settings (file + environment) load as the process would
        // load them.
        let file = c
            .args
            .iter()
            .any(|a| a == flags::CONFIG)
            .then_some(&settings);
        let loaded = LocalSettings::load(file.map(PathBuf::as_path), &c.env)
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        if c.args[0] == "agent" {
            let from_flags = c.args.iter().filter(|a| *a == flags::FUNCTION).count();
            assert!(
                from_flags > 0 || !loaded.functions.is_empty(),
                "{}: agent serves nothing",
                c.what
            );
        }

        // The real binary accepts the command line and gets as far as
        // connecting to the (unreachable here) NATS server.
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| {
                if a == "/etc/trigflow/trigflow.yaml" {
                    settings.display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_trigflow"));
        for var in env::ALL {
            cmd.env_remove(var);
        }
        cmd.args(&args)
            .envs(&c.env)
            .env(env::FUNCTIONS_DIR, infra().join("functions"));
        let out = cmd.output().expect("run trigflow");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", c.what);
        assert!(
            stderr.contains("cannot connect to NATS at nats://"),
            "{}: {stderr}",
            c.what
        );
    }
}

#[test]
fn keda_scales_the_worker_deployment_on_the_worker_and_timer_consumers() {
    let objects = k8s_objects();
    let scaled = objects
        .iter()
        .find(|o| o["kind"] == "ScaledObject")
        .expect("a ScaledObject");
    let worker = objects
        .iter()
        .find(|o| {
            o["kind"] == "Deployment"
                && o["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
        })
        .expect("the worker Deployment");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        worker["metadata"]["name"]
    );
    assert_eq!(scaled["spec"]["minReplicaCount"], 0, "scale to zero");
    let pairs: Vec<(String, String)> = scaled["spec"]["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .map(|t| {
            assert_eq!(t["type"], "nats-jetstream");
            (
                t["metadata"]["stream"].as_str().expect("stream").to_owned(),
                t["metadata"]["consumer"]
                    .as_str()
                    .expect("consumer")
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        vec![
            (EVENTS_STREAM.to_owned(), WORKER_CONSUMER.to_owned()),
            (TIMERS_STREAM.to_owned(), TIMER_CONSUMER.to_owned()),
        ]
    );
    // The agents run one per node and name themselves after it.
    let agent = objects
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("the agent DaemonSet");
    let node_env = &agent["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        node_env
            .as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == env::NODE
                && e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"),
        "{node_env}"
    );
}

#[test]
fn dockerfile_builds_the_cli_and_runs_it_as_the_manifests_user() {
    let text = read("Dockerfile");
    let cli: toml_like::Manifest =
        toml_like::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    assert!(
        text.contains(&format!("-p {} --bin {}", cli.package, cli.bin)),
        "the Dockerfile builds {} / {}",
        cli.package,
        cli.bin
    );
    assert!(text.contains(&format!("ENTRYPOINT [\"{}\"]", cli.bin)));
    // The builder's Rust is at least the workspace's rust-version.
    let workspace =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"))
            .expect("workspace manifest");
    let wanted = toml_like::value(&workspace, "rust-version").expect("rust-version");
    let builder = text
        .lines()
        .find_map(|l| l.strip_prefix("FROM rust:"))
        .expect("a rust builder stage");
    let version: String = builder
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let parse = |v: &str| -> Vec<u32> { v.split('.').filter_map(|p| p.parse().ok()).collect() };
    assert!(parse(&version) >= parse(&wanted), "{version} < {wanted}");
    assert!(text.contains("FROM debian:") && text.contains("-slim"));
    // The user the image runs as is the one the manifests require.
    let user = text
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER")
        .trim()
        .to_owned();
    for o in k8s_objects() {
        let ctx = &o["spec"]["template"]["spec"]["securityContext"];
        if !ctx.is_null() {
            assert_eq!(
                ctx["runAsUser"].to_string(),
                user,
                "{}",
                o["metadata"]["name"]
            );
        }
    }
}

#[test]
fn the_example_workflow_only_calls_functions_the_agents_serve() {
    let text = read("workflows/squares.yaml");
    let loaded =
        trigflow_dag::load_str(&text, "squares.yaml", &trigflow_dag::LoadOptions::default())
            .expect("the example workflow loads");
    let json = serde_json::to_string(&loaded.workflow).expect("encode");
    let mut called: Vec<String> = json
        .split("\"nats:")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_owned))
        .collect();
    called.sort();
    called.dedup();
    assert_eq!(called, vec!["square", "sum"]);
    let objects = k8s_objects();
    for c in compose_containers()
        .into_iter()
        .chain(k8s_containers(&objects))
        .filter(|c| c.args[0] == "agent")
    {
        let mut served: Vec<String> = c
            .args
            .windows(2)
            .filter(|w| w[0] == flags::FUNCTION)
            .map(|w| w[1].clone())
            .collect();
        if let Some(list) = c.env.get(env::FUNCTIONS) {
            served.push(list.clone());
        }
        let served = trigflow_local::settings::parse_functions(&served.join(";"))
            .unwrap_or_else(|e| panic!("{}: {e}", c.what));
        for f in &called {
            assert!(served.contains_key(f), "{} does not serve {f}", c.what);
        }
        if let Some(square) = served.get("square") {
            let script = square.trim_start_matches("cmd:sh ");
            assert!(infra().join("functions").join(script).is_file(), "{script}");
        }
    }
}

#[test]
fn the_object_store_and_minio_notifications_match_the_code() {
    let compose = yaml_docs("docker-compose.yml").remove(0);
    let minio = compose["services"]["minio"]["environment"]
        .as_object()
        .expect("minio environment");
    // MinIO's NATS target `<ID>`: on, JetStream, on the bridge's subject.
    let ids: Vec<&str> = minio
        .keys()
        .filter_map(|k| k.strip_prefix("MINIO_NOTIFY_NATS_SUBJECT_"))
        .collect();
    assert_eq!(ids.len(), 1, "one NATS notification target: {ids:?}");
    let id = ids[0];
    let var = |name: &str| minio[&format!("MINIO_NOTIFY_NATS_{name}_{id}")].as_str();
    assert_eq!(var("SUBJECT"), Some(MINIO_SUBJECT));
    assert_eq!(var("ENABLE"), Some("on"));
    assert_eq!(
        var("JETSTREAM"),
        Some("on"),
        "published into {MINIO_STREAM}"
    );

    let objects = k8s_objects();
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = dir.path().join("trigflow.yaml");
    std::fs::write(&settings, settings_file(&objects)).expect("settings");
    // Where Secrets are mounted in the trigflow pods.
    let mut credential_mounts = Vec::new();
    for o in &objects {
        let spec = &o["spec"]["template"]["spec"];
        for v in spec["volumes"].as_array().into_iter().flatten() {
            if v["secret"]["secretName"].is_string() {
                for c in spec["containers"].as_array().into_iter().flatten() {
                    for m in c["volumeMounts"].as_array().into_iter().flatten() {
                        if m["name"] == v["name"] {
                            credential_mounts
                                .push(m["mountPath"].as_str().unwrap_or("").to_owned());
                        }
                    }
                }
            }
        }
    }
    let mut buckets = Vec::new();
    for c in compose_containers()
        .into_iter()
        .chain(k8s_containers(&objects))
    {
        let file = c
            .args
            .iter()
            .any(|a| a == flags::CONFIG)
            .then_some(settings.as_path());
        let loaded =
            LocalSettings::load(file, &c.env).unwrap_or_else(|e| panic!("{}: {e}", c.what));
        let s3 = loaded
            .s3_settings(&c.env)
            .unwrap_or_else(|| panic!("{}: no s3_endpoint: payloads would not fit", c.what));
        // Credentials in the variables, or in a mounted credentials file
        // (not there outside the cluster).
        let file = c.env.get(objstore_env::SHARED_CREDENTIALS_FILE);
        assert!(
            (s3.access_key_id.is_some() && s3.secret_access_key.is_some()) || file.is_some(),
            "{}: no AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_SHARED_CREDENTIALS_FILE",
            c.what
        );
        if let Some(file) = file {
            assert!(
                credential_mounts
                    .iter()
                    .any(|dir| Path::new(file).parent() == Some(Path::new(dir))),
                "{}: {file} is not in a mounted Secret ({credential_mounts:?})",
                c.what
            );
        }
        if c.what.starts_with("docker-compose") {
            assert_eq!(s3.endpoint, "http://minio:9000", "{}", c.what);
            buckets.push(s3.bucket);
        }
    }
    buckets.dedup();
    assert_eq!(
        buckets.len(),
        1,
        "one bucket for every process: {buckets:?}"
    );
    // The setup creates that bucket and sends notifications of the objects
    // that announce data, to the target above.
    let setup = strings(&compose["services"]["minio-setup"]["command"]).join(" ");
    for needle in [
        format!("mc mb --ignore-existing local/{}", buckets[0]),
        format!(
            "local/{} arn:minio:sqs::{id}:nats --event put --prefix {PARTS_PREFIX}",
            buckets[0]
        ),
    ] {
        assert!(
            setup.contains(&needle),
            "minio-setup lacks {needle:?}: {setup}"
        );
    }
}

/// Just enough of Cargo.toml for the checks above (no TOML parser in the
/// dependencies).
mod toml_like {
    use std::path::Path;

    pub struct Manifest {
        pub package: String,
        pub bin: String,
    }

    /// The first `key = "value"` line's value.
    pub fn value(text: &str, key: &str) -> Option<String> {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
    }

    pub fn read(path: &Path) -> Manifest {
        let text = std::fs::read_to_string(path).expect("manifest");
        let package = value(&text, "name").expect("package name");
        let bin = text
            .split("[[bin]]")
            .nth(1)
            .and_then(|b| value(b, "name"))
            .expect("[[bin]] name");
        Manifest { package, bin }
    }
}
