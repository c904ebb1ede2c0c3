//! The query service's configuration, from flags and `HOURGLASS_*` environment variables. The server's
//! own settings (HTTP/2 limits, TLS, drain) and the key cache are separate ([`ServerConfig`],
//! [`KeyCacheConfig`]), so a process serving ingest and queries together has them once;
//! [`QueryServerConfig`] holds all three for the query service on its own.

use hourglass_grpc::auth::KeyCacheConfig;
use hourglass_grpc::server::ServerConfig;

/// Limits and secrets of the query service.
#[derive(Clone, clap::Args)]
pub struct QueryConfig {
    /// Longest range of an hourly report, status or ledger request, in hours (default 93 days).
    #[arg(
        long = "query-max-hourly-range-hours",
        env = "HOURGLASS_QUERY_MAX_HOURLY_RANGE_HOURS",
        default_value_t = 2232,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_hourly_range_hours: u32,

    /// Longest range of a daily/weekly/monthly report or an event-type listing, in days. Such reports
    /// merge one users sketch per hour and event type, so their cost grows with the range.
    #[arg(
        long = "query-max-period-range-days",
        env = "HOURGLASS_QUERY_MAX_PERIOD_RANGE_DAYS",
        default_value_t = 400,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_period_range_days: u32,

    /// Most raw events per page of ListRawEvents. At least 1: a limit of 0 would refuse every page.
    #[arg(
        long = "query-max-page-size",
        env = "HOURGLASS_QUERY_MAX_PAGE_SIZE",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_page_size: u32,

    /// Reports kept in memory (hourly and period metrics), as encoded responses. An entry is used only
    /// while its range's rollups are unchanged, which one indexed query checks per request; 0 disables
    /// the cache.
    #[arg(long = "query-cache-entries", env = "HOURGLASS_QUERY_CACHE_ENTRIES", default_value_t = 10_000)]
    pub cache_entries: usize,

    /// Most bytes the report cache holds: its encoded responses, room for each one's gzip form (kept
    /// once a client accepting gzip asks for it; at most about the response's size, counted up front)
    /// and their keys, so an entry weighs about twice its response (default 256 MiB; a 30-day report
    /// per event type of 20 types is 543 KiB, summed over types 39 KiB). A full cache starts over; a
    /// response larger than the budget is not kept; 0 disables the cache.
    #[arg(long = "query-cache-max-bytes", env = "HOURGLASS_QUERY_CACHE_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub cache_max_bytes: usize,

    /// Secret that signs page tokens. Every replica behind a balancer needs the same one; without it a
    /// random secret is made at start, and tokens only work on the replica that issued them.
    #[arg(long = "page-token-secret", env = "HOURGLASS_PAGE_TOKEN_SECRET", hide_env_values = true)]
    pub page_token_secret: Option<String>,
}

/// Everything the query service on its own needs besides its stores ([`run`](crate::server::run)).
#[derive(Clone, Debug)]
pub struct QueryServerConfig {
    /// The service's limits and page-token secret.
    pub query: QueryConfig,
    /// HTTP/2 limits, TLS, drain timing, readiness interval.
    pub server: ServerConfig,
    /// How long a key look-up is trusted.
    pub key_cache: KeyCacheConfig,
}

/// The page-token secret is hidden: a configuration logged with `?` must not leak it.
impl std::fmt::Debug for QueryConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("QueryConfig")
            .field("max_hourly_range_hours", &self.max_hourly_range_hours)
            .field("max_period_range_days", &self.max_period_range_days)
            .field("max_page_size", &self.max_page_size)
            .field("cache_entries", &self.cache_entries)
            .field("cache_max_bytes", &self.cache_max_bytes)
            .field("page_token_secret", &self.page_token_secret.as_ref().map(|_| hourglass_config::HIDDEN))
            .finish()
    }
}

impl QueryConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_page_token_secret() {
        let mut config: QueryConfig = hourglass_config::defaults();
        config.page_token_secret = Some("s3cret-token".into());
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("page_token_secret: Some(\"<hidden>\")"), "{shown}");
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        query: QueryConfig,
    }

    #[test]
    fn zero_limits_are_refused_at_start_not_at_the_first_request() {
        use clap::Parser;
        for flag in ["--query-max-page-size", "--query-max-hourly-range-hours", "--query-max-period-range-days"] {
            let refused =
                Flags::try_parse_from(["query", flag, "0"]).err().unwrap_or_else(|| panic!("{flag} 0 accepted"));
            assert!(refused.to_string().contains("0 is not in 1.."), "{flag}: {refused}");
            let accepted =
                Flags::try_parse_from(["query", flag, "1"]).unwrap_or_else(|error| panic!("{flag} 1: {error}"));
            assert!(format!("{:?}", accepted.query).contains(": 1,"), "{flag}");
        }
    }
}
