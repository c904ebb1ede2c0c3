//! Per-customer events-per-second quotas: one token bucket per customer in this process.
//!
//! A batch is admitted whole or not at all, so a client retries exactly the batch it was told to. A
//! batch larger than the burst is admitted when the bucket is full and leaves it in debt, so no batch is
//! too large to ever pass.

use std::collections::HashMap;
use std::time::Duration;

use hourglass_core::customer::CustomerId;
use parking_lot::Mutex;
use tokio::time::Instant;

/// A customer's effective limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Sustained events per second.
    pub events_per_second: u32,
    /// Events allowed in a burst.
    pub burst_events: u32,
}

struct TokenBucket {
    tokens: f64,
    refilled_at: Instant,
    budget: Budget,
}

/// The token buckets of every customer seen by this process.
#[derive(Default)]
pub struct Quotas {
    buckets: Mutex<HashMap<CustomerId, TokenBucket>>,
}

impl Quotas {
    /// Takes `events` tokens from the customer's bucket, or says how long until it could.
    pub fn try_admit(
        &self,
        customer_id: &CustomerId,
        budget: Budget,
        events: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        if events == 0 {
            return Ok(());
        }
        let rate = f64::from(budget.events_per_second.max(1));
        let capacity = f64::from(budget.burst_events.max(1));
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(customer_id.clone()).or_insert_with(|| TokenBucket {
            tokens: capacity,
            refilled_at: now,
            budget,
        });
        if bucket.budget != budget {
            // Limits changed (the key cache refreshed them): keep the tokens, clamp to the new burst.
            bucket.budget = budget;
            bucket.tokens = bucket.tokens.min(capacity);
        }
        let elapsed = now.saturating_duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled_at = now;

        let needed = f64::from(events).min(capacity);
        if bucket.tokens >= needed {
            bucket.tokens -= f64::from(events);
            Ok(())
        } else {
            let wait_secs = (needed - bucket.tokens) / rate;
            Err(Duration::from_secs_f64(wait_secs).max(Duration::from_millis(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> CustomerId {
        CustomerId::new("acme").unwrap()
    }

    #[test]
    fn admits_the_burst_then_refills_at_the_rate() {
        let quotas = Quotas::default();
        let budget = Budget { events_per_second: 100, burst_events: 200 };
        let start = Instant::now();
        assert_eq!(quotas.try_admit(&acme(), budget, 150, start), Ok(()));
        let wait = quotas.try_admit(&acme(), budget, 100, start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500), "50 tokens missing at 100/s");
        assert_eq!(quotas.try_admit(&acme(), budget, 100, start + wait), Ok(()));
        assert!(quotas.try_admit(&acme(), budget, 1, start + wait).is_err());
    }

    #[test]
    fn customers_have_separate_buckets() {
        let quotas = Quotas::default();
        let budget = Budget { events_per_second: 10, burst_events: 10 };
        let now = Instant::now();
        assert_eq!(quotas.try_admit(&acme(), budget, 10, now), Ok(()));
        assert!(quotas.try_admit(&acme(), budget, 1, now).is_err());
        assert_eq!(quotas.try_admit(&CustomerId::new("globex").unwrap(), budget, 10, now), Ok(()));
    }

    #[test]
    fn a_batch_above_the_burst_passes_from_a_full_bucket_and_leaves_debt() {
        let quotas = Quotas::default();
        let budget = Budget { events_per_second: 10, burst_events: 10 };
        let now = Instant::now();
        assert_eq!(quotas.try_admit(&acme(), budget, 25, now), Ok(()));
        let wait = quotas.try_admit(&acme(), budget, 10, now).unwrap_err();
        assert_eq!(wait, Duration::from_millis(2500), "15 tokens of debt plus 10 needed, at 10/s");
    }

    #[test]
    fn empty_batches_are_free() {
        let quotas = Quotas::default();
        let budget = Budget { events_per_second: 1, burst_events: 1 };
        let now = Instant::now();
        assert_eq!(quotas.try_admit(&acme(), budget, 1, now), Ok(()));
        assert_eq!(quotas.try_admit(&acme(), budget, 0, now), Ok(()));
    }
}
