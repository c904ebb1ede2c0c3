//! Support for tests against a real Postgres: each test gets a database of its own.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, PgConnection};

/// The environment variable naming the Postgres the tests use (`scripts/test.sh` sets it).
pub const TEST_DATABASE_URL_ENV: &str = "HOURGLASS_TEST_DATABASE_URL";

/// Creates an empty database for one test and returns its URL. The server comes from
/// `HOURGLASS_TEST_DATABASE_URL` (its role needs CREATEDB). The database is named after the test and
/// this process, so parallel tests never share one; `scripts/test.sh` drops them before each run.
pub async fn create_test_database(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let server_url = std::env::var(TEST_DATABASE_URL_ENV).unwrap_or_else(|_| {
        panic!("{TEST_DATABASE_URL_ENV} is not set: run the tests with scripts/test.sh, which starts Postgres")
    });
    let sanitized: String = test_name
        .chars()
        .map(|character| if character.is_ascii_alphanumeric() { character.to_ascii_lowercase() } else { '_' })
        .take(30)
        .collect();
    let database =
        format!("hourglass_test_{sanitized}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let mut connection = PgConnection::connect(&server_url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to test postgres at {TEST_DATABASE_URL_ENV}: {error}"));
    // The name is built from ascii alphanumerics and '_' above, so formatting it into SQL is safe.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\"")))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("cannot create test database {database}: {error}"));
    let (base, _) = server_url.rsplit_once('/').expect("database url ends with /database");
    format!("{base}/{database}")
}

/// A Postgres cluster of one test's own (`e2e/servers/postgres.sh --name NAME --port PORT`), for tests
/// that stop or crash the database while the main one keeps serving the others. Stopped when dropped.
pub struct FaultCluster {
    name: &'static str,
    port: u16,
}

impl FaultCluster {
    /// Starts the cluster `name` on `port` (creating it the first time).
    pub fn start(name: &'static str, port: u16) -> Self {
        let cluster = Self { name, port };
        cluster.run("start");
        cluster
    }

    /// Runs `postgres.sh ACTION` on the cluster: `start`, `stop` or `kill` (a crash: no checkpoint).
    pub fn run(&self, action: &str) {
        let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e/servers/postgres.sh");
        let status = std::process::Command::new("bash")
            .arg(script)
            .args([action, "--name", self.name, "--port", &self.port.to_string()])
            .status()
            .expect("run e2e/servers/postgres.sh");
        assert!(status.success(), "postgres.sh {action} --name {} failed", self.name);
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        self.run("stop");
    }
}
