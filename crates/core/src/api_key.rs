//! API keys: `hgk_<key id>_<secret><checksum>`.
//!
//! - `hgk_` is a fixed, recognisable prefix, so secret scanners (and people) spot a leaked key.
//! - The key id (8 base62 characters) is public: it names the key in listings and in `keys revoke`.
//! - The secret is 32 base62 characters (~190 bits) from the OS random generator.
//! - The checksum is the CRC-32 of everything before it, as 6 base62 characters, so a scanner can
//!   tell a real key from a random string offline, and a mistyped key is refused without a database
//!   look-up.
//!
//! Only the SHA-256 of the whole key is stored. A fast hash is right here: the secret's entropy, not the
//! hash's cost, is what makes guessing hopeless.

use std::fmt;

use rand::Rng;
use sha2::{Digest, Sha256};

/// The prefix every Hourglass API key starts with.
pub const KEY_PREFIX: &str = "hgk_";
const KEY_ID_CHARS: usize = 8;
const SECRET_CHARS: usize = 32;
const CHECKSUM_CHARS: usize = 6;
/// The length of every key, in characters.
pub const KEY_LENGTH: usize = KEY_PREFIX.len() + KEY_ID_CHARS + 1 + SECRET_CHARS + CHECKSUM_CHARS;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// What a key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Sending events to the collector.
    Ingest,
    /// Reading metrics from the query service.
    Query,
    /// Operating on a customer's data: erasure requests (the admin service).
    Admin,
}

impl Scope {
    /// The scope's name as stored and as typed on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingest => "ingest",
            Scope::Query => "query",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// An unknown scope name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown scope {0:?}: expected \"ingest\", \"query\" or \"admin\"")]
pub struct UnknownScope(String);

impl std::str::FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "ingest" => Ok(Scope::Ingest),
            "query" => Ok(Scope::Query),
            "admin" => Ok(Scope::Admin),
            other => Err(UnknownScope(other.to_owned())),
        }
    }
}

/// Why a string is not a well-formed API key. The message never contains the string itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MalformedKey {
    /// The string does not have a key's shape.
    #[error("not an Hourglass API key: expected {KEY_LENGTH} characters starting with {KEY_PREFIX:?}")]
    Shape,
    /// The shape is right but the checksum does not match: a typo or a truncated copy.
    #[error("API key checksum mismatch: the key was mistyped or truncated")]
    Checksum,
}

/// A whole API key, secret included. Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

/// The public identifier of a key: its prefix and key id, e.g. `hgk_3kTq9ZbX`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyId(String);

/// The SHA-256 of a whole key: what the key store holds and looks keys up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl ApiKey {
    /// Generates a new random key.
    pub fn generate() -> Self {
        let mut random = rand::rng();
        let mut key = String::with_capacity(KEY_LENGTH);
        key.push_str(KEY_PREFIX);
        for index in 0..KEY_ID_CHARS + SECRET_CHARS {
            if index == KEY_ID_CHARS {
                key.push('_');
            }
            key.push(BASE62[random.random_range(0..BASE62.len())] as char);
        }
        let checksum = checksum_chars(&key);
        key.push_str(&checksum);
        debug_assert_eq!(key.len(), KEY_LENGTH);
        Self(key)
    }

    /// Parses a key, checking its shape and checksum (no database involved).
    pub fn parse(value: &str) -> Result<Self, MalformedKey> {
        let body_length = KEY_LENGTH - CHECKSUM_CHARS;
        let separator_at = KEY_PREFIX.len() + KEY_ID_CHARS;
        let well_shaped = value.len() == KEY_LENGTH
            && value.starts_with(KEY_PREFIX)
            && value.as_bytes()[separator_at] == b'_'
            && value.as_bytes()[KEY_PREFIX.len()..]
                .iter()
                .enumerate()
                .all(|(offset, byte)| offset + KEY_PREFIX.len() == separator_at || byte.is_ascii_alphanumeric());
        if !well_shaped {
            return Err(MalformedKey::Shape);
        }
        if checksum_chars(&value[..body_length]) != value[body_length..] {
            return Err(MalformedKey::Checksum);
        }
        Ok(Self(value.to_owned()))
    }

    /// The whole key, to show once to its owner.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        KeyId(self.0[..KEY_PREFIX.len() + KEY_ID_CHARS].to_owned())
    }

    /// The hash the key store holds.
    pub fn hash(&self) -> KeyHash {
        KeyHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "ApiKey({}_…)", self.id().as_str())
    }
}

impl KeyId {
    /// Parses a key id as printed by `keys create` / `keys list`.
    pub fn parse(value: &str) -> Result<Self, MalformedKey> {
        let well_shaped = value.len() == KEY_PREFIX.len() + KEY_ID_CHARS
            && value.starts_with(KEY_PREFIX)
            && value.as_bytes()[KEY_PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric);
        if well_shaped { Ok(Self(value.to_owned())) } else { Err(MalformedKey::Shape) }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "KeyHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// The CRC-32 of `body` as exactly six base62 digits (62^6 > 2^32).
fn checksum_chars(body: &str) -> String {
    let mut remaining = u64::from(crc32fast::hash(body.as_bytes()));
    let mut digits = [b'0'; CHECKSUM_CHARS];
    for digit in digits.iter_mut().rev() {
        *digit = BASE62[(remaining % 62) as usize];
        remaining /= 62;
    }
    String::from_utf8(digits.to_vec()).expect("base62 digits are ascii")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_are_unique() {
        let first = ApiKey::generate();
        let second = ApiKey::generate();
        assert_ne!(first, second);
        assert_eq!(ApiKey::parse(first.expose_secret()).unwrap(), first);
        assert!(first.expose_secret().starts_with(KEY_PREFIX));
        assert_eq!(first.expose_secret().len(), KEY_LENGTH);
        assert_eq!(KeyId::parse(first.id().as_str()).unwrap(), first.id());
        assert_ne!(first.hash(), second.hash());
    }

    #[test]
    fn a_typo_fails_the_checksum() {
        let key = ApiKey::generate();
        let mut typo = key.expose_secret().as_bytes().to_vec();
        let position = KEY_LENGTH - CHECKSUM_CHARS - 3;
        typo[position] = if typo[position] == b'a' { b'b' } else { b'a' };
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(ApiKey::parse(&typo), Err(MalformedKey::Checksum));
    }

    #[test]
    fn wrong_shapes_are_refused() {
        let key = ApiKey::generate();
        let secret = key.expose_secret();
        for candidate in
            ["", "hgk_", &secret[..KEY_LENGTH - 1], &secret.replacen("hgk_", "ghp_", 1), &secret.replacen('_', "-", 2)]
        {
            assert_eq!(ApiKey::parse(candidate), Err(MalformedKey::Shape), "{candidate:?}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose_secret()[20..]));
        assert!(shown.contains(key.id().as_str()));
    }
}
