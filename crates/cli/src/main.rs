//! `hourglass`: one binary for every role of the platform. It loads the configuration (flags over
//! `HOURGLASS_*` variables over a configuration file: `hourglass_config`), sets up telemetry, and calls
//! the stage libraries; nothing here knows how a stage works inside.

mod aggregator;
mod bench;
mod collector;
mod config;
mod dlq;
mod erase;
mod health;
mod hour_range;
mod ingestor;
mod keys;
mod loadgen;
mod migrate;
mod plans;
mod process_metrics;
mod query;
mod replay;
mod report;
mod reprocess;
mod send;
mod shutdown;
mod standalone;
mod startup;
mod telemetry;
mod verify;

use std::collections::HashMap;
use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use hourglass_config::{ConfigError, Loaded, Loader};

/// Hourglass: event ingestion and hourly analytics.
#[derive(Parser)]
#[command(name = "hourglass", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    telemetry: telemetry::TelemetryArgs,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in one process on one data directory (no Kafka, CQL or Postgres needed).
    Standalone(Box<standalone::StandaloneArgs>),
    /// Run the collector: gRPC ingest → Kafka.
    Collector(Box<collector::CollectorArgs>),
    /// Run the ingestor: Kafka → the CQL raw store, marking dirty customer-hours.
    Ingestor(Box<ingestor::IngestorArgs>),
    /// List and re-inject dead-lettered records.
    Dlq(Box<dlq::DlqArgs>),
    /// Run aggregation workers: dirty customer-hours → hourly rollups in Postgres.
    Aggregator(Box<aggregator::AggregatorArgs>),
    /// Run the query service: gRPC reports over the hourly rollups.
    Query(Box<query::QueryArgs>),
    /// Create, list and revoke API keys; set per-customer limits.
    Keys(keys::KeysArgs),
    /// Push, show, diff and list customers' tracking plans (event schemas the collector enforces).
    Plans(plans::PlansArgs),
    /// Apply database schema migrations.
    Migrate(migrate::MigrateArgs),
    /// Re-consume a range of a topic into the raw store (after an ingestion bug), with progress.
    Replay(Box<replay::ReplayArgs>),
    /// Recompute a range of hours with the current aggregation logic (after a logic bug).
    Reprocess(Box<reprocess::ReprocessArgs>),
    /// Recount the raw store for aggregated hours and print the reconciliation ledger.
    Verify(Box<verify::VerifyArgs>),
    /// Erase one person's events everywhere and recompute the hours they touched (`--dry-run` shows
    /// which), recording the request with a salted hash of the user id; `--resume` finishes a crashed run.
    Erase(Box<erase::EraseArgs>),
    /// Print a metrics report from a query service.
    Report(Box<report::ReportArgs>),
    /// Stream generated events, or a JSON-lines file of events, to a collector, with a summary.
    #[command(visible_alias = "loadgen")]
    Send(Box<send::SendArgs>),
    /// Benchmarks that print events/s and CPU per event.
    Bench(bench::BenchArgs),
    /// Show a role's configuration: `hourglass config print <ROLE>`.
    Config(config::ConfigArgs),
    /// Check a gRPC server's health: exit 0 if it is SERVING, 1 if not, 2 if it cannot be asked.
    Health(Box<health::HealthArgs>),
}

/// The command line: [`Cli`] with the defaults that differ per subcommand.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("standalone", standalone::with_standalone_defaults)
}

/// The loader of `hourglass`'s configuration: [`command`] with `--config FILE`.
fn loader() -> Loader {
    Loader::new(command()).expect("every flag with a variable can be layered (main.rs tests)")
}

/// The process environment as the loader takes it. A `HOURGLASS_*` variable that is not UTF-8 is
/// refused; other programs' variables are not ours to judge.
fn environment() -> anyhow::Result<HashMap<String, String>> {
    let mut variables = HashMap::new();
    for (name, value) in std::env::vars_os() {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => {
                variables.insert(name, value);
            }
            (Ok(name), Err(_)) if name.starts_with("HOURGLASS_") => anyhow::bail!("{name} is not valid UTF-8"),
            _ => {}
        }
    }
    Ok(variables)
}

/// The configuration `argv` selects, or the process ends as clap ends it: help and version on stdout
/// with status 0, a usage error on stderr with status 2. A problem in the configuration file or a
/// variable is a usage error too.
fn load_or_exit(loader: &Loader, argv: impl IntoIterator<Item = OsString>, env: &HashMap<String, String>) -> Loaded {
    match loader.load(argv, env) {
        Ok(loaded) => loaded,
        Err(ConfigError::CommandLine(error)) => error.exit(),
        Err(error) => {
            eprintln!("error: {:#}", anyhow::Error::new(error));
            std::process::exit(2)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let loader = loader();
    let env = environment()?;
    let loaded = load_or_exit(&loader, std::env::args_os(), &env);
    let cli = Cli::from_arg_matches(loaded.matches())?;
    if let Command::Config(args) = cli.command {
        return config::run(args, &loader, &loaded, &env);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let telemetry = match cli.command.serving_role() {
            Some(role) => telemetry::init(&cli.telemetry, role, &env)?,
            None => telemetry::init_for_tool(&cli.telemetry)?,
        };
        let result = match cli.command {
            Command::Standalone(args) => standalone::run(*args).await,
            Command::Report(args) => report::run(*args).await,
            Command::Collector(args) => collector::run(*args).await,
            Command::Ingestor(args) => ingestor::run(*args).await,
            Command::Dlq(args) => dlq::run(*args).await,
            Command::Aggregator(args) => aggregator::run(*args).await,
            Command::Query(args) => query::run(*args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Plans(args) => plans::run(args).await,
            Command::Migrate(args) => migrate::run(args).await,
            Command::Replay(args) => replay::run(*args).await,
            Command::Reprocess(args) => reprocess::run(*args).await,
            Command::Verify(args) => verify::run(*args).await,
            Command::Erase(args) => erase::run(*args).await,
            Command::Send(args) => send::run(*args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Health(args) => {
                let status = health::run(*args).await;
                if status != 0 {
                    // A probe's answer is its exit status; nothing is left to clean up (tools export no
                    // traces).
                    std::process::exit(status);
                }
                Ok(())
            }
            Command::Config(_) => unreachable!("handled before the runtime starts"),
        };
        // After the role's own drain: the spans of its last batches are exported before the exit.
        telemetry.shutdown().await;
        result
    })
}

impl Command {
    /// The role a serving command runs (it logs to stdout and may export traces); `None` for tools.
    fn serving_role(&self) -> Option<&'static str> {
        match self {
            Command::Standalone(_) => Some("standalone"),
            Command::Collector(_) => Some("collector"),
            Command::Ingestor(_) => Some("ingestor"),
            Command::Aggregator(_) => Some("aggregator"),
            Command::Query(_) => Some("query"),
            Command::Dlq(_)
            | Command::Report(_)
            | Command::Keys(_)
            | Command::Plans(_)
            | Command::Migrate(_)
            | Command::Replay(_)
            | Command::Reprocess(_)
            | Command::Verify(_)
            | Command::Erase(_)
            | Command::Send(_)
            | Command::Bench(_)
            | Command::Health(_)
            | Command::Config(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use hourglass_config::Origin;

    #[test]
    fn every_command_line_is_well_formed() {
        // Flattened configurations must not reuse a flag or an argument id; clap checks that here, with
        // the loader's `--config` added.
        super::loader().command().clone().debug_assert();
    }

    /// Each role's printed configuration loads back as a file, every setting with the same values.
    #[test]
    fn every_roles_printed_configuration_loads_back() {
        let loader = super::loader();
        let no_variables = HashMap::new();
        let dir = tempfile::tempdir().unwrap();
        for role in ["standalone", "collector", "ingestor", "aggregator", "query"] {
            let defaults = loader.load(["hourglass", role], &no_variables).unwrap();
            let printed = dir.path().join(format!("{role}.toml"));
            std::fs::write(&printed, defaults.to_toml()).unwrap();
            let reloaded = loader
                .load(["hourglass".as_ref(), role.as_ref(), "--config".as_ref(), printed.as_os_str()], &no_variables)
                .unwrap();
            let settings = defaults.settings();
            assert!(settings.len() > 10, "{role}: {settings:?}");
            for (default, from_file) in settings.into_iter().zip(reloaded.settings()) {
                assert_eq!(default.key, from_file.key);
                if default.secret {
                    let hidden = from_file.values.iter().all(|value| value.contains(hourglass_config::HIDDEN));
                    assert!(hidden, "{role} {}: {:?}", default.key, from_file.values);
                    continue;
                }
                assert_eq!(default.values, from_file.values, "{role} {}", default.key);
                match (&default.origin, &from_file.origin) {
                    (None, None) => {}
                    (Some(Origin::Default), Some(Origin::File { path, .. })) => assert_eq!(path, &printed),
                    other => panic!("{role} {}: {other:?}", default.key),
                }
            }
        }
    }

    /// Words of a variable name (between '_') that say its value may be or hold a secret; `…_API_KEY`
    /// too.
    const SECRET_WORDS: &[&str] = &["URL", "SECRET", "PASSWORD", "TOKEN", "OPTIONS", "TARGET", "CREDENTIALS"];

    /// clap shows an option's environment value in `--help` unless `hide_env_values` is set: every
    /// option read from a variable whose name says it may hold a secret must set it (`tests/help_binary.rs`
    /// checks the help texts themselves).
    #[test]
    fn every_secret_bearing_variable_hides_its_value_from_help() {
        let mut commands = vec![super::command()];
        let mut secret_bearing = 0;
        while let Some(command) = commands.pop() {
            for argument in command.get_arguments() {
                let Some(variable) = argument.get_env().and_then(|name| name.to_str()) else { continue };
                if variable.ends_with("_API_KEY") || variable.split('_').any(|word| SECRET_WORDS.contains(&word)) {
                    secret_bearing += 1;
                    assert!(
                        argument.is_hide_env_values_set(),
                        "`hourglass {}` shows the value of {variable} in --help: add hide_env_values = true",
                        command.get_name()
                    );
                }
            }
            commands.extend(command.get_subcommands().cloned());
        }
        assert!(secret_bearing >= 7, "the check saw the secret-bearing options ({secret_bearing})");
    }

    #[test]
    fn the_retention_defaults_of_every_role_agree() {
        use hourglass_core::retention::{DEFAULT_LATE_DATA_DAYS, DEFAULT_RAW_RETENTION_DAYS, RawRetention};
        let collector = hourglass_collector::CollectorConfig::with_defaults(([127, 0, 0, 1], 0).into());
        let cql: hourglass_cql::CqlConfig = hourglass_config::defaults();
        assert_eq!(collector.limits.raw_retention_days, DEFAULT_RAW_RETENTION_DAYS);
        assert_eq!(i64::from(cql.ttl_days), DEFAULT_RAW_RETENTION_DAYS, "the CQL TTL is the raw retention");
        assert_eq!(collector.limits.late_data_days, DEFAULT_LATE_DATA_DAYS);
        let aggregator = hourglass_aggregator::AggregatorConfig::with_defaults();
        assert_eq!(aggregator.raw_retention, RawRetention::from_days(DEFAULT_RAW_RETENTION_DAYS));
        assert!(aggregator.check().is_ok(), "the defaults start");
        let limits = &collector.limits;
        let window = hourglass_core::retention::check_late_data_window(
            limits.late_data_days,
            limits.raw_retention_days,
            limits.max_future_skew_secs,
        );
        assert!(window.is_ok(), "the defaults start: {window:?}");
    }
}
