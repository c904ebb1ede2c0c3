//! Logs (text for people, JSON for LogDNA and friends) and the Prometheus endpoint.

use std::net::SocketAddr;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

/// The buckets of every histogram (all of them are durations in seconds): from half a millisecond (a
/// cached query) to five minutes (an aggregation job of a huge hour). Real Prometheus histograms,
/// unlike the exporter's default summaries, can be summed over replicas (`histogram_quantile` over
/// `sum by (le)`).
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

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
            .set_buckets(LATENCY_BUCKETS_SECONDS)
            .context("invalid histogram buckets")?
            .install()
            .with_context(|| format!("failed to serve metrics on {address}"))?;
        crate::process_metrics::start();
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
