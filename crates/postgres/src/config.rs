//! Postgres connection settings, from flags and `HOURGLASS_DATABASE_*` environment variables.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// How Hourglass connects to Postgres.
#[derive(Clone, clap::Args)]
pub struct PostgresConfig {
    /// Postgres URL. The default is the database `e2e/servers/postgres.sh` creates.
    #[arg(
        long = "database-url",
        env = "HOURGLASS_DATABASE_URL",
        default_value = "postgres://hourglass:hourglass@127.0.0.1:5432/hourglass",
        hide_env_values = true
    )]
    pub url: String,

    /// The most connections this process opens.
    #[arg(long = "database-max-connections", env = "HOURGLASS_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub max_connections: u32,

    /// How long to wait for a connection before failing the request.
    #[arg(
        long = "database-acquire-timeout-ms",
        env = "HOURGLASS_DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub acquire_timeout_ms: u64,

    /// Apply pending schema migrations at start-up. Deployments that run `hourglass migrate postgres`
    /// as a separate step set this to false.
    #[arg(
        long = "database-migrate",
        env = "HOURGLASS_DATABASE_MIGRATE",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub migrate: bool,
}

/// The URL's password is hidden: a configuration logged with `?` must not leak it.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PostgresConfig")
            .field("url", &hourglass_config::shown_secret(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout_ms", &self.acquire_timeout_ms)
            .field("migrate", &self.migrate)
            .finish()
    }
}

impl PostgresConfig {
    /// A configuration for `url` with every other setting at its default.
    pub fn for_url(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..hourglass_config::defaults() }
    }

    /// Opens a pool and applies pending migrations, or with `--database-migrate false` checks that
    /// another process (`hourglass migrate postgres`) has applied them: what every command that uses
    /// Postgres does first (long-running roles retry while it fails).
    pub async fn open(&self) -> Result<PgPool, OpenError> {
        let pool = self.connect_lazy().map_err(OpenError::Url)?;
        if self.migrate {
            crate::migrate::run(&pool).await.map_err(OpenError::Migrate)?;
        } else {
            let current = crate::migrate::is_current(&pool).await.map_err(OpenError::NotMigrated)?;
            if !current {
                return Err(OpenError::Behind { needed: crate::migrate::latest_version() });
            }
        }
        Ok(pool)
    }

    /// Opens a pool. Connections are made lazily, so this succeeds while the database is down; the
    /// first query tells.
    pub fn connect_lazy(&self) -> Result<PgPool, sqlx::Error> {
        let port = PgConnectOptions::from_str(&self.url).ok().map(|options| options.get_port());
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .after_connect(move |_connection, _metadata| {
                Box::pin(async move {
                    if let Some(port) = port {
                        nagle::disable_on_sockets_to_port(port);
                    }
                    Ok(())
                })
            })
            .connect_lazy(&self.url)
    }
}

/// Why [`PostgresConfig::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The URL is not a valid Postgres URL.
    #[error("invalid database url: {0}")]
    Url(#[source] sqlx::Error),
    /// Migrations could not be applied (the database may be down).
    #[error("failed to apply postgres migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// With `--database-migrate false`: the migrations table could not be read (the database is down,
    /// or no migration was ever applied).
    #[error("cannot read the applied postgres migrations (run `hourglass migrate postgres`): {0}")]
    NotMigrated(#[source] sqlx::Error),
    /// With `--database-migrate false`: the schema is older than this build.
    #[error("postgres schema is older than migration {needed} this build needs: run `hourglass migrate postgres`")]
    Behind {
        /// The newest migration this build knows.
        needed: i64,
    },
}

/// sqlx 0.9.0 opens its Postgres TCP connections without `TCP_NODELAY` (a regression of that release:
/// launchbadge/sqlx#4335, fixed by #4336 after it). Whenever it writes a request in two segments,
/// Nagle's algorithm holds back the second until the server's delayed ACK, about 40 ms (the upstream
/// report measured queries going from 2 ms to 42 ms). Until a release with the fix is
/// usable here, each new connection's socket gets `TCP_NODELAY` right after sqlx opens it. sqlx does not
/// expose the socket, so this finds it: every TCP socket of this process whose peer is the database's
/// port (our only connections to that port are sqlx's). Setting it twice, or on a socket that closes
/// meanwhile, is harmless.
mod nagle {
    use std::os::fd::RawFd;

    /// Sets `TCP_NODELAY` on every TCP socket of this process connected to `port`.
    pub(super) fn disable_on_sockets_to_port(port: u16) {
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
        for entry in entries.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse::<RawFd>().ok()) else { continue };
            let is_socket =
                std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:"));
            if is_socket && peer_port(fd) == Some(port) {
                let enabled: libc::c_int = 1;
                // SAFETY: setsockopt on a descriptor of this process with a correctly sized int option;
                // a descriptor that is not (or no longer) a TCP socket makes it fail, which is ignored.
                unsafe {
                    libc::setsockopt(
                        fd,
                        libc::IPPROTO_TCP,
                        libc::TCP_NODELAY,
                        (&enabled as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    );
                }
            }
        }
    }

    /// The remote port of an IPv4 or IPv6 socket.
    fn peer_port(fd: RawFd) -> Option<u16> {
        // SAFETY: sockaddr_storage is plain data, valid zeroed; getpeername writes at most `length` bytes.
        let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let result =
            unsafe { libc::getpeername(fd, (&mut address as *mut libc::sockaddr_storage).cast(), &mut length) };
        if result != 0 {
            return None;
        }
        match i32::from(address.ss_family) {
            // SAFETY: the family says which sockaddr type the storage holds.
            libc::AF_INET => {
                let address = unsafe { &*(&address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(u16::from_be(address.sin_port))
            }
            libc::AF_INET6 => {
                let address = unsafe { &*(&address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(u16::from_be(address.sin6_port))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let shown = format!("{:?}", PostgresConfig::for_url("postgres://app:s3cret@db:5432/hourglass"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgres://app:<hidden>@db:5432/hourglass"), "{shown}");
    }
}
