//! `hourglass health` against a real gRPC health service: its exit status is the probe's answer.

use std::process::Command;

use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");

/// Runs `hourglass health` with `args`; its exit status and what it printed.
fn health(args: &[&str]) -> (i32, String) {
    let output = Command::new(BINARY).arg("health").args(args).output().expect("run hourglass health");
    let printed = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code().expect("exited, not killed"), printed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_0_when_serving_1_when_not_and_2_when_it_cannot_ask() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("", ServingStatus::Serving).await;
    reporter.set_service_status("hourglass.v1.IngestService", ServingStatus::NotServing).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!("http://{}", listener.local_addr().unwrap());
    let incoming = TcpIncoming::from(listener);
    tokio::spawn(Server::builder().add_service(service).serve_with_incoming(incoming));

    let answers = tokio::task::spawn_blocking(move || {
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        [
            health(&["--target", &target]),
            health(&["--target", &target, "--service", "hourglass.v1.IngestService"]),
            health(&["--target", &target, "--service", "no.such.Service"]),
            health(&["--target", &format!("http://127.0.0.1:{closed_port}"), "--timeout-secs", "2"]),
            health(&["--target", "not a url"]),
        ]
    })
    .await
    .unwrap();
    let [serving, not_serving, unknown, closed, malformed] = answers;
    assert_eq!(serving.0, 0, "{serving:?}");
    assert!(serving.1.contains("server SERVING"), "{serving:?}");
    assert_eq!(not_serving.0, 1, "{not_serving:?}");
    assert!(not_serving.1.contains("hourglass.v1.IngestService NOT_SERVING"), "{not_serving:?}");
    assert_eq!(unknown.0, 2, "an unknown service is an error answer (NOT_FOUND): {unknown:?}");
    assert_eq!(closed.0, 2, "{closed:?}");
    assert!(closed.1.contains("cannot"), "{closed:?}");
    assert_eq!(malformed.0, 2, "{malformed:?}");
}
