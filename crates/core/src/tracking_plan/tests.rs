//! Unit and property tests of the plan's check.

use proptest::prelude::*;

use super::*;

const PLAN: &str = r#"{
    "mode": "enforce",
    "undeclared_event_types": "reject",
    "undeclared_properties": "warn",
    "event_types": {
        "purchase": {"properties": {
            "price": {"type": "number", "required": true, "minimum": 0, "maximum": 10000},
            "currency": {"type": "string", "required": true, "enum": ["EUR", "USD"]},
            "sku": {"type": "string", "max_length": 12, "pattern": "^[A-Z0-9-]+$"},
            "gift": {"type": "bool"}
        }},
        "view": {"properties": {"path": {"type": "string"}}}
    }
}"#;

fn plan(mode: PlanMode) -> CompiledPlan {
    let mut document = PlanDocument::parse(PLAN).unwrap();
    document.mode = mode;
    CompiledPlan::compile(3, &document).unwrap()
}

fn check<'e>(plan: &CompiledPlan, event_type: &str, properties: &[(&'e str, PlanValue<'e>)]) -> Option<PlanViolation> {
    plan.check(event_type, properties.iter().copied())
}

/// An event's properties, as the check reads them.
type Properties<'e> = Vec<(&'e str, PlanValue<'e>)>;

fn good_purchase() -> Properties<'static> {
    vec![
        ("price", PlanValue::Number(12.5)),
        ("currency", PlanValue::String("EUR")),
        ("sku", PlanValue::String("AB-12")),
        ("gift", PlanValue::Bool(false)),
    ]
}

fn with<'e>(
    mut properties: Vec<(&'e str, PlanValue<'e>)>,
    name: &'e str,
    value: PlanValue<'e>,
) -> Vec<(&'e str, PlanValue<'e>)> {
    properties.retain(|(existing, _)| *existing != name);
    properties.push((name, value));
    properties
}

#[test]
fn an_event_that_follows_the_plan_breaks_nothing() {
    let plan = plan(PlanMode::Enforce);
    assert_eq!(check(&plan, "purchase", &good_purchase()), None);
    assert_eq!(check(&plan, "view", &[]), None, "optional properties may be absent");
}

#[test]
fn each_rule_is_found_with_a_message_naming_it_the_property_and_the_plan_version() {
    let plan = plan(PlanMode::Enforce);
    let cases: [(&str, Properties<'static>, PlanRule, &str); 8] = [
        (
            "checkout",
            good_purchase(),
            PlanRule::EventTypeUndeclared,
            "EVENT_TYPE_UNDECLARED: event type \"checkout\" is not in plan v3",
        ),
        (
            "purchase",
            with(good_purchase(), "price", PlanValue::String("12")),
            PlanRule::PropertyTypeMismatch,
            "PROPERTY_TYPE_MISMATCH: price is string, plan v3 says number",
        ),
        (
            "purchase",
            good_purchase().into_iter().filter(|(name, _)| *name != "price").collect(),
            PlanRule::PropertyRequiredMissing,
            "PROPERTY_REQUIRED_MISSING: price is missing, plan v3 requires it",
        ),
        (
            "purchase",
            with(good_purchase(), "currency", PlanValue::String("GBP")),
            PlanRule::PropertyNotInEnum,
            "PROPERTY_NOT_IN_ENUM: currency is \"GBP\", plan v3 allows \"EUR\", \"USD\"",
        ),
        (
            "purchase",
            with(good_purchase(), "price", PlanValue::Number(-1.0)),
            PlanRule::PropertyOutOfRange,
            "PROPERTY_OUT_OF_RANGE: price is -1, plan v3 says 0 to 10000",
        ),
        (
            "purchase",
            with(good_purchase(), "sku", PlanValue::String("ABCDEFGHIJKLM")),
            PlanRule::PropertyTooLong,
            "PROPERTY_TOO_LONG: sku is 13 bytes, plan v3 says at most 12",
        ),
        (
            "purchase",
            with(good_purchase(), "sku", PlanValue::String("ab")),
            PlanRule::PropertyPatternMismatch,
            "PROPERTY_PATTERN_MISMATCH: sku is \"ab\", plan v3 says it matches ^[A-Z0-9-]+$",
        ),
        (
            "purchase",
            with(good_purchase(), "gift", PlanValue::Number(1.0)),
            PlanRule::PropertyTypeMismatch,
            "PROPERTY_TYPE_MISMATCH: gift is number, plan v3 says bool",
        ),
    ];
    for (event_type, properties, rule, message) in cases {
        let violation = check(&plan, event_type, &properties).expect(message);
        assert_eq!(
            (violation.rule, violation.action, violation.message.as_str()),
            (rule, ViolationAction::Reject, message)
        );
    }
}

#[test]
fn undeclared_names_follow_their_policy_and_warn_mode_rejects_nothing() {
    let enforced = plan(PlanMode::Enforce);
    let extra = with(good_purchase(), "coupon", PlanValue::String("X"));
    let violation = check(&enforced, "purchase", &extra).unwrap();
    assert_eq!((violation.rule, violation.action), (PlanRule::PropertyUndeclared, ViolationAction::Warn));
    assert_eq!(violation.message, "PROPERTY_UNDECLARED: coupon is not declared, plan v3 does not list it");

    let warned = plan(PlanMode::Warn);
    let violation = check(&warned, "checkout", &[]).unwrap();
    assert_eq!((violation.rule, violation.action), (PlanRule::EventTypeUndeclared, ViolationAction::Warn));
    let violation = check(&warned, "purchase", &with(good_purchase(), "price", PlanValue::Bool(true))).unwrap();
    assert_eq!((violation.rule, violation.action), (PlanRule::PropertyTypeMismatch, ViolationAction::Warn));

    let mut allowing = PlanDocument::parse(PLAN).unwrap();
    allowing.undeclared_event_types = UndeclaredPolicy::Allow;
    allowing.undeclared_properties = UndeclaredPolicy::Allow;
    let allowing = CompiledPlan::compile(4, &allowing).unwrap();
    assert_eq!(check(&allowing, "checkout", &[]), None);
    assert_eq!(check(&allowing, "purchase", &extra), None);

    assert_eq!(check(&plan(PlanMode::Off), "checkout", &[]), None, "off checks nothing");
}

#[test]
fn a_rejecting_violation_comes_before_a_warning_and_then_the_first_name() {
    let plan = plan(PlanMode::Enforce);
    // An undeclared property (a warning) whose name sorts first, and two rejecting ones.
    let properties = with(
        with(with(good_purchase(), "aaa", PlanValue::Bool(true)), "sku", PlanValue::String("x")),
        "currency",
        PlanValue::String("GBP"),
    );
    let violation = check(&plan, "purchase", &properties).unwrap();
    assert_eq!(violation.rule, PlanRule::PropertyNotInEnum, "currency sorts before sku: {}", violation.message);
    let missing_first = vec![("sku", PlanValue::String("x")), ("price", PlanValue::Number(1.0))];
    assert_eq!(
        check(&plan, "purchase", &missing_first).unwrap().rule,
        PlanRule::PropertyRequiredMissing,
        "currency is missing"
    );
}

#[test]
fn long_values_are_quoted_cut_on_a_character_boundary() {
    let plan = plan(PlanMode::Enforce);
    let long = "é".repeat(100);
    let properties = [("currency", PlanValue::String(&long)), ("price", PlanValue::Number(1.0))];
    let violation = check(&plan, "purchase", &properties).unwrap();
    assert!(violation.message.contains(&format!("\"{}…\"", "é".repeat(32))), "{}", violation.message);
}

#[test]
fn every_rule_has_its_own_reason_and_name() {
    for rule in PlanRule::ALL {
        assert_eq!(PlanRule::from_reason(rule.reason()), Some(rule));
        assert!(rule.reason().as_str_name().ends_with(rule.name()));
    }
    assert_eq!(PlanRule::from_reason(hourglass_proto::v1::RejectionReason::EventIdEmpty), None);
}

fn arbitrary_value() -> impl Strategy<Value = (u8, String, f64, bool)> {
    (0u8..3, "[A-Za-z0-9-]{0,16}", -20_000.0f64..20_000.0, any::<bool>())
}

fn value_of(choice: &(u8, String, f64, bool)) -> PlanValue<'_> {
    match choice.0 {
        0 => PlanValue::String(&choice.1),
        1 => PlanValue::Number(choice.2),
        _ => PlanValue::Bool(choice.3),
    }
}

proptest! {
    /// The violation an event gets does not depend on the order of its properties, and a rejecting
    /// violation is found whenever any single property breaks a declared rule alone.
    #[test]
    fn the_violation_found_does_not_depend_on_property_order(
        names in proptest::sample::subsequence(vec!["price", "currency", "sku", "gift", "coupon", "zzz"], 0..=6),
        values in proptest::collection::vec(arbitrary_value(), 6),
        rotation in 0usize..6,
    ) {
        let plan = plan(PlanMode::Enforce);
        let properties: Vec<(&str, PlanValue<'_>)> =
            names.iter().zip(&values).map(|(name, value)| (*name, value_of(value))).collect();
        let mut rotated = properties.clone();
        if !rotated.is_empty() {
            let by = rotation % rotated.len();
            rotated.rotate_left(by);
        }
        let reversed: Vec<_> = properties.iter().rev().copied().collect();
        let found = check(&plan, "purchase", &properties);
        prop_assert_eq!(&found, &check(&plan, "purchase", &rotated));
        prop_assert_eq!(&found, &check(&plan, "purchase", &reversed));
        let any_alone_rejected = properties.iter().any(|property| {
            let alone = with(good_purchase(), property.0, property.1);
            check(&plan, "purchase", &alone).is_some_and(|violation| violation.action == ViolationAction::Reject)
        });
        let missing_required = !names.contains(&"price") || !names.contains(&"currency");
        if any_alone_rejected || missing_required {
            prop_assert_eq!(found.map(|violation| violation.action), Some(ViolationAction::Reject));
        }
    }

    /// Warn mode finds a violation exactly when enforce mode does, and never rejects.
    #[test]
    fn warn_mode_counts_what_enforce_mode_finds(
        names in proptest::sample::subsequence(vec!["price", "currency", "sku", "gift", "coupon"], 0..=5),
        values in proptest::collection::vec(arbitrary_value(), 5),
        event_type in prop_oneof![Just("purchase"), Just("view"), Just("other")],
    ) {
        let properties: Vec<(&str, PlanValue<'_>)> =
            names.iter().zip(&values).map(|(name, value)| (*name, value_of(value))).collect();
        let enforced = check(&plan(PlanMode::Enforce), event_type, &properties);
        let warned = check(&plan(PlanMode::Warn), event_type, &properties);
        prop_assert_eq!(enforced.is_some(), warned.is_some());
        prop_assert!(warned.is_none_or(|violation| violation.action == ViolationAction::Warn));
    }
}

/// The examples beside `docs/tracking-plan.schema.json`: those the schema accepts parse, those it refuses
/// are refused (`scripts/check-tracking-plan-schema.py` checks the schema against the same files).
#[test]
fn the_example_plans_parse_as_the_schema_says() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/tracking-plans");
    let read = |directory: &std::path::Path| -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(directory)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|extension| extension == "json"))
            .map(|path| (path.display().to_string(), std::fs::read_to_string(&path).unwrap()))
            .collect();
        files.sort();
        files
    };
    let (valid, invalid) = (read(&examples), read(&examples.join("invalid")));
    assert!(!valid.is_empty() && !invalid.is_empty(), "examples in {}", examples.display());
    for (path, json) in valid {
        let document = PlanDocument::parse(&json).unwrap_or_else(|error| panic!("{path}: {error}"));
        CompiledPlan::compile(1, &document).unwrap();
        // The id patterns a plan declares are matched in one pass, without the regex engine.
        for pattern in document.event_types.values().flat_map(|spec| spec.properties.values()) {
            if let Some(pattern) = &pattern.pattern {
                assert!(super::pattern::StepPattern::parse(pattern).is_some(), "{path}: {pattern}");
            }
        }
    }
    for (path, json) in invalid {
        assert!(PlanDocument::parse(&json).is_err(), "{path} is refused");
    }
}
