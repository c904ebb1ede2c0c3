//! The tracking plan as a customer writes it: a JSON document (its JSON Schema is
//! `docs/tracking-plan.schema.json`), parsed strictly and checked for sense before it is stored, and kept
//! in a canonical form so that pushing the same plan twice, however formatted, creates no new version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a plan does to the events it checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanMode {
    /// The plan is stored but not applied.
    #[default]
    Off,
    /// Every violation is counted; every event is accepted (a dry run of `enforce`).
    Warn,
    /// Events breaking a declared rule are rejected; undeclared types and properties as configured.
    Enforce,
}

impl PlanMode {
    /// The name used in the document and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanMode::Off => "off",
            PlanMode::Warn => "warn",
            PlanMode::Enforce => "enforce",
        }
    }
}

/// What to do with an event type, or a property, that the plan does not declare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UndeclaredPolicy {
    /// Accept it without counting.
    Allow,
    /// Accept it and count a violation.
    #[default]
    Warn,
    /// Reject the event (in `enforce` mode; counted as a violation in `warn` mode).
    Reject,
}

/// The type of a property's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PropertyType {
    /// A string value.
    String,
    /// A (finite) number.
    Number,
    /// A boolean.
    Bool,
}

impl PropertyType {
    /// The name used in the document and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            PropertyType::String => "string",
            PropertyType::Number => "number",
            PropertyType::Bool => "bool",
        }
    }
}

/// One customer's tracking plan, as written. Field order and defaults are those of the JSON Schema.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDocument {
    /// `off` (the default), `warn` or `enforce`.
    #[serde(default)]
    pub mode: PlanMode,
    /// What to do with an event whose type is not in `event_types` (`warn` by default).
    #[serde(default)]
    pub undeclared_event_types: UndeclaredPolicy,
    /// What to do with a property a declared type does not list (`warn` by default).
    #[serde(default)]
    pub undeclared_properties: UndeclaredPolicy,
    /// The declared event types, by name.
    pub event_types: BTreeMap<String, EventTypeSpec>,
}

/// One declared event type.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventTypeSpec {
    /// Free text for people reading the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The type's properties, by name.
    #[serde(default)]
    pub properties: BTreeMap<String, PropertySpec>,
}

/// One declared property and its constraints.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PropertySpec {
    /// The value's type.
    #[serde(rename = "type")]
    pub value_type: PropertyType,
    /// Whether every event of the type must carry it (false by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Free text for people reading the plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Strings only: the allowed values.
    #[serde(default, rename = "enum", skip_serializing_if = "Option::is_none")]
    pub allowed_values: Option<Vec<String>>,
    /// Numbers only: the smallest allowed value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum: Option<f64>,
    /// Numbers only: the largest allowed value (inclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum: Option<f64>,
    /// Strings only: the longest allowed value, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Strings only: a regular expression (Rust `regex` syntax) the whole value must match; anchor it
    /// with `^…$` to match the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
}

/// Why a document is not a plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanDocumentError {
    /// Not JSON, or JSON not of the plan's shape.
    #[error("not a tracking plan: {0}")]
    Syntax(String),
    /// Of the plan's shape but not meaningful; each problem names where it is.
    #[error("invalid tracking plan: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Longest event type or property name a plan may declare, in bytes: the collector's own maximum
/// (`--max-event-type-bytes`, `--max-property-name-bytes` at their defaults), so a plan cannot declare a
/// name no event could carry.
pub const MAX_DECLARED_NAME_BYTES: usize = 128;

/// Longest regular expression a plan may declare, in bytes (a compiled pattern's size grows with it).
pub const MAX_PATTERN_BYTES: usize = 1024;

impl PlanDocument {
    /// Parses a plan and checks it makes sense ([`PlanDocument::problems`]).
    pub fn parse(json: &str) -> Result<Self, PlanDocumentError> {
        let document: PlanDocument =
            serde_json::from_str(json).map_err(|error| PlanDocumentError::Syntax(error.to_string()))?;
        let problems = document.problems();
        if !problems.is_empty() {
            return Err(PlanDocumentError::Invalid(problems));
        }
        Ok(document)
    }

    /// The plan in its canonical form: compact JSON, names sorted, defaults written out. Two documents
    /// that mean the same plan have the same canonical form.
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("a plan document always serializes")
    }

    /// The plan as people read it: the canonical form, indented.
    pub fn pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan document always serializes")
    }

    /// What is wrong with the plan beyond its shape, each problem naming its place; empty if nothing.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (event_type, spec) in &self.event_types {
            if event_type.is_empty() || event_type.len() > MAX_DECLARED_NAME_BYTES {
                problems.push(format!("event type {event_type:?}: a name is 1 to {MAX_DECLARED_NAME_BYTES} bytes"));
            }
            for (name, property) in &spec.properties {
                let place = format!("{event_type}.{name}");
                if name.is_empty() || name.len() > MAX_DECLARED_NAME_BYTES {
                    problems.push(format!("{place}: a property name is 1 to {MAX_DECLARED_NAME_BYTES} bytes"));
                }
                property.problems(&place, &mut problems);
            }
        }
        problems
    }
}

impl PropertySpec {
    fn problems(&self, place: &str, problems: &mut Vec<String>) {
        let is_string = self.value_type == PropertyType::String;
        let is_number = self.value_type == PropertyType::Number;
        let type_name = self.value_type.as_str();
        for (constraint, set, applies) in [
            ("enum", self.allowed_values.is_some(), is_string),
            ("max_length", self.max_length.is_some(), is_string),
            ("pattern", self.pattern.is_some(), is_string),
            ("minimum", self.minimum.is_some(), is_number),
            ("maximum", self.maximum.is_some(), is_number),
        ] {
            if set && !applies {
                problems.push(format!("{place}: {constraint} does not apply to a {type_name}"));
            }
        }
        if self.allowed_values.as_ref().is_some_and(Vec::is_empty) {
            problems.push(format!("{place}: enum lists no value"));
        }
        if let (Some(minimum), Some(maximum)) = (self.minimum, self.maximum)
            && minimum > maximum
        {
            problems.push(format!("{place}: minimum {minimum} is above maximum {maximum}"));
        }
        for bound in [self.minimum, self.maximum].into_iter().flatten() {
            if !bound.is_finite() {
                problems.push(format!("{place}: a bound must be a finite number"));
            }
        }
        if let Some(pattern) = &self.pattern {
            if pattern.len() > MAX_PATTERN_BYTES {
                problems.push(format!("{place}: pattern is longer than {MAX_PATTERN_BYTES} bytes"));
            } else if let Err(error) = super::compiled::compile_pattern(pattern) {
                problems.push(format!("{place}: pattern does not compile: {error}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_filled_in_and_the_canonical_form_ignores_formatting_and_order() {
        let written = r#"{
            "event_types": {
                "purchase": {"properties": {"price": {"required": true, "type": "number", "minimum": 0}}},
                "view": {}
            }
        }"#;
        let reordered = r#"{"undeclared_properties":"warn","event_types":{"view":{"properties":{}},
            "purchase":{"properties":{"price":{"type":"number","minimum":0.0,"required":true}}}},"mode":"off"}"#;
        let document = PlanDocument::parse(written).unwrap();
        assert_eq!(document.mode, PlanMode::Off);
        assert_eq!(document.undeclared_event_types, UndeclaredPolicy::Warn);
        assert_eq!(document.canonical_json(), PlanDocument::parse(reordered).unwrap().canonical_json());
        assert_eq!(
            PlanDocument::parse(&document.canonical_json()).unwrap(),
            document,
            "the canonical form parses back"
        );
    }

    #[test]
    fn unknown_fields_and_wrong_shapes_are_refused() {
        for document in [
            r#"{"event_types": {}, "modes": "warn"}"#,
            r#"{"event_types": {"a": {"properties": {"p": {"type": "integer"}}}}}"#,
            r#"{"event_types": {"a": {"properties": {"p": {"type": "string", "maxLength": 3}}}}}"#,
            r#"{"mode": "strict", "event_types": {}}"#,
            r#"{}"#,
            "not json",
        ] {
            assert!(matches!(PlanDocument::parse(document), Err(PlanDocumentError::Syntax(_))), "{document}");
        }
    }

    #[test]
    fn constraints_that_make_no_sense_are_refused_each_named() {
        let document = r#"{"event_types": {"buy": {"properties": {
            "price": {"type": "number", "minimum": 5, "maximum": 1, "max_length": 3},
            "sku": {"type": "string", "pattern": "([a-z", "enum": []},
            "": {"type": "bool"}
        }}}}"#;
        let Err(PlanDocumentError::Invalid(problems)) = PlanDocument::parse(document) else {
            panic!("the plan is invalid");
        };
        assert_eq!(
            problems.iter().map(|problem| problem.split(':').next().unwrap()).collect::<Vec<_>>(),
            ["buy.", "buy.price", "buy.price", "buy.sku", "buy.sku"]
        );
        assert!(problems[1].contains("max_length does not apply to a number"), "{problems:?}");
        assert!(problems[2].contains("minimum 5 is above maximum 1"), "{problems:?}");
        assert!(problems[4].contains("pattern does not compile"), "{problems:?}");
    }
}
