//! [`ErasureConfig`]: the erasure settings every role of a deployment shares. Here rather than in a
//! stage because three stages read them: the query role hashes the user of an admin request with the
//! salt, the aggregator (and standalone) runs requests with it, and `hourglass erase` does both.

/// The erasure settings: the salt that names erased users, and how long their events are suppressed.
#[derive(Clone, Debug, clap::Args)]
pub struct ErasureConfig {
    /// The deployment's secret key of the hashes that name erased users (HMAC-SHA256 of customer and user
    /// id), at least 16 bytes. Every role and tool of a deployment must use the same one; changing it
    /// makes earlier requests unrecognisable. No default: without it the admin service refuses erasure
    /// requests (FAILED_PRECONDITION), the aggregator runs none, and `hourglass erase` refuses to run.
    #[arg(long = "erasure-salt", env = "HOURGLASS_ERASURE_SALT", hide_env_values = true)]
    pub salt: Option<String>,

    /// For how many days after an erasure request the person's events are dropped at ingestion (a client
    /// retrying, a buffered SDK, a replay of the event log) and counted as erased. 30 by default, the
    /// default raw retention: no event older than that is stored anyway.
    #[arg(
        long = "erasure-suppress-days",
        env = "HOURGLASS_ERASURE_SUPPRESS_DAYS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub suppress_days: u32,
}
