//! infra/aws agrees with the code: the SAM template sets exactly the
//! environment variables the orchestrator binary reads, its table works
//! with `DynamoStore` (created from the template's own key schema, on moto),
//! the queue mapping asks for partial batch responses, step results come
//! back to the orchestrator's queue, and the console test events are valid.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use trigflow_aws::DynamoStore;
use trigflow_aws::testing::MotoServer;
use trigflow_core::seams::{Precondition, StateStore, StoreError};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The template as JSON. It uses long-form intrinsics (`Ref:`), so plain
/// YAML parsing suffices; a `!Ref` tag would make this fail, on purpose.
fn template() -> Value {
    serde_norway::from_str(&read("infra/aws/template.yaml")).expect("template.yaml is plain YAML")
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(r.is_object(), "template has no resource {name}");
    r
}

fn resources_of_type<'a>(t: &'a Value, ty: &str) -> Vec<&'a Value> {
    t["Resources"]
        .as_object()
        .expect("Resources")
        .values()
        .filter(|r| r["Type"] == ty)
        .collect()
}

/// Names passed as string literals to `env("..")` or `std::env::var("..")`
/// in the orchestrator binary: the variables it reads.
fn variables_the_binary_reads() -> BTreeSet<String> {
    let src = read("providers/aws/src/bin/trigflow-orchestrator.rs");
    let mut out = BTreeSet::new();
    for call in ["env(\"", "env::var(\""] {
        let mut rest = src.as_str();
        while let Some(i) = rest.find(call) {
            rest = &rest[i + call.len()..];
            let name: String = rest.chars().take_while(|c| *c != '"').collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn orchestrator_environment_is_exactly_what_the_binary_reads() {
    let t = template();
    let props = &resource(&t, "OrchestratorFunction")["Properties"];
    let set: BTreeSet<String> = props["Environment"]["Variables"]
        .as_object()
        .expect("Environment.Variables")
        .keys()
        .cloned()
        .collect();
    let read = variables_the_binary_reads();
    assert!(
        read.contains("TRIGFLOW_TABLE") && read.contains("TRIGFLOW_QUEUE_URL"),
        "the scan of the binary found its variables: {read:?}"
    );
    assert_eq!(set, read);
    // Each points at the resource it names.
    let vars = &props["Environment"]["Variables"];
    assert_eq!(vars["TRIGFLOW_TABLE"], json!({"Ref": "StateTable"}));
    assert_eq!(vars["TRIGFLOW_QUEUE_URL"], json!({"Ref": "EventQueue"}));
    assert_eq!(vars["TRIGFLOW_DLQ_URL"], json!({"Ref": "DeadLetterQueue"}));
    assert_eq!(
        vars[trigflow_aws::retention::RETENTION_DAYS_VAR],
        json!({"Ref": "RetentionDays"})
    );
    assert_eq!(
        vars[trigflow_aws::scheduler::QUEUE_ARN_VAR],
        json!({"Fn::GetAtt": ["EventQueue", "Arn"]})
    );
    assert_eq!(
        vars[trigflow_aws::scheduler::ROLE_VAR],
        json!({"Fn::If": ["UseScheduler", {"Fn::GetAtt": ["SchedulerRole", "Arn"]}, ""]}),
        "scheduler timers only when enabled (empty: off)"
    );
    assert_eq!(vars["TRIGFLOW_BUCKET"], json!({"Ref": "BlobBucket"}));
    // The parameter's default is the code's default, and the code accepts it.
    let default = &t["Parameters"]["RetentionDays"]["Default"];
    assert_eq!(
        default.as_u64(),
        Some(trigflow_aws::retention::DEFAULT_RETENTION_DAYS)
    );
    trigflow_aws::Retention::from_days_var(Some(&default.to_string()))
        .expect("the template's default retention parses");
    // How cargo-lambda builds it and how Lambda runs it.
    assert_eq!(props["Runtime"], "provided.al2023");
    assert_eq!(props["Handler"], "bootstrap");
    assert_eq!(props["Architectures"], json!(["arm64"]));
    let code = props["CodeUri"].as_str().expect("CodeUri");
    assert!(
        code.trim_end_matches('/')
            .ends_with("target/lambda/trigflow-orchestrator")
    );
}

#[test]
fn queue_mapping_reports_batch_item_failures_and_queue_redrives_to_the_dlq() {
    let t = template();
    let mappings = resources_of_type(&t, "AWS::Lambda::EventSourceMapping");
    assert_eq!(mappings.len(), 1);
    let p = &mappings[0]["Properties"];
    assert_eq!(p["FunctionName"], json!({"Ref": "OrchestratorFunction"}));
    assert_eq!(
        p["EventSourceArn"],
        json!({"Fn::GetAtt": ["EventQueue", "Arn"]})
    );
    assert_eq!(
        p["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    let redrive = &resource(&t, "EventQueue")["Properties"]["RedrivePolicy"];
    assert_eq!(
        redrive["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["DeadLetterQueue", "Arn"]})
    );
    // SQS redelivers a message still in flight when the visibility timeout
    // is shorter than the function's run.
    let visibility = resource(&t, "EventQueue")["Properties"]["VisibilityTimeout"]
        .as_u64()
        .expect("VisibilityTimeout");
    let timeout = resource(&t, "OrchestratorFunction")["Properties"]["Timeout"]
        .as_u64()
        .expect("Timeout");
    assert!(visibility >= 6 * timeout, "{visibility} < 6 x {timeout}");
}

/// With `SchedulerTimers=enabled`: a role Scheduler assumes that may send
/// to the queue, and the orchestrator may create the schedules the code
/// names (and pass that role), nothing more.
#[test]
fn scheduler_timers_get_their_role_when_enabled() {
    let t = template();
    assert_eq!(
        t["Conditions"]["UseScheduler"],
        json!({"Fn::Equals": [{"Ref": "SchedulerTimers"}, "enabled"]})
    );
    assert_eq!(t["Parameters"]["SchedulerTimers"]["Default"], "disabled");
    let role = resource(&t, "SchedulerRole");
    assert_eq!(role["Condition"], "UseScheduler");
    let trust = &role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "scheduler.amazonaws.com");
    let deliver = &role["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0];
    assert_eq!(deliver["Action"], json!(["sqs:SendMessage"]));
    assert_eq!(
        deliver["Resource"],
        json!({"Fn::GetAtt": ["EventQueue", "Arn"]})
    );
    let statements = resource(&t, "OrchestratorRole")["Properties"]["Policies"][0]
        ["PolicyDocument"]["Statement"]
        .as_array()
        .expect("statements");
    let conditional: Vec<&Value> = statements.iter().filter_map(|s| s.get("Fn::If")).collect();
    assert_eq!(conditional.len(), 2);
    for c in &conditional {
        assert_eq!(c[0], "UseScheduler");
        assert_eq!(c[2], json!({"Ref": "AWS::NoValue"}));
    }
    let create = &conditional[0][1];
    assert_eq!(create["Action"], json!(["scheduler:CreateSchedule"]));
    let pattern = create["Resource"]["Fn::Sub"].as_str().expect("Fn::Sub");
    assert!(
        pattern.ends_with(&format!(
            ":schedule/default/{}*",
            trigflow_aws::scheduler::NAME_PREFIX
        )),
        "{pattern}"
    );
    let pass = &conditional[1][1];
    assert_eq!(pass["Action"], json!(["iam:PassRole"]));
    assert_eq!(
        pass["Resource"],
        json!({"Fn::GetAtt": ["SchedulerRole", "Arn"]})
    );
}

/// The claim check's bucket: private, encrypted, its objects expiring under
/// the prefix the code writes, readable and writable by the orchestrator,
/// readable by the steps.
#[test]
fn claim_check_bucket_matches_the_code() {
    let t = template();
    let p = &resource(&t, "BlobBucket")["Properties"];
    let block = &p["PublicAccessBlockConfiguration"];
    for k in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[k], true, "{k}");
    }
    let rule = &p["LifecycleConfiguration"]["Rules"][0];
    let prefix = rule["Prefix"].as_str().expect("Prefix");
    assert!(
        trigflow_core::claim::BLOB_PREFIX.starts_with(prefix),
        "objects are written under {} but expire under {prefix}",
        trigflow_core::claim::BLOB_PREFIX
    );
    let objects = json!({"Fn::Sub": "${BlobBucket.Arn}/blobs/*"});
    let payloads = |role: &str| -> Value {
        resource(&t, role)["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .find(|s| s["Sid"] == "Payloads")
            .cloned()
            .unwrap_or_else(|| panic!("{role} has no Payloads statement"))
    };
    let orchestrator = payloads("OrchestratorRole");
    assert_eq!(
        orchestrator["Action"],
        json!(["s3:PutObject", "s3:GetObject"])
    );
    assert_eq!(orchestrator["Resource"], objects);
    let step = payloads("HelloRole");
    assert_eq!(step["Action"], json!(["s3:GetObject"]));
    assert_eq!(step["Resource"], objects);
}

#[test]
fn step_results_come_back_to_the_orchestrator_queue() {
    let t = template();
    let configs = resources_of_type(&t, "AWS::Lambda::EventInvokeConfig");
    assert!(!configs.is_empty());
    let queue = json!({"Fn::GetAtt": ["EventQueue", "Arn"]});
    for c in configs {
        let d = &c["Properties"]["DestinationConfig"];
        assert_eq!(d["OnSuccess"]["Destination"], queue);
        assert_eq!(d["OnFailure"]["Destination"], queue);
    }
}

#[test]
fn console_test_events_are_valid_and_name_the_example_function() {
    let t = template();
    let name = &resource(&t, "HelloFunction")["Properties"]["FunctionName"]["Fn::Sub"];
    let suffix = name
        .as_str()
        .and_then(|s| s.strip_prefix("${AWS::StackName}"))
        .expect("HelloFunction is named after the stack");
    let start: Value =
        serde_json::from_str(&read("infra/aws/events/start-hello.json")).expect("start-hello.json");
    assert_eq!(start["action"], "start");
    let wf: trigflow_core::model::Workflow =
        serde_json::from_value(start["workflow"].clone()).expect("a trigflow workflow");
    // The default stack name of the README is `trigflow`.
    let function = format!("lambda:trigflow{suffix}");
    // Run it in the simulator with the function the template deploys
    // (the same greeting as its inline Python code).
    let run = trigflow_core::sim::run(
        &trigflow_core::Engine::new(),
        &wf,
        start["input"].clone(),
        |inv| {
            assert_eq!(inv.function, function);
            let name = inv.input["name"].as_str().unwrap_or("world");
            Ok(json!({"greeting": format!("Hello, {name}!")}))
        },
        100,
    )
    .expect("runs");
    assert_eq!(run.invocations.len(), 1);
    assert_eq!(
        run.state.status,
        trigflow_core::state::ExecutionStatus::Succeeded {
            output: json!({"greeting": "Hello, Ada!"})
        }
    );
    let python = resource(&t, "HelloFunction")["Properties"]["InlineCode"]
        .as_str()
        .expect("InlineCode");
    assert!(python.contains("\"Hello, \" + name + \"!\""));
    let status: Value = serde_json::from_str(&read("infra/aws/events/status-hello.json"))
        .expect("status-hello.json");
    assert_eq!(status["action"], "status");
    assert_eq!(status["execution"], start["execution"]);
}

/// The table as the template declares it, created on moto, works with
/// `DynamoStore`: inline and chunked (transactional) writes, conditions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamo_store_works_on_the_table_the_template_declares() {
    let t = template();
    let p = &resource(&t, "StateTable")["Properties"];
    assert_eq!(p["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        p["TimeToLiveSpecification"],
        json!({"AttributeName": trigflow_aws::retention::TTL_ATTRIBUTE, "Enabled": true}),
        "the TTL attribute is the one DynamoStore writes for finished executions"
    );
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    let attrs = p["AttributeDefinitions"]
        .as_array()
        .expect("AttributeDefinitions");
    let keys = p["KeySchema"].as_array().expect("KeySchema");
    let moto = MotoServer::start().expect("moto server");
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let mut create = client
        .create_table()
        .table_name("from-template")
        .billing_mode(BillingMode::PayPerRequest);
    for a in attrs {
        create = create.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().expect("AttributeName"))
                .attribute_type(ScalarAttributeType::from(
                    a["AttributeType"].as_str().expect("AttributeType"),
                ))
                .build()
                .expect("attribute definition"),
        );
    }
    for k in keys {
        create = create.key_schema(
            KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().expect("AttributeName"))
                .key_type(KeyType::from(k["KeyType"].as_str().expect("KeyType")))
                .build()
                .expect("key schema element"),
        );
    }
    create
        .send()
        .await
        .expect("table from the template's schema");

    // Chunk size 4: the 10-byte value takes the TransactWriteItems path.
    let store = DynamoStore::new(client, "from-template").with_chunk_size(4);
    let v1 = store
        .put("e/1", b"small".to_vec(), Precondition::DoesNotExist)
        .await
        .expect("inline create");
    let v2 = store
        .put(
            "e/1",
            b"0123456789".to_vec(),
            Precondition::MatchesVersion(v1.clone()),
        )
        .await
        .expect("chunked update");
    let got = store.get("e/1").await.expect("get").expect("present");
    assert_eq!(got.value, b"0123456789");
    assert_eq!(got.version, v2);
    let stale = store
        .put("e/1", b"x".to_vec(), Precondition::MatchesVersion(v1))
        .await;
    assert!(
        matches!(stale, Err(StoreError::PreconditionFailed { .. })),
        "{stale:?}"
    );
    store
        .delete("e/1", Precondition::MatchesVersion(v2))
        .await
        .expect("delete");
    assert!(store.get("e/1").await.expect("get").is_none());

    // The TTL attribute the table expires on is the one the store writes
    // (inline here: the chunked path is tests/retention.rs).
    let store = store
        .with_chunk_size(trigflow_aws::store::INLINE_LIMIT)
        .with_retention(trigflow_aws::Retention::days(1));
    let running = br#"{"execution":"r","status":"running"}"#.to_vec();
    let finished = br#"{"execution":"f","status":"succeeded","output":1}"#.to_vec();
    store
        .put("exec/r", running, Precondition::DoesNotExist)
        .await
        .expect("running");
    store
        .put("exec/f", finished, Precondition::DoesNotExist)
        .await
        .expect("finished");
    let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let ttl_of = |pk: &'static str| {
        let client = client.clone();
        async move {
            let item = client
                .get_item()
                .table_name("from-template")
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(pk.into()))
                .consistent_read(true)
                .send()
                .await
                .expect("get_item")
                .item
                .expect("item");
            item.get(
                p["TimeToLiveSpecification"]["AttributeName"]
                    .as_str()
                    .expect("name"),
            )
            .map(|a| {
                a.as_n()
                    .expect("numeric ttl")
                    .parse::<i64>()
                    .expect("epoch seconds")
            })
        }
    };
    assert_eq!(ttl_of("exec/r").await, None);
    let ttl = ttl_of("exec/f")
        .await
        .expect("a finished execution expires");
    let in_a_day = chrono::Utc::now().timestamp() + 86_400;
    assert!(
        (in_a_day - 60..=in_a_day + 60).contains(&ttl),
        "{ttl} vs {in_a_day}"
    );
}
