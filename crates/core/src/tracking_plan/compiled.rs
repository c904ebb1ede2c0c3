//! A plan version compiled for the collector's hot path: hash maps from names to rules, patterns compiled
//! once, so checking an event costs a look-up of its type and one per property, and allocates only when
//! it finds a violation (to write the message).
//!
//! An event breaks at most one rule as far as counting and rejection go: the **first** violation, where
//! one that rejects comes before one that only warns, and among equals the one whose property name sorts
//! first (a missing required property counting under its own name). So the reason an event gets does
//! not depend on the order its properties were encoded in.

use std::collections::HashMap;
use std::fmt::Write;

use foldhash::fast::RandomState;
use hourglass_proto::v1::RejectionReason;
use regex::Regex;

use super::document::{PlanDocument, PlanMode, PropertySpec, PropertyType, UndeclaredPolicy};

/// Longest part of a value a violation's message quotes, in bytes.
const MAX_QUOTED_VALUE_BYTES: usize = 64;

/// Largest compiled form of one pattern, in bytes (the `regex` crate's size limit): a plan's patterns
/// are for ids and codes, and a bounded automaton keeps every match linear and cheap.
const MAX_COMPILED_PATTERN_BYTES: usize = 256 * 1024;

/// Compiles a plan's pattern as the collector will use it.
pub(super) fn compile_pattern(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern).size_limit(MAX_COMPILED_PATTERN_BYTES).build()
}

/// A property's value as the plan sees it, borrowed from the event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PlanValue<'a> {
    /// A property with no value set.
    Missing,
    /// A string.
    String(&'a str),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

impl PlanValue<'_> {
    fn type_name(self) -> &'static str {
        match self {
            PlanValue::Missing => "without a value",
            PlanValue::String(_) => "string",
            PlanValue::Number(_) => "number",
            PlanValue::Bool(_) => "bool",
        }
    }
}

/// The rule of a plan an event broke. Each is a rejection reason of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlanRule {
    /// The event's type is not declared.
    EventTypeUndeclared,
    /// A property is not declared for the event's type.
    PropertyUndeclared,
    /// A required property is absent.
    PropertyRequiredMissing,
    /// A property's value has another type than declared.
    PropertyTypeMismatch,
    /// A string is not one of the allowed values.
    PropertyNotInEnum,
    /// A number is outside the declared range.
    PropertyOutOfRange,
    /// A string is longer than allowed.
    PropertyTooLong,
    /// A string does not match the declared pattern.
    PropertyPatternMismatch,
}

impl PlanRule {
    /// Every rule, in the order of their rejection reasons.
    pub const ALL: [PlanRule; 8] = [
        PlanRule::EventTypeUndeclared,
        PlanRule::PropertyUndeclared,
        PlanRule::PropertyRequiredMissing,
        PlanRule::PropertyTypeMismatch,
        PlanRule::PropertyNotInEnum,
        PlanRule::PropertyOutOfRange,
        PlanRule::PropertyTooLong,
        PlanRule::PropertyPatternMismatch,
    ];

    /// The rejection reason of an event rejected for breaking this rule.
    pub fn reason(self) -> RejectionReason {
        match self {
            PlanRule::EventTypeUndeclared => RejectionReason::EventTypeUndeclared,
            PlanRule::PropertyUndeclared => RejectionReason::PropertyUndeclared,
            PlanRule::PropertyRequiredMissing => RejectionReason::PropertyRequiredMissing,
            PlanRule::PropertyTypeMismatch => RejectionReason::PropertyTypeMismatch,
            PlanRule::PropertyNotInEnum => RejectionReason::PropertyNotInEnum,
            PlanRule::PropertyOutOfRange => RejectionReason::PropertyOutOfRange,
            PlanRule::PropertyTooLong => RejectionReason::PropertyTooLong,
            PlanRule::PropertyPatternMismatch => RejectionReason::PropertyPatternMismatch,
        }
    }

    /// The rule of a rejection reason, if it is a plan's.
    pub fn from_reason(reason: RejectionReason) -> Option<PlanRule> {
        PlanRule::ALL.into_iter().find(|rule| rule.reason() == reason)
    }

    /// The rule's name, as messages and reports write it: its reason's name without the prefix.
    pub fn name(self) -> &'static str {
        let full = self.reason().as_str_name();
        full.strip_prefix("REJECTION_REASON_").unwrap_or(full)
    }
}

/// What a violation does to its event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ViolationAction {
    /// The event is accepted; the violation is counted.
    Warn,
    /// The event is rejected with the rule's reason.
    Reject,
}

/// The rule one event broke, what that does to it, and a message naming the rule and the plan version,
/// e.g. `PROPERTY_TYPE_MISMATCH: price is string, plan v3 says number`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanViolation {
    /// The rule.
    pub rule: PlanRule,
    /// Reject or warn.
    pub action: ViolationAction,
    /// For people: the rule, the property and value, and what the plan version says.
    pub message: String,
}

/// One declared property, ready to check.
struct CompiledProperty {
    value_type: PropertyType,
    /// Whether the type requires it: kept here so the check counts required properties present with
    /// the look-up it does anyway, not a search of the required names per property.
    required: bool,
    allowed_values: Option<Vec<String>>,
    minimum: f64,
    maximum: f64,
    max_length: Option<usize>,
    pattern: Option<Regex>,
    /// The pattern as written, for messages.
    pattern_text: Option<String>,
}

/// One declared event type, ready to check.
struct CompiledType {
    properties: HashMap<Box<str>, CompiledProperty, RandomState>,
    /// The required properties' names, sorted.
    required: Vec<Box<str>>,
}

/// One version of a customer's plan, compiled.
pub struct CompiledPlan {
    version: u32,
    mode: PlanMode,
    undeclared_event_types: UndeclaredPolicy,
    undeclared_properties: UndeclaredPolicy,
    types: HashMap<Box<str>, CompiledType, RandomState>,
}

impl std::fmt::Debug for CompiledPlan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CompiledPlan")
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("event_types", &self.types.len())
            .finish_non_exhaustive()
    }
}

/// A violation found while checking, before its message is written.
#[derive(Clone, Copy)]
struct Found<'e> {
    rule: PlanRule,
    action: ViolationAction,
    property: &'e str,
    value: PlanValue<'e>,
}

impl<'e> Found<'e> {
    /// Whether this violation comes before `other` (module doc: rejecting first, then by name).
    fn precedes(&self, other: &Found<'e>) -> bool {
        (std::cmp::Reverse(self.action), self.property) < (std::cmp::Reverse(other.action), other.property)
    }
}

impl CompiledPlan {
    /// Compiles version `version` of a valid plan ([`PlanDocument::parse`] checked its patterns).
    pub fn compile(version: u32, document: &PlanDocument) -> Result<Self, regex::Error> {
        let mut types = HashMap::with_capacity_and_hasher(document.event_types.len(), RandomState::default());
        for (event_type, spec) in &document.event_types {
            let mut properties = HashMap::with_capacity_and_hasher(spec.properties.len(), RandomState::default());
            let mut required = Vec::new();
            for (name, property) in &spec.properties {
                if property.required {
                    required.push(Box::from(name.as_str()));
                }
                properties.insert(Box::from(name.as_str()), compile_property(property)?);
            }
            required.sort();
            types.insert(Box::from(event_type.as_str()), CompiledType { properties, required });
        }
        Ok(Self {
            version,
            mode: document.mode,
            undeclared_event_types: document.undeclared_event_types,
            undeclared_properties: document.undeclared_properties,
            types,
        })
    }

    /// The plan version this was compiled from.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The plan's mode; with [`PlanMode::Off`] [`CompiledPlan::check`] finds nothing.
    pub fn mode(&self) -> PlanMode {
        self.mode
    }

    /// What breaking a declared rule, or an undeclared name under `policy`, does to an event in this
    /// plan's mode; `None` when nothing happens.
    #[inline]
    fn action_for(&self, policy: Option<UndeclaredPolicy>) -> Option<ViolationAction> {
        let rejects = match policy {
            None | Some(UndeclaredPolicy::Reject) => true,
            Some(UndeclaredPolicy::Warn) => false,
            Some(UndeclaredPolicy::Allow) => return None,
        };
        match self.mode {
            PlanMode::Off => None,
            PlanMode::Warn => Some(ViolationAction::Warn),
            PlanMode::Enforce if rejects => Some(ViolationAction::Reject),
            PlanMode::Enforce => Some(ViolationAction::Warn),
        }
    }

    /// Checks one event against the plan: its type and its properties, each name once
    /// (`properties` is called for each pass over them: once, and a second time only when a required
    /// property is missing). Returns the first violation (module doc), or `None`.
    pub fn check<'e, I>(&self, event_type: &str, properties: impl Fn() -> I) -> Option<PlanViolation>
    where
        I: Iterator<Item = (&'e str, PlanValue<'e>)>,
    {
        if self.mode == PlanMode::Off {
            return None;
        }
        let Some(declared) = self.types.get(event_type) else {
            let action = self.action_for(Some(self.undeclared_event_types))?;
            return Some(PlanViolation {
                rule: PlanRule::EventTypeUndeclared,
                action,
                message: format!(
                    "{}: event type \"{}\" is not in plan v{}",
                    PlanRule::EventTypeUndeclared.name(),
                    quoted(event_type),
                    self.version
                ),
            });
        };
        let mut first: Option<Found<'e>> = None;
        let mut keep = |found: Found<'e>| {
            if first.as_ref().is_none_or(|current| found.precedes(current)) {
                first = Some(found);
            }
        };
        let mut required_present = 0;
        for (name, value) in properties() {
            let Some(property) = declared.properties.get(name) else {
                if let Some(action) = self.action_for(Some(self.undeclared_properties)) {
                    keep(Found { rule: PlanRule::PropertyUndeclared, action, property: name, value });
                }
                continue;
            };
            if property.required {
                required_present += 1;
            }
            if let Some(rule) = property.broken_rule(value)
                && let Some(action) = self.action_for(None)
            {
                keep(Found { rule, action, property: name, value });
            }
        }
        if required_present < declared.required.len()
            && let Some(action) = self.action_for(None)
        {
            let present: Vec<&str> = properties().map(|(name, _)| name).collect();
            if let Some(missing) = declared.required.iter().find(|required| !present.contains(&&***required)) {
                // The name is the plan's, not the event's; it lives as long as `self`, which outlives
                // this call but not `'e`, so the violation is written here rather than kept.
                let found = PlanViolation {
                    rule: PlanRule::PropertyRequiredMissing,
                    action,
                    message: format!(
                        "{}: {} is missing, plan v{} requires it",
                        PlanRule::PropertyRequiredMissing.name(),
                        missing,
                        self.version
                    ),
                };
                let missing_first = first.as_ref().is_none_or(|current| {
                    (std::cmp::Reverse(action), &**missing) < (std::cmp::Reverse(current.action), current.property)
                });
                if missing_first {
                    return Some(found);
                }
            }
        }
        first.map(|found| self.describe(found, &declared.properties))
    }

    fn describe(
        &self,
        found: Found<'_>,
        properties: &HashMap<Box<str>, CompiledProperty, RandomState>,
    ) -> PlanViolation {
        let Found { rule, action, property: name, value } = found;
        let version = self.version;
        let mut message = format!("{}: ", rule.name());
        let declared = properties.get(name);
        let _ = match (rule, declared) {
            (PlanRule::PropertyUndeclared, _) | (_, None) => {
                write!(message, "{} is not declared, plan v{version} does not list it", quoted(name))
            }
            (PlanRule::PropertyTypeMismatch, Some(property)) => write!(
                message,
                "{} is {}, plan v{version} says {}",
                quoted(name),
                value.type_name(),
                property.value_type.as_str()
            ),
            (PlanRule::PropertyNotInEnum, Some(property)) => {
                let allowed = property.allowed_values.as_deref().unwrap_or_default();
                let listed: Vec<String> = allowed.iter().map(|value| format!("\"{}\"", quoted(value))).collect();
                write!(
                    message,
                    "{} is {}, plan v{version} allows {}",
                    quoted(name),
                    quoted_value(value),
                    listed.join(", ")
                )
            }
            (PlanRule::PropertyOutOfRange, Some(property)) => {
                let range = match (property.minimum.is_finite(), property.maximum.is_finite()) {
                    (true, true) => format!("{} to {}", property.minimum, property.maximum),
                    (true, false) => format!("at least {}", property.minimum),
                    _ => format!("at most {}", property.maximum),
                };
                write!(message, "{} is {}, plan v{version} says {range}", quoted(name), quoted_value(value))
            }
            (PlanRule::PropertyTooLong, Some(property)) => {
                let length = match value {
                    PlanValue::String(text) => text.len(),
                    _ => 0,
                };
                write!(
                    message,
                    "{} is {length} bytes, plan v{version} says at most {}",
                    quoted(name),
                    property.max_length.unwrap_or_default()
                )
            }
            (PlanRule::PropertyPatternMismatch, Some(property)) => write!(
                message,
                "{} is {}, plan v{version} says it matches {}",
                quoted(name),
                quoted_value(value),
                property.pattern_text.as_deref().unwrap_or_default()
            ),
            (PlanRule::EventTypeUndeclared | PlanRule::PropertyRequiredMissing, Some(_)) => {
                unreachable!("written where they are found")
            }
        };
        PlanViolation { rule, action, message }
    }
}

fn compile_property(property: &PropertySpec) -> Result<CompiledProperty, regex::Error> {
    Ok(CompiledProperty {
        value_type: property.value_type,
        required: property.required,
        allowed_values: property.allowed_values.clone(),
        minimum: property.minimum.unwrap_or(f64::NEG_INFINITY),
        maximum: property.maximum.unwrap_or(f64::INFINITY),
        max_length: property.max_length.map(|length| length as usize),
        pattern: property.pattern.as_deref().map(compile_pattern).transpose()?,
        pattern_text: property.pattern.clone(),
    })
}

impl CompiledProperty {
    /// The first rule `value` breaks: its type, then its constraints in the order of their reasons.
    #[inline]
    fn broken_rule(&self, value: PlanValue<'_>) -> Option<PlanRule> {
        match (self.value_type, value) {
            (PropertyType::String, PlanValue::String(text)) => {
                if let Some(allowed) = &self.allowed_values
                    && !allowed.iter().any(|allowed| allowed == text)
                {
                    return Some(PlanRule::PropertyNotInEnum);
                }
                if self.max_length.is_some_and(|max_length| text.len() > max_length) {
                    return Some(PlanRule::PropertyTooLong);
                }
                if self.pattern.as_ref().is_some_and(|pattern| !pattern.is_match(text)) {
                    return Some(PlanRule::PropertyPatternMismatch);
                }
                None
            }
            (PropertyType::Number, PlanValue::Number(number)) => {
                (!(self.minimum..=self.maximum).contains(&number)).then_some(PlanRule::PropertyOutOfRange)
            }
            (PropertyType::Bool, PlanValue::Bool(_)) => None,
            _ => Some(PlanRule::PropertyTypeMismatch),
        }
    }
}

/// `text` cut to at most [`MAX_QUOTED_VALUE_BYTES`] on a character boundary, with `…` when cut.
fn quoted(text: &str) -> String {
    if text.len() <= MAX_QUOTED_VALUE_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_QUOTED_VALUE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

fn quoted_value(value: PlanValue<'_>) -> String {
    match value {
        PlanValue::String(text) => format!("\"{}\"", quoted(text)),
        PlanValue::Number(number) => number.to_string(),
        PlanValue::Bool(flag) => flag.to_string(),
        PlanValue::Missing => "without a value".to_owned(),
    }
}
