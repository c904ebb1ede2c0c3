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
        // Service logs go to stdout by default; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
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
    // Durations are Prometheus histograms (summable over replicas), not the exporter's default summaries.
    assert!(metrics.contains("# TYPE hourglass_collector_publish_seconds histogram"), "{metrics}");
    assert!(metrics.contains(r#"hourglass_collector_publish_seconds_bucket{le="+Inf"} 1"#), "{metrics}");
    // The process's own metrics, under the usual names; sampled by a thread of their own from the start.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let resident = loop {
        let metrics = http_get(metrics_port, "/metrics").await;
        if let Some(resident) = metric_value(&metrics, "process_resident_memory_bytes") {
            assert!(metric_value(&metrics, "process_open_fds").is_some_and(|fds| fds > 0.0), "{metrics}");
            break resident;
        }
        assert!(std::time::Instant::now() < deadline, "no process_resident_memory_bytes: {metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(resident > 1e6, "a collector's resident memory is megabytes, got {resident}");

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

/// The collector's peak resident memory (VmHWM), in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// A number from the Prometheus text of the collector's metrics, if present.
fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
}

/// Backpressure against a stalled broker: the broker never confirms (nothing listens where the collector
/// was told it is), so every batch stays in flight until the delivery timeout, and clients keep sending
/// as fast as they can on many streams. Without a budget each stream held up to --max-in-flight-batches
/// decoded batches (16 streams x 32 x ~0.7 MB here); with --max-in-flight-bytes the collector's peak
/// RSS stays within its budget plus one waiting batch per stream and a fixed allowance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_broker_keeps_the_collector_within_its_memory_budget() {
    use hourglass_proto::v1::{IngestStreamRequest, PropertyValue, property_value};

    const BUDGET_BYTES: u64 = 32 * 1024 * 1024;
    const STREAMS: usize = 16;
    const EVENTS_PER_BATCH: usize = 1000;
    // Allocator slack, HTTP/2 buffers of 16 connections, librdkafka's queue of what was enqueued.
    const ALLOWANCE_BYTES: u64 = 48 * 1024 * 1024;
    let database_url = hourglass_postgres::testing::create_test_database("collector_budget").await;
    let created = hourglass(&database_url, &["keys", "create", "--customer", "budget-test"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let api_key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let free_port = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (port, metrics_port, dead_broker_port) = (free_port(), free_port(), free_port());
    // Killed when dropped, also when an assertion fails: a stalled broker makes a graceful stop wait.
    let mut collector = support::KillOnDrop(
        Command::new(HOURGLASS)
            .args(["collector", "--listen-addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen-addr", &format!("127.0.0.1:{metrics_port}")])
            .args(["--max-in-flight-bytes", &BUDGET_BYTES.to_string()])
            .env("HOURGLASS_DATABASE_URL", &database_url)
            .env("HOURGLASS_KAFKA_BROKERS", format!("127.0.0.1:{dead_broker_port}"))
            .env("HOURGLASS_KAFKA_CREATE_TOPICS", "false")
            .env("HOURGLASS_KAFKA_DELIVERY_TIMEOUT_MS", "300000")
            .env("HOURGLASS_KAFKA_ENQUEUE_TIMEOUT_MS", "300000")
            .env("HOURGLASS_MAX_STREAMS_PER_CUSTOMER", STREAMS.to_string())
            .stdout(Stdio::null())
            // Service logs go to stdout by default; these tests read them from stderr.
            .env("HOURGLASS_LOG_OUTPUT", "stderr")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let logs = support::collect_stderr(&mut collector);
    // Not SERVING (the broker is unreachable), but taking calls.
    support::wait_for_log(&logs, "collector serving", Duration::from_secs(60)).await;
    let baseline = peak_rss_bytes(collector.id());

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let batch = move |stream: usize, sequence: u64| IngestStreamRequest {
        sequence,
        events: (0..EVENTS_PER_BATCH)
            .map(|index| Event {
                event_id: format!("s{stream}-b{sequence}-e{index:05}-0123456789abcdef"),
                event_type: "page_view".into(),
                occurred_at: Some(Timestamp { seconds: now, nanos: 0 }),
                user_id: Some(format!("user-{index}")),
                properties: (0..5)
                    .map(|property| {
                        let value = PropertyValue {
                            kind: Some(property_value::Kind::StringValue(format!(
                                "value-{property}-{index}-xxxxxxxxxx"
                            ))),
                        };
                        (format!("property_{property}"), value)
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut senders = Vec::new();
    let mut ack_streams = Vec::new();
    for stream in 0..STREAMS {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (batch_tx, batch_rx) = tokio::sync::mpsc::channel(2);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(batch_rx));
        request.metadata_mut().insert("authorization", format!("Bearer {api_key}").parse().unwrap());
        let acks = IngestServiceClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .ingest_stream(request)
            .await
            .unwrap()
            .into_inner();
        ack_streams.push(acks);
        senders.push(tokio::spawn(async move {
            for sequence in 0..64 {
                if batch_tx.send(batch(stream, sequence)).await.is_err() {
                    return;
                }
            }
        }));
    }

    // The collector holds all it will hold once its budget is (nearly) all reserved.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let metrics = http_get(metrics_port, "/metrics").await;
        let available = metric_value(&metrics, "hourglass_collector_budget_available_bytes");
        if available.is_some_and(|bytes| bytes < 2.0 * 1024.0 * 1024.0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the budget never filled: {available:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = peak_rss_bytes(collector.id());
    let grown = peak.saturating_sub(baseline);
    println!(
        "collector peak RSS {} MiB (baseline {} MiB, grown {} MiB) with a {} MiB budget and {STREAMS} streams",
        peak >> 20,
        baseline >> 20,
        grown >> 20,
        BUDGET_BYTES >> 20
    );
    let one_batch_per_stream = STREAMS as u64 * 1024 * 1024;
    assert!(
        grown <= BUDGET_BYTES + one_batch_per_stream + ALLOWANCE_BYTES,
        "peak RSS grew by {} MiB: over the {} MiB budget + {} MiB of waiting batches + {} MiB allowance",
        grown >> 20,
        BUDGET_BYTES >> 20,
        one_batch_per_stream >> 20,
        ALLOWANCE_BYTES >> 20
    );

    drop(ack_streams);
    for sender in senders {
        sender.abort();
    }
    drop(collector);
    drop(logs);
}
