//! What the binary tests share: waiting for a process's health, and stopping it the way Kubernetes does.

#![allow(dead_code)]

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Waits until the gRPC health service at `target` reports SERVING; returns a channel to it.
pub async fn wait_until_serving(target: &str, timeout: Duration) -> tonic::transport::Channel {
    let deadline = Instant::now() + timeout;
    loop {
        assert!(Instant::now() < deadline, "{target} did not become SERVING within {timeout:?}");
        if let Ok(channel) = tonic::transport::Endpoint::from_shared(target.to_owned()).unwrap().connect().await {
            let status = HealthClient::new(channel.clone()).check(HealthCheckRequest { service: String::new() }).await;
            if status.is_ok_and(|response| response.into_inner().status == ServingStatus::Serving as i32) {
                return channel;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends SIGTERM and waits for the exit (at most 30 s); returns the status and what it wrote to stderr.
pub async fn sigterm_and_wait(child: &mut Child) -> (ExitStatus, String) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
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
