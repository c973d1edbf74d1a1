//! List cursors: opaque to callers, bound to the namespace and prefix they were issued for.
//!
//! A cursor only names a position (the last key returned). It carries no authority: queries are
//! always scoped by the caller's context and the call's namespace, so a forged cursor can at most
//! move the position within the caller's own listing. Binding it to its namespace and prefix turns
//! a cursor reused elsewhere into a clear `invalid-input` instead of a silently odd page.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::limits::MAX_CURSOR_BYTES;

#[derive(Serialize, Deserialize)]
struct CursorV1 {
    v: u8,
    ns: String,
    prefix: String,
    after: String,
}

/// Encodes the position after `last_key` in a listing of `namespace` with `prefix`.
pub fn encode(namespace: &str, prefix: &str, last_key: &str) -> String {
    let cursor = CursorV1 {
        v: 1,
        ns: namespace.to_owned(),
        prefix: prefix.to_owned(),
        after: last_key.to_owned(),
    };
    let json = serde_json::to_vec(&cursor).expect("a cursor always serialises");
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor for a listing of `namespace` with `prefix`: the key to continue after.
pub fn decode(cursor: &str, namespace: &str, prefix: &str) -> Result<String, StorageError> {
    let malformed = || StorageError::invalid("cursor", "is not a cursor returned by list");
    if cursor.len() > MAX_CURSOR_BYTES {
        return Err(malformed());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| malformed())?;
    let decoded: CursorV1 = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    if decoded.v != 1 {
        return Err(malformed());
    }
    if decoded.ns != namespace || decoded.prefix != prefix {
        return Err(StorageError::invalid(
            "cursor",
            "was issued for a different namespace or prefix",
        ));
    }
    // A list only ever issues positions inside its prefix; anything else was forged. (The
    // page query is bounded by the prefix anyway; this refuses the forgery outright.)
    if !decoded.after.starts_with(prefix) {
        return Err(malformed());
    }
    Ok(decoded.after)
}

/// The smallest string greater than every string starting with `prefix`, in byte order; `None`
/// when no such bound exists (every character is U+10FFFF). UTF-8 byte order is code point
/// order, so incrementing the last character that can be incremented gives the bound.
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) + 1 {
            0xD800 => Some('\u{E000}'),
            n => char::from_u32(n),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = encode("ns", "p/", "p/key");
        assert_eq!(decode(&c, "ns", "p/").unwrap(), "p/key");
    }

    #[test]
    fn longest_issued_cursor_round_trips() {
        // Found by the `cursor` fuzz target: escaping doubles `"` and `\`, so a limit sized for
        // plain keys refused the cursors of such keys.
        use crate::limits::{MAX_KEY_BYTES, MAX_NAMESPACE_BYTES};
        let namespace = "n".repeat(MAX_NAMESPACE_BYTES);
        let key = "\"".repeat(MAX_KEY_BYTES);
        let c = encode(&namespace, &key, &key);
        assert_eq!(decode(&c, &namespace, &key).unwrap(), key);
    }

    #[test]
    fn bound_to_namespace_and_prefix() {
        let c = encode("ns", "", "k");
        assert!(decode(&c, "other", "").is_err());
        assert!(decode(&c, "ns", "k").is_err());
    }

    #[test]
    fn forged() {
        for bad in ["", "!!!", "bm90IGpzb24", &"A".repeat(5000)] {
            let e = decode(bad, "ns", "").unwrap_err();
            assert!(matches!(
                e,
                StorageError::InvalidInput {
                    field: "cursor",
                    ..
                }
            ));
        }
    }

    #[test]
    fn successors() {
        assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_successor("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_successor("\u{10FFFF}"), None);
        assert_eq!(prefix_successor(""), None);
        // Every string with the prefix sorts below the successor, byte-wise.
        let s = prefix_successor("é").unwrap();
        assert!("é\u{10FFFF}\u{10FFFF}".as_bytes() < s.as_bytes());
    }
}
