//! The `--from/--to/--customer` range of hours that `verify` and `reprocess` work on.

use anyhow::bail;
use chrono::{DateTime, Utc};

/// A range of hours, of one customer or all.
#[derive(clap::Args)]
pub struct HourRangeArgs {
    /// First hour (RFC 3339; hours starting at or after it).
    #[arg(long)]
    from: DateTime<Utc>,
    /// End of the range (exclusive).
    #[arg(long)]
    to: DateTime<Utc>,
    /// Only this customer.
    #[arg(long)]
    customer: Option<String>,
}

impl HourRangeArgs {
    /// The range as `[from, to)` in seconds since the Unix epoch, refused when empty.
    pub fn bounds(&self) -> anyhow::Result<(i64, i64)> {
        if self.to <= self.from {
            bail!("--to must be after --from");
        }
        Ok((self.from.timestamp(), self.to.timestamp()))
    }

    /// The customer, if the range is limited to one.
    pub fn customer(&self) -> Option<&str> {
        self.customer.as_deref()
    }
}
