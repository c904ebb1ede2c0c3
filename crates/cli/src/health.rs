//! `hourglass health`: asks a gRPC server for its health (the standard `grpc.health.v1` service every
//! role serves) and exits 0 only if it is SERVING. It is the container image's `HEALTHCHECK` and the
//! chart's exec probe where a native gRPC probe is not available, so the image needs no other tool.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Flags of `hourglass health`.
#[derive(clap::Args)]
pub struct HealthArgs {
    /// The server's gRPC address (`https://…` for TLS).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: String,
    /// The service to ask about; the empty default is the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this many seconds (connecting and answering together).
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
    /// PEM file of the CA that signed the server's certificate, for an `https://` target whose
    /// certificate the system's roots do not cover.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

/// What the check found: exit status 0 for SERVING; 1 when the server answers anything else; 2 when it
/// cannot be asked (not listening, TLS failure, timeout) — as `grpc_health_probe` distinguishes them,
/// more coarsely.
pub async fn run(args: HealthArgs) -> i32 {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let status = match tokio::time::timeout(timeout, check(&args)).await {
        Ok(Ok(status)) => status,
        Ok(Err(error)) => {
            eprintln!("{}: cannot check health: {error:#}", args.target);
            return 2;
        }
        Err(_) => {
            eprintln!("{}: no health answer within {} s", args.target, timeout.as_secs());
            return 2;
        }
    };
    let service = if args.service.is_empty() { "server" } else { args.service.as_str() };
    println!("{}: {service} {}", args.target, status.as_str_name());
    if status == ServingStatus::Serving { 0 } else { 1 }
}

async fn check(args: &HealthArgs) -> anyhow::Result<ServingStatus> {
    let mut endpoint = Endpoint::from_shared(args.target.clone())
        .with_context(|| format!("{:?} is not a URL (http://host:port or https://host:port)", args.target))?;
    if args.target.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_enabled_roots();
        if let Some(path) = &args.tls_ca {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).context("invalid TLS settings")?;
    }
    let channel = endpoint.connect().await.context("cannot connect")?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest { service: args.service.clone() })
        .await
        .context("the health check failed")?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}
