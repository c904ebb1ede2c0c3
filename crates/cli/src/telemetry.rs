//! Logs (text for people, JSON for LogDNA/Mezmo, CloudWatch and friends), traces over OTLP, and the
//! Prometheus endpoint.
//!
//! Where logs go depends on the kind of command (docs/logging.md): the serving roles (`standalone`,
//! `collector`, `ingestor`, `aggregator`, `query`) log to stdout, which is what container log agents
//! read; tools (`keys`, `report`, `verify`, `bench`, …) print their results on stdout, so their logs go
//! to stderr. `--log-output` overrides either.
//!
//! Traces: a serving role exports spans over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, with the standard OpenTelemetry variables
//! (`OTEL_SERVICE_NAME`, default `hourglass-<role>`; `OTEL_TRACES_SAMPLER`/`_ARG`, default parent-based
//! always-on; the exporter's own `OTEL_EXPORTER_OTLP_*`). When neither is set there is no exporter and no
//! OpenTelemetry layer: spans cost what `tracing` spans cost. Libraries only create `tracing` spans and
//! use the OpenTelemetry API (`hourglass_core::trace_context`); this module owns the SDK.

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The buckets of every histogram (all of them are durations in seconds): from half a millisecond (a
/// cached query) to five minutes (an aggregation job of a huge hour). Real Prometheus histograms,
/// unlike the exporter's default summaries, can be summed over replicas (`histogram_quantile` over
/// `sum by (le)`).
const LATENCY_BUCKETS_SECONDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Telemetry flags shared by every subcommand.
#[derive(clap::Args)]
pub struct TelemetryArgs {
    /// Log format: `text` for terminals, `json` for log collectors (one object per line; fields in
    /// docs/logging.md).
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

    /// Where logs go: `auto` is stdout for the serving roles (standalone, collector, ingestor,
    /// aggregator, query), where container log agents read them, and stderr for tools, whose results
    /// are on stdout.
    #[arg(long = "log-output", env = "HOURGLASS_LOG_OUTPUT", value_enum, default_value_t = LogOutput::Auto, global = true)]
    log_output: LogOutput,

    /// Serve Prometheus metrics on this address (e.g. 0.0.0.0:9464); off when unset.
    #[arg(long = "metrics-listen-addr", env = "HOURGLASS_METRICS_LISTEN_ADDR", global = true)]
    metrics_listen_addr: Option<SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogOutput {
    Auto,
    Stdout,
    Stderr,
}

/// The variables that turn trace export on (the OTLP exporter reads them itself, with the rest of the
/// `OTEL_EXPORTER_OTLP_*` family).
const OTLP_ENDPOINT_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// Targets whose spans and events never reach the OpenTelemetry layer: the exporter's own work (and the
/// gRPC client stack under it) would otherwise be traced, exported, traced again.
const NOT_TRACED_TARGETS: [&str; 6] = ["opentelemetry", "h2", "tonic", "hyper", "tower", "rustls"];

/// What must outlive the role: the trace pipeline, flushed by [`Telemetry::shutdown`].
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter; call it after the role has drained.
    /// A failure is logged, not returned: nothing acknowledged depends on a trace.
    pub async fn shutdown(self) {
        let Some(tracer_provider) = self.tracer_provider else { return };
        // The SDK's shutdown blocks until its export thread is done.
        match tokio::task::spawn_blocking(move || tracer_provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "flushing traces at exit failed; the last spans are lost"),
            Err(error) => tracing::warn!(%error, "flushing traces at exit failed; the last spans are lost"),
        }
    }
}

/// Sets up logs (on stdout unless `--log-output` says otherwise), traces when an OTLP endpoint is set in
/// `env`, and metrics, for the serving role `role`. Call it inside the Tokio runtime (the OTLP client
/// runs on it).
pub fn init(args: &TelemetryArgs, role: &str, env: &HashMap<String, String>) -> anyhow::Result<Telemetry> {
    let tracer_provider = if OTLP_ENDPOINT_VARIABLES.iter().any(|name| env.get(*name).is_some_and(|v| !v.is_empty())) {
        Some(tracer_provider(role, env)?)
    } else {
        None
    };
    init_subscriber(args, &args.log_filter, LogOutput::Stdout, tracer_provider.as_ref())?;
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
    if tracer_provider.is_some() {
        // The endpoint is not logged: its URL may carry credentials.
        tracing::info!("exporting traces over otlp");
    }
    Ok(Telemetry { tracer_provider })
}

/// Sets up logs for a command-line tool: on stderr unless `--log-output` says otherwise, warnings only
/// unless asked, so its own output stays readable. Tools export no traces.
pub fn init_for_tool(args: &TelemetryArgs) -> anyhow::Result<Telemetry> {
    let filter = if args.log_filter.starts_with("info") { "warn" } else { args.log_filter.as_str() };
    init_subscriber(args, filter, LogOutput::Stderr, None)?;
    Ok(Telemetry { tracer_provider: None })
}

/// A batch OTLP/gRPC exporter behind the SDK's tracer provider, and W3C Trace Context as the process's
/// propagator (what `hourglass_core::trace_context` writes into record headers).
fn tracer_provider(role: &str, env: &HashMap<String, String>) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .context("failed to set up the otlp trace exporter")?;
    // The default resource reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; the role names the
    // service only when the operator did not.
    let resource = if env.get("OTEL_SERVICE_NAME").is_some_and(|name| !name.is_empty()) {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name(format!("hourglass-{role}")).build()
    };
    // The sampler comes from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (the SDK's default config reads
    // them), parent-based always-on when unset.
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(provider)
}

fn init_subscriber(
    args: &TelemetryArgs,
    filter: &str,
    auto_output: LogOutput,
    tracer_provider: Option<&SdkTracerProvider>,
) -> anyhow::Result<()> {
    let log_filter = EnvFilter::try_new(filter).with_context(|| format!("invalid log filter {filter:?}"))?;
    let output = match args.log_output {
        LogOutput::Auto => auto_output,
        chosen => chosen,
    };
    let log_layer = match (args.log_format, output) {
        (LogFormat::Json, LogOutput::Stderr) => json_logs(std::io::stderr),
        (LogFormat::Json, _) => json_logs(std::io::stdout),
        (LogFormat::Text, LogOutput::Stderr) => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed(),
        (LogFormat::Text, _) => tracing_subscriber::fmt::layer().with_writer(std::io::stdout).boxed(),
    };
    // Spans reach the trace exporter under the same filter as logs, minus the exporter's own stack.
    let trace_layer = match tracer_provider {
        Some(provider) => {
            let trace_filter = EnvFilter::try_new(filter)
                .with_context(|| format!("invalid log filter {filter:?}"))?
                .and(filter_fn(|metadata| is_traced_target(metadata.target())));
            Some(tracing_opentelemetry::layer().with_tracer(provider.tracer("hourglass")).with_filter(trace_filter))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(log_layer.with_filter(log_filter))
        .with(trace_layer)
        .try_init()
        .map_err(|error| anyhow::anyhow!("failed to set up logging: {error}"))
}

/// One JSON object per line: the event's fields at the top level, the spans it is in under `spans`
/// (docs/logging.md).
fn json_logs<W>(writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).with_writer(writer).boxed()
}

fn is_traced_target(target: &str) -> bool {
    !NOT_TRACED_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

#[cfg(test)]
mod tests {
    use super::is_traced_target;

    #[test]
    fn the_exporters_own_stack_is_not_traced() {
        for target in
            ["opentelemetry_sdk", "opentelemetry_otlp::exporter", "h2::proto", "tonic::transport", "hyper_util"]
        {
            assert!(!is_traced_target(target), "{target}");
        }
        for target in ["hourglass_collector::batch", "hourglass_ingestor", "towering", "hyperloglog"] {
            assert!(is_traced_target(target), "{target}");
        }
    }
}
