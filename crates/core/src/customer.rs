//! Customer identifiers.

use std::fmt;
use std::sync::Arc;

/// The longest customer id accepted, in bytes.
pub const MAX_CUSTOMER_ID_BYTES: usize = 64;

/// A customer's identifier: 1 to 64 characters of `a-z`, `0-9`, `-` and `_`, starting with a letter or
/// digit. Restricted so it is safe in Kafka keys, CQL partition keys, metric labels and file names.
///
/// Cheap to clone: it is shared by every batch of a stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CustomerId(Arc<str>);

/// Why a string is not a customer id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid customer id {value:?}: expected 1 to {MAX_CUSTOMER_ID_BYTES} characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
)]
pub struct InvalidCustomerId {
    value: String,
}

impl CustomerId {
    /// Parses and validates a customer id.
    pub fn new(value: &str) -> Result<Self, InvalidCustomerId> {
        let valid_characters = value
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_');
        let valid_start = value.bytes().next().is_some_and(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
        if value.len() > MAX_CUSTOMER_ID_BYTES || !valid_characters || !valid_start {
            return Err(InvalidCustomerId { value: value.to_owned() });
        }
        Ok(Self(Arc::from(value)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CustomerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Debug for CustomerId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "CustomerId({})", &self.0)
    }
}

impl std::str::FromStr for CustomerId {
    type Err = InvalidCustomerId;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_slugs() {
        for value in ["acme", "a", "acme-eu_2", "0start"] {
            assert_eq!(CustomerId::new(value).unwrap().as_str(), value);
        }
    }

    #[test]
    fn rejects_everything_else() {
        let too_long = "a".repeat(MAX_CUSTOMER_ID_BYTES + 1);
        for value in ["", "Acme", "-acme", "_acme", "ac me", "acme/eu", "é", too_long.as_str()] {
            assert!(CustomerId::new(value).is_err(), "{value:?} should be rejected");
        }
    }
}
