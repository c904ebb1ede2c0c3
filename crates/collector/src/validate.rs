//! Validation of events and batches. Pure functions, no IO: a batch is checked in place, and each
//! invalid event gets a rejection with a reason code and a message naming the limit. An event is read
//! through [`EventFields`], so the same rules check an event read in place from its bytes and a decoded
//! one (`event_view`).

use hourglass_core::hour;
use hourglass_proto::v1::RejectionReason;

use crate::event_view::{EventFields, PropertyRef};

/// Limits on batches and events. Every limit is configurable; the defaults are documented in the
/// proto contract too.
#[derive(Clone, Debug, clap::Args)]
pub struct ValidationLimits {
    /// Most events in one batch; a larger batch is refused whole (INVALID_ARGUMENT / BATCH_STATUS_INVALID).
    #[arg(long = "max-batch-events", env = "HOURGLASS_MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,

    /// Most bytes in one encoded batch; a larger batch is refused whole. Keep it below Kafka's
    /// `message.max.bytes` (1 MB by default).
    #[arg(long = "max-batch-bytes", env = "HOURGLASS_MAX_BATCH_BYTES", default_value_t = 512 * 1024)]
    pub max_batch_bytes: usize,

    /// Longest `event_id`, in bytes.
    #[arg(long = "max-event-id-bytes", env = "HOURGLASS_MAX_EVENT_ID_BYTES", default_value_t = 128)]
    pub max_event_id_bytes: usize,

    /// Longest `event_type`, in bytes.
    #[arg(long = "max-event-type-bytes", env = "HOURGLASS_MAX_EVENT_TYPE_BYTES", default_value_t = 128)]
    pub max_event_type_bytes: usize,

    /// Longest `user_id`, in bytes.
    #[arg(long = "max-user-id-bytes", env = "HOURGLASS_MAX_USER_ID_BYTES", default_value_t = 256)]
    pub max_user_id_bytes: usize,

    /// Most properties on one event.
    #[arg(long = "max-properties", env = "HOURGLASS_MAX_PROPERTIES", default_value_t = 64)]
    pub max_properties: usize,

    /// Longest property name, in bytes.
    #[arg(long = "max-property-name-bytes", env = "HOURGLASS_MAX_PROPERTY_NAME_BYTES", default_value_t = 128)]
    pub max_property_name_bytes: usize,

    /// Longest string property value, in bytes.
    #[arg(long = "max-property-value-bytes", env = "HOURGLASS_MAX_PROPERTY_VALUE_BYTES", default_value_t = 1024)]
    pub max_property_value_bytes: usize,

    /// How far in the future `occurred_at` may be (client clock skew), in seconds.
    #[arg(long = "max-future-skew-secs", env = "HOURGLASS_MAX_FUTURE_SKEW_SECS", default_value_t = 900)]
    pub max_future_skew_secs: i64,

    /// Raw-data retention, in days: how long raw rows are kept (standalone deletes older hours; keep the
    /// CQL store's `--cql-ttl-days` equal to it). At start-up `--late-data-days` + 2 must not exceed it.
    #[arg(long = "raw-retention-days", env = "HOURGLASS_RAW_RETENTION_DAYS", default_value_t = 30)]
    pub raw_retention_days: i64,

    /// How late an event may arrive, in days: events whose `occurred_at` is older are rejected
    /// (OCCURRED_AT_TOO_OLD). Ends well before the raw retention, so an accepted event's hour still has
    /// all its raw rows when the aggregator recomputes it: the window plus a 2-day margin (1 day before
    /// raw rows may expire, at least 1 for the pipeline) must not exceed `--raw-retention-days`, checked
    /// at start-up. 7 days takes a device that was offline for a week and leaves 3 weeks of slack at the
    /// default 30-day retention (README: late data and raw retention).
    #[arg(long = "late-data-days", env = "HOURGLASS_LATE_DATA_DAYS", default_value_t = 7)]
    pub late_data_days: i64,
}

/// Why a batch is refused whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchLimitError {
    /// Too many events.
    #[error("batch has {events} events; the limit is {limit} (--max-batch-events): split it")]
    TooManyEvents {
        /// Events in the batch.
        events: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many bytes.
    #[error("batch is {bytes} bytes encoded; the limit is {limit} (--max-batch-bytes): split it")]
    TooManyBytes {
        /// Encoded size of the batch's events.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// Why one event is rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The machine-readable reason.
    pub reason: RejectionReason,
    /// A message naming the limit.
    pub message: String,
    /// The hour of the event's `occurred_at` when that passed validation (the rejection is then counted
    /// in the event's own hour); `None` when the time itself was refused (counted in the hour of receipt).
    pub hour_start: Option<i64>,
}

impl Rejection {
    fn new(reason: RejectionReason, message: String) -> Self {
        Self { reason, message, hour_start: None }
    }
}

/// What validation needs to know about the moment a batch arrived.
#[derive(Clone, Copy, Debug)]
pub struct ValidationClock {
    /// Seconds since the Unix epoch when the batch was received.
    pub received_at_unix_secs: i64,
}

impl ValidationLimits {
    /// Checks at start-up that the late-data window fits the raw retention
    /// ([`hourglass_core::retention::check_late_data_window`]): every role that accepts events runs it.
    pub fn check_retention(&self) -> Result<(), hourglass_core::retention::RetentionConfigError> {
        hourglass_core::retention::check_late_data_window(
            self.late_data_days,
            self.raw_retention_days,
            self.max_future_skew_secs,
        )
    }

    /// Checks the batch-wide limits. `encoded_bytes` is the encoded size of the batch's events.
    pub fn check_batch(&self, events: usize, encoded_bytes: usize) -> Result<(), BatchLimitError> {
        if events > self.max_batch_events {
            return Err(BatchLimitError::TooManyEvents { events, limit: self.max_batch_events });
        }
        if encoded_bytes > self.max_batch_bytes {
            return Err(BatchLimitError::TooManyBytes { bytes: encoded_bytes, limit: self.max_batch_bytes });
        }
        Ok(())
    }

    /// Validates one event, decoded or read in place ([`EventFields`]); `Ok` carries the start of the
    /// hour it belongs to.
    ///
    /// The time is checked first: a rejection for any other reason then carries the event's own hour
    /// ([`Rejection::hour_start`]), and one for its time carries none, so no hour is ever derived from a
    /// time that failed validation.
    pub fn check_event(&self, event: &impl EventFields, clock: ValidationClock) -> Result<i64, Rejection> {
        self.check_event_visiting(event, clock, &mut ())
    }

    /// [`ValidationLimits::check_event`], handing each property to `visitor` in the walk that checks
    /// them, so whatever else looks at every property (the tracking plan) does it in the same pass.
    /// The visitor sees them only when the event's other fields passed (an event failing those is not
    /// walked); it may see some of an event that a property then rejects, so what it found counts only
    /// when this returns `Ok`.
    pub fn check_event_visiting<'e>(
        &self,
        event: &'e impl EventFields,
        clock: ValidationClock,
        visitor: &mut impl PropertyVisitor<'e>,
    ) -> Result<i64, Rejection> {
        let hour_start = hour::hour_start(self.check_occurred_at(event, clock)?);
        self.check_fields(event, visitor)
            .map_err(|rejection| Rejection { hour_start: Some(hour_start), ..rejection })?;
        Ok(hour_start)
    }

    fn check_fields<'e>(
        &self,
        event: &'e impl EventFields,
        visitor: &mut impl PropertyVisitor<'e>,
    ) -> Result<(), Rejection> {
        use RejectionReason as Reason;
        let (event_id, event_type) = (event.event_id(), event.event_type());
        if event_id.is_empty() {
            return Err(Rejection::new(Reason::EventIdEmpty, "event_id is empty".into()));
        }
        if event_id.len() > self.max_event_id_bytes {
            return Err(Rejection::new(
                Reason::EventIdTooLong,
                too_long("event_id", event_id.len(), self.max_event_id_bytes, "--max-event-id-bytes"),
            ));
        }
        if event_type.is_empty() {
            return Err(Rejection::new(Reason::EventTypeEmpty, "event_type is empty".into()));
        }
        if event_type.len() > self.max_event_type_bytes {
            return Err(Rejection::new(
                Reason::EventTypeTooLong,
                too_long("event_type", event_type.len(), self.max_event_type_bytes, "--max-event-type-bytes"),
            ));
        }
        if let Some(user_id) = event.user_id()
            && user_id.len() > self.max_user_id_bytes
        {
            return Err(Rejection::new(
                Reason::UserIdTooLong,
                too_long("user_id", user_id.len(), self.max_user_id_bytes, "--max-user-id-bytes"),
            ));
        }
        self.check_properties(event, visitor)
    }

    fn check_occurred_at(&self, event: &impl EventFields, clock: ValidationClock) -> Result<i64, Rejection> {
        use RejectionReason as Reason;
        let Some((seconds, nanos)) = event.occurred_at() else {
            return Err(Rejection::new(Reason::OccurredAtInvalid, "occurred_at is missing".into()));
        };
        if !(0..1_000_000_000).contains(&nanos) {
            return Err(Rejection::new(
                Reason::OccurredAtInvalid,
                format!("occurred_at has {nanos} nanoseconds; expected 0 to 999999999"),
            ));
        }
        let latest_allowed = clock.received_at_unix_secs.saturating_add(self.max_future_skew_secs);
        if seconds > latest_allowed {
            return Err(Rejection::new(
                Reason::OccurredAtInFuture,
                format!(
                    "occurred_at is {} s in the future; the limit is {} s (--max-future-skew-secs)",
                    seconds.saturating_sub(clock.received_at_unix_secs),
                    self.max_future_skew_secs
                ),
            ));
        }
        // The late-data window is validated at start-up to end before the retention; the minimum keeps a
        // configuration that skipped that check from accepting events whose raw rows expire at once.
        let (window_days, window, flag) = if self.late_data_days <= self.raw_retention_days {
            (self.late_data_days, "the late-data window", "--late-data-days")
        } else {
            (self.raw_retention_days, "raw-data retention", "--raw-retention-days")
        };
        let earliest_allowed = clock
            .received_at_unix_secs
            .saturating_sub(window_days.saturating_mul(86_400))
            .max(hour::EARLIEST_SUPPORTED_SECS);
        if seconds < earliest_allowed {
            return Err(Rejection::new(
                Reason::OccurredAtTooOld,
                format!("occurred_at is older than {window} of {window_days} days ({flag})"),
            ));
        }
        Ok(seconds)
    }

    /// Of the properties that break a limit, the one whose name sorts first is reported: the order a
    /// decoded event's sorted map was always checked in, whatever order the client encoded them in.
    fn check_properties<'e>(
        &self,
        event: &'e impl EventFields,
        visitor: &mut impl PropertyVisitor<'e>,
    ) -> Result<(), Rejection> {
        use RejectionReason as Reason;
        let property_count = event.property_count();
        if property_count > self.max_properties {
            return Err(Rejection::new(
                Reason::TooManyProperties,
                format!(
                    "event has {property_count} properties; the limit is {} (--max-properties)",
                    self.max_properties
                ),
            ));
        }
        let mut first_invalid: Option<(&str, PropertyProblem)> = None;
        for (name, value) in event.properties() {
            visitor.visit(name, value);
            if let Some(problem) = self.property_problem(name, value)
                && first_invalid.is_none_or(|(first_name, _)| name < first_name)
            {
                first_invalid = Some((name, problem));
            }
        }
        let Some((name, problem)) = first_invalid else {
            return Ok(());
        };
        let (reason, message) = match problem {
            PropertyProblem::Name => (
                Reason::PropertyNameInvalid,
                format!(
                    "property name of {} bytes; expected 1 to {} (--max-property-name-bytes)",
                    name.len(),
                    self.max_property_name_bytes
                ),
            ),
            PropertyProblem::NoValue => (Reason::PropertyValueInvalid, format!("property {name:?} has no value")),
            PropertyProblem::TooLong(length) => (
                Reason::PropertyValueInvalid,
                too_long(
                    &format!("property {name:?}"),
                    length,
                    self.max_property_value_bytes,
                    "--max-property-value-bytes",
                ),
            ),
            PropertyProblem::NotFinite(number) => {
                (Reason::PropertyValueInvalid, format!("property {name:?} is {number}; numbers must be finite"))
            }
        };
        Err(Rejection::new(reason, message))
    }

    /// What is wrong with one property, the name checked before the value.
    fn property_problem(&self, name: &str, value: PropertyRef<'_>) -> Option<PropertyProblem> {
        if name.is_empty() || name.len() > self.max_property_name_bytes {
            return Some(PropertyProblem::Name);
        }
        match value {
            PropertyRef::Missing => Some(PropertyProblem::NoValue),
            PropertyRef::String(text) if text.len() > self.max_property_value_bytes => {
                Some(PropertyProblem::TooLong(text.len()))
            }
            PropertyRef::Number(number) if !number.is_finite() => Some(PropertyProblem::NotFinite(number)),
            PropertyRef::String(_) | PropertyRef::Number(_) | PropertyRef::Bool(_) => None,
        }
    }
}

/// Looks at each property of an event during validation's walk over them
/// ([`ValidationLimits::check_event_visiting`]).
pub trait PropertyVisitor<'e> {
    /// One property, each of the event's once, in no particular order.
    fn visit(&mut self, name: &'e str, value: PropertyRef<'e>);
}

/// Nothing but validation looks at the properties.
impl PropertyVisitor<'_> for () {
    #[inline]
    fn visit(&mut self, _name: &str, _value: PropertyRef<'_>) {}
}

/// Why a property breaks a limit.
#[derive(Clone, Copy)]
enum PropertyProblem {
    Name,
    NoValue,
    TooLong(usize),
    NotFinite(f64),
}

fn too_long(what: &str, length: usize, limit: usize, flag: &str) -> String {
    format!("{what} is {length} bytes; the limit is {limit} ({flag})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use hourglass_proto::prost_types::Timestamp;
    use hourglass_proto::v1::{Event, PropertyValue, property_value};

    const NOW: i64 = 1_764_000_000;

    fn limits() -> ValidationLimits {
        hourglass_config::defaults()
    }

    fn clock() -> ValidationClock {
        ValidationClock { received_at_unix_secs: NOW }
    }

    fn valid_event() -> Event {
        Event {
            event_id: "e1".into(),
            event_type: "page_view".into(),
            occurred_at: Some(Timestamp { seconds: NOW - 10, nanos: 5 }),
            user_id: Some("u1".into()),
            properties: [(
                "path".to_owned(),
                PropertyValue { kind: Some(property_value::Kind::StringValue("/".into())) },
            )]
            .into_iter()
            .collect(),
        }
    }

    fn reason_of(event: &Event) -> RejectionReason {
        limits().check_event(event, clock()).unwrap_err().reason
    }

    #[test]
    fn a_valid_event_lands_in_its_hour() {
        assert_eq!(limits().check_event(&valid_event(), clock()), Ok(hour::hour_start(NOW - 10)));
    }

    #[test]
    fn each_field_limit_has_its_reason() {
        use RejectionReason as Reason;
        let limits = limits();
        let mut event = valid_event();
        event.event_id.clear();
        assert_eq!(reason_of(&event), Reason::EventIdEmpty);
        event.event_id = "x".repeat(limits.max_event_id_bytes + 1);
        assert_eq!(reason_of(&event), Reason::EventIdTooLong);

        let mut event = valid_event();
        event.event_type.clear();
        assert_eq!(reason_of(&event), Reason::EventTypeEmpty);
        event.event_type = "x".repeat(limits.max_event_type_bytes + 1);
        assert_eq!(reason_of(&event), Reason::EventTypeTooLong);

        let mut event = valid_event();
        event.occurred_at = None;
        assert_eq!(reason_of(&event), Reason::OccurredAtInvalid);
        event.occurred_at = Some(Timestamp { seconds: NOW, nanos: -1 });
        assert_eq!(reason_of(&event), Reason::OccurredAtInvalid);
        event.occurred_at = Some(Timestamp { seconds: NOW + limits.max_future_skew_secs + 1, nanos: 0 });
        assert_eq!(reason_of(&event), Reason::OccurredAtInFuture);
        event.occurred_at = Some(Timestamp { seconds: NOW + limits.max_future_skew_secs, nanos: 0 });
        assert!(limits.check_event(&event, clock()).is_ok(), "the skew limit itself is allowed");
        event.occurred_at = Some(Timestamp { seconds: NOW - limits.raw_retention_days * 86_400 - 1, nanos: 0 });
        assert_eq!(reason_of(&event), Reason::OccurredAtTooOld);

        let mut event = valid_event();
        event.user_id = Some("x".repeat(limits.max_user_id_bytes + 1));
        assert_eq!(reason_of(&event), Reason::UserIdTooLong);
    }

    #[test]
    fn an_event_older_than_the_late_data_window_is_refused_naming_the_flag() {
        let limits = limits();
        assert_eq!((limits.late_data_days, limits.raw_retention_days), (7, 30), "the documented defaults");
        let mut event = valid_event();
        let window_start = NOW - limits.late_data_days * 86_400;
        event.occurred_at = Some(Timestamp { seconds: window_start, nanos: 0 });
        assert_eq!(limits.check_event(&event, clock()), Ok(hour::hour_start(window_start)), "the window's start is in");
        // Well inside the raw retention, but past the late-data window.
        event.occurred_at = Some(Timestamp { seconds: window_start - 1, nanos: 0 });
        let rejection = limits.check_event(&event, clock()).unwrap_err();
        assert_eq!((rejection.reason, rejection.hour_start), (RejectionReason::OccurredAtTooOld, None));
        assert_eq!(rejection.message, "occurred_at is older than the late-data window of 7 days (--late-data-days)");
        // A window longer than the retention (start-up refuses it) is still capped by the retention.
        let mut inverted = limits.clone();
        inverted.late_data_days = 40;
        event.occurred_at = Some(Timestamp { seconds: NOW - 30 * 86_400 - 1, nanos: 0 });
        let rejection = inverted.check_event(&event, clock()).unwrap_err();
        assert_eq!(rejection.message, "occurred_at is older than raw-data retention of 30 days (--raw-retention-days)");
    }

    #[test]
    fn the_time_is_checked_first_and_no_hour_comes_from_a_refused_time() {
        use RejectionReason as Reason;
        // The reviewer's case: an empty id and a time 9e15 s ahead. The time is what is reported, and
        // no hour is derived from it.
        let mut event = valid_event();
        event.event_id.clear();
        event.occurred_at = Some(Timestamp { seconds: 9_000_000_000_000_000, nanos: 0 });
        let rejection = limits().check_event(&event, clock()).unwrap_err();
        assert_eq!((rejection.reason, rejection.hour_start), (Reason::OccurredAtInFuture, None));
        for seconds in [i64::MIN, i64::MAX, -1] {
            event.occurred_at = Some(Timestamp { seconds, nanos: 0 });
            let rejection = limits().check_event(&event, clock()).unwrap_err();
            assert_eq!(rejection.hour_start, None, "{seconds}");
        }
        // With a valid time, another rejection is counted in the event's own hour.
        event.occurred_at = Some(Timestamp { seconds: NOW - 7200, nanos: 0 });
        let rejection = limits().check_event(&event, clock()).unwrap_err();
        assert_eq!(
            (rejection.reason, rejection.hour_start),
            (Reason::EventIdEmpty, Some(hour::hour_start(NOW - 7200)))
        );
        // Retention so long that it reaches before 1970 still refuses pre-1970 times.
        let mut forever = limits();
        forever.raw_retention_days = i64::MAX;
        event.occurred_at = Some(Timestamp { seconds: -3600, nanos: 0 });
        assert_eq!(forever.check_event(&event, clock()).unwrap_err().reason, Reason::OccurredAtTooOld);
    }

    #[test]
    fn property_limits() {
        use RejectionReason as Reason;
        let limits = limits();
        let string = |text: String| PropertyValue { kind: Some(property_value::Kind::StringValue(text)) };

        let mut event = valid_event();
        event.properties = (0..=limits.max_properties).map(|index| (format!("p{index}"), string("v".into()))).collect();
        assert_eq!(reason_of(&event), Reason::TooManyProperties);

        let mut event = valid_event();
        event.properties.insert(String::new(), string("v".into()));
        assert_eq!(reason_of(&event), Reason::PropertyNameInvalid);

        let mut event = valid_event();
        event.properties.insert("x".repeat(limits.max_property_name_bytes + 1), string("v".into()));
        assert_eq!(reason_of(&event), Reason::PropertyNameInvalid);

        let mut event = valid_event();
        event.properties.insert("long".into(), string("x".repeat(limits.max_property_value_bytes + 1)));
        let rejection = limits.check_event(&event, clock()).unwrap_err();
        assert_eq!(rejection.reason, Reason::PropertyValueInvalid);
        assert!(rejection.message.contains("--max-property-value-bytes"), "{}", rejection.message);

        let mut event = valid_event();
        event
            .properties
            .insert("nan".into(), PropertyValue { kind: Some(property_value::Kind::NumberValue(f64::NAN)) });
        assert_eq!(reason_of(&event), Reason::PropertyValueInvalid);

        let mut event = valid_event();
        event.properties.insert("unset".into(), PropertyValue { kind: None });
        assert_eq!(reason_of(&event), Reason::PropertyValueInvalid);

        let mut event = valid_event();
        event.properties.insert("n".into(), PropertyValue { kind: Some(property_value::Kind::NumberValue(1.5)) });
        event.properties.insert("b".into(), PropertyValue { kind: Some(property_value::Kind::BoolValue(true)) });
        assert!(limits.check_event(&event, clock()).is_ok());
    }

    #[test]
    fn batch_limits_name_the_limit() {
        let limits = limits();
        assert!(limits.check_batch(limits.max_batch_events, limits.max_batch_bytes).is_ok());
        let too_many = limits.check_batch(limits.max_batch_events + 1, 10).unwrap_err();
        assert!(too_many.to_string().contains("--max-batch-events"));
        let too_big = limits.check_batch(1, limits.max_batch_bytes + 1).unwrap_err();
        assert!(too_big.to_string().contains("--max-batch-bytes"));
    }
}
