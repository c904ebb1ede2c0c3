//! The tracking plan `hourglass bench collector --tracking-plan MODE` pushes, the events it sends to
//! match it, and the in-process measures on those events: `CompiledPlan::check` alone, and what the
//! plan adds to the collector's validation of an event (the plan is checked in validation's walk over
//! the properties).
//!
//! The plan is `docs/tracking-plans/bench-20-types.json`: the 20 event types of the load generator, 120
//! properties of all three types (three of them on every type), required and optional, with every kind
//! of constraint (enums, ranges, maximum lengths, id patterns), undeclared types and properties
//! rejected. [`generate_batch`] writes
//! events that satisfy it, so enforce mode rejects nothing unless asked: with a violation rate, the
//! events [`planned_violation`] names break exactly one rule each, every rule in turn.
//!
//! Choices are a pure function of the event's number (SplitMix64's mixer), not of a generator's state,
//! so every stream of every run sends the same events for the same numbers: the run with the plan and the
//! run without see the same load.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use hourglass_collector::event_view::{EventFields, EventView};
use hourglass_collector::validate::{ValidationClock, ValidationLimits};
use hourglass_core::tracking_plan::{CompiledPlan, PlanDocument, PlanMode, PlanRule, PlanValue};
use hourglass_proto::prost_types::Timestamp;
use hourglass_proto::v1::{Event, PropertyValue, property_value};

use crate::loadgen::EVENT_TYPES;

/// The plan, as in `docs/tracking-plans/` (checked there against the JSON Schema).
pub const PLAN_JSON: &str = include_str!("../../../../docs/tracking-plans/bench-20-types.json");

/// Parts per million in a violation rate: rates are kept as integers so that which events violate is
/// exact and the same on every machine.
pub const PER_MILLION: u32 = 1_000_000;

/// The bench plan in `mode`.
pub fn plan_document(mode: PlanMode) -> anyhow::Result<PlanDocument> {
    let mut document = PlanDocument::parse(PLAN_JSON).context("the bench's tracking plan does not parse")?;
    document.mode = mode;
    Ok(document)
}

/// A violation rate in [0, 1] as parts per million, rounded.
pub fn violations_per_million(rate: f64) -> anyhow::Result<u32> {
    anyhow::ensure!((0.0..=1.0).contains(&rate), "--plan-violation-rate {rate}: a fraction from 0 to 1");
    Ok((rate * f64::from(PER_MILLION)).round() as u32)
}

/// SplitMix64's finalizer (Steele, Lea and Flood, 2014): a well-mixed 64-bit value of `number`.
fn mix(number: u64) -> u64 {
    let mut mixed = number.wrapping_add(0x9E37_79B9_7F4A_7C15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    mixed ^ (mixed >> 31)
}

/// The rule event `number` breaks at this violation rate, or `None` for an event that satisfies the
/// plan. About `violations_per_million` in a million break one, the eight rules in turn at random.
pub fn planned_violation(number: u64, violations_per_million: u32) -> Option<PlanRule> {
    // A salt keeps the choice independent of the values, which `mix(number)` picks.
    let draw = mix(number ^ 0x5EED_F00D_B1A5);
    if draw % u64::from(PER_MILLION) >= u64::from(violations_per_million) {
        return None;
    }
    Some(PlanRule::ALL[((draw >> 32) % PlanRule::ALL.len() as u64) as usize])
}

/// Events `first_event ..` of a run: the plan's 20 types in turn, each with valid values of its
/// declared properties (optional ones present or not), except those [`planned_violation`] names.
pub fn generate_batch(run_id: &str, first_event: u64, count: usize, violations_per_million: u32) -> Vec<Event> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let occurred_at = Timestamp { seconds: now.as_secs() as i64, nanos: now.subsec_nanos() as i32 };
    (first_event..first_event + count as u64)
        .map(|number| {
            let (event_type, properties) = match planned_violation(number, violations_per_million) {
                None => {
                    let event_type = EVENT_TYPES[(number % EVENT_TYPES.len() as u64) as usize];
                    (event_type, valid_properties(event_type, mix(number)))
                }
                Some(rule) => violating(rule, mix(number)),
            };
            Event {
                event_id: format!("{run_id}-{number:012}"),
                event_type: event_type.to_owned(),
                occurred_at: Some(occurred_at),
                user_id: Some(format!("user-{:06}", number.wrapping_mul(2_654_435_761) % 100_000)),
                properties: properties.into_iter().map(|(name, value)| (name.to_owned(), value)).collect(),
            }
        })
        .collect()
}

fn string(text: impl Into<String>) -> PropertyValue {
    PropertyValue { kind: Some(property_value::Kind::StringValue(text.into())) }
}

fn number(value: f64) -> PropertyValue {
    PropertyValue { kind: Some(property_value::Kind::NumberValue(value)) }
}

fn boolean(flag: bool) -> PropertyValue {
    PropertyValue { kind: Some(property_value::Kind::BoolValue(flag)) }
}

/// One of `choices`, by some bits of `random`.
fn pick<'a>(choices: &[&'a str], random: u64) -> &'a str {
    choices[(random % choices.len() as u64) as usize]
}

/// Values for every required property of `event_type` and for some of its optional ones, all within
/// the plan's constraints. `random` picks them.
fn valid_properties(event_type: &str, random: u64) -> Vec<(&'static str, PropertyValue)> {
    // Independent draws from the one random value: each use takes other bits.
    let bits = |shift: u32, modulo: u64| (random >> shift) % modulo;
    let optional = |shift: u32| (random >> shift) & 1 == 1;
    let hex = |digits: u32| format!("{:0width$x}", random & (u64::MAX >> (64 - 4 * digits)), width = digits as usize);
    let mut properties = match event_type {
        "page_view" => vec![
            ("path", string(format!("/products/{}/{}", pick(&["shoes", "bags", "hats"], random), bits(8, 100_000)))),
            ("load_ms", number(bits(20, 5_000) as f64)),
        ],
        "click" => vec![
            ("element_id", string(pick(&["buy-button", "nav_home", "search-box", "cart"], random))),
            ("path", string("/products/shoes")),
            ("x", number(bits(8, 1920) as f64)),
            ("y", number(bits(20, 1080) as f64)),
        ],
        "signup" => vec![
            ("method", string(pick(&["email", "google", "github", "apple"], random))),
            ("plan", string(pick(&["free", "pro", "team"], random >> 8))),
        ],
        "login" => vec![
            ("method", string(pick(&["password", "sso", "magic_link"], random))),
            ("attempts", number(1.0 + bits(8, 3) as f64)),
        ],
        "logout" => vec![
            ("reason", string(pick(&["user", "timeout", "revoked"], random))),
            ("session_secs", number(bits(8, 86_400) as f64)),
        ],
        "search" => vec![
            ("query", string(pick(&["running shoes", "red hat", "leather bag"], random))),
            ("results", number(bits(8, 500) as f64)),
        ],
        "add_to_cart" => vec![
            ("sku", string(format!("SKU-{:05}", bits(8, 100_000)))),
            ("quantity", number(1.0 + bits(24, 5) as f64)),
            ("price", number(bits(28, 20_000) as f64 / 100.0)),
            ("currency", string(pick(&["EUR", "USD", "GBP"], random >> 40))),
        ],
        "remove_from_cart" => {
            vec![("sku", string(format!("SKU-{:05}", bits(8, 100_000)))), ("quantity", number(1.0))]
        }
        "checkout_started" => vec![
            ("cart_id", string(format!("cart-{}", hex(16)))),
            ("items", number(1.0 + bits(8, 10) as f64)),
            ("currency", string(pick(&["EUR", "USD", "GBP"], random >> 16))),
        ],
        "checkout_completed" => vec![
            ("order_id", string(format!("ord-{:010}", bits(8, 10_000_000_000)))),
            ("total", number(bits(40, 100_000) as f64 / 100.0)),
            ("currency", string(pick(&["EUR", "USD", "GBP"], random >> 56))),
            ("payment", string(pick(&["card", "paypal", "invoice"], random >> 60))),
        ],
        "video_play" => vec![
            ("video_id", string(format!("vid_{:011}", bits(8, 100_000_000_000)))),
            ("quality", string(pick(&["240p", "480p", "720p", "1080p", "2160p"], random >> 48))),
            ("autoplay", boolean(optional(60))),
        ],
        "video_pause" => vec![
            ("video_id", string(format!("vid_{:011}", bits(8, 100_000_000_000)))),
            ("position_secs", number(bits(48, 7_200) as f64)),
        ],
        "share" => vec![
            ("channel", string(pick(&["email", "link", "x", "facebook", "linkedin"], random))),
            ("content_id", string(format!("post-{}", bits(8, 1_000_000)))),
        ],
        "comment" => vec![
            ("content_id", string(format!("post-{}", bits(8, 1_000_000)))),
            ("length", number(1.0 + bits(32, 2_000) as f64)),
        ],
        "like" => vec![("content_id", string(format!("post-{}", bits(8, 1_000_000)))), ("liked", boolean(true))],
        "subscribe" => vec![
            ("plan", string(pick(&["free", "pro", "team"], random))),
            ("interval", string(pick(&["month", "year"], random >> 8))),
            ("price", number(bits(16, 5_000) as f64 / 100.0)),
        ],
        "unsubscribe" => vec![("plan", string(pick(&["free", "pro", "team"], random)))],
        "error" => vec![
            ("code", string(format!("E{:04}", bits(8, 10_000)))),
            ("message", string("timeout talking to upstream")),
            ("fatal", boolean(optional(40))),
        ],
        "download" => vec![
            ("file_id", string(format!("f_{}", hex(12)))),
            ("bytes", number(bits(48, 50_000_000) as f64)),
            ("format", string(pick(&["pdf", "csv", "xlsx", "zip"], random >> 60))),
        ],
        "upload" => {
            vec![("file_id", string(format!("f_{}", hex(12)))), ("bytes", number(bits(48, 50_000_000) as f64))]
        }
        other => unreachable!("the load generator's type {other} is in the plan"),
    };
    // The properties every type declares: a session id, the platform and, on about half, the version.
    properties.push(("session_id", string(format!("s_{}", hex(16)))));
    properties.push(("platform", string(pick(&["web", "ios", "android"], random >> 4))));
    if optional(61) {
        properties.push(("app_version", string(format!("2.{}.{}", bits(12, 40), bits(18, 10)))));
    }
    // One optional property more, on about half the events of the types that have one to spare.
    if optional(63) {
        match event_type {
            "page_view" => properties.push(("referrer", string("https://example.com/"))),
            "signup" => properties.push(("marketing_opt_in", boolean(optional(62)))),
            "login" => properties.push(("remember_me", boolean(optional(62)))),
            "search" => properties.push(("page", number(1.0 + bits(2, 10) as f64))),
            "checkout_started" => properties.push(("total", number(bits(2, 100_000) as f64 / 100.0))),
            "checkout_completed" => properties.push(("coupon", string("WINTER-10"))),
            "comment" => properties.push(("reply", boolean(optional(62)))),
            "unsubscribe" => properties.push(("reason", string("too expensive"))),
            "upload" => properties.push(("mime", string("image/png"))),
            _ => {}
        }
    }
    properties
}

/// An event breaking exactly `rule` of the plan and no other: a valid event of a type the rule
/// applies to, with one thing changed.
fn violating(rule: PlanRule, random: u64) -> (&'static str, Vec<(&'static str, PropertyValue)>) {
    let replace = |event_type: &'static str, name: &'static str, value: PropertyValue| {
        let mut properties = valid_properties(event_type, random);
        properties.retain(|(existing, _)| *existing != name);
        properties.push((name, value));
        (event_type, properties)
    };
    match rule {
        PlanRule::EventTypeUndeclared => ("page_vew", valid_properties("page_view", random)),
        PlanRule::PropertyUndeclared => replace("page_view", "debug", string("1")),
        PlanRule::PropertyRequiredMissing => {
            let mut properties = valid_properties("search", random);
            properties.retain(|(name, _)| *name != "query");
            ("search", properties)
        }
        PlanRule::PropertyTypeMismatch => replace("add_to_cart", "price", string("12.50")),
        PlanRule::PropertyNotInEnum => replace("add_to_cart", "currency", string("JPY")),
        PlanRule::PropertyOutOfRange => replace("add_to_cart", "quantity", number(0.0)),
        PlanRule::PropertyTooLong => replace("page_view", "path", string(format!("/{}", "a".repeat(600)))),
        PlanRule::PropertyPatternMismatch => replace("add_to_cart", "sku", string("sku-lowercase")),
    }
}

/// What checking the bench's events in this process cost, per event, in this thread's CPU time.
pub struct CheckFigures {
    /// Events per pass.
    pub events: usize,
    /// Passes measured.
    pub passes: usize,
    /// Violations found per pass.
    pub violations: usize,
    /// `CompiledPlan::check` of an event as the collector calls it (on its view of the event's bytes,
    /// reading the properties from them): the median pass's nanoseconds per event.
    pub check_nanos_per_event: f64,
    /// Reading the same events' properties from their bytes alone, as the check does: the part of the
    /// check's cost that is walking the event rather than the plan's look-ups.
    pub read_nanos_per_event: f64,
    /// The collector's validation of an event (`ValidationLimits::check_event`) without a plan.
    pub validate_nanos_per_event: f64,
    /// The same with the plan checked in its walk, as the collector does it
    /// (`ValidationLimits::check_event_visiting` with the plan's `EventCheck`).
    pub validate_with_plan_nanos_per_event: f64,
}

impl CheckFigures {
    /// What the plan adds to the validation of an event: the plan's cost in the collector's path
    /// (the batch's counts of checks aside).
    pub fn plan_added_nanos_per_event(&self) -> f64 {
        self.validate_with_plan_nanos_per_event - self.validate_nanos_per_event
    }
}

/// Checks `events` of the bench's events (from number 0, at this violation rate) against the plan in
/// `mode`, `passes` times over, and returns the median pass's CPU per event. Each event is read as the
/// collector reads it: an `EventView` of its encoded bytes.
pub fn measure_check(
    mode: PlanMode,
    events: usize,
    passes: usize,
    violations_per_million: u32,
) -> anyhow::Result<CheckFigures> {
    let plan = CompiledPlan::compile(1, &plan_document(mode)?)?;
    let encoded: Vec<Vec<u8>> = generate_batch("bench-check", 0, events, violations_per_million)
        .iter()
        .map(prost::Message::encode_to_vec)
        .collect();
    let views: Vec<EventView<'_>> = encoded
        .iter()
        .map(|bytes| EventView::parse(bytes).context("a generated event is not in the plain form"))
        .collect::<anyhow::Result<_>>()?;
    let check_pass = || {
        let mut violations = 0;
        for view in &views {
            let properties = view.properties().map(|(name, value)| (name, PlanValue::from(value)));
            violations += usize::from(std::hint::black_box(plan.check(view.event_type(), properties)).is_some());
        }
        violations
    };
    let limits: ValidationLimits = hourglass_config::defaults();
    let clock = ValidationClock {
        received_at_unix_secs: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64,
    };
    let validate_pass = || {
        let mut valid = 0;
        for view in &views {
            valid += usize::from(std::hint::black_box(limits.check_event(view, clock)).is_ok());
        }
        valid
    };
    let validate_with_plan_pass = || {
        let mut valid_and_following = 0;
        for view in &views {
            let mut plan_check = plan.start(view.event_type());
            let valid = limits.check_event_visiting(view, clock, &mut plan_check).is_ok();
            let violation = std::hint::black_box(plan_check.finish());
            valid_and_following += usize::from(valid && violation.is_none());
        }
        valid_and_following
    };
    anyhow::ensure!(validate_pass() == events, "every generated event is valid");
    let read_pass = || {
        let mut seen = 0usize;
        for view in &views {
            for (name, value) in view.properties() {
                std::hint::black_box((name, PlanValue::from(value)));
                seen += 1;
            }
        }
        seen
    };
    let violations = check_pass();
    let per_event = |pass: &dyn Fn() -> usize| {
        let mut nanos: Vec<f64> = (0..passes.max(1))
            .map(|_| {
                let started = thread_cpu_nanos();
                std::hint::black_box(pass());
                (thread_cpu_nanos() - started) as f64 / events.max(1) as f64
            })
            .collect();
        nanos.sort_by(f64::total_cmp);
        nanos[nanos.len() / 2]
    };
    anyhow::ensure!(
        validate_with_plan_pass() == events - violations,
        "checked in validation's walk, the plan finds what its own check finds"
    );
    let check_nanos_per_event = per_event(&check_pass);
    let read_nanos_per_event = per_event(&read_pass);
    // Alternated, so a change in the shared cores' load reaches both alike.
    let (mut validate, mut validate_with_plan) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        validate.push(per_event(&validate_pass));
        validate_with_plan.push(per_event(&validate_with_plan_pass));
    }
    let median = |mut figures: Vec<f64>| {
        figures.sort_by(f64::total_cmp);
        figures[figures.len() / 2]
    };
    Ok(CheckFigures {
        events,
        passes: passes.max(1),
        violations,
        check_nanos_per_event,
        read_nanos_per_event,
        validate_nanos_per_event: median(validate),
        validate_with_plan_nanos_per_event: median(validate_with_plan),
    })
}

/// This thread's CPU time in nanoseconds: unlike the wall clock, not counting the time other processes
/// on the shared cores took.
fn thread_cpu_nanos() -> u64 {
    // SAFETY: an all-zero timespec is a valid value to be overwritten.
    let mut time: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime writes the clock's value into `time`, which lives across the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    time.tv_sec as u64 * 1_000_000_000 + time.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use hourglass_core::tracking_plan::{PlanViolation, ViolationAction};

    use super::*;

    /// Checks each event as the collector does, from its encoded bytes.
    fn check(plan: &CompiledPlan, event: &Event) -> Option<PlanViolation> {
        let bytes = prost::Message::encode_to_vec(event);
        let view = EventView::parse(&bytes).expect("a generated event is in the plain form");
        let properties = view.properties().map(|(name, value)| (name, PlanValue::from(value)));
        plan.check(view.event_type(), properties)
    }

    #[test]
    fn the_bench_plan_parses_and_compiles_with_twenty_types_of_every_constraint() {
        let document = plan_document(PlanMode::Enforce).unwrap();
        assert_eq!(document.event_types.len(), 20);
        let declared: Vec<&str> = document.event_types.keys().map(String::as_str).collect();
        for event_type in EVENT_TYPES {
            assert!(declared.contains(&event_type), "{event_type} is declared");
        }
        let properties: Vec<_> = document.event_types.values().flat_map(|spec| spec.properties.values()).collect();
        assert!(properties.iter().any(|property| property.allowed_values.is_some()), "an enum");
        assert!(properties.iter().any(|property| property.minimum.is_some() && property.maximum.is_some()), "a range");
        assert!(properties.iter().any(|property| property.max_length.is_some()), "a max length");
        assert!(properties.iter().any(|property| property.pattern.is_some()), "a pattern");
        assert!(properties.iter().any(|property| !property.required), "an optional property");
        let compiled = CompiledPlan::compile(1, &document).unwrap();
        assert_eq!(compiled.mode(), PlanMode::Enforce);
        assert_eq!(plan_document(PlanMode::Warn).unwrap().mode, PlanMode::Warn);
    }

    #[test]
    fn the_generated_events_pass_the_plan_in_enforce_mode() {
        let plan = CompiledPlan::compile(1, &plan_document(PlanMode::Enforce).unwrap()).unwrap();
        let events = generate_batch("test", 0, 20_000, 0);
        let mut types_seen = std::collections::BTreeSet::new();
        for event in &events {
            types_seen.insert(event.event_type.clone());
            assert_eq!(check(&plan, event), None, "{event:?}");
        }
        assert_eq!(types_seen.len(), 20, "every declared type is sent");
        let sizes: u64 = events.iter().map(|event| prost::Message::encoded_len(event) as u64).sum();
        let average = sizes / events.len() as u64;
        assert!((150..250).contains(&average), "events of the plain bench's size, ~190 bytes: {average}");
    }

    #[test]
    fn with_a_violation_rate_exactly_the_planned_events_break_exactly_their_rule() {
        let plan = CompiledPlan::compile(1, &plan_document(PlanMode::Enforce).unwrap()).unwrap();
        let rate = violations_per_million(0.05).unwrap();
        let first = 1_000;
        let events = generate_batch("test", first, 40_000, rate);
        let mut rules_seen = std::collections::BTreeSet::new();
        let mut violating = 0;
        for (number, event) in (first..).zip(&events) {
            let expected = planned_violation(number, rate);
            let found = check(&plan, event);
            assert_eq!(found.as_ref().map(|violation| violation.rule), expected, "event {number}: {event:?}");
            if let Some(violation) = found {
                assert_eq!(violation.action, ViolationAction::Reject, "every rule rejects in enforce mode");
                rules_seen.insert(violation.rule);
                violating += 1;
            }
        }
        assert_eq!(rules_seen.len(), PlanRule::ALL.len(), "every rule is broken by some event");
        // 5% of 40,000 is 2,000; four standard deviations of a binomial count are ~175.
        assert!((1_800..2_200).contains(&violating), "{violating}");
        // The same numbers give the same events and violations in another batch split.
        let again = generate_batch("test", first + 7, 3, rate);
        assert_eq!(
            again.iter().map(|event| &event.event_type).collect::<Vec<_>>(),
            [&events[7].event_type, &events[8].event_type, &events[9].event_type]
        );
    }

    #[test]
    fn a_rate_of_zero_plans_no_violation_and_a_rate_of_one_plans_one_for_every_event() {
        assert!((0..10_000).all(|number| planned_violation(number, 0).is_none()));
        assert!((0..10_000).all(|number| planned_violation(number, PER_MILLION).is_some()));
        assert_eq!(violations_per_million(0.01).unwrap(), 10_000);
        assert!(violations_per_million(1.5).is_err());
        assert!(violations_per_million(-0.1).is_err());
    }

    #[test]
    fn the_in_process_measure_checks_every_event_and_counts_the_violations() {
        let rate = violations_per_million(0.1).unwrap();
        let figures = measure_check(PlanMode::Enforce, 2_000, 3, rate).unwrap();
        let expected = (0..2_000).filter(|number| planned_violation(*number, rate).is_some()).count();
        assert_eq!(figures.violations, expected);
        assert_eq!((figures.events, figures.passes), (2_000, 3));
        assert_eq!(measure_check(PlanMode::Off, 100, 1, rate).unwrap().violations, 0, "off checks nothing");
    }
}
