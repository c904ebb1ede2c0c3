//! CQL store configuration, from flags and `HOURGLASS_CQL_*` environment variables.

use std::time::Duration;

use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;

use crate::CqlError;

/// How Hourglass talks to its CQL store.
#[derive(Clone, Debug, clap::Args)]
pub struct CqlConfig {
    /// CQL contact points, comma-separated host:port. The default is the node `e2e/servers/cassandra.sh`
    /// starts.
    #[arg(long = "cql-nodes", env = "HOURGLASS_CQL_NODES", default_value = "127.0.0.1:19042", value_delimiter = ',')]
    pub nodes: Vec<String>,

    /// Keyspace of the raw store.
    #[arg(long = "cql-keyspace", env = "HOURGLASS_CQL_KEYSPACE", default_value = "hourglass")]
    pub keyspace: String,

    /// Replication of the keyspace when `migrate cql` creates it, as a CQL map. Development: the
    /// default. Production: `{'class': 'NetworkTopologyStrategy', '<datacenter>': 3}`.
    #[arg(
        long = "cql-replication",
        env = "HOURGLASS_CQL_REPLICATION",
        default_value = "{'class': 'SimpleStrategy', 'replication_factor': 1}"
    )]
    pub replication: String,

    /// Sub-partitions per customer-hour, fixed when the keyspace is created (stored in it). A customer
    /// sending r events/s writes about r x 3600 x 200 B per hour, spread over N partitions: for ~100 MB
    /// partitions, N = 0.0072 x r (16 suits ~2k events/s per customer, 64 ~9k/s, 300 the whole 41k/s
    /// peak). docs/capacity.md has the arithmetic.
    #[arg(long = "cql-buckets", env = "HOURGLASS_CQL_BUCKETS", default_value_t = 16)]
    pub buckets: u32,

    /// Raw-data retention: the tables' default TTL, in days. Keep it equal to the collector's
    /// `--raw-retention-days`.
    #[arg(long = "cql-ttl-days", env = "HOURGLASS_CQL_TTL_DAYS", default_value_t = 30)]
    pub ttl_days: u32,

    /// Time-window compaction window, in hours (about 30 windows over the TTL is the usual advice).
    #[arg(long = "cql-compaction-window-hours", env = "HOURGLASS_CQL_COMPACTION_WINDOW_HOURS", default_value_t = 24)]
    pub compaction_window_hours: u32,

    /// Most rows in one unlogged batch (all rows of a batch share a partition). Keep batches under the
    /// server's `batch_size_fail_threshold`.
    #[arg(long = "cql-max-batch-rows", env = "HOURGLASS_CQL_MAX_BATCH_ROWS", default_value_t = 50)]
    pub max_batch_rows: usize,

    /// Most uncompressed bytes of one stored block: the events of the records written together that
    /// share a customer-hour and bucket go into one row, cut between records past this, so a large
    /// poll of one busy customer never makes one huge cell (ScyllaDB and Cassandra want cells well
    /// under 1 MiB). One record's events of a bucket stay in one block whatever their size. 0 writes
    /// a block per record, as builds before grouping did.
    #[arg(long = "cql-max-block-bytes", env = "HOURGLASS_CQL_MAX_BLOCK_BYTES", default_value_t = 262_144)]
    pub max_block_bytes: usize,

    /// Create the keyspace and tables at start-up when missing (idempotent; the bucket count is fixed by
    /// the first writer). With `false` a role waits, NOT_SERVING, until `hourglass migrate cql` (a
    /// deployment's migration job) has created them. ScyllaDB serialises concurrent schema changes; on a
    /// multi-node Apache Cassandra cluster run `migrate cql` once and set this to false everywhere, since
    /// concurrent CREATE TABLE from several coordinators can disagree there.
    #[arg(id = "cql_migrate", long = "cql-migrate", env = "HOURGLASS_CQL_MIGRATE", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate: bool,

    /// How long to wait for the first connection.
    #[arg(long = "cql-connect-timeout-ms", env = "HOURGLASS_CQL_CONNECT_TIMEOUT_MS", default_value_t = 10_000)]
    pub connect_timeout_ms: u64,
}

impl CqlConfig {
    /// A configuration for `nodes` and `keyspace` with every other setting at its default.
    pub fn for_nodes(nodes: &str, keyspace: &str) -> Self {
        Self {
            nodes: nodes.split(',').map(str::to_owned).collect(),
            keyspace: keyspace.to_owned(),
            ..hourglass_config::defaults()
        }
    }

    /// Opens a session (token- and shard-aware by default in the `scylla` driver).
    pub async fn connect(&self) -> Result<Session, CqlError> {
        SessionBuilder::new()
            .known_nodes(&self.nodes)
            .connection_timeout(Duration::from_millis(self.connect_timeout_ms))
            .build()
            .await
            .map_err(|error| CqlError::Connect { nodes: self.nodes.join(","), message: error.to_string() })
    }

    /// Checks the keyspace name is a plain identifier, since it is formatted into statements.
    pub(crate) fn checked_keyspace(&self) -> Result<&str, CqlError> {
        let valid = !self.keyspace.is_empty()
            && self.keyspace.len() <= 48
            && self.keyspace.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
            && self.keyspace.as_bytes()[0].is_ascii_alphabetic();
        if valid {
            Ok(&self.keyspace)
        } else {
            Err(CqlError::Schema(format!("invalid keyspace name {:?}: use letters, digits and '_'", self.keyspace)))
        }
    }
}
