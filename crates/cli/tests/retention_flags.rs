//! The built `hourglass` binary (tier c) refuses to start when its raw retention leaves no room for late
//! data: the collector and standalone when `--late-data-days` does not end 2 days before
//! `--raw-retention-days`, the aggregator when `--cql-ttl-days` leaves less than a day after an hour's final
//! rollup. Each is refused before it connects to anything, naming the flags.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HOURGLASS: &str = env!("CARGO_BIN_EXE_hourglass");

/// Only a process that does not refuse to start runs this long.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(60);

/// Runs `hourglass args`, expects it to exit unsuccessfully on its own, and returns its stderr.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(HOURGLASS)
        .args(args)
        // Nothing is listening here: a role that got past its checks would wait for it, not exit.
        .env("HOURGLASS_DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .stdout(Stdio::null())
        // Service logs go to stdout by default; these tests read them from stderr.
        .env("HOURGLASS_LOG_OUTPUT", "stderr")
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hourglass");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for hourglass") {
            break status;
        }
        if started.elapsed() > REFUSAL_DEADLINE {
            child.kill().expect("kill hourglass");
            panic!("hourglass {args:?} did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("piped stderr"), &mut stderr).unwrap();
    assert!(!status.success(), "hourglass {args:?} exited successfully: {stderr}");
    stderr
}

#[test]
fn a_late_data_window_too_close_to_the_raw_retention_is_refused_at_start_up() {
    let collector = refused(&["collector", "--listen-addr", "127.0.0.1:0", "--late-data-days", "29"]);
    assert!(collector.contains("--late-data-days 29"), "{collector}");
    assert!(collector.contains("--raw-retention-days 30"), "{collector}");
    assert!(collector.contains("at most 28"), "{collector}");

    let data_dir = tempfile::tempdir().unwrap();
    let data_dir_arg = data_dir.path().to_str().unwrap();
    let standalone = refused(&[
        "standalone",
        "--data-dir",
        data_dir_arg,
        "--listen-addr",
        "127.0.0.1:0",
        "--raw-retention-days",
        "8",
    ]);
    assert!(standalone.contains("--late-data-days 7") && standalone.contains("--raw-retention-days 8"), "{standalone}");
    assert!(std::fs::read_dir(data_dir.path()).unwrap().next().is_none(), "refused before touching the data");

    let skew = refused(&["collector", "--listen-addr", "127.0.0.1:0", "--max-future-skew-secs", "86400"]);
    assert!(skew.contains("--max-future-skew-secs"), "{skew}");
}

#[test]
fn a_raw_retention_too_short_for_final_rollups_stops_the_aggregator() {
    let aggregator = refused(&["aggregator", "--cql-ttl-days", "2"]);
    assert!(aggregator.contains("--cql-ttl-days"), "{aggregator}");
    assert!(aggregator.contains("--allowed-lateness-secs"), "{aggregator}");
}
