//! `hourglass standalone`: the whole platform in one process on one data directory, no external server.
//!
//! Collector, ingestion, aggregation and query run together over the embedded backends
//! (`hourglass-embedded`: SQLite files in the data directory), serving the same gRPC APIs as distributed
//! mode (`hourglass.v1.IngestService`, `hourglass.v1.QueryService` and `hourglass.admin.v1.AdminService`,
//! health, reflection) on one port. With `--erasure-salt`, its aggregator also runs the erasure requests
//! the admin service records (`hourglass_aggregator::erasure::run_requests`).
//! An ack means the batch is in the embedded log, fsynced: it survives kill -9 and power loss.
//!
//! The server is assembled from the pieces the distributed stages serve alone
//! (`hourglass_collector::add_ingest`, `hourglass_query::add_query`) on one
//! [`GrpcServer`](hourglass_grpc::GrpcServer): health follows the embedded stores' readiness, and the
//! shutdown on SIGTERM/SIGINT is every server's ordered one: health NOT_SERVING → `--shutdown-delay-ms` →
//! ingest streams drain (acking what they hold) and the server stops, within `--drain-timeout-secs` → the
//! log flushes, within `--flush-timeout-secs`; then ingestion finishes its group and commits, and
//! aggregation stops. Work not done yet is in the data directory and resumes at the next start.
//!
//! If ingestion stops on an error, the log refuses appends at once (no client is acked a batch nothing
//! would ingest), and the same ordered shutdown starts (health NOT_SERVING first); standalone then exits
//! non-zero (see [`run`] for why).
//!
//! A full disk does not stop it (`hourglass_embedded::disk_full`): writes that find no room fail and are
//! retried, batches are refused UNAVAILABLE and not acked, health is NOT_SERVING, and all of it resumes by
//! itself once there is room.
//!
//! It listens on 127.0.0.1 unless told otherwise (`--listen-addr`): a newcomer's first run should not
//! expose an ingest endpoint, with the demo keys it prints, to the network. The data directory is the
//! owner's alone (0700, its files 0600: `hourglass_embedded::data_dir`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use hourglass_aggregator::AggregatorConfig;
use hourglass_aggregator::erasure::{ErasureConfig, ErasureSettings};
use hourglass_collector::CollectorConfig;
use hourglass_core::api_key::Scope;
use hourglass_core::customer::CustomerId;
use hourglass_core::key_store::KeyStore;
use hourglass_embedded::data_dir::{self, FILE_MODE};
use hourglass_embedded::log::{INGEST_CONSUMER, LogTrimConfig, SqliteEventLog};
use hourglass_embedded::meta::SqliteMetaStore;
use hourglass_embedded::raw::SqliteRawStore;
use hourglass_grpc::GrpcServer;
use hourglass_grpc::auth::Authenticator;
use hourglass_ingestor::{EmbeddedIngestConfig, IngestorError, SuppressionConfig};
use hourglass_query::QueryConfig;
use hourglass_query::admin::AdminServiceImpl;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{shutdown, startup};

/// The customer standalone creates keys for on its first start, so the printed commands work at once.
const DEMO_CUSTOMER: &str = "demo";
/// Where those keys are kept (readable by the owner only).
const DEMO_KEYS_FILE: &str = "demo-keys.txt";

/// Flags of `hourglass standalone`.
#[derive(clap::Args)]
pub struct StandaloneArgs {
    /// Directory holding all of standalone's data (created if missing). One process at a time uses it.
    #[arg(long = "data-dir", env = "HOURGLASS_DATA_DIR", default_value = "hourglass-data")]
    data_dir: PathBuf,
    /// Buckets per customer-hour in the embedded raw store (how many jobs can share one hour's
    /// aggregation); fixed when the data directory is created.
    #[arg(long = "buckets", env = "HOURGLASS_STANDALONE_BUCKETS", default_value_t = 4)]
    buckets: u32,
    /// Once ingestion has caught up with every acknowledged batch and none has arrived for this long,
    /// open hours whose data is not in their rollup yet are re-aggregated at once, rather than up to
    /// `--provisional-interval-secs` later: the last events sent are counted as soon as they are stored.
    /// Costs at most one re-aggregation of those hours per such lull; 0 turns it off.
    #[arg(long = "rollup-when-idle-ms", env = "HOURGLASS_STANDALONE_ROLLUP_WHEN_IDLE_MS", default_value_t = 500)]
    rollup_when_idle_ms: u64,
    #[command(flatten)]
    collector: CollectorConfig,
    #[command(flatten)]
    query: QueryConfig,
    #[command(flatten)]
    aggregator: AggregatorConfig,
    #[command(flatten)]
    ingest: EmbeddedIngestConfig,
    /// The salt of erased users' hashes: to run erasure requests, and to drop erased users' events at
    /// ingestion.
    #[command(flatten)]
    erasure: ErasureConfig,
    #[command(flatten)]
    suppression: SuppressionConfig,
    #[command(flatten)]
    log_trim: LogTrimConfig,
}

/// How often standalone re-aggregates an open hour that received data, unless told otherwise. Shorter than
/// distributed mode's default: one process's hours are small, and a newcomer wants to see counts soon.
const STANDALONE_PROVISIONAL_INTERVAL_SECS: u64 = 10;

/// Where standalone listens unless told otherwise: this host only, where the collector's default is every
/// interface (a collector is meant to be reached from other hosts; a newcomer's standalone is not).
const STANDALONE_LISTEN_ADDR: &str = "127.0.0.1:50051";

/// `hourglass standalone`'s command with standalone's own defaults for flags it shares with the
/// distributed stages. They are clap defaults, so they hold exactly where no flag, variable or
/// configuration file set the value, and `--help` and `hourglass config print standalone` show them.
pub fn with_standalone_defaults(command: clap::Command) -> clap::Command {
    command
        .mut_arg("listen_addr", |listen_addr| listen_addr.default_value(STANDALONE_LISTEN_ADDR))
        .mut_arg("provisional_interval_secs", |interval| {
            interval.default_value(STANDALONE_PROVISIONAL_INTERVAL_SECS.to_string())
        })
}

/// Holds an exclusive lock on the data directory for the life of the process.
struct DataDirLock(#[allow(dead_code)] File);

fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    data_dir::create_private_directory(data_dir).with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = data_dir.join("standalone.lock");
    data_dir::create_private_file(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let file = File::options().write(true).open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock(2) on a file descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!("another hourglass standalone is using {} (it holds {})", data_dir.display(), path.display());
    }
    Ok(DataDirLock(file))
}

/// Makes the demo customer's ingest and query keys on the first start, in the data directory's key file.
async fn demo_keys(data_dir: &Path, meta: &SqliteMetaStore) -> anyhow::Result<()> {
    let path = data_dir.join(DEMO_KEYS_FILE);
    data_dir::restrict(&path, FILE_MODE).with_context(|| format!("cannot restrict {}", path.display()))?;
    if let Ok(text) = std::fs::read_to_string(&path) {
        let field = |name: &str| text.lines().find_map(|line| line.strip_prefix(name).map(|key| key.trim().to_owned()));
        if field("ingest:").is_some() && field("query:").is_some() {
            return Ok(());
        }
    }
    let customer = CustomerId::new(DEMO_CUSTOMER)?;
    let ingest = meta.create_key(&customer, Scope::Ingest, "standalone demo").await?;
    let query = meta.create_key(&customer, Scope::Query, "standalone demo").await?;
    let text = format!(
        "# Keys of the customer `{DEMO_CUSTOMER}`, made by hourglass standalone on its first start.\n\
         # Revoke them with: hourglass keys revoke --data-dir {} <key id>\n\
         ingest: {}\nquery: {}\n",
        data_dir.display(),
        ingest.expose_secret(),
        query.expose_secret()
    );
    write_private(&path, &text)?;
    Ok(())
}

/// Writes `text` to `path`, a file of the owner's alone (see `hourglass_embedded::data_dir`).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    data_dir::create_private_file(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn print_welcome(address: &str, data_dir: &Path) -> anyhow::Result<()> {
    let hourglass = std::env::current_exe()?.display().to_string();
    let now = chrono::Utc::now().timestamp();
    let hour = |unix: i64| {
        chrono::DateTime::from_timestamp(hourglass_core::hour::hour_start(unix), 0)
            .expect("now is a valid time")
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    // The keys themselves are not printed: stdout is the log stream (a container's, a log agent's), and
    // a key in a log is a leaked key. The commands read them from the key file instead.
    let keys_file = shell_quoted(&data_dir.join(DEMO_KEYS_FILE).display().to_string());
    let ingest_key = format!("\"$(sed -n 's/^ingest: //p' {keys_file})\"");
    let query_key = format!("\"$(sed -n 's/^query: //p' {keys_file})\"");
    println!("Hourglass standalone is running.");
    // Scripts and SDK tests find the address by this line's exact text: keep it as it is, and name the
    // admin service on a line of its own.
    println!("  gRPC (ingest + query, health, reflection): {address}");
    println!("  admin (erasure requests, `admin` keys): the same address");
    println!("  data directory: {}", data_dir.display());
    println!("  demo customer `{DEMO_CUSTOMER}`: keys in {}", data_dir.join(DEMO_KEYS_FILE).display());
    println!();
    println!("Send 10,000 sample events:");
    println!("  {hourglass} send --target http://{address} --api-key {ingest_key} --events 10000");
    println!();
    println!("See them counted (provisional rollups appear within seconds, final ones after the hour closes):");
    println!("  {hourglass} report --target http://{address} --api-key {query_key} --last-hours 2 --by-event-type");
    println!();
    println!("The same with grpcurl (bash e2e/servers/tools.sh grpcurl installs it):");
    println!(
        "  grpcurl -plaintext -H \"authorization: Bearer $(sed -n 's/^query: //p' {keys_file})\" -d '{{\"range\": {{\"start\": \"{}\", \"end\": \"{}\"}}, \"groupByEventType\": true}}' {address} hourglass.v1.QueryService/GetHourlyMetrics",
        hour(now - 3600),
        hour(now + 3600)
    );
    println!();
    println!("In a browser, the web console (sign in with the `query:` key of the key file):");
    println!("  http://{address}{}", hourglass_query::console::CONSOLE_PATH);
    println!();
    println!(
        "More keys: {hourglass} keys create --data-dir {} --customer <name> --scope ingest|query|admin",
        data_dir.display()
    );
    println!("Stop with Ctrl-C; data stays in the data directory.");
    Ok(())
}

/// `text` quoted for a POSIX shell (single quotes; a single quote inside becomes `'\''`).
fn shell_quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The page-token secret: the configured one, else one kept in the data directory, so page tokens stay
/// valid across restarts.
fn page_token_secret(data_dir: &Path, configured: Option<String>) -> anyhow::Result<String> {
    if let Some(secret) = configured.filter(|secret| !secret.is_empty()) {
        return Ok(secret);
    }
    let path = data_dir.join("page-token.secret");
    data_dir::restrict(&path, FILE_MODE).with_context(|| format!("cannot restrict {}", path.display()))?;
    if let Ok(secret) = std::fs::read_to_string(&path)
        && !secret.trim().is_empty()
    {
        return Ok(secret.trim().to_owned());
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    write_private(&path, &secret)?;
    Ok(secret)
}

/// Nudges the aggregator (`hourglass_aggregator::run_nudged`) each time ingestion has caught up with the
/// log and no batch has arrived for `idle_ms`, until `stop`; with `idle_ms` 0, never.
///
/// Ingestion marks a record's hours dirty before it commits the record, so by then every hour of every
/// acknowledged event is marked, and the nudged pass rolls up all of them: the time from the last ack
/// to its events being counted is ingestion's lag and one rollup of the hour, not also the wait for the
/// hour's next provisional interval (up to `--provisional-interval-secs`, measured from the end of its
/// last rollup). While batches keep arriving the interval alone paces the rollups, so a busy hour is not
/// re-aggregated more often than before; each lull adds at most one rollup of the hours it touched.
async fn nudge_aggregation_when_idle(
    event_log: Arc<SqliteEventLog>,
    idle_ms: u64,
    nudges_tx: tokio::sync::watch::Sender<u64>,
    stop: CancellationToken,
) {
    if idle_ms == 0 {
        return;
    }
    let idle = Duration::from_millis(idle_ms);
    // Records already in the log at start are waited for too: a restart's backlog is nudged once ingested.
    let mut settled_through = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            settled = event_log.wait_until_consumed_and_idle(INGEST_CONSUMER, settled_through, idle) => {
                settled_through = settled;
                nudges_tx.send_modify(|nudges| *nudges += 1);
            }
        }
    }
}

/// Deletes raw events of hours older than the retention (rollups and the ledger stay), as the CQL store's
/// TTL does in distributed mode: at start, then hourly, until `stop`.
async fn enforce_raw_retention(raw_store: Arc<SqliteRawStore>, retention_days: i64, stop: CancellationToken) {
    loop {
        let cutoff = hourglass_core::hour::hour_start(chrono::Utc::now().timestamp()) - retention_days * 86_400;
        match raw_store.delete_hours_before(cutoff).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, retention_days, "deleted raw events past the retention"),
            Err(error) => tracing::warn!(%error, "cannot delete raw events past the retention; retrying in an hour"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Runs standalone until SIGTERM or SIGINT, or until ingestion stops on an error.
///
/// When ingestion stops, standalone shuts down and exits non-zero rather than staying up without it:
/// a process that still answers queries looks alive to anything that does not watch its health, while
/// its counts silently stop growing. A supervisor (systemd, Docker, Kubernetes) restarts a process that
/// exits non-zero, and the restart resumes ingestion where it stopped: every acknowledged batch is in
/// `log.db`. A persistent failure then shows as a restart loop with the error in every log, which is
/// what an operator needs to see. Until it exits, the log refuses appends, so clients are told to retry
/// rather than acknowledged, and health is NOT_SERVING.
///
/// What stops ingestion is a failure of `log.db` other than a full disk: it cannot be read (corrupt,
/// unreadable) or refuses a commit for another reason, which a restart either cures or shows. A full
/// disk is not one: it is the operator's to fix and ends by itself, so the stores keep retrying, health
/// is NOT_SERVING meanwhile, and standalone stays up.
pub async fn run(mut args: StandaloneArgs) -> anyhow::Result<()> {
    // Raw hours are deleted past --raw-retention-days (below): that decides the aggregator's horizon, and
    // the late-data window must end well before it.
    let limits = &args.collector.limits;
    limits.check_retention().context("refusing to start: the late-data window does not fit the raw retention")?;
    args.aggregator.raw_retention = hourglass_core::retention::RawRetention::from_days(limits.raw_retention_days);
    args.aggregator.check().context("refusing to start")?;
    let salt = match args.erasure.salt {
        Some(_) => Some(args.erasure.erasure_salt().context("refusing to start")?),
        None => None,
    };
    let shutdown = shutdown::on_signal()?;
    let data_dir = std::path::absolute(&args.data_dir)?;
    let _lock = lock_data_dir(&data_dir)?;
    let meta = Arc::new(SqliteMetaStore::open(&data_dir).await.context("cannot open meta.db")?);
    // We hold the directory's lock: any lease in meta.db is a dead process's.
    let released = meta.release_leases_of_dead_processes().await.context("cannot release old leases in meta.db")?;
    if released > 0 {
        tracing::info!(released, "released the leases of the previous run (it did not stop cleanly)");
    }
    let event_log = Arc::new(SqliteEventLog::open(&data_dir).await.context("cannot open log.db")?);
    let raw_store = Arc::new(SqliteRawStore::open(&data_dir, args.buckets).await.context("cannot open raw.db")?);
    // Made on the first start; the welcome tells where they are.
    demo_keys(&data_dir, &meta).await?;
    let mut query_config = args.query;
    query_config.page_token_secret = Some(page_token_secret(&data_dir, query_config.page_token_secret.take())?);

    let background = CancellationToken::new();
    let suppression =
        startup::suppression(&args.erasure, &args.suppression, Arc::clone(&meta), background.clone()).await?;
    let consumer =
        event_log.events_consumer(INGEST_CONSUMER, Some(args.log_trim)).await.context("cannot read log.db")?;
    let mut ingestion = tokio::spawn(hourglass_ingestor::run(
        args.ingest.loop_config(),
        consumer,
        Arc::clone(&raw_store),
        Arc::clone(&meta),
        Arc::clone(&event_log),
        suppression,
        background.clone(),
    ));
    let (nudges_tx, nudges_rx) = tokio::sync::watch::channel(0);
    let nudges = tokio::spawn(nudge_aggregation_when_idle(
        Arc::clone(&event_log),
        args.rollup_when_idle_ms,
        nudges_tx,
        background.clone(),
    ));
    let aggregation = tokio::spawn(hourglass_aggregator::run_nudged(
        args.aggregator.clone(),
        Arc::clone(&raw_store),
        Arc::clone(&meta),
        Some(nudges_rx),
        background.clone(),
    ));
    let erasures = tokio::spawn({
        let (config, raw_store, meta, stop) =
            (args.aggregator.clone(), Arc::clone(&raw_store), Arc::clone(&meta), background.clone());
        let salt = salt.clone();
        async move {
            match salt {
                Some(salt) => {
                    hourglass_aggregator::erasure::run_requests(&config, &salt, &*raw_store, &*meta, &*meta, &stop)
                        .await
                }
                None => tracing::warn!("no --erasure-salt: erasure requests are not run"),
            }
        }
    });

    // The collector's --raw-retention-days: it refuses events older than that, and their raw rows go then.
    let retention_days = args.collector.limits.raw_retention_days;
    let retention = tokio::spawn(enforce_raw_retention(Arc::clone(&raw_store), retention_days, background.clone()));

    let listener = TcpListener::bind(args.collector.listen_addr)
        .await
        .with_context(|| format!("failed to listen on {}", args.collector.listen_addr))?;
    let local_addr = listener.local_addr()?;
    // Set by the stop event below if ingestion ends first; declared before the server that borrows it.
    let mut ingestion_ended = None;
    // One server, assembled from the pieces the collector and the query service each serve alone.
    let key_cache = args.collector.key_cache.clone();
    let server = GrpcServer::new(args.collector.server.clone());
    let server = hourglass_collector::add_ingest(
        server,
        args.collector,
        Arc::clone(&meta),
        Arc::clone(&meta),
        Arc::clone(&event_log),
    );
    let server = hourglass_query::add_query(
        server,
        query_config,
        key_cache.clone(),
        Arc::clone(&meta),
        Arc::clone(&meta),
        Arc::clone(&raw_store),
    );
    let admin = AdminServiceImpl::new(
        Arc::new(Authenticator::new(Arc::clone(&meta), key_cache.clone())),
        Arc::clone(&meta),
        Arc::clone(&raw_store),
        Arc::clone(&meta),
        &args.erasure,
        hourglass_core::retention::RawRetention::from_days(retention_days),
    )
    .context("refusing to start")?;
    let server = hourglass_query::add_admin(server, admin);
    let ingestion_stopped = async {
        let ended = (&mut ingestion).await;
        let reason = ingestion_stop_reason(&ended);
        // Refuse first: from the moment health says NOT_SERVING, no batch is acknowledged.
        event_log.refuse_appends(&reason);
        tracing::error!(
            %reason,
            "refusing new batches and shutting down; acknowledged batches are in log.db and are ingested at the \
             next start"
        );
        ingestion_ended = Some(ended);
        reason
    };
    let address = if local_addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", local_addr.port())
    } else {
        local_addr.to_string()
    };
    print_welcome(&address, &data_dir)?;
    tracing::info!(listen_addr = %local_addr, data_dir = %data_dir.display(), "standalone serving");
    let served = server.stop_when(ingestion_stopped).serve(listener, shutdown).await;

    tracing::info!("shutdown: stopping ingestion and aggregation");
    background.cancel();
    let stopped_early = ingestion_ended.is_some();
    let ingestion_ended = match ingestion_ended {
        Some(ended) => ended,
        None => ingestion.await,
    };
    aggregation.await.context("aggregation panicked")?;
    nudges.await.context("the aggregation's nudges panicked")?;
    erasures.await.context("erasures panicked")?;
    retention.await.context("raw retention panicked")?;
    ingestion_ended.context("ingestion panicked")?.context("ingestion failed")?;
    if stopped_early {
        bail!("ingestion stopped before the shutdown");
    }
    served.context("the gRPC server failed")?;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Why the ingestion task ended, for the log's refusal and the operator.
fn ingestion_stop_reason(ended: &Result<Result<(), IngestorError>, tokio::task::JoinError>) -> String {
    match ended {
        Ok(Ok(())) => "ingestion stopped".to_owned(),
        Ok(Err(error)) => format!("ingestion stopped: {error}"),
        Err(join_error) => format!("ingestion panicked: {join_error}"),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use clap::FromArgMatches;

    use super::*;

    /// `hourglass <command_line>` loaded as `main` loads it over the variables `env`, as standalone's flags.
    fn standalone_args_with(command_line: &[&str], env: &[(&str, &str)]) -> StandaloneArgs {
        let env: HashMap<String, String> =
            env.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
        let loaded = crate::loader().load(command_line, &env).unwrap();
        match crate::Cli::from_arg_matches(loaded.matches()).unwrap().command {
            crate::Command::Standalone(args) => *args,
            _ => panic!("{command_line:?} is not standalone"),
        }
    }

    fn standalone_args(command_line: &[&str]) -> StandaloneArgs {
        standalone_args_with(command_line, &[])
    }

    #[test]
    fn standalone_listens_on_this_host_only_unless_told_otherwise() {
        let default = standalone_args(&["hourglass", "standalone"]);
        assert_eq!(default.collector.listen_addr, SocketAddr::from(([127, 0, 0, 1], 50051)));
        let told = standalone_args(&["hourglass", "standalone", "--listen-addr", "0.0.0.0:7000"]);
        assert_eq!(told.collector.listen_addr, SocketAddr::from(([0, 0, 0, 0], 7000)));
        let help = crate::command().find_subcommand_mut("standalone").unwrap().render_long_help().to_string();
        assert!(help.contains("[default: 127.0.0.1:50051]"), "{help}");
    }

    /// Standalone's own defaults (listen address, provisional interval) hold only where no layer set the
    /// value: a flag, a variable, the file's top level or its [standalone] table.
    #[test]
    fn standalones_own_defaults_give_way_to_every_layer() {
        let defaults = standalone_args(&["hourglass", "standalone"]);
        assert_eq!(defaults.aggregator.provisional_interval_secs, STANDALONE_PROVISIONAL_INTERVAL_SECS);
        let distributed = hourglass_aggregator::AggregatorConfig::with_defaults().provisional_interval_secs;
        assert_ne!(distributed, STANDALONE_PROVISIONAL_INTERVAL_SECS, "the test needs the defaults to differ");

        let flagged = standalone_args(&["hourglass", "standalone", "--provisional-interval-secs", "30"]);
        assert_eq!(flagged.aggregator.provisional_interval_secs, 30);
        let from_env = standalone_args_with(
            &["hourglass", "standalone"],
            &[("HOURGLASS_PROVISIONAL_INTERVAL_SECS", "40"), ("HOURGLASS_COLLECTOR_LISTEN_ADDR", "0.0.0.0:7001")],
        );
        assert_eq!(from_env.aggregator.provisional_interval_secs, 40);
        assert_eq!(from_env.collector.listen_addr, SocketAddr::from(([0, 0, 0, 0], 7001)));

        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top.toml");
        std::fs::write(&top, "provisional-interval-secs = 50\nlisten-addr = \"0.0.0.0:7002\"\n").unwrap();
        let from_top = standalone_args(&["hourglass", "standalone", "--config", top.to_str().unwrap()]);
        assert_eq!(from_top.aggregator.provisional_interval_secs, 50);
        assert_eq!(from_top.collector.listen_addr, SocketAddr::from(([0, 0, 0, 0], 7002)));
        let table = dir.path().join("table.toml");
        std::fs::write(&table, "provisional-interval-secs = 50\n[standalone]\nprovisional-interval-secs = 60\n")
            .unwrap();
        let from_table = standalone_args(&["hourglass", "standalone", "--config", table.to_str().unwrap()]);
        assert_eq!(from_table.aggregator.provisional_interval_secs, 60);
        assert_eq!(from_table.collector.listen_addr, SocketAddr::from(([127, 0, 0, 1], 50051)));
    }
}
