//! Keys, prefixes and namespaces: whatever is accepted obeys the contract's rules.
#![no_main]

use alga_storage_core::limits::MAX_KEY_BYTES;
use alga_storage_core::validate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if validate::key(text, MAX_KEY_BYTES).is_ok() {
        assert!(!text.is_empty() && text.len() <= MAX_KEY_BYTES, "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    if validate::prefix(text, MAX_KEY_BYTES).is_ok() {
        assert!(text.len() <= MAX_KEY_BYTES, "{text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    if validate::namespace(text).is_ok() {
        let bytes = text.as_bytes();
        assert!((1..=63).contains(&bytes.len()), "{text:?}");
        assert!(
            bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit(),
            "{text:?}"
        );
        assert!(
            bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b)),
            "{text:?}"
        );
    }
});
