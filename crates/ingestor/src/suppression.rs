//! Suppression of erased people (README "Erasure"): after an erasure request, the person's events that
//! still arrive (a client retrying, a buffered SDK, a record redelivered or replayed from the log) are
//! dropped here, before the raw-store write, and counted per customer-hour as erased
//! (`OUTCOME_ERASED` in the record the store keeps, `erased` in the ledger).
//!
//! The list is [`ErasureStore::suppressed_users`], read at start and then every
//! `--erasure-refresh-secs` ([`SuppressionConfig`]): **a request is applied within one refresh interval**
//! (10 s by default) of being recorded. An event ingested in that window is stored; the erasure run that
//! follows the request deletes it if the run plans after it was written, otherwise erasing again removes
//! it (docs/guarantees.md, "Erasure"). A store that cannot be read keeps the previous list.
//!
//! Cost: [`Suppression::snapshot`] is taken once per group of records; a record of a customer without a
//! suppressed user costs one map look-up, and only the events of a customer that has one are hashed
//! (one HMAC-SHA256 each, keyed once per refresh).
//!
//! The salt: without one nobody can be recognised. With no request under suppression that is fine (the
//! list is empty); with requests, the ingestor refuses to start ([`SuppressionError::NoSalt`]): it
//! would otherwise store the events of people who asked to be erased, a breach no later step can
//! notice, while refusing loses nothing (the records wait in the log). A request recorded while the
//! ingestor runs without a salt cannot stop it any more: each refresh then logs an error.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use hourglass_core::erasure::{ErasureSalt, ErasureStore, ErasureStoreError, SuppressedUsers};
use hourglass_core::record_view::RecordView;
use hourglass_proto::log::v1::{Outcome, OutcomeCount};
use tokio_util::sync::CancellationToken;

use crate::telemetry;

/// How often the ingestor reads the suppressed people again.
#[derive(Clone, Debug, clap::Args)]
pub struct SuppressionConfig {
    /// How often the list of people whose events are dropped (erasure requests still under suppression)
    /// is read again. An erasure requested less than this long ago may not be applied yet: events of
    /// the person ingested meanwhile are stored (and removed by the erasure run or a second one).
    /// Default 10.
    #[arg(
        long = "erasure-refresh-secs",
        env = "HOURGLASS_ERASURE_REFRESH_SECS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub refresh_secs: u64,
}

impl SuppressionConfig {
    /// The configuration with every default.
    pub fn with_defaults() -> Self {
        hourglass_config::defaults()
    }

    fn refresh_interval(&self) -> Duration {
        Duration::from_secs(self.refresh_secs.max(1))
    }
}

/// Why the suppressed people could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SuppressionError {
    /// Requests are under suppression and no salt is configured to recognise their people.
    #[error(
        "{users} erased user(s) are under suppression but no erasure salt is configured to recognise them: \
         set --erasure-salt or HOURGLASS_ERASURE_SALT (the secret `hourglass erase` used)"
    )]
    NoSalt {
        /// How many people are under suppression.
        users: usize,
    },
    /// The erasure store failed.
    #[error("failed to read the suppressed users: {0}")]
    Store(#[from] ErasureStoreError),
}

/// The ingestor's current list of suppressed people, shared by the record handler (which reads it)
/// and the task that refreshes it. Cheap to clone.
#[derive(Clone, Default)]
pub struct Suppression {
    current: Arc<RwLock<Arc<SuppressedUsers>>>,
}

impl Suppression {
    /// Suppresses nobody, and is never refreshed.
    pub fn none() -> Self {
        Self::default()
    }

    /// A list that stays `users` (for tests and benchmarks; a running ingestor uses [`start`]).
    pub fn fixed(users: SuppressedUsers) -> Self {
        let suppression = Self::default();
        suppression.replace(users);
        suppression
    }

    /// The list as of now, for one group of records.
    pub fn snapshot(&self) -> Arc<SuppressedUsers> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn replace(&self, users: SuppressedUsers) {
        metrics::gauge!(telemetry::SUPPRESSED_USERS).set(users.len() as f64);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(users);
    }
}

/// Reads the suppressed people once (refused without a salt when there are any), then keeps the list
/// refreshed every `config.refresh_secs` until `shutdown`.
pub async fn start<E: ErasureStore>(
    config: &SuppressionConfig,
    erasure_store: Arc<E>,
    salt: Option<ErasureSalt>,
    shutdown: CancellationToken,
) -> Result<Suppression, SuppressionError> {
    let suppression = Suppression::none();
    suppression.replace(load(&*erasure_store, salt.as_ref()).await?);
    let refresh_interval = config.refresh_interval();
    let refreshed = suppression.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(refresh_interval) => {}
            }
            match load(&*erasure_store, salt.as_ref()).await {
                Ok(users) => refreshed.replace(users),
                Err(error @ SuppressionError::NoSalt { .. }) => {
                    // Operator action needed: these people's events are being stored.
                    tracing::error!(%error, "erased users' events are not suppressed");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot refresh the suppressed users; keeping the previous list");
                }
            }
        }
    });
    Ok(suppression)
}

/// The people under suppression now, recognised with `salt`.
pub async fn load<E: ErasureStore>(
    erasure_store: &E,
    salt: Option<&ErasureSalt>,
) -> Result<SuppressedUsers, SuppressionError> {
    let users = erasure_store.suppressed_users(Utc::now()).await?;
    if users.is_empty() {
        return Ok(SuppressedUsers::none());
    }
    let salt = salt.ok_or(SuppressionError::NoSalt { users: users.len() })?;
    Ok(SuppressedUsers::new(salt, users))
}

/// Drops the events of `record` whose user is suppressed and adds their number per hour to the record's
/// outcomes as `OUTCOME_ERASED`, so the store keeps the count with the record's other outcomes (once per
/// record however often it is redelivered). Returns how many events were dropped.
pub fn drop_suppressed(users: &SuppressedUsers, record: &mut RecordView<'_>) -> u64 {
    let Some(of_customer) = users.for_customer(&record.customer_id) else {
        return 0;
    };
    let mut erased_by_hour: BTreeMap<i64, u32> = BTreeMap::new();
    record.events.retain(|event| {
        let Some(user_id) = event.user_id.as_deref() else {
            return true;
        };
        if !of_customer.is_suppressed(user_id) {
            return true;
        }
        *erased_by_hour.entry(event.hour_start()).or_default() += 1;
        false
    });
    let erased: u64 = erased_by_hour.values().map(|count| u64::from(*count)).sum();
    record.outcomes.extend(erased_by_hour.into_iter().map(|(hour_start_unix_secs, count)| OutcomeCount {
        hour_start_unix_secs,
        outcome: Outcome::Erased as i32,
        reason: 0,
        count,
    }));
    erased
}

#[cfg(test)]
mod tests {
    use hourglass_core::customer::CustomerId;
    use hourglass_core::erasure::UserHash;
    use hourglass_proto::log::v1::EventBatchRecord;
    use hourglass_proto::v1::Event;

    use super::*;

    const HOUR: i64 = 1_764_000_000 / 3600 * 3600;

    fn salt() -> ErasureSalt {
        ErasureSalt::new("the suppression tests' salt").unwrap()
    }

    fn event(id: &str, at: i64, user: Option<&str>) -> Event {
        Event {
            event_id: id.to_owned(),
            event_type: "view".to_owned(),
            occurred_at: Some(hourglass_proto::prost_types::Timestamp { seconds: at, nanos: 0 }),
            user_id: user.map(str::to_owned),
            ..Event::default()
        }
    }

    fn record(customer: &str, events: Vec<Event>) -> EventBatchRecord {
        EventBatchRecord {
            customer_id: customer.to_owned(),
            batch_id: "batch".to_owned(),
            outcomes: vec![OutcomeCount {
                hour_start_unix_secs: HOUR,
                outcome: Outcome::Accepted as i32,
                reason: 0,
                count: events.len() as u32,
            }],
            events,
            ..EventBatchRecord::default()
        }
    }

    #[test]
    fn a_suppressed_users_events_are_dropped_and_counted_per_hour_and_others_stay() {
        let acme = CustomerId::new("acme").unwrap();
        let users = SuppressedUsers::new(&salt(), [(acme, UserHash::of(&salt(), "acme", "jane"))]);
        let mixed = record(
            "acme",
            vec![
                event("1", HOUR + 1, Some("jane")),
                event("2", HOUR + 2, Some("joe")),
                event("3", HOUR + 3600 + 5, Some("jane")),
                event("4", HOUR + 4, None),
                event("5", HOUR + 10, Some("jane")),
            ],
        );
        let mut mixed = RecordView::from_record(&mixed);
        assert_eq!(drop_suppressed(&users, &mut mixed), 3);
        let kept: Vec<&str> = mixed.events.iter().map(|event| event.event_id.as_ref()).collect();
        assert_eq!(kept, ["2", "4"], "other users' and anonymous events stay, in order");
        let erased: Vec<(i64, u32)> = mixed
            .outcomes
            .iter()
            .filter(|count| count.outcome == Outcome::Erased as i32)
            .map(|count| (count.hour_start_unix_secs, count.count))
            .collect();
        assert_eq!(erased, [(HOUR, 2), (HOUR + 3600, 1)], "counted per hour of the events");
        assert_eq!(mixed.outcomes[0].count, 5, "the collector's accepted count is kept");

        let other_customer = record("globex", vec![event("1", HOUR + 1, Some("jane"))]);
        let mut view = RecordView::from_record(&other_customer);
        assert_eq!(drop_suppressed(&users, &mut view), 0, "jane is suppressed for acme only");
        assert_eq!((view.events.len(), view.outcomes.len()), (1, other_customer.outcomes.len()), "untouched");
        let nobody = record("acme", vec![event("1", HOUR + 1, Some("jane"))]);
        assert_eq!(drop_suppressed(&SuppressedUsers::none(), &mut RecordView::from_record(&nobody)), 0);
    }

    #[test]
    fn a_snapshot_sees_the_list_as_it_was_replaced() {
        let suppression = Suppression::none();
        assert!(suppression.snapshot().is_empty());
        let acme = CustomerId::new("acme").unwrap();
        let before = suppression.snapshot();
        suppression.replace(SuppressedUsers::new(&salt(), [(acme, UserHash::of(&salt(), "acme", "jane"))]));
        assert!(before.is_empty(), "a group keeps the list it started with");
        assert_eq!(suppression.snapshot().len(), 1);
    }
}
