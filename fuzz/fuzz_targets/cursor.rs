//! List cursors. The input is `prefix \n key \n untrusted cursor`: a cursor issued for (namespace, prefix)
//! decodes to its key there and nowhere else, and any cursor text the decoder accepts names a
//! position inside the prefix it is bound to.
#![no_main]

use alga_storage_core::limits::MAX_KEY_BYTES;
use alga_storage_core::{cursor, validate};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let mut parts = text.splitn(3, '\n');
    let prefix = parts.next().unwrap_or_default();
    let suffix = parts.next().unwrap_or_default();
    let untrusted = parts.next().unwrap_or_default();

    // Cursors are issued for valid prefixes and keys only.
    let key = format!("{prefix}{suffix}");
    if validate::prefix(prefix, MAX_KEY_BYTES).is_ok() && validate::key(&key, MAX_KEY_BYTES).is_ok()
    {
        let issued = cursor::encode("ns", prefix, &key);
        assert_eq!(cursor::decode(&issued, "ns", prefix).ok(), Some(key));
        assert!(cursor::decode(&issued, "other", prefix).is_err());
    }

    // The untrusted part as cursor text, and as the JSON inside one (so the fuzzer reaches the
    // checks behind the base64 layer).
    for text in [untrusted.to_owned(), URL_SAFE_NO_PAD.encode(untrusted)] {
        if let Ok(position) = cursor::decode(&text, "ns", prefix) {
            assert!(
                position.starts_with(prefix),
                "{untrusted:?} escaped {prefix:?}"
            );
        }
    }
    if let Some(successor) = cursor::prefix_successor(prefix) {
        assert!(successor.as_str() > prefix, "{prefix:?} -> {successor:?}");
    }
});
