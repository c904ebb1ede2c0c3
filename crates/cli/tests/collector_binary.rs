//! The built `hourglass` binary (tier c): `keys` against real Postgres, `collector` against the real
//! broker, driven over gRPC, stopped with SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
use hourglass_proto::v1::{Event, IngestBatchRequest};

mod support;

const HOURGLASS: &str = env!("CARGO_BIN_EXE_hourglass");

fn hourglass(database_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(HOURGLASS).args(args).env("HOURGLASS_DATABASE_URL", database_url).output().expect("run hourglass")
}

#[tokio::test]
async fn keys_and_collector_work_from_the_command_line_and_sigterm_exits_cleanly() {
    let database_url = hourglass_postgres::testing::create_test_database("cli_binary").await;
    let brokers = std::env::var("HOURGLASS_TEST_KAFKA_BROKERS").expect("run with scripts/test.sh");

    let created = hourglass(&database_url, &["keys", "create", "--customer", "cli-test", "--name", "from test"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let api_key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(api_key.starts_with("hgk_"), "the key alone is printed on stdout: {api_key:?}");
    let listed = hourglass(&database_url, &["keys", "list", "--customer", "cli-test"]);
    let listing = String::from_utf8(listed.stdout).unwrap();
    assert!(listing.contains(&api_key[..12]) && listing.contains("from test"), "{listing}");
    assert!(!listing.contains(&api_key), "listings never show the secret");
    let bad_customer = hourglass(&database_url, &["keys", "create", "--customer", "Not Valid"]);
    assert!(!bad_customer.status.success());
    assert!(String::from_utf8_lossy(&bad_customer.stderr).contains("invalid customer id"));

    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port = free_port();
    let metrics_port = free_port();
    let unique = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    let mut collector = Command::new(HOURGLASS)
        .args(["--log-format", "json", "collector", "--listen-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen-addr", &format!("127.0.0.1:{metrics_port}")])
        .env("HOURGLASS_DATABASE_URL", &database_url)
        .env("HOURGLASS_KAFKA_BROKERS", &brokers)
        .env("HOURGLASS_KAFKA_EVENTS_TOPIC", format!("hourglass.test.cli.{unique}"))
        .env("HOURGLASS_KAFKA_DEAD_LETTER_TOPIC", format!("hourglass.test.cli-dlq.{unique}"))
        .env("HOURGLASS_KAFKA_TOPIC_PARTITIONS", "1")
        .env("HOURGLASS_READINESS_INTERVAL_MS", "100")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let channel =
        support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut collector, Duration::from_secs(60)).await;

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let event = Event {
        event_id: "cli-1".into(),
        event_type: "signup".into(),
        occurred_at: Some(Timestamp { seconds: now.as_secs() as i64, nanos: 0 }),
        ..Default::default()
    };
    let mut request = tonic::Request::new(IngestBatchRequest { events: vec![event] });
    request.metadata_mut().insert("authorization", format!("Bearer {api_key}").parse().unwrap());
    let ack = IngestServiceClient::new(channel).ingest_batch(request).await.unwrap().into_inner().ack.unwrap();
    assert_eq!(ack.accepted_count, 1);
    let metrics = http_get(metrics_port, "/metrics").await;
    assert!(metrics.contains(r#"hourglass_collector_events_total{outcome="accepted"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"hourglass_collector_batches_total{status="accepted"} 1"#), "{metrics}");

    let (status, logs) = support::sigterm_and_wait(&mut collector).await;
    assert!(status.success(), "collector exited with {status}: {logs}");
    assert!(logs.lines().all(|line| line.starts_with('{')), "--log-format json logs one object per line: {logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("metrics endpoint");
    connection.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = String::new();
    connection.read_to_string(&mut response).await.unwrap();
    response
}
