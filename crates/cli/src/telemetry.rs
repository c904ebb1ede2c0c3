//! Logs (text for people, JSON for LogDNA and friends) and the Prometheus endpoint.

use std::net::SocketAddr;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// Telemetry flags shared by every subcommand.
#[derive(clap::Args)]
pub struct TelemetryArgs {
    /// Log format: `text` for terminals, `json` for log collectors (one object per line).
    #[arg(long = "log-format", env = "HOURGLASS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,

    /// Log filter, in `tracing` EnvFilter syntax (e.g. `info,hourglass_collector=debug`).
    #[arg(
        long = "log-filter",
        env = "HOURGLASS_LOG",
        default_value = "info,sqlx::postgres::notice=warn",
        global = true
    )]
    log_filter: String,

    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long = "metrics-listen-addr", env = "HOURGLASS_METRICS_LISTEN_ADDR", global = true)]
    metrics_listen_addr: Option<SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Sets up logs and metrics for a long-running service.
pub fn init(args: &TelemetryArgs) -> anyhow::Result<()> {
    init_logs(args, &args.log_filter)?;
    if let Some(address) = args.metrics_listen_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(address)
            .install()
            .with_context(|| format!("failed to serve metrics on {address}"))?;
        tracing::info!(%address, "serving prometheus metrics on /metrics");
    }
    Ok(())
}

/// Sets up logs for a command-line tool: warnings only unless asked, so its own output stays readable.
pub fn init_for_tool(args: &TelemetryArgs) -> anyhow::Result<()> {
    let filter = if args.log_filter.starts_with("info") { "warn" } else { args.log_filter.as_str() };
    init_logs(args, filter)
}

fn init_logs(args: &TelemetryArgs, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let result = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
    result.map_err(|error| anyhow::anyhow!("failed to set up logging: {error}"))
}
