//! Per-user erasure (GDPR Art. 17, CCPA): the [`ErasureStore`] seam that records erasure requests and
//! their progress, and the keyed hash that names the person without keeping their id.
//!
//! A request names a customer and a [`UserHash`]: HMAC-SHA256 under the deployment's [`ErasureSalt`] of
//! the customer id and the user id, never the user id itself, so the record of an erasure does not
//! become a list of the people who asked for one. Whoever holds the salt recognises the person's events
//! by hashing each event's user ([`UserMatcher`]); that is how the job finds and deletes them, and how
//! it resumes after a crash without the user id being typed again.
//!
//! A request goes through three states ([`ErasureState`]):
//! 1. `pending`: recorded, nothing planned yet;
//! 2. `erasing`: its plan, the hours holding the person's events with the number found in each, is
//!    recorded in one step ([`ErasureStore::plan_erasure`]), so a run that crashes while it deletes
//!    resumes on exactly those hours (a recount after the deletion would find nothing and skip an hour
//!    whose rollup still counts the person);
//! 3. `done`: every planned hour's raw events were deleted and its rollup recomputed.
//!
//! Runs lease a request with a token, as aggregation jobs lease hours (`rollup_store`): a run that
//! stalls loses its lease, and only the current lease records progress.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::BoxError;
use crate::customer::CustomerId;
use crate::hour::SECONDS_PER_HOUR;
use crate::job_queue::CustomerHour;
use crate::raw_store::{RawStore, RawStoreError};
use crate::retention::RawRetention;
use crate::rollup_store::{LeaseToken, RollupStore, RollupStoreError};

type HmacSha256 = Hmac<Sha256>;

/// The deployment's secret key of [`UserHash`]es. Its `Debug` form hides it; it is never logged.
#[derive(Clone)]
pub struct ErasureSalt(Vec<u8>);

/// Why a salt is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the erasure salt must be at least {MIN_SALT_BYTES} bytes, got {0}")]
pub struct SaltTooShort(usize);

/// The shortest salt accepted: shorter ones can be guessed, and then every user id in a request with it.
pub const MIN_SALT_BYTES: usize = 16;

impl ErasureSalt {
    /// A salt from its configured text.
    pub fn new(secret: &str) -> Result<Self, SaltTooShort> {
        if secret.len() < MIN_SALT_BYTES {
            return Err(SaltTooShort(secret.len()));
        }
        Ok(Self(secret.as_bytes().to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length.
        HmacSha256::new_from_slice(&self.0).expect("HMAC accepts keys of any length")
    }
}

impl fmt::Debug for ErasureSalt {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("ErasureSalt(<hidden>)")
    }
}

/// A person as an erasure request names them: HMAC-SHA256 under the [`ErasureSalt`] of the customer id
/// and the user id, each preceded by its length, so no two (customer, user) pairs hash alike by how
/// their bytes are split.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserHash(pub [u8; 32]);

impl UserHash {
    /// The hash of `user_id` of `customer_id` under `salt`.
    pub fn of(salt: &ErasureSalt, customer_id: &str, user_id: &str) -> Self {
        Self::keyed(salt.mac(), customer_id, user_id)
    }

    fn keyed(mut mac: HmacSha256, customer_id: &str, user_id: &str) -> Self {
        mac.update(&(customer_id.len() as u64).to_le_bytes());
        mac.update(customer_id.as_bytes());
        mac.update(&(user_id.len() as u64).to_le_bytes());
        mac.update(user_id.as_bytes());
        Self(mac.finalize().into_bytes().into())
    }

    /// The hash as 64 lowercase hexadecimal digits, as stores keep it and tools print it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Parses [`to_hex`](Self::to_hex)'s form.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Display for UserHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_hex())
    }
}

impl fmt::Debug for UserHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "UserHash({})", &self.to_hex()[..12])
    }
}

/// Tells whether a stored event's user is the person of one request: hashes each user id it is asked
/// about with the salt (keyed once) and compares. Raw stores call it for every event that has a user.
#[derive(Clone)]
pub struct UserMatcher {
    mac: HmacSha256,
    customer_id: CustomerId,
    user_hash: UserHash,
}

impl UserMatcher {
    /// A matcher of `user_hash` among `customer_id`'s events.
    pub fn new(salt: &ErasureSalt, customer_id: CustomerId, user_hash: UserHash) -> Self {
        Self { mac: salt.mac(), customer_id, user_hash }
    }

    /// The customer whose events this matches.
    pub fn customer_id(&self) -> &CustomerId {
        &self.customer_id
    }

    /// Whether `user_id` is the person.
    pub fn matches(&self, user_id: &str) -> bool {
        UserHash::keyed(self.mac.clone(), self.customer_id.as_str(), user_id) == self.user_hash
    }
}

impl fmt::Debug for UserMatcher {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("UserMatcher")
            .field("customer_id", &self.customer_id)
            .field("user_hash", &self.user_hash)
            .finish_non_exhaustive()
    }
}

/// The people whose events are dropped at ingestion, as the ingestor holds them between two reads of
/// [`ErasureStore::suppressed_users`]: their hashes grouped by customer, with the salt's HMAC keyed once.
///
/// The check is on the hot path (every event of every record), so it costs nothing for a customer
/// without a suppressed user: [`for_customer`](Self::for_customer) is one map look-up per record, and
/// only the events of a customer that has one are hashed.
#[derive(Clone, Default)]
pub struct SuppressedUsers {
    /// `None` when nobody is suppressed (no salt is needed then).
    mac: Option<HmacSha256>,
    by_customer: HashMap<String, HashSet<UserHash>>,
}

impl SuppressedUsers {
    /// Nobody suppressed.
    pub fn none() -> Self {
        Self::default()
    }

    /// The `users` (as listed by [`ErasureStore::suppressed_users`]), recognised with `salt`.
    pub fn new(salt: &ErasureSalt, users: impl IntoIterator<Item = (CustomerId, UserHash)>) -> Self {
        let mut by_customer: HashMap<String, HashSet<UserHash>> = HashMap::new();
        for (customer_id, user_hash) in users {
            by_customer.entry(customer_id.as_str().to_owned()).or_default().insert(user_hash);
        }
        let mac = (!by_customer.is_empty()).then(|| salt.mac());
        Self { mac, by_customer }
    }

    /// How many people are suppressed, over every customer.
    pub fn len(&self) -> usize {
        self.by_customer.values().map(HashSet::len).sum()
    }

    /// Whether nobody is suppressed.
    pub fn is_empty(&self) -> bool {
        self.by_customer.is_empty()
    }

    /// The suppressed people of `customer_id`, or `None` when it has none (the common case: its events
    /// need no check).
    pub fn for_customer<'a>(&'a self, customer_id: &'a str) -> Option<CustomerSuppression<'a>> {
        let users = self.by_customer.get(customer_id)?;
        let mac = self.mac.as_ref()?;
        Some(CustomerSuppression { mac, customer_id, users })
    }
}

impl fmt::Debug for SuppressedUsers {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("SuppressedUsers")
            .field("customers", &self.by_customer.len())
            .field("users", &self.len())
            .finish()
    }
}

/// The suppressed people of one customer ([`SuppressedUsers::for_customer`]).
pub struct CustomerSuppression<'a> {
    mac: &'a HmacSha256,
    customer_id: &'a str,
    users: &'a HashSet<UserHash>,
}

impl CustomerSuppression<'_> {
    /// Whether the events of `user_id` are dropped: one HMAC of the customer and user id.
    pub fn is_suppressed(&self, user_id: &str) -> bool {
        self.users.contains(&UserHash::keyed(self.mac.clone(), self.customer_id, user_id))
    }
}

/// Where a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErasureState {
    /// Recorded; its hours not planned yet.
    Pending,
    /// Its hours are planned; deleting and recomputing them.
    Erasing,
    /// Every planned hour is erased and recomputed.
    Done,
}

impl ErasureState {
    /// The state's name as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            ErasureState::Pending => "pending",
            ErasureState::Erasing => "erasing",
            ErasureState::Done => "done",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s form.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "pending" => Some(ErasureState::Pending),
            "erasing" => Some(ErasureState::Erasing),
            "done" => Some(ErasureState::Done),
            _ => None,
        }
    }
}

impl fmt::Display for ErasureState {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// An erasure request as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureRequest {
    /// The request's id (a UUID v7, so ids sort by creation).
    pub id: String,
    /// The customer whose events are erased.
    pub customer_id: CustomerId,
    /// The person.
    pub user_hash: UserHash,
    /// When it was recorded.
    pub requested_at: DateTime<Utc>,
    /// Events of the person arriving before this instant are dropped at ingestion (suppression).
    pub suppress_until: DateTime<Utc>,
    /// Where it is.
    pub state: ErasureState,
    /// When it was done.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A new request id: a UUID v7, so ids sort by creation.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// One planned hour of a request: how many of the person's events it held when planned, and, once
/// erased and recomputed, the hour's new revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureHour {
    /// The customer-hour.
    pub customer_hour: CustomerHour,
    /// Distinct events of the person found in the hour when the request was planned.
    pub events: u64,
    /// The hour's rollup revision written after the deletion; `None` until the hour is done.
    pub revision: Option<u32>,
}

/// A request leased by a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErasureLease {
    /// The request as leased.
    pub request: ErasureRequest,
    /// The lease's token, which every later call on the lease must present.
    pub token: LeaseToken,
}

/// Errors from an erasure store.
#[derive(Debug, thiserror::Error)]
pub enum ErasureStoreError {
    /// The store could not be reached or the transaction failed; nothing was written.
    #[error("erasure store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The store's schema is missing or behind this build: an operator must migrate.
    #[error("erasure store schema problem: {0}")]
    Schema(#[source] BoxError),
    /// The store holds a row this build cannot read.
    #[error("erasure store holds invalid data: {0}")]
    InvalidData(String),
}

/// Erasure requests and their progress. Postgres in distributed mode, `meta.db` in standalone.
pub trait ErasureStore: Send + Sync + 'static {
    /// Records a request to erase `user_hash` of `customer_id`, suppressing their events until
    /// `suppress_until`. A request for the same person that is not done yet is returned instead of a
    /// second one (asking twice erases once); a done one does not prevent a new request, which erases
    /// what arrived since.
    fn request_erasure(
        &self,
        customer_id: &CustomerId,
        user_hash: UserHash,
        suppress_until: DateTime<Utc>,
    ) -> impl Future<Output = Result<ErasureRequest, ErasureStoreError>> + Send;

    /// The request with this id.
    fn erasure(&self, id: &str) -> impl Future<Output = Result<Option<ErasureRequest>, ErasureStoreError>> + Send;

    /// Requests of one customer or all, oldest first.
    fn list_erasures(
        &self,
        customer_id: Option<&CustomerId>,
    ) -> impl Future<Output = Result<Vec<ErasureRequest>, ErasureStoreError>> + Send;

    /// Leases the request `id` for `lease` with a new token, unless it is done or under a lease that has
    /// not expired (`None` then).
    fn lease_erasure(
        &self,
        id: &str,
        owner: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<ErasureLease>, ErasureStoreError>> + Send;

    /// Leases the oldest request that is not done and not under a live lease, for a worker that runs
    /// them in the background.
    fn lease_next_erasure(
        &self,
        owner: &str,
        lease: Duration,
    ) -> impl Future<Output = Result<Option<ErasureLease>, ErasureStoreError>> + Send;

    /// Extends the lease to `lease` from now if it is still current; false if it is lost.
    fn renew_erasure(
        &self,
        lease: &ErasureLease,
        duration: Duration,
    ) -> impl Future<Output = Result<bool, ErasureStoreError>> + Send;

    /// Records the request's plan (its hours and the events found in each) and moves it from `pending`
    /// to `erasing`, in one transaction, if the lease is current and the request is pending; false
    /// otherwise (nothing written). A request already `erasing` keeps its first plan.
    fn plan_erasure(
        &self,
        lease: &ErasureLease,
        hours: &[ErasureHour],
    ) -> impl Future<Output = Result<bool, ErasureStoreError>> + Send;

    /// The request's planned hours, oldest first, done or not.
    fn erasure_hours(&self, id: &str) -> impl Future<Output = Result<Vec<ErasureHour>, ErasureStoreError>> + Send;

    /// Records a planned hour as erased and recomputed at `revision`, if the lease is current; false
    /// otherwise.
    fn record_erased_hour(
        &self,
        lease: &ErasureLease,
        customer_hour: &CustomerHour,
        revision: u32,
    ) -> impl Future<Output = Result<bool, ErasureStoreError>> + Send;

    /// Moves the request to `done` and ends the lease, if the lease is current; false otherwise.
    fn finish_erasure(&self, lease: &ErasureLease) -> impl Future<Output = Result<bool, ErasureStoreError>> + Send;

    /// Gives the lease back, if it is current, so another run may lease the request at once (a run
    /// stopped by shutdown): the request keeps its state, plan and hours done. False, and nothing
    /// changed, if the lease was lost (expired, or the request leased again).
    fn release_erasure(&self, lease: &ErasureLease) -> impl Future<Output = Result<bool, ErasureStoreError>> + Send;

    /// The people whose events are suppressed at `now` (requests of any state whose `suppress_until` is
    /// later), for the ingestor.
    fn suppressed_users(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<(CustomerId, UserHash)>, ErasureStoreError>> + Send;
}

/// The hours holding a person's events, as [`find_user_hours`] finds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FoundHours {
    /// Inside their horizon: erased and recomputed.
    pub hours: Vec<ErasureHour>,
    /// Past their horizon: never recomputed, and their raw rows expire within the retention's margin;
    /// listed so an operator knows.
    pub past_horizon: Vec<ErasureHour>,
}

/// Why [`find_user_hours`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum FindHoursError {
    /// Listing the customer's hours failed.
    #[error(transparent)]
    RollupStore(#[from] RollupStoreError),
    /// Counting an hour's events failed.
    #[error(transparent)]
    RawStore(#[from] RawStoreError),
}

/// Scans the matcher's customer's hours with data whose raw rows may still exist (`retention`) for the
/// matcher's user, oldest first, calling `on_scanned(done, total)` after each hour. A bounded scan, not
/// an index: why is in the aggregator's `erasure` module. Here, in the domain crate, because two stages
/// run it: the aggregator plans a request with it, and the admin service answers a dry run.
pub async fn find_user_hours<R: RawStore, S: RollupStore>(
    raw_store: &R,
    rollup_store: &S,
    retention: &RawRetention,
    matcher: &UserMatcher,
    now_unix: i64,
    mut on_scanned: impl FnMut(usize, usize),
) -> Result<FoundHours, FindHoursError> {
    let oldest = now_unix.saturating_sub(retention.retention_secs).saturating_sub(SECONDS_PER_HOUR);
    // Events may be a little in the future (the collector's allowed clock skew); a day covers it.
    let newest = now_unix.saturating_add(86_400);
    let candidates = rollup_store.hours_with_data(Some(matcher.customer_id().as_str()), oldest, newest).await?;
    let mut found = FoundHours::default();
    for (index, customer_hour) in candidates.iter().enumerate() {
        let events = raw_store.count_user_events(matcher, customer_hour.hour_start).await?;
        if events > 0 {
            let hour = ErasureHour { customer_hour: customer_hour.clone(), events, revision: None };
            if retention.is_past_horizon(customer_hour.hour_start, now_unix) {
                found.past_horizon.push(hour);
            } else {
                found.hours.push(hour);
            }
        }
        on_scanned(index + 1, candidates.len());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salt() -> ErasureSalt {
        ErasureSalt::new("a deployment secret of some length").unwrap()
    }

    #[test]
    fn a_hash_names_one_user_of_one_customer_under_one_salt() {
        let hash = UserHash::of(&salt(), "acme", "user-1");
        assert_eq!(hash, UserHash::of(&salt(), "acme", "user-1"), "deterministic");
        assert_ne!(hash, UserHash::of(&salt(), "acme", "user-2"));
        assert_ne!(hash, UserHash::of(&salt(), "globex", "user-1"), "per customer");
        assert_ne!(UserHash::of(&salt(), "ab", "c"), UserHash::of(&salt(), "a", "bc"), "lengths separate the parts");
        let other_salt = ErasureSalt::new("another deployment's secret").unwrap();
        assert_ne!(hash, UserHash::of(&other_salt, "acme", "user-1"), "per salt");
        assert_eq!(UserHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(UserHash::from_hex("00"), None);
        assert_eq!(UserHash::from_hex(&"zz".repeat(32)), None);
    }

    #[test]
    fn a_matcher_recognises_only_its_user() {
        let acme = CustomerId::new("acme").unwrap();
        let matcher = UserMatcher::new(&salt(), acme, UserHash::of(&salt(), "acme", "user-1"));
        assert!(matcher.matches("user-1"));
        assert!(!matcher.matches("user-10"));
        assert!(!matcher.matches(""));
    }

    #[test]
    fn the_salt_and_the_user_stay_out_of_debug_output() {
        let secret = "a deployment secret of some length";
        let salt = ErasureSalt::new(secret).unwrap();
        assert!(!format!("{salt:?}").contains("deployment"));
        let matcher = UserMatcher::new(&salt, CustomerId::new("acme").unwrap(), UserHash::of(&salt, "acme", "jane"));
        assert!(!format!("{matcher:?}").contains("deployment"));
        assert_eq!(ErasureSalt::new("short").unwrap_err(), SaltTooShort(5));
    }

    #[test]
    fn suppression_recognises_only_the_listed_people_of_their_customer() {
        let acme = CustomerId::new("acme").unwrap();
        let globex = CustomerId::new("globex").unwrap();
        let suppressed = SuppressedUsers::new(
            &salt(),
            [
                (acme.clone(), UserHash::of(&salt(), "acme", "jane")),
                (acme.clone(), UserHash::of(&salt(), "acme", "joe")),
                (globex.clone(), UserHash::of(&salt(), "globex", "ann")),
            ],
        );
        assert_eq!(suppressed.len(), 3);
        let of_acme = suppressed.for_customer("acme").expect("acme has suppressed users");
        assert!(of_acme.is_suppressed("jane"));
        assert!(of_acme.is_suppressed("joe"));
        assert!(!of_acme.is_suppressed("ann"), "ann is suppressed for globex only");
        assert!(!of_acme.is_suppressed("jane "));
        assert!(suppressed.for_customer("globex").expect("globex has one").is_suppressed("ann"));
        assert!(suppressed.for_customer("initech").is_none(), "a customer without any needs no hashing");
        let none = SuppressedUsers::none();
        assert!(none.is_empty() && none.for_customer("acme").is_none());
        let other_salt = ErasureSalt::new("another deployment's secret").unwrap();
        let under_other_salt = SuppressedUsers::new(&other_salt, [(acme, UserHash::of(&salt(), "acme", "jane"))]);
        assert!(!under_other_salt.for_customer("acme").unwrap().is_suppressed("jane"), "hashes are per salt");
    }

    #[test]
    fn states_round_trip_their_names() {
        for state in [ErasureState::Pending, ErasureState::Erasing, ErasureState::Done] {
            assert_eq!(ErasureState::parse(state.as_str()), Some(state));
        }
        assert_eq!(ErasureState::parse("deleted"), None);
    }
}
