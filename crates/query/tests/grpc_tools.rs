//! The real grpcurl and `buf curl` against the running query service, through server reflection only (no
//! proto files): what the README's copy-paste examples do.

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{brute_force, data_hours};

/// The path of a tool from `e2e/servers/tools.sh` (which installs it on first use and caches it).
fn tool(name: &str) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new("bash")
        .arg(repo.join("e2e/servers/tools.sh"))
        .arg(name)
        .output()
        .unwrap_or_else(|error| panic!("cannot run tools.sh {name}: {error}"));
    assert!(output.status.success(), "tools.sh {name} failed: {}", String::from_utf8_lossy(&output.stderr));
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{command:?} failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The sum of every `"events": "N"` in a JSON report (protobuf JSON writes 64-bit integers as strings).
fn total_events(json: &str) -> u64 {
    json.lines()
        .filter_map(|line| line.trim().strip_prefix("\"events\": \""))
        .map(|rest| rest.trim_end_matches([',', '"']).parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Multi-threaded: the tools run as blocking child processes while the server answers them.
async fn grpcurl_and_buf_curl_query_through_reflection() {
    let platform = support::start("query_grpc_tools").await;
    platform.client().await; // serving
    let addr = platform.addr.to_string();
    let hours = data_hours();
    let request = format!(
        r#"{{"range": {{"start": "{}", "end": "{}"}}, "groupByEventType": true}}"#,
        rfc3339(hours[0]),
        rfc3339(hours[hours.len() - 1] + 3600)
    );
    let expected: u64 = brute_force(&platform.acme_events).values().map(|truth| truth.event_ids.len() as u64).sum();
    let authorization = format!("authorization: Bearer {}", platform.acme_key);

    let grpcurl = tool("grpcurl");
    let services = run(Command::new(&grpcurl).args(["-plaintext", &addr, "list"]));
    let mut listed: Vec<&str> = services.lines().collect();
    listed.sort_unstable();
    // Exactly what this server serves: not the ingest service, which shares the descriptor set.
    assert_eq!(
        listed,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "hourglass.v1.QueryService"
        ],
        "{services}"
    );
    let health = run(Command::new(&grpcurl).args([
        "-plaintext",
        "-d",
        r#"{"service": "hourglass.v1.QueryService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]));
    assert!(health.contains("SERVING"), "{health}");
    let described =
        run(Command::new(&grpcurl).args(["-plaintext", &addr, "describe", "hourglass.v1.GetHourlyMetricsRequest"]));
    assert!(described.contains("group_by_event_type"), "{described}");
    let report = run(Command::new(&grpcurl).args([
        "-plaintext",
        "-H",
        &authorization,
        "-d",
        &request,
        &addr,
        "hourglass.v1.QueryService/GetHourlyMetrics",
    ]));
    assert_eq!(total_events(&report), expected, "{report}");

    let buf = tool("buf");
    let report = run(Command::new(&buf).args([
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "-H",
        &authorization,
        "-d",
        &request,
        &format!("http://{addr}/hourglass.v1.QueryService/GetHourlyMetrics"),
    ]));
    assert_eq!(total_events(&report), expected, "{report}");
    hourglass_cql::testing::drop_test_keyspace(&platform.cql).await;
}
