//! What the binary tests share: waiting for a process's health, and stopping it the way Kubernetes does.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hourglass_proto::log::v1::{EventBatchRecord, Outcome, OutcomeCount};
use hourglass_proto::v1::Event;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Waits until the gRPC health service at `target` reports SERVING; returns a channel to it. Fails at
/// once, with the child's stderr, if `child` exits first: a process that died at start must not cost the
/// whole timeout.
pub async fn wait_until_serving(target: &str, child: &mut Child, timeout: Duration) -> tonic::transport::Channel {
    wait_for_health(target, child, ServingStatus::Serving, timeout).await
}

/// Waits until the gRPC health service at `target` reports `expected` for the whole server; returns a
/// channel to it. Fails at once, with the child's stderr, if `child` exits first.
pub async fn wait_for_health(
    target: &str,
    child: &mut Child,
    expected: ServingStatus,
    timeout: Duration,
) -> tonic::transport::Channel {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let logs = child.stderr.take().map(|stderr| std::io::read_to_string(stderr).unwrap()).unwrap_or_default();
            panic!("the process behind {target} exited ({status}) before reporting {expected:?}:\n{logs}");
        }
        assert!(Instant::now() < deadline, "{target} did not report {expected:?} within {timeout:?}");
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(target.to_owned()).unwrap().connect().await {
            let status = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|response| response.into_inner().status == expected as i32) {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads the child's stderr on a thread into a shared string, so a test can wait for a log line while the
/// process runs (the child's `stderr` is taken).
pub fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let logs = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().expect("stderr piped");
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            let mut logs = sink.lock().unwrap();
            logs.push_str(&line);
            logs.push('\n');
        }
    });
    logs
}

/// Waits until the collected logs contain `text`.
pub async fn wait_for_log(logs: &Mutex<String>, text: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !logs.lock().unwrap().contains(text) {
        assert!(Instant::now() < deadline, "no log line with {text:?} within {timeout:?}:\n{}", logs.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM and waits for the exit (at most 30 s); returns the status and what it wrote to stderr.
pub async fn sigterm_and_wait(child: &mut Child) -> (ExitStatus, String) {
    sigterm(child);
    wait_for_exit(child).await
}

/// Sends SIGTERM, once: a second one would force the exit.
pub fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits for the exit (at most 30 s); returns the status and what the child wrote to stderr.
pub async fn wait_for_exit(child: &mut Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running 30 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let logs = child.stderr.take().map(|stderr| std::io::read_to_string(stderr).unwrap()).unwrap_or_default();
    (status, logs)
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so a test that fails half-way leaves
/// no process behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A record as a collector publishes it: `events` of `customer`, all in the hour starting at
/// `hour_start`, received `received_after_secs` into that hour, with their accepted count for the hour.
pub fn accepted_record(
    customer: &str,
    hour_start: i64,
    received_after_secs: i64,
    batch_id: String,
    events: Vec<Event>,
) -> EventBatchRecord {
    EventBatchRecord {
        customer_id: customer.into(),
        received_at_unix_ms: (hour_start + received_after_secs) * 1000,
        batch_id,
        collector_id: "test".into(),
        outcomes: vec![OutcomeCount {
            hour_start_unix_secs: hour_start,
            outcome: Outcome::Accepted as i32,
            reason: 0,
            count: events.len() as u32,
        }],
        events,
        plan_checks: Vec::new(),
    }
}
