//! What changed between two plans, one line per change, for `hourglass plans diff`: `+` added, `-`
//! removed, `~` changed (with the old and the new value), in the order of the names.

use std::collections::BTreeSet;

use super::document::{EventTypeSpec, PlanDocument, PropertySpec};

/// The changes from `old` to `new`, one line each; empty when the plans are the same.
pub fn diff(old: &PlanDocument, new: &PlanDocument) -> Vec<String> {
    let mut lines = Vec::new();
    let mut setting = |name: &str, old_value: &str, new_value: &str| {
        if old_value != new_value {
            lines.push(format!("~ {name}: {old_value} -> {new_value}"));
        }
    };
    setting("mode", old.mode.as_str(), new.mode.as_str());
    setting("undeclared_event_types", &json_of(&old.undeclared_event_types), &json_of(&new.undeclared_event_types));
    setting("undeclared_properties", &json_of(&old.undeclared_properties), &json_of(&new.undeclared_properties));
    let names: BTreeSet<&String> = old.event_types.keys().chain(new.event_types.keys()).collect();
    for name in names {
        match (old.event_types.get(name), new.event_types.get(name)) {
            (None, Some(added)) => lines.push(format!("+ {name} ({})", describe_type(added))),
            (Some(_), None) => lines.push(format!("- {name}")),
            (Some(old_type), Some(new_type)) => diff_type(name, old_type, new_type, &mut lines),
            (None, None) => unreachable!("the name comes from one of the plans"),
        }
    }
    lines
}

fn diff_type(event_type: &str, old: &EventTypeSpec, new: &EventTypeSpec, lines: &mut Vec<String>) {
    if old.description != new.description {
        lines.push(format!("~ {event_type}: description changed"));
    }
    let names: BTreeSet<&String> = old.properties.keys().chain(new.properties.keys()).collect();
    for name in names {
        match (old.properties.get(name), new.properties.get(name)) {
            (None, Some(added)) => lines.push(format!("+ {event_type}.{name}: {}", describe_property(added))),
            (Some(_), None) => lines.push(format!("- {event_type}.{name}")),
            (Some(old_property), Some(new_property)) if old_property != new_property => lines.push(format!(
                "~ {event_type}.{name}: {} -> {}",
                describe_property(old_property),
                describe_property(new_property)
            )),
            _ => {}
        }
    }
}

fn json_of<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|value| value.as_str().map(str::to_owned)).unwrap_or_default()
}

fn describe_type(spec: &EventTypeSpec) -> String {
    match spec.properties.len() {
        1 => "1 property".to_owned(),
        count => format!("{count} properties"),
    }
}

/// A property on one line: its type, then each constraint set.
pub fn describe_property(property: &PropertySpec) -> String {
    let mut parts = vec![property.value_type.as_str().to_owned()];
    if property.required {
        parts.push("required".into());
    }
    if let Some(values) = &property.allowed_values {
        parts.push(format!("enum {}", values.join("|")));
    }
    match (property.minimum, property.maximum) {
        (Some(minimum), Some(maximum)) => parts.push(format!("{minimum} to {maximum}")),
        (Some(minimum), None) => parts.push(format!(">= {minimum}")),
        (None, Some(maximum)) => parts.push(format!("<= {maximum}")),
        (None, None) => {}
    }
    if let Some(length) = property.max_length {
        parts.push(format!("max_length {length}"));
    }
    if let Some(pattern) = &property.pattern {
        parts.push(format!("pattern {pattern}"));
    }
    if property.description.is_some() {
        parts.push("described".into());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_listed_one_per_line_in_name_order() {
        let old = PlanDocument::parse(
            r#"{"mode": "warn", "event_types": {
                "purchase": {"properties": {"price": {"type": "number"}, "coupon": {"type": "string"}}},
                "signup": {}
            }}"#,
        )
        .unwrap();
        let new = PlanDocument::parse(
            r#"{"mode": "enforce", "undeclared_properties": "reject", "event_types": {
                "purchase": {"properties": {"price": {"type": "number", "required": true, "minimum": 0},
                                            "currency": {"type": "string", "enum": ["EUR", "USD"]}}},
                "view": {"properties": {"path": {"type": "string"}}}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            diff(&old, &new),
            [
                "~ mode: warn -> enforce",
                "~ undeclared_properties: warn -> reject",
                "- purchase.coupon",
                "+ purchase.currency: string, enum EUR|USD",
                "~ purchase.price: number -> number, required, >= 0",
                "- signup",
                "+ view (1 property)",
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }
}
