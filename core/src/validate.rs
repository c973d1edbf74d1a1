//! Input validation at the contract boundary: every rule of the limits module is enforced here,
//! before anything reaches a backend.

use crate::error::StorageError;
use crate::limits::{MAX_NAMESPACE_BYTES, MAX_TTL};
use std::time::Duration;

/// Checks a namespace name against `[a-z0-9][a-z0-9._-]{0,62}`.
pub fn namespace(name: &str) -> Result<(), StorageError> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err(StorageError::invalid("namespace", "must not be empty"));
    };
    if bytes.len() > MAX_NAMESPACE_BYTES {
        return Err(StorageError::invalid(
            "namespace",
            format!(
                "is {} bytes long; at most {MAX_NAMESPACE_BYTES} allowed",
                bytes.len()
            ),
        ));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(StorageError::invalid(
            "namespace",
            "must start with a lowercase ASCII letter or a digit",
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(StorageError::invalid(
            "namespace",
            format!("contains {bad:?}; only a-z, 0-9, '.', '_' and '-' are allowed"),
        ));
    }
    Ok(())
}

/// Checks a key: 1 to `max_bytes` bytes of UTF-8 without control characters.
pub fn key(key: &str, max_bytes: usize) -> Result<(), StorageError> {
    if key.is_empty() {
        return Err(StorageError::invalid("key", "must not be empty"));
    }
    if key.len() > max_bytes {
        return Err(StorageError::invalid(
            "key",
            format!("is {} bytes long; at most {max_bytes} allowed", key.len()),
        ));
    }
    no_control_characters("key", key)
}

/// Checks a list prefix: like a key, but may be empty (no filter).
pub fn prefix(prefix: &str, max_bytes: usize) -> Result<(), StorageError> {
    if prefix.len() > max_bytes {
        return Err(StorageError::invalid(
            "prefix",
            format!(
                "is {} bytes long; at most {max_bytes} allowed",
                prefix.len()
            ),
        ));
    }
    no_control_characters("prefix", prefix)
}

fn no_control_characters(field: &'static str, text: &str) -> Result<(), StorageError> {
    match text.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(StorageError::invalid(
            field,
            format!(
                "contains the control character U+{:04X} at byte {at}",
                u32::from(c)
            ),
        )),
        None => Ok(()),
    }
}

/// Checks a page size: 1 to `max`.
pub fn page_size(limit: u32, max: u32) -> Result<(), StorageError> {
    if limit == 0 || limit > max {
        return Err(StorageError::invalid(
            "limit",
            format!("is {limit}; must be between 1 and {max}"),
        ));
    }
    Ok(())
}

/// Checks a time to live: at least 1 ms, at most [`MAX_TTL`].
pub fn ttl(ttl: Duration) -> Result<(), StorageError> {
    if ttl < Duration::from_millis(1) || ttl > MAX_TTL {
        return Err(StorageError::invalid(
            "ttl-ms",
            format!(
                "is {} ms; must be between 1 and {} ms",
                ttl.as_millis(),
                MAX_TTL.as_millis()
            ),
        ));
    }
    Ok(())
}

/// Checks that `text` is one JSON document of at most `max_bytes` bytes, nesting at most
/// `max_depth` levels, that PostgreSQL's `jsonb` can store and return within the same limit: no
/// `\u0000`, no unpaired surrogate escape, numbers within a double's range, and the document
/// still at most `max_bytes` once its numbers are written out in full (`jsonb` returns `1e300`
/// as 301 digits).
pub fn json(
    field: &'static str,
    text: &str,
    max_bytes: usize,
    max_depth: usize,
) -> Result<(), StorageError> {
    if text.len() > max_bytes {
        return Err(StorageError::invalid(
            field,
            format!("is {} bytes long; at most {max_bytes} allowed", text.len()),
        ));
    }
    // Depth first: it is a cheap scan, and serde_json stops at its own (deeper) recursion limit.
    let growth = scan_json_text(field, text, max_depth)?;
    if text.len() + growth > max_bytes {
        return Err(StorageError::invalid(
            field,
            format!(
                "reads back as {} bytes once its numbers are written out in full; at most {max_bytes} allowed",
                text.len() + growth
            ),
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| StorageError::invalid(field, format!("is not valid JSON: {e}")))?;
    Ok(())
}

/// Measures nesting depth outside strings, checks every number and the escapes inside strings,
/// and returns by how many bytes the numbers grow when written out in full. Runs before the JSON
/// parser, so it must tolerate malformed input (the parser reports that).
fn scan_json_text(
    field: &'static str,
    text: &str,
    max_depth: usize,
) -> Result<usize, StorageError> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut growth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'\\' => match unicode_escape(bytes, i) {
                    Some(0) => {
                        return Err(StorageError::invalid(
                            field,
                            "contains the escape \\u0000, which cannot be stored",
                        ));
                    }
                    // A high surrogate must be followed by the escape of a low one.
                    Some(high @ 0xD800..=0xDBFF) => {
                        match unicode_escape(bytes, i + 6) {
                            Some(0xDC00..=0xDFFF) => i += 11, // both escapes
                            _ => return Err(lone_surrogate(field, high)),
                        }
                    }
                    Some(low @ 0xDC00..=0xDFFF) => return Err(lone_surrogate(field, low)),
                    Some(_) => i += 5, // `\uXXXX`
                    None => i += 1,    // a one-character escape (or a malformed one)
                },
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max_depth {
                        return Err(StorageError::invalid(
                            field,
                            format!("nests deeper than {max_depth} levels"),
                        ));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                b'-' | b'0'..=b'9' => {
                    let len = bytes[i..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit() || b"+-.eE".contains(b))
                        .count();
                    growth += check_number(field, &text[i..i + len])?.saturating_sub(len);
                    i += len;
                    continue;
                }
                _ => {}
            }
        }
        i += 1;
    }
    Ok(growth)
}

/// The code unit of a `\\uXXXX` escape starting at `at`, if there is one.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<u32> {
    let escape = bytes.get(at..at + 6)?;
    if escape[..2] != *b"\\u" {
        return None;
    }
    let hex = std::str::from_utf8(&escape[2..]).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// A surrogate escape without its pair encodes no character; `jsonb` refuses it, and an engine
/// that stored it would return text no JSON parser accepts.
fn lone_surrogate(field: &'static str, unit: u32) -> StorageError {
    StorageError::invalid(
        field,
        format!(
            "contains the escape \\u{unit:04x}, half of a surrogate pair without the other half"
        ),
    )
}

/// Largest written exponent accepted in a number (`1e308`): the double range.
const MAX_EXPONENT: i64 = 308;

/// Most digits after the decimal point PostgreSQL's `numeric` (and so `jsonb`) holds.
const MAX_FRACTION_DIGITS: i64 = 16_383;

/// Checks one number token and returns its length as `jsonb` writes it back (all digits, no
/// exponent). Refuses numbers outside the range of a double — JavaScript (the iframe SDK) and
/// most JSON libraries cannot hold them, and `jsonb` would write `1e131071` back as 131,072
/// digits — and numbers with more fraction digits than `numeric` holds. Malformed tokens are
/// left to the JSON parser, which reports them.
fn check_number(field: &'static str, token: &str) -> Result<usize, StorageError> {
    let refuse =
        |why: &str| StorageError::invalid(field, format!("has the number {token:.40}…: {why}"));
    let out_of_range = || {
        refuse(&format!(
            "numbers must be in the range of a double, written with exponents up to ±{MAX_EXPONENT}"
        ))
    };
    let unsigned = token.strip_prefix('-').unwrap_or(token);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        None => (unsigned, 0),
        Some((mantissa, written)) => {
            let digits = written
                .trim_start_matches(['+', '-'])
                .trim_start_matches('0');
            let magnitude = match digits.len() {
                0 => 0,
                1..=3 => digits.parse::<i64>().unwrap_or(0),
                _ => return Err(out_of_range()),
            };
            if magnitude > MAX_EXPONENT {
                return Err(out_of_range());
            }
            let negative = written.starts_with('-');
            (mantissa, if negative { -magnitude } else { magnitude })
        }
    };
    if token.parse::<f64>().is_ok_and(f64::is_infinite) {
        return Err(out_of_range());
    }
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let integer_digits = (integer.len() as i64 + exponent).max(1);
    let fraction_digits = (fraction.len() as i64 - exponent).max(0);
    if fraction_digits > MAX_FRACTION_DIGITS {
        return Err(refuse(&format!(
            "at most {MAX_FRACTION_DIGITS} digits after the decimal point can be stored"
        )));
    }
    let point = usize::from(fraction_digits > 0);
    Ok(usize::from(token.starts_with('-'))
        + integer_digits as usize
        + point
        + fraction_digits as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{MAX_JSON_DEPTH as DEPTH, MAX_KEY_BYTES as KEY, MAX_PAGE_SIZE as PAGE};

    fn field_of(e: StorageError) -> &'static str {
        match e {
            StorageError::InvalidInput { field, .. } => field,
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn namespaces() {
        for ok in ["a", "0", "orders", "a.b_c-d", &"a".repeat(63)] {
            namespace(ok).unwrap();
        }
        for bad in ["", "A", "-a", ".a", "a b", "a/b", "é", &"a".repeat(64)] {
            assert_eq!(
                field_of(namespace(bad).unwrap_err()),
                "namespace",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys() {
        key("k", KEY).unwrap();
        key(&"k".repeat(512), KEY).unwrap();
        key("ünïcødé/%_\\", KEY).unwrap();
        key(&"é".repeat(256), KEY).unwrap(); // 512 bytes
        assert!(key(&"é".repeat(257), KEY).is_err()); // 514 bytes
        for bad in ["", "a\u{0}b", "tab\t", "del\u{7f}", "c1\u{85}"] {
            assert_eq!(field_of(key(bad, KEY).unwrap_err()), "key", "{bad:?}");
        }
        let long = "k".repeat(513);
        let msg = key(&long, KEY).unwrap_err().to_string();
        assert!(msg.contains("513 bytes"), "{msg}");
    }

    #[test]
    fn json_documents() {
        json("value", r#"{"a":[1,2,{"b":"c"}]}"#, 100, DEPTH).unwrap();
        json("value", "\"just a string\"", 100, DEPTH).unwrap();
        json("value", r#""escaped \" quote [[[""#, 100, DEPTH).unwrap();
        json("value", r#""backslash then u0000: \\u0000""#, 100, DEPTH).unwrap();
        assert!(json("value", "", 100, DEPTH).is_err());
        assert!(json("value", "{", 100, DEPTH).is_err());
        assert!(json("value", "nope", 100, DEPTH).is_err());
        assert!(json("value", "1 2", 100, DEPTH).is_err());
        assert!(json("value", r#""nul \u0000""#, 100, DEPTH).is_err());
        assert!(json("value", "[1]", 2, DEPTH).is_err());
        let deep_ok = format!("{}{}", "[".repeat(32), "]".repeat(32));
        json("value", &deep_ok, 1000, DEPTH).unwrap();
        for ok in [
            "1e308",
            "-1.7976931348623157e308",
            "1E-308",
            "0.000001",
            "-0",
            "12e+0",
        ] {
            json("value", ok, 1000, DEPTH).unwrap();
        }
        for ok in [r#""\ud83d\ude00""#, r#""\u00e9\u0041\\u""#, r#""\\ud800""#] {
            json("value", ok, 100, DEPTH).unwrap();
        }
        for bad in [
            r#""\udddd""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
        ] {
            let message = json("value", bad, 100, DEPTH).unwrap_err().to_string();
            assert!(message.contains("surrogate"), "{bad}: {message}");
        }
        // Digits after the point beyond what `numeric` holds, written out or by exponent.
        let long_fraction = format!("1.{}", "0".repeat(16_384));
        assert!(json("value", &long_fraction, 1 << 20, DEPTH).is_err());
        let shifted = format!("0.{}1e-308", "0".repeat(16_076));
        assert!(json("value", &shifted, 1 << 20, DEPTH).is_err());
        json(
            "value",
            &format!("1.{}", "0".repeat(16_383)),
            1 << 20,
            DEPTH,
        )
        .unwrap();
        // Small text that reads back large is measured as it reads back.
        let zeros = format!("[{}]", vec!["0e-308"; 1000].join(","));
        let message = json("value", &zeros, 256 * 1024, DEPTH)
            .unwrap_err()
            .to_string();
        assert!(message.contains("reads back as"), "{message}");
        json(
            "value",
            &format!("[{}]", ["0e-308"; 10].join(",")),
            4000,
            DEPTH,
        )
        .unwrap();
        assert!(json("value", "[1e3]", 6, DEPTH).is_ok()); // "[1000]" is 6 bytes…
        assert!(json("value", "[1e4]", 6, DEPTH).is_err()); // …"[10000]" is 7
        // Outside a double's range: refused before PostgreSQL would expand them.
        let huge_integer = "9".repeat(400);
        for bad in [
            "1e309",
            "-1e309",
            "1e-309",
            "1e131072",
            "[1e0009999]",
            &huge_integer,
        ] {
            let message = json("value", bad, 1000, DEPTH).unwrap_err().to_string();
            assert!(message.contains("range of a double"), "{bad}: {message}");
        }
        let too_deep = format!("{}{}", "[".repeat(33), "]".repeat(33));
        let msg = json("value", &too_deep, 1000, DEPTH)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("deeper than 32"), "{msg}");
    }

    #[test]
    fn ttls_and_pages() {
        ttl(Duration::from_millis(1)).unwrap();
        assert!(ttl(Duration::ZERO).is_err());
        assert!(ttl(MAX_TTL + Duration::from_secs(1)).is_err());
        page_size(1, PAGE).unwrap();
        page_size(1000, PAGE).unwrap();
        assert!(page_size(0, PAGE).is_err());
        assert!(page_size(1001, PAGE).is_err());
    }
}
