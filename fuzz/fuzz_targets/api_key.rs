//! API-key parsing (`hourglass_core::api_key`), as every call's `authorization` header and `keys revoke`
//! reach it: any string a client sends.
//!
//! Input: the bytes, as the header's text (tonic hands the authenticator only visible ASCII, but the
//! parser takes any `&str`). Properties: parsing returns a key or a typed error, never panics; a key that
//! parses is the string itself, its id parses as a key id and is its prefix, and changing any one of its
//! characters to another letter or digit fails the checksum (or the shape).

#![no_main]

use hourglass_core::api_key::{ApiKey, KEY_LENGTH, KEY_PREFIX, KeyId, MalformedKey};
use libfuzzer_sys::fuzz_target;

const ALPHANUMERIC: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = KeyId::parse(text);
    let Ok(key) = ApiKey::parse(text) else { return };
    assert_eq!(key.expose_secret(), text);
    assert_eq!(text.len(), KEY_LENGTH);
    let id = key.id();
    assert!(text.starts_with(id.as_str()));
    assert_eq!(KeyId::parse(id.as_str()), Ok(id.clone()));
    assert!(!format!("{key:?}").contains(&text[id.as_str().len()..]), "Debug hides the secret");

    for position in KEY_PREFIX.len()..KEY_LENGTH {
        if text.as_bytes()[position] == b'_' {
            continue;
        }
        for &replacement in ALPHANUMERIC {
            if replacement == text.as_bytes()[position] {
                continue;
            }
            let mut typo = text.as_bytes().to_vec();
            typo[position] = replacement;
            let typo = String::from_utf8(typo).expect("ASCII");
            assert_eq!(ApiKey::parse(&typo), Err(MalformedKey::Checksum), "{position}: one character changed");
        }
    }
});
