//! Tracking-plan documents (`hourglass plans push FILE`): JSON a customer writes, stored, compiled by every
//! collector and checked against each of the customer's events.
//!
//! Input: the first byte says how many of the next bytes (times 8, at most the input) are the document;
//! the rest are events to check, drawn from the document's own names and from the input. Properties:
//! - parsing returns a plan or a typed error whose message renders, never panics;
//! - a plan's canonical form (what the store keeps and compares) parses back to the same plan, and so
//!   does its pretty form (`plans show`); the canonical form of that is the same text (a fixpoint);
//! - every plan that parses compiles (parsing checked its patterns), and its diff with itself is empty;
//! - checking any event never panics; a plan in mode `off` finds nothing, and a violation's message
//!   begins with its rule's name and names the plan's version.

#![no_main]

use hourglass_core::tracking_plan::diff::diff;
use hourglass_core::tracking_plan::{CompiledPlan, PlanDocument, PlanMode, PlanValue};
use libfuzzer_sys::fuzz_target;

/// Checks the events the rest of the input describes: each takes an event type (one of the plan's, or a
/// made-up one) and up to eight properties (the type's own names or made-up ones) with values of any kind.
fn check_events(plan: &CompiledPlan, document: &PlanDocument, mut rest: &[u8]) {
    let types: Vec<&String> = document.event_types.keys().collect();
    let take = |rest: &mut &[u8]| -> u8 {
        let (first, tail) = rest.split_first().map(|(byte, tail)| (*byte, tail)).unwrap_or((0, &[]));
        *rest = tail;
        first
    };
    let mut made_up = Vec::new();
    while !rest.is_empty() {
        let pick = take(&mut rest);
        let event_type: &str = match types.get(usize::from(pick) % (types.len() + 1)) {
            Some(name) => name,
            None => "made-up-type",
        };
        let names: Vec<&str> = document
            .event_types
            .get(event_type)
            .map(|spec| spec.properties.keys().map(String::as_str).collect())
            .unwrap_or_default();
        made_up.clear();
        for _ in 0..take(&mut rest) % 9 {
            let which = take(&mut rest);
            let name = match names.get(usize::from(which) % (names.len() + 1)) {
                Some(name) => (*name).to_owned(),
                None => format!("p{which}"),
            };
            let value_kind = take(&mut rest);
            let length = usize::from(take(&mut rest) % 32).min(rest.len());
            let (text, tail) = rest.split_at(length);
            rest = tail;
            made_up.push((name, value_kind, String::from_utf8_lossy(text).into_owned()));
        }
        let properties = || {
            made_up.iter().map(|(name, kind, text)| {
                let value = match kind % 5 {
                    0 => PlanValue::Missing,
                    1 => PlanValue::String(text.as_str()),
                    2 => PlanValue::Number(text.len() as f64 * if kind & 0x80 != 0 { -1.5 } else { 1e6 }),
                    3 => PlanValue::Number(f64::from_bits(u64::from(*kind) << 56)),
                    _ => PlanValue::Bool(kind & 0x40 != 0),
                };
                (name.as_str(), value)
            })
        };
        let violation = plan.check(event_type, properties());
        if plan.mode() == PlanMode::Off {
            assert!(violation.is_none(), "a plan in mode off found {violation:?}");
        }
        if let Some(violation) = violation {
            assert!(violation.message.starts_with(violation.rule.name()), "{}", violation.message);
            assert!(violation.message.contains(&format!("v{}", plan.version())), "{}", violation.message);
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&length, rest)) = input.split_first() else { return };
    let length = (usize::from(length) * 8).min(rest.len());
    let (document, events) = rest.split_at(length);
    let Ok(text) = std::str::from_utf8(document) else { return };
    let document = match PlanDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    let canonical = document.canonical_json();
    assert_eq!(PlanDocument::parse(&canonical).as_ref(), Ok(&document), "canonical form: {canonical}");
    assert_eq!(PlanDocument::parse(&document.pretty_json()).as_ref(), Ok(&document), "pretty form");
    assert_eq!(PlanDocument::parse(&canonical).map(|again| again.canonical_json()).as_deref(), Ok(canonical.as_str()));
    assert!(diff(&document, &document).is_empty(), "a plan differs from itself: {canonical}");
    let plan = CompiledPlan::compile(7, &document).expect("a parsed plan compiles");
    check_events(&plan, &document, events);
});
