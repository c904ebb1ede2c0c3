//! A plan version compiled for the collector's hot path: tables from names to rules ([`NameTable`]: no
//! `memcmp` for a name of up to 16 bytes), rules in a dense array, enums as tables too, patterns compiled
//! once and id patterns matched in one pass without an automaton ([`Pattern`]), so checking an event
//! costs a look-up of its type and one per property, and allocates only when it finds a violation (to
//! write the message).
//!
//! The check is incremental ([`CompiledPlan::start`] → [`EventCheck::property`] per property →
//! [`EventCheck::finish`]), so the collector checks each property while its validation walk has it in
//! hand instead of walking the event's bytes again (docs/architecture.md: the path of an event); the required
//! properties an event has are kept as bits, so a missing one is found without a second pass.
//! [`CompiledPlan::check`] runs the same steps over a list of properties.
//!
//! An event breaks at most one rule as far as counting and rejection go: the **first** violation, where
//! one that rejects comes before one that only warns, and among equals the one whose property name sorts
//! first (a missing required property counting under its own name). So the reason an event gets does
//! not depend on the order its properties were encoded in.

use std::fmt::Write;

use hourglass_proto::v1::RejectionReason;
use regex::Regex;

use super::document::{PlanDocument, PlanMode, PropertySpec, PropertyType, UndeclaredPolicy};
use super::name_table::NameTable;
use super::pattern::Pattern;

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
    /// For a required property, its place among the type's required names (sorted): the bit the check
    /// sets when an event has it, with the look-up it does anyway.
    required_index: Option<usize>,
    /// The enum's values, in the order the plan lists them (for messages).
    allowed_values: Option<NameTable>,
    minimum: f64,
    maximum: f64,
    max_length: Option<usize>,
    pattern: Option<Pattern>,
    /// The pattern as written, for messages.
    pattern_text: Option<String>,
}

/// One declared event type, ready to check.
struct CompiledType {
    /// Property names to their rules' places in `rules`.
    properties: NameTable,
    rules: Vec<CompiledProperty>,
    /// The required properties' names, sorted.
    required: Vec<Box<str>>,
}

impl CompiledType {
    #[inline]
    fn property(&self, name: &str) -> Option<&CompiledProperty> {
        self.properties.get(name).map(|index| &self.rules[index])
    }
}

/// One version of a customer's plan, compiled.
pub struct CompiledPlan {
    version: u32,
    mode: PlanMode,
    /// Event type names to their places in `declared_types`.
    types: NameTable,
    declared_types: Vec<CompiledType>,
    /// What breaking a declared rule does in this mode (`None` in mode off), and what an undeclared
    /// type or property does under its policy: worked out once, not per property.
    declared_rule_action: Option<ViolationAction>,
    undeclared_type_action: Option<ViolationAction>,
    undeclared_property_action: Option<ViolationAction>,
}

impl std::fmt::Debug for CompiledPlan {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CompiledPlan")
            .field("version", &self.version)
            .field("mode", &self.mode)
            .field("event_types", &self.declared_types.len())
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
        let mut declared_types = Vec::with_capacity(document.event_types.len());
        for spec in document.event_types.values() {
            let mut required: Vec<Box<str>> = spec
                .properties
                .iter()
                .filter(|(_, property)| property.required)
                .map(|(name, _)| Box::from(name.as_str()))
                .collect();
            required.sort();
            let rules = spec
                .properties
                .iter()
                .map(|(name, property)| {
                    let required_index = required.binary_search_by(|required| (**required).cmp(name.as_str())).ok();
                    compile_property(property, required_index)
                })
                .collect::<Result<_, _>>()?;
            let properties = NameTable::new(spec.properties.keys().map(String::as_str));
            declared_types.push(CompiledType { properties, rules, required });
        }
        Ok(Self {
            version,
            mode: document.mode,
            types: NameTable::new(document.event_types.keys().map(String::as_str)),
            declared_types,
            declared_rule_action: action_for(document.mode, None),
            undeclared_type_action: action_for(document.mode, Some(document.undeclared_event_types)),
            undeclared_property_action: action_for(document.mode, Some(document.undeclared_properties)),
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

    /// Starts checking one event of type `event_type`: its type is looked up once, here; then each
    /// property goes to [`EventCheck::property`], in any order, and [`EventCheck::finish`] gives the
    /// first violation (module doc). With [`PlanMode::Off`] the check finds nothing.
    #[inline]
    pub fn start<'e>(&self, event_type: &'e str) -> EventCheck<'_, 'e> {
        let declared = if self.mode == PlanMode::Off {
            None
        } else {
            self.types.get(event_type).map(|index| &self.declared_types[index])
        };
        EventCheck {
            plan: self,
            event_type,
            declared,
            first: None,
            required_present: RequiredPresent::for_type(declared),
        }
    }

    /// Checks one event against the plan: its type and its properties, each name once. Returns the
    /// first violation (module doc), or `None`. The same steps as [`CompiledPlan::start`].
    pub fn check<'e>(
        &self,
        event_type: &'e str,
        properties: impl IntoIterator<Item = (&'e str, PlanValue<'e>)>,
    ) -> Option<PlanViolation> {
        if self.mode == PlanMode::Off {
            return None;
        }
        let mut check = self.start(event_type);
        for (name, value) in properties {
            check.property(name, value);
        }
        check.finish()
    }

    fn describe(&self, found: Found<'_>, declared_type: &CompiledType) -> PlanViolation {
        let Found { rule, action, property: name, value } = found;
        let version = self.version;
        let mut message = format!("{}: ", rule.name());
        let declared = declared_type.property(name);
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
                let allowed = property.allowed_values.as_ref().map(NameTable::names).unwrap_or_default();
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

/// One event's check under way ([`CompiledPlan::start`]): the type it resolved, the first violation
/// found so far and the required properties seen.
pub struct EventCheck<'p, 'e> {
    plan: &'p CompiledPlan,
    event_type: &'e str,
    /// The event's type in the plan; `None` when it is undeclared, or the plan is off.
    declared: Option<&'p CompiledType>,
    first: Option<Found<'e>>,
    required_present: RequiredPresent,
}

impl<'e> EventCheck<'_, 'e> {
    /// Checks one property of the event. Each name at most once per event: an event's property names
    /// are distinct (a protobuf map).
    #[inline]
    pub fn property(&mut self, name: &'e str, value: PlanValue<'e>) {
        let Some(declared) = self.declared else {
            return;
        };
        let Some(property) = declared.property(name) else {
            if let Some(action) = self.plan.undeclared_property_action {
                self.keep(Found { rule: PlanRule::PropertyUndeclared, action, property: name, value });
            }
            return;
        };
        if let Some(index) = property.required_index {
            self.required_present.insert(index);
        }
        if let Some(rule) = property.broken_rule(value)
            && let Some(action) = self.plan.declared_rule_action
        {
            self.keep(Found { rule, action, property: name, value });
        }
    }

    #[inline]
    fn keep(&mut self, found: Found<'e>) {
        if self.first.as_ref().is_none_or(|current| found.precedes(current)) {
            self.first = Some(found);
        }
    }

    /// The event's first violation (module doc), or `None`.
    pub fn finish(self) -> Option<PlanViolation> {
        let plan = self.plan;
        if plan.mode == PlanMode::Off {
            return None;
        }
        let Some(declared) = self.declared else {
            let action = plan.undeclared_type_action?;
            return Some(PlanViolation {
                rule: PlanRule::EventTypeUndeclared,
                action,
                message: format!(
                    "{}: event type \"{}\" is not in plan v{}",
                    PlanRule::EventTypeUndeclared.name(),
                    quoted(self.event_type),
                    plan.version
                ),
            });
        };
        if let Some(action) = plan.declared_rule_action
            && let Some(missing_index) = self.required_present.first_missing(declared.required.len())
        {
            let missing = &*declared.required[missing_index];
            let missing_first = self.first.as_ref().is_none_or(|current| {
                (std::cmp::Reverse(action), missing) < (std::cmp::Reverse(current.action), current.property)
            });
            if missing_first {
                return Some(PlanViolation {
                    rule: PlanRule::PropertyRequiredMissing,
                    action,
                    message: format!(
                        "{}: {} is missing, plan v{} requires it",
                        PlanRule::PropertyRequiredMissing.name(),
                        missing,
                        plan.version
                    ),
                });
            }
        }
        self.first.map(|found| plan.describe(found, declared))
    }
}

/// The required properties of its type an event has, a bit each, in the order of the sorted names (so
/// the first missing one is the lowest bit unset). A type with more than 64 required properties gets
/// a word per 64, allocated per event; a plan's types have a handful.
enum RequiredPresent {
    Few(u64),
    Many(Vec<u64>),
}

impl RequiredPresent {
    #[inline]
    fn for_type(declared: Option<&CompiledType>) -> Self {
        match declared {
            Some(declared) if declared.required.len() > 64 => {
                RequiredPresent::Many(vec![0; declared.required.len().div_ceil(64)])
            }
            _ => RequiredPresent::Few(0),
        }
    }

    #[inline]
    fn insert(&mut self, index: usize) {
        match self {
            RequiredPresent::Few(bits) => *bits |= 1 << index,
            RequiredPresent::Many(words) => words[index / 64] |= 1 << (index % 64),
        }
    }

    /// The index of the first of `required` properties absent, if any.
    #[inline]
    fn first_missing(&self, required: usize) -> Option<usize> {
        let words = match self {
            RequiredPresent::Few(bits) => std::slice::from_ref(bits),
            RequiredPresent::Many(words) => words.as_slice(),
        };
        words
            .iter()
            .enumerate()
            .find_map(|(word_index, bits)| {
                let absent = !bits;
                (absent != 0).then(|| word_index * 64 + absent.trailing_zeros() as usize)
            })
            .filter(|index| *index < required)
    }
}

/// What breaking a declared rule (`policy` `None`), or an undeclared name under `policy`, does to an
/// event in `mode`; `None` when nothing happens.
fn action_for(mode: PlanMode, policy: Option<UndeclaredPolicy>) -> Option<ViolationAction> {
    let rejects = match policy {
        None | Some(UndeclaredPolicy::Reject) => true,
        Some(UndeclaredPolicy::Warn) => false,
        Some(UndeclaredPolicy::Allow) => return None,
    };
    match mode {
        PlanMode::Off => None,
        PlanMode::Warn => Some(ViolationAction::Warn),
        PlanMode::Enforce if rejects => Some(ViolationAction::Reject),
        PlanMode::Enforce => Some(ViolationAction::Warn),
    }
}

fn compile_property(property: &PropertySpec, required_index: Option<usize>) -> Result<CompiledProperty, regex::Error> {
    Ok(CompiledProperty {
        value_type: property.value_type,
        required_index,
        allowed_values: property
            .allowed_values
            .as_ref()
            .map(|values| NameTable::new(values.iter().map(String::as_str))),
        minimum: property.minimum.unwrap_or(f64::NEG_INFINITY),
        maximum: property.maximum.unwrap_or(f64::INFINITY),
        max_length: property.max_length.map(|length| length as usize),
        pattern: match property.pattern.as_deref() {
            Some(text) => Some(Pattern::new(text, compile_pattern(text)?)),
            None => None,
        },
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
                    && allowed.get(text).is_none()
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
