//! `hourglass standalone` as a newcomer meets it: the built binary on a fresh data directory, the sample
//! commands it prints run as printed, a kill -9 between ingest and query, and the restarted process
//! shows exactly the counts of the acknowledged events within a minute; keys made and revoked with
//! `hourglass keys --data-dir` while it runs, and tracking plans pushed with `hourglass plans --data-dir`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_hourglass");

struct Standalone {
    child: Child,
    /// The welcome text, up to its last line.
    welcome: Vec<String>,
}

impl Drop for Standalone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &std::path::Path, port: u16) -> Standalone {
    start_with(data_dir, port, &[], &[], Stdio::null())
}

/// Starts standalone with `extra_args` and `env`, its stderr going to `stderr`.
fn start_with(
    data_dir: &std::path::Path,
    port: u16,
    extra_args: &[&str],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> Standalone {
    let mut child = Command::new(BINARY)
        .args(["standalone", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-addr", &format!("127.0.0.1:{port}")])
        .args(extra_args)
        .env("HOURGLASS_LOG", "info")
        // Service logs go to stdout by default, where the welcome is; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start hourglass standalone");
    let mut welcome = Vec::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.expect("read standalone's stdout");
        let last = line.starts_with("Stop with Ctrl-C");
        welcome.push(line);
        if last {
            break;
        }
    }
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    assert!(welcome.iter().any(|line| line.starts_with("Hourglass standalone is running")), "{welcome:#?}");
    Standalone { child, welcome }
}

/// The printed command line that runs `hourglass <subcommand>`.
fn printed_command(welcome: &[String], subcommand: &str) -> String {
    welcome
        .iter()
        .map(|line| line.trim())
        .find(|line| line.starts_with(BINARY) && line[BINARY.len()..].trim_start().starts_with(subcommand))
        .unwrap_or_else(|| panic!("no `{subcommand}` command printed: {welcome:#?}"))
        .to_owned()
}

fn run_printed(command: &str) -> String {
    let output = Command::new("bash").arg("-c").arg(command).output().expect("run the printed command");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{command} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Events and exact distinct users per event type of the report (summed over its hours).
fn report_by_type(report: &str) -> BTreeMap<String, (u64, u64)> {
    let mut by_type: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in report.lines().filter(|line| line.starts_with("20")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let entry = by_type.entry(fields[1].to_owned()).or_default();
        entry.0 += fields[2].parse::<u64>().unwrap();
        entry.1 += fields[3].trim_start_matches('~').parse::<u64>().unwrap();
    }
    by_type
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_commands_ingest_and_a_kill_9_loses_no_acknowledged_event() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut first = start(data_dir.path(), port);
    support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut first.child, Duration::from_secs(30)).await;
    assert!(first.welcome.iter().any(|line| line.contains(&data_dir.path().display().to_string())));
    // stdout is the log stream: the printed commands read the keys from their file, never show them.
    let keys = std::fs::read_to_string(data_dir.path().join("demo-keys.txt")).unwrap();
    let demo_keys: Vec<&str> = keys
        .lines()
        .filter_map(|line| line.strip_prefix("ingest: ").or_else(|| line.strip_prefix("query: ")))
        .collect();
    assert_eq!(demo_keys.len(), 2, "{keys}");
    for key in demo_keys {
        assert!(key.starts_with("hgk_"), "{keys}");
        assert!(!first.welcome.iter().any(|line| line.contains(key)), "a key printed: {:#?}", first.welcome);
    }

    // The printed sample command, as printed: 10,000 events, every one acknowledged.
    let sent = run_printed(&printed_command(&first.welcome, "send"));
    assert!(sent.contains("accepted   10000"), "{sent}");
    let report_command = printed_command(&first.welcome, "report");

    // kill -9 right after the acks: whatever ingestion and aggregation had not done yet is only on disk.
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    drop(first);

    let mut second = start(data_dir.path(), port);
    support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut second.child, Duration::from_secs(30)).await;
    let printed_again = printed_command(&second.welcome, "report");
    assert_eq!(printed_again, report_command, "the demo keys survive the restart");

    // The generator sends 20 event types in turn and user (n * 2654435761) mod 100000 for event n.
    let mut expected: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
    for n in 0..10_000u64 {
        expected.entry((n % 20) as usize).or_default().insert(n.wrapping_mul(2_654_435_761) % 100_000);
    }
    let started = Instant::now();
    let by_type = loop {
        let report = run_printed(&report_command);
        let by_type = report_by_type(&report);
        if by_type.values().map(|(events, _)| events).sum::<u64>() == 10_000 {
            break by_type;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the report does not show 10000 events after a minute: {report}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(by_type.len(), 20, "{by_type:?}");
    for (events, _) in by_type.values() {
        assert_eq!(*events, 500);
    }
    // Per hour and type the distinct users are exact; summed over at most two hours (a run across an
    // hour boundary), a type's figure is at least its true count and at most its events.
    let true_users: BTreeSet<usize> = expected.values().map(BTreeSet::len).collect();
    for (_, users) in by_type.values() {
        assert!(true_users.iter().any(|truth| *users as usize >= *truth) && *users <= 500, "{by_type:?}");
    }
}

/// With an hour between provisional rollups, events sent after the open hour's first rollup are still
/// counted within a minute: once ingestion has caught up and no batch has arrived for
/// `--rollup-when-idle-ms`, standalone rolls the hour up at once rather than an hour later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_sent_after_an_hours_rollup_are_counted_once_ingestion_is_idle() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut standalone =
        start_with(data_dir.path(), port, &["--provisional-interval-secs", "3600"], &[], Stdio::null());
    support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut standalone.child, Duration::from_secs(30))
        .await;
    let send_command = printed_command(&standalone.welcome, "send");
    let report_command = printed_command(&standalone.welcome, "report");
    // Each send has ids of its own: the second round's events add to the first's.
    for round in 1..=2u64 {
        let sent = run_printed(&send_command);
        assert!(sent.contains("accepted   10000"), "{sent}");
        let started = Instant::now();
        loop {
            let report = run_printed(&report_command);
            let counted: u64 = report_by_type(&report).values().map(|(events, _)| events).sum();
            if counted == round * 10_000 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: the report does not show {} events after a minute: {report}",
                round * 10_000
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[tokio::test]
async fn a_second_standalone_on_the_same_data_directory_is_refused() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _first = start(data_dir.path(), port);
    let output = Command::new(BINARY)
        .args(["standalone", "--data-dir"])
        .arg(data_dir.path())
        .args(["--listen-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another hourglass standalone is using"), "{stderr}");
}

#[tokio::test]
async fn keys_created_with_the_cli_work_against_standalone() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let _standalone = start(data_dir.path(), port);
    let created = Command::new(BINARY)
        .args(["keys", "create", "--customer", "acme", "--scope", "ingest", "--data-dir"])
        .arg(data_dir.path())
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    let sent = Command::new(BINARY)
        .args(["send", "--target", &format!("http://127.0.0.1:{port}"), "--api-key", &key, "--events", "300"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success() && stdout.contains("accepted   300"), "{stdout}");

    // A JSON-lines file: every valid line accepted, a bad event rejected with its reason, nothing lost.
    let file = data_dir.path().join("events.jsonl");
    std::fs::write(
        &file,
        concat!(
            "{\"event_id\": \"f-1\", \"event_type\": \"click\", \"user_id\": \"u-1\", \"properties\": {\"price\": 9.5}}\n",
            "{\"eventType\": \"view\", \"userId\": \"u-2\"}\n",
            "\n",
            "{\"event_id\": \"f-3\", \"event_type\": \"\"}\n",
        ),
    )
    .unwrap();
    let sent = Command::new(BINARY)
        .args(["send", "--target", &format!("http://127.0.0.1:{port}"), "--api-key", &key, "--file"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sent.stdout);
    assert!(sent.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&sent.stderr));
    assert!(stdout.contains("accepted   2") && stdout.contains("rejected   1"), "{stdout}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The permission bits of `path`, in octal as `ls -l` and `chmod` write them.
fn mode_of(path: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    format!("{:o}", std::fs::metadata(path).unwrap().permissions().mode() & 0o777)
}

/// The data directory holds every event and the keys: its owner's alone, even when it existed before
/// with looser modes (here a directory 0755 and an empty `meta.db` 0644, as an older build left them).
#[tokio::test]
async fn the_data_directory_and_its_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;

    let root = tempfile::tempdir().unwrap();
    let data_dir = root.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data_dir.join("meta.db"), b"").unwrap();
    std::fs::set_permissions(data_dir.join("meta.db"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let port = free_port();
    let mut standalone = start(&data_dir, port);
    support::wait_until_serving(&format!("http://127.0.0.1:{port}"), &mut standalone.child, Duration::from_secs(30))
        .await;

    assert_eq!(mode_of(&data_dir), "700", "the data directory");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&data_dir).unwrap() {
        let path = entry.unwrap().path();
        files.insert(path.file_name().unwrap().to_string_lossy().into_owned(), mode_of(&path));
    }
    for database in ["log.db", "raw.db", "meta.db"] {
        for suffix in ["", "-wal", "-shm"] {
            assert!(files.contains_key(&format!("{database}{suffix}")), "{database}{suffix} is missing: {files:?}");
        }
    }
    for secret in ["demo-keys.txt", "page-token.secret", "standalone.lock"] {
        assert!(files.contains_key(secret), "{secret} is missing: {files:?}");
    }
    let open_to_others: Vec<_> = files.iter().filter(|(_, mode)| *mode != "600").collect();
    assert!(open_to_others.is_empty(), "every file is 0600: {open_to_others:?}");
}

/// An ingestion that stops on an error (here log.db refusing the offset commit, through a trigger
/// created by another connection) turns health NOT_SERVING, no batch is acknowledged after that, and
/// the process exits non-zero, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_ingestion_stops_health_is_not_serving_no_batch_is_acked_and_the_process_fails() {
    use std::io::Read;

    use hourglass_proto::prost_types::Timestamp;
    use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
    use hourglass_proto::v1::{Event, IngestBatchRequest};
    use sqlx::ConnectOptions;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // A long shutdown delay: the window in which the test looks at the failed process before it exits.
    let mut standalone = start_with(data_dir.path(), port, &["--shutdown-delay-ms", "15000"], &[], Stdio::piped());
    let mut stderr = standalone.child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut logs = String::new();
        stderr.read_to_string(&mut logs).unwrap();
        logs
    });
    let channel = support::wait_until_serving(
        &format!("http://127.0.0.1:{port}"),
        &mut standalone.child,
        Duration::from_secs(30),
    )
    .await;
    let demo_keys = std::fs::read_to_string(data_dir.path().join("demo-keys.txt")).unwrap();
    let ingest_key = demo_keys.lines().find_map(|line| line.strip_prefix("ingest:")).unwrap().trim().to_owned();

    let mut log_db = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(data_dir.path().join("log.db"))
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    for statement in [
        "CREATE TRIGGER refuse_new_offsets BEFORE INSERT ON consumer_offsets \
         BEGIN SELECT RAISE(ABORT, 'offset commits refused by the test'); END",
        "CREATE TRIGGER refuse_offset_updates BEFORE UPDATE ON consumer_offsets \
         BEGIN SELECT RAISE(ABORT, 'offset commits refused by the test'); END",
    ] {
        sqlx::query(statement).execute(&mut log_db).await.unwrap();
    }

    let batch = |id: &str| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let event = Event {
            event_id: id.into(),
            event_type: "signup".into(),
            occurred_at: Some(Timestamp { seconds: now, nanos: 0 }),
            ..Default::default()
        };
        let mut request = tonic::Request::new(IngestBatchRequest { events: vec![event] });
        request.metadata_mut().insert("authorization", format!("Bearer {ingest_key}").parse().unwrap());
        request
    };
    let mut ingest = IngestServiceClient::new(channel.clone());
    let ack = ingest.ingest_batch(batch("before")).await.expect("accepted while ingestion runs");
    assert_eq!(ack.into_inner().ack.unwrap().accepted_count, 1);

    // Ingesting that batch ends in the refused commit, which stops ingestion.
    let mut health = HealthClient::new(channel);
    let started = Instant::now();
    for service in ["", "hourglass.v1.IngestService"] {
        loop {
            let request = HealthCheckRequest { service: service.to_owned() };
            let status = health.check(request).await.unwrap().into_inner().status;
            if status == ServingStatus::NotServing as i32 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{service:?} still SERVING after a minute");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let refused = ingest.ingest_batch(batch("after")).await.expect_err("no batch is acked once ingestion stopped");
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let status = loop {
        if let Some(status) = standalone.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "standalone did not exit after ingestion stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = logs.join().unwrap();
    assert!(!status.success(), "exit status {status}: {logs}");
    assert!(logs.contains("ingestion stopped") && logs.contains("offset commits refused by the test"), "{logs}");
}

/// Runs `hourglass keys ... --data-dir <data_dir>` and returns its stdout.
fn keys_command(data_dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(BINARY).arg("keys").args(args).arg("--data-dir").arg(data_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "keys {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// Calls `call` until it is refused and returns the refusal. A call may succeed only if it started
/// less than `ttl` after `revoked_at`: the cache entry that serves it was made before the revocation,
/// so a call started a TTL later finds it expired and asks the store, on any machine however slow.
/// That bound is the guarantee, not a timing; the deadline only keeps a broken cache from hanging
/// the test.
async fn call_until_refused<Call, Called>(
    what: &str,
    revoked_at: Instant,
    ttl: Duration,
    mut call: Call,
) -> tonic::Status
where
    Call: FnMut() -> Called,
    Called: Future<Output = Result<(), tonic::Status>>,
{
    let deadline = revoked_at + 10 * ttl;
    loop {
        let started = Instant::now();
        match call().await {
            Ok(()) => assert!(
                started.duration_since(revoked_at) < ttl,
                "{what}: a call started {:?} after the revocation was served: the key was trusted past the cache TTL",
                started.duration_since(revoked_at)
            ),
            Err(status) => return status,
        }
        assert!(Instant::now() < deadline, "{what}: the revoked key was still served {:?} after it", 10 * ttl);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn keys_revoked_with_the_cli_while_cached_are_refused_once_the_cache_ttl_has_passed() {
    use hourglass_core::api_key::ApiKey;
    use hourglass_proto::prost_types::Timestamp;
    use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
    use hourglass_proto::v1::query_service_client::QueryServiceClient;
    use hourglass_proto::v1::{Event, GetHourlyMetricsRequest, IngestBatchRequest, TimeRange};

    let ttl = Duration::from_secs(1);
    let data_dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut standalone =
        start_with(data_dir.path(), port, &[], &[("HOURGLASS_KEY_CACHE_TTL_SECS", "1")], Stdio::null());
    let channel = support::wait_until_serving(
        &format!("http://127.0.0.1:{port}"),
        &mut standalone.child,
        Duration::from_secs(30),
    )
    .await;
    let create = |scope: &str| {
        let printed = keys_command(data_dir.path(), &["create", "--customer", "acme", "--scope", scope]);
        ApiKey::parse(printed.trim()).expect("keys create prints the key")
    };
    let (ingest_key, query_key) = (create("ingest"), create("query"));
    let bearer = |key: &ApiKey| -> tonic::metadata::MetadataValue<_> {
        format!("Bearer {}", key.expose_secret()).parse().unwrap()
    };
    let (ingest_bearer, query_bearer) = (bearer(&ingest_key), bearer(&query_key));

    let ingest = IngestServiceClient::new(channel.clone());
    let mut sent = 0;
    let mut send = || {
        sent += 1;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let event = Event {
            event_id: format!("e-{sent}"),
            event_type: "click".into(),
            occurred_at: Some(Timestamp { seconds: now, nanos: 0 }),
            ..Default::default()
        };
        let mut request = tonic::Request::new(IngestBatchRequest { events: vec![event] });
        request.metadata_mut().insert("authorization", ingest_bearer.clone());
        let mut client = ingest.clone();
        async move { client.ingest_batch(request).await.map(drop) }
    };
    let query = QueryServiceClient::new(channel);
    let report = || {
        let hour = 1_795_600_800;
        let range = TimeRange {
            start: Some(Timestamp { seconds: hour, nanos: 0 }),
            end: Some(Timestamp { seconds: hour + 3600, nanos: 0 }),
        };
        let mut request = tonic::Request::new(GetHourlyMetricsRequest {
            range: Some(range),
            event_types: vec![],
            group_by_event_type: false,
        });
        request.metadata_mut().insert("authorization", query_bearer.clone());
        let mut client = query.clone();
        async move { client.get_hourly_metrics(request).await.map(drop) }
    };
    // The calls that put both keys in the cache.
    send().await.expect("the new ingest key is accepted");
    report().await.expect("the new query key is served");

    let revoke = |key: &ApiKey| {
        let id = key.id().to_string();
        let printed = keys_command(data_dir.path(), &["revoke", &id]);
        assert!(printed.contains(&format!("revoked {id}")), "{printed}");
        Instant::now()
    };
    let ingest_revoked_at = revoke(&ingest_key);
    let refusal = call_until_refused("ingest", ingest_revoked_at, ttl, &mut send).await;
    assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{refusal:?}");
    assert!(refusal.message().contains("revoked"), "{}", refusal.message());

    let query_revoked_at = revoke(&query_key);
    let refusal = call_until_refused("query", query_revoked_at, ttl, report).await;
    assert_eq!(refusal.code(), tonic::Code::Unauthenticated, "{refusal:?}");
    assert!(refusal.message().contains("revoked"), "{}", refusal.message());
}

/// A serving role logs to stdout, where container log agents read it, one JSON object per line with the
/// fields docs/logging.md lists; nothing of it goes to stderr.
#[test]
fn a_serving_role_logs_json_lines_to_stdout() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BINARY)
        .args(["standalone", "--log-format", "json", "--data-dir"])
        .arg(data_dir.path())
        .args(["--listen-addr", &format!("127.0.0.1:{}", free_port())])
        .env("HOURGLASS_LOG", "info")
        .env_remove("HOURGLASS_LOG_OUTPUT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hourglass standalone");
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let consuming = loop {
        let line = line_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("standalone logged \"ingestor consuming\" on stdout within 30 s");
        let Ok(log) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
        if log["message"] == "ingestor consuming" {
            break log;
        }
    };
    assert_eq!(consuming["level"], "INFO", "{consuming}");
    assert_eq!(consuming["target"], "hourglass_ingestor::pipeline", "{consuming}");
    assert!(consuming["timestamp"].as_str().is_some_and(|time| time.starts_with("20")), "{consuming}");
    support::sigterm(&child);
    let status = child.wait().unwrap();
    let stderr = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("ingestor consuming"), "logs went to stderr too: {stderr}");
}

/// A tmpfs mounted on a fresh directory under /tmp, unmounted (and the directory removed) when dropped,
/// whether the test passed or not.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `64m`). Fails, saying so, where mounting is not permitted.
    fn mount(size: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("hourglass-disk-full-").tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            output.status.success(),
            "this test mounts a small tmpfs to fill it up, which needs root or CAP_SYS_ADMIN (CI runs as root): \
             mount said {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process of a failed test may still hold a file open.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes `path` until the file system has no room left (ENOSPC); returns the bytes written.
fn fill_up(path: &std::path::Path) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => return written,
            Ok(bytes) => written += bytes as u64,
            Err(error) if error.raw_os_error() == Some(libc::ENOSPC) => return written,
            Err(error) => panic!("cannot fill {}: {error}", path.display()),
        }
    }
}

/// The standalone's log as a disk-full wait shows it when it runs out: what it waited for, what it saw
/// last, and the log's tail, so a failure on a loaded machine can be read from the test's output alone.
struct LogTail {
    logs: std::sync::Arc<std::sync::Mutex<String>>,
    started: Instant,
}

/// Lines of the standalone's log a failed wait shows.
const LOG_TAIL_LINES: usize = 150;

impl LogTail {
    fn fail(&self, what: &str, last_seen: &str) -> ! {
        let logs = self.logs.lock().unwrap().clone();
        let lines: Vec<&str> = logs.lines().collect();
        let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
        panic!(
            "{what}: {last_seen} ({:.1?} into the test)\nthe standalone's log, last {} of {} lines:\n{tail}",
            self.started.elapsed(),
            LOG_TAIL_LINES.min(lines.len()),
            lines.len()
        );
    }

    /// Lines of the log that contain every one of `parts`.
    fn count_lines(&self, parts: &[&str]) -> usize {
        self.logs.lock().unwrap().lines().filter(|line| parts.iter().all(|part| line.contains(part))).count()
    }

    /// Calls `probe` every 200 ms until it gives `Ok`. Fails, showing the log, once `limit` has passed
    /// (with the last `Err` as what was seen) or at once if the process exits.
    async fn wait_for<T>(
        &self,
        child: &mut Child,
        what: &str,
        limit: Duration,
        mut probe: impl AsyncFnMut() -> Result<T, String>,
    ) -> T {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.fail(what, &format!("the process exited ({status})"));
            }
            let last_seen = match probe().await {
                Ok(value) => return value,
                Err(last_seen) => last_seen,
            };
            if Instant::now() >= deadline {
                self.fail(&format!("{what}: not within {limit:?}"), &last_seen);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The health of the whole server at `target`, with a channel to it; or why it could not be asked.
async fn health_of(
    target: &str,
) -> Result<(tonic_health::pb::health_check_response::ServingStatus, tonic::transport::Channel), String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let endpoint = tonic::transport::Endpoint::from_shared(target.to_owned()).unwrap();
    let channel = endpoint.connect().await.map_err(|error| format!("cannot connect: {error}"))?;
    let response = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: String::new() })
        .await
        .map_err(|status| format!("health check failed: {status}"))?;
    let status = ServingStatus::try_from(response.into_inner().status).map_err(|error| error.to_string())?;
    Ok((status, channel))
}

/// `hourglass_embedded_disk_full` per database, from the metrics endpoint on `port`.
async fn disk_full_gauges(port: u16) -> Result<BTreeMap<String, f64>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|error| format!("cannot connect to the metrics endpoint: {error}"))?;
    let request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n";
    connection.write_all(request.as_bytes()).await.map_err(|error| error.to_string())?;
    let mut response = String::new();
    connection.read_to_string(&mut response).await.map_err(|error| error.to_string())?;
    Ok(response
        .lines()
        .filter_map(|line| line.strip_prefix("hourglass_embedded_disk_full{database=\""))
        .filter_map(|rest| {
            let (database, value) = rest.split_once("\"} ")?;
            Some((database.to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}

/// The aggregator's lease in the disk-full test: how long an hour whose job could not be given back on the
/// full disk waits before it is leased again.
const AGGREGATOR_LEASE: Duration = Duration::from_secs(30);

/// How long the disk-full test lets counting go without any count changing before it fails. Generous:
/// on a loaded two-core machine ingestion retries with backoff, the aggregator's provisional rollups come
/// a second apart at best, and an hour may wait out its lease ([`AGGREGATOR_LEASE`]) and then the
/// aggregator's retry delay (30 s by default) before it is counted.
const COUNTING_STALLED_AFTER: Duration = Duration::from_secs(180);

/// Standalone on a file system that fills up: batches are refused UNAVAILABLE with a message naming the
/// full disk and a retry delay, never acknowledged unless durable; health turns NOT_SERVING and
/// `hourglass_embedded_disk_full{database="log.db"}` 1; the process stays up and logs the condition once;
/// once space is freed it serves again by itself, every database's gauge back at 0, and the report counts
/// every acknowledged event exactly once and none of the refused ones that were not sent again.
///
/// Every wait is for progress, with a deadline generous for a loaded machine, and a wait that runs out
/// prints what it waited for, what it saw last and the tail of the standalone's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_disk_fills_up_batches_are_refused_unacked_and_ingestion_resumes_once_space_is_freed() {
    use hourglass_proto::prost_types::Timestamp;
    use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
    use hourglass_proto::v1::{Event, IngestBatchRequest};
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_types::StatusExt;

    let tmpfs = Tmpfs::mount("64m");
    let data_dir = tmpfs.path().join("data");
    let filler = tmpfs.path().join("filler");
    let port = free_port();
    let metrics_port = free_port();
    let target = format!("http://127.0.0.1:{port}");
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    // An aggregation job that met the full disk, and could not even be given back for want of room, is
    // retried once its lease expires, as after a store outage: a lease of 30 s rather than the default
    // 5 minutes keeps that path, which the timing picks in about one run in ten, within the counting wait.
    let lease_secs = AGGREGATOR_LEASE.as_secs().to_string();
    let mut standalone = start_with(
        &data_dir,
        port,
        &[
            "--readiness-interval-ms",
            "200",
            "--provisional-interval-secs",
            "1",
            "--aggregator-lease-secs",
            &lease_secs,
            "--metrics-listen-addr",
            &metrics_addr,
        ],
        // Plain text: a failure prints the log's tail.
        &[("NO_COLOR", "1")],
        Stdio::piped(),
    );
    let log = LogTail { logs: support::collect_stderr(&mut standalone.child), started: Instant::now() };
    let health_is = |expected: ServingStatus| {
        let target = target.clone();
        async move || match health_of(&target).await {
            Ok((status, channel)) if status == expected => Ok(channel),
            Ok((status, _)) => {
                Err(format!("health {status:?}; disk-full gauges {:?}", disk_full_gauges(metrics_port).await))
            }
            Err(error) => Err(error),
        }
    };
    let channel = log
        .wait_for(
            &mut standalone.child,
            "serving at start",
            Duration::from_secs(120),
            health_is(ServingStatus::Serving),
        )
        .await;
    let demo_keys = std::fs::read_to_string(data_dir.join("demo-keys.txt")).unwrap();
    let ingest_key = demo_keys.lines().find_map(|line| line.strip_prefix("ingest:")).unwrap().trim().to_owned();
    let report_command = printed_command(&standalone.welcome, "report");

    // Ten events of `event_type` per batch, ids from the batch's name: a batch sent again is the same events.
    let batch = |event_type: &str, name: &str| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let events = (0..10)
            .map(|index| Event {
                event_id: format!("{name}-{index}"),
                event_type: event_type.into(),
                user_id: Some(format!("user-{index}")),
                occurred_at: Some(Timestamp { seconds: now, nanos: 0 }),
                ..Default::default()
            })
            .collect();
        let mut request = tonic::Request::new(IngestBatchRequest { events });
        request.metadata_mut().insert("authorization", format!("Bearer {ingest_key}").parse().unwrap());
        request
    };
    let mut ingest = IngestServiceClient::new(channel.clone());
    for index in 0..20 {
        if let Err(status) = ingest.ingest_batch(batch("before", &format!("before-{index}"))).await {
            log.fail("a batch acknowledged while the disk has room", &format!("{status:?}"));
        }
    }

    // Fill the disk, then send until acks stop: SQLite reuses room it already has (a WAL restarted from
    // its beginning, freed pages), so a few more batches may be acknowledged, each of them durable.
    let filled = fill_up(&filler);
    assert!(filled > 0, "the tmpfs had no room for the filler");
    let filled_at = Instant::now();
    let mut acked_filling = 0u64;
    let refusal = loop {
        match ingest.ingest_batch(batch("filling", &format!("filling-{acked_filling}"))).await {
            Ok(_) => acked_filling += 10,
            Err(status) => break status,
        }
        if acked_filling >= 100_000 {
            log.fail("a refusal once the disk is full", "100,000 events still acknowledged");
        }
    };
    // That batch was refused, and is never sent again: none of its events may be counted.
    assert_eq!(refusal.code(), tonic::Code::Unavailable, "{refusal:?}");
    let message = refusal.message();
    assert!(
        message.contains("no space left") && message.contains(&data_dir.join("log.db").display().to_string()),
        "the refusal names the full disk: {message}"
    );
    let retry_delay = refusal.get_details_retry_info().and_then(|retry| retry.retry_delay);
    assert!(retry_delay.is_some_and(|delay| delay > Duration::ZERO), "a retry delay: {refusal:?}");
    log.wait_for(
        &mut standalone.child,
        "NOT_SERVING on a full disk",
        Duration::from_secs(120),
        health_is(ServingStatus::NotServing),
    )
    .await;
    let not_serving_after = filled_at.elapsed();
    let gauges = disk_full_gauges(metrics_port).await;
    if gauges.as_ref().ok().and_then(|gauges| gauges.get("log.db")) != Some(&1.0) {
        log.fail("hourglass_embedded_disk_full{database=\"log.db\"} 1 on a full disk", &format!("{gauges:?}"));
    }

    // While it is full, the process stays up and logs the condition once, not once per refusal. A batch
    // is acknowledged only if SQLite found room for it; every one is sent again once there is room.
    let mut refused_while_full = 1;
    for index in 0..20 {
        match ingest.ingest_batch(batch("while_full", &format!("while-full-{index}"))).await {
            Ok(_) => {}
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                refused_while_full += 1;
            }
        }
    }
    if let Some(status) = standalone.child.try_wait().unwrap() {
        log.fail("standalone up on a full disk", &format!("it exited ({status})"));
    }
    let full_disk_errors = log.count_lines(&["disk full: writes are refused", "log.db"]);
    if full_disk_errors != 1 {
        log.fail(
            "the full disk logged once per condition",
            &format!("{full_disk_errors} errors for log.db, {refused_while_full} refusals"),
        );
    }
    if log.count_lines(&["event log group commit failed"]) > 0 {
        log.fail("no failed commit logged (a full disk is not one)", "one logged");
    }

    // Room again: standalone serves by itself, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    log.wait_for(
        &mut standalone.child,
        "SERVING once the disk has room",
        Duration::from_secs(180),
        health_is(ServingStatus::Serving),
    )
    .await;
    let serving_after = freed_at.elapsed();
    for index in 0..20 {
        if let Err(status) = ingest.ingest_batch(batch("while_full", &format!("while-full-{index}"))).await {
            log.fail("room again: a batch sent again is acknowledged", &format!("{status:?}"));
        }
    }
    for index in 0..5 {
        if let Err(status) = ingest.ingest_batch(batch("after", &format!("after-{index}"))).await {
            log.fail("room again: a new batch is acknowledged", &format!("{status:?}"));
        }
    }

    // Every acknowledged event counted exactly once (a batch sent twice too); the refused batch that was
    // never sent again, not at all. Counts only grow, so one beyond the expected fails at once; short of
    // it, the wait goes on as long as counts keep changing.
    let mut expected =
        BTreeMap::from([("after".to_owned(), 50), ("before".to_owned(), 200), ("while_full".to_owned(), 200)]);
    if acked_filling > 0 {
        expected.insert("filling".to_owned(), acked_filling);
    }
    let counting_from = Instant::now();
    let mut last_change = Instant::now();
    let mut counted: BTreeMap<String, u64> = BTreeMap::new();
    while counted != expected {
        if let Some(status) = standalone.child.try_wait().unwrap() {
            log.fail("counting every acknowledged event once", &format!("the process exited ({status})"));
        }
        let output = Command::new("bash").arg("-c").arg(&report_command).output().expect("run the printed report");
        if !output.status.success() {
            log.fail("the printed report command to succeed", &String::from_utf8_lossy(&output.stderr));
        }
        let now_counted: BTreeMap<String, u64> = report_by_type(&String::from_utf8_lossy(&output.stdout))
            .into_iter()
            .map(|(name, (events, _))| (name, events))
            .collect();
        if now_counted.iter().any(|(name, events)| expected.get(name).is_none_or(|wanted| events > wanted)) {
            log.fail(
                "every acknowledged event counted once",
                &format!("counted {now_counted:?}, expected {expected:?}"),
            );
        }
        if now_counted != counted {
            counted = now_counted;
            last_change = Instant::now();
        } else if last_change.elapsed() > COUNTING_STALLED_AFTER {
            log.fail(
                "every acknowledged event counted once",
                &format!("counted {counted:?}, expected {expected:?}, no change for {COUNTING_STALLED_AFTER:?}"),
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let counted_after = counting_from.elapsed();
    let gauges = disk_full_gauges(metrics_port).await;
    let all_clear =
        BTreeMap::from([("log.db".to_owned(), 0.0), ("meta.db".to_owned(), 0.0), ("raw.db".to_owned(), 0.0)]);
    if gauges.as_ref() != Ok(&all_clear) {
        log.fail("every database's disk-full gauge back at 0", &format!("{gauges:?}"));
    }
    if let Some(status) = standalone.child.try_wait().unwrap() {
        log.fail("standalone up at the end", &format!("it exited ({status})"));
    }
    let full_databases: Vec<&str> = ["log.db", "raw.db", "meta.db"]
        .into_iter()
        .filter(|database| log.count_lines(&["disk full: writes are refused", database]) > 0)
        .collect();
    eprintln!(
        "acknowledged after filling the disk: {acked_filling} events; refused while full: {refused_while_full} of 21 \
         batches; found full: {full_databases:?}; NOT_SERVING {not_serving_after:.1?} after filling, SERVING \
         {serving_after:.1?} after freeing, all counted {counted_after:.1?} after the last batch"
    );
    // Which write met the full disk in each database (its span names the stage): the timing decides
    // whether raw.db and meta.db meet it, and inside a transaction or not.
    for line in log.logs.lock().unwrap().lines().filter(|line| line.contains("disk full: writes are refused")) {
        eprintln!("  {line}");
    }
}

/// Runs `hourglass plans ... --data-dir <data_dir>` and returns its stdout.
fn plans_command(data_dir: &std::path::Path, args: &[&str]) -> String {
    let output = Command::new(BINARY).arg("plans").args(args).arg("--data-dir").arg(data_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "plans {args:?} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

/// A plan pushed with `hourglass plans push --data-dir` while standalone runs is enforced once the plan
/// cache's TTL has passed, and a second version replaces it the same way, without a restart. As for keys,
/// an answer from before the push may come only from a call started less than a TTL after it.
#[tokio::test]
async fn plans_pushed_with_the_cli_are_enforced_by_a_running_standalone_within_the_cache_ttl() {
    use hourglass_core::api_key::ApiKey;
    use hourglass_proto::prost_types::Timestamp;
    use hourglass_proto::v1::ingest_service_client::IngestServiceClient;
    use hourglass_proto::v1::{BatchAck, Event, IngestBatchRequest, RejectionReason};

    let ttl = Duration::from_secs(1);
    let data_dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut standalone =
        start_with(data_dir.path(), port, &[], &[("HOURGLASS_PLAN_CACHE_TTL_SECS", "1")], Stdio::null());
    let channel = support::wait_until_serving(
        &format!("http://127.0.0.1:{port}"),
        &mut standalone.child,
        Duration::from_secs(30),
    )
    .await;
    let key = keys_command(data_dir.path(), &["create", "--customer", "acme", "--scope", "ingest"]);
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", ApiKey::parse(key.trim()).unwrap().expose_secret()).parse().unwrap();
    let ingest = IngestServiceClient::new(channel);
    let mut sent = 0;
    let mut send = || {
        sent += 1;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let event = |event_type: &str| Event {
            event_id: format!("{event_type}-{sent}"),
            event_type: event_type.into(),
            occurred_at: Some(Timestamp { seconds: now, nanos: 0 }),
            ..Default::default()
        };
        let mut request = tonic::Request::new(IngestBatchRequest { events: vec![event("click"), event("signup")] });
        request.metadata_mut().insert("authorization", bearer.clone());
        let mut client = ingest.clone();
        async move { client.ingest_batch(request).await.unwrap().into_inner().ack.unwrap() }
    };
    let push = |name: &str, json: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, json).unwrap();
        let printed = plans_command(data_dir.path(), &["push", "--customer", "acme", path.to_str().unwrap()]);
        assert!(printed.starts_with("pushed plan"), "{printed}");
        Instant::now()
    };
    /// Sends until `done` holds; an ack that does not may come only from a call started within the TTL.
    async fn send_until<Send, Sent>(
        what: &str,
        pushed_at: Instant,
        ttl: Duration,
        mut send: Send,
        done: impl Fn(&BatchAck) -> bool,
    ) -> BatchAck
    where
        Send: FnMut() -> Sent,
        Sent: Future<Output = BatchAck>,
    {
        loop {
            let started = Instant::now();
            let ack = send().await;
            if done(&ack) {
                return ack;
            }
            assert!(
                started.duration_since(pushed_at) < ttl,
                "{what}: a call started {:?} after the push was checked against the old plan: {ack:?}",
                started.duration_since(pushed_at)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    assert_eq!(send().await.accepted_count, 2, "no plan: both types accepted");
    let pushed_at =
        push("v1.json", r#"{"mode": "enforce", "undeclared_event_types": "reject", "event_types": {"click": {}}}"#);
    let ack = send_until("v1", pushed_at, ttl, &mut send, |ack| !ack.rejections.is_empty()).await;
    assert_eq!(ack.accepted_count, 1);
    let rejection = &ack.rejections[0];
    assert_eq!((rejection.index, rejection.reason()), (1, RejectionReason::EventTypeUndeclared));
    assert_eq!(rejection.message, "EVENT_TYPE_UNDECLARED: event type \"signup\" is not in plan v1");

    let pushed_at = push(
        "v2.json",
        r#"{"mode": "enforce", "undeclared_event_types": "reject", "event_types": {"click": {}, "signup": {}}}"#,
    );
    let ack = send_until("v2", pushed_at, ttl, &mut send, |ack| ack.rejections.is_empty()).await;
    assert_eq!(ack.accepted_count, 2, "v2 declares both types");
}
