//! Bounded random-input ("fuzz") runs of the parsers that face untrusted input: keys,
//! namespaces, prefixes, cursors, JSON values and session tokens. Seeded, so a failure
//! reproduces; each target runs a fixed number of cases inside the test command. Properties: no
//! panic, and whatever is accepted satisfies the contract's rules.
//!
//! The coverage-guided cargo-fuzz targets in `fuzz/` (nightly, `scripts/fuzz.sh`) check the same
//! properties and go deeper; these seeded runs are the quick check on the pinned stable toolchain,
//! inside `cargo test`. The generators mix random bytes with mutations of valid inputs so both
//! sides of each check are reached.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alga_storage::http::auth::{TokenClaims, TokenKey, TokenVerifier};
use alga_storage::limits::{MAX_JSON_DEPTH, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use alga_storage::service::{cursor, validate};
use alga_storage_tests::Rng;

const CASES: usize = 20_000;

/// Text generators on top of the shared generator.
trait TextRng {
    fn text(&mut self, max_chars: usize) -> String;
    fn mutate(&mut self, text: &str) -> String;
}

impl TextRng for Rng {
    /// Random text: ASCII, controls, multi-byte characters and the characters that matter to
    /// the parsers.
    fn text(&mut self, max_chars: usize) -> String {
        const SPECIAL: &[char] = &[
            '"', '\\', '{', '}', '[', ']', ',', ':', '%', '_', '.', '-', '/', '\0', '\n', '\u{7f}',
            '\u{200b}', '\u{202e}', 'é', '🦀', 'u', '0', 'a', 'z',
        ];
        let len = self.below(max_chars + 1);
        (0..len)
            .map(|_| match self.below(4) {
                0 => SPECIAL[self.below(SPECIAL.len())],
                1 => char::from_u32(self.below(0x80) as u32).unwrap(),
                2 => char::from_u32(0x80 + self.below(0x2000) as u32).unwrap_or('x'),
                _ => char::from(b'a' + self.below(26) as u8),
            })
            .collect()
    }

    /// `text` with a few characters replaced, inserted or removed.
    fn mutate(&mut self, text: &str) -> String {
        let mut chars: Vec<char> = text.chars().collect();
        for _ in 0..=self.below(3) {
            let at = self.below(chars.len() + 1);
            let replacement = self.text(2);
            match self.below(3) {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => chars.splice(at..at, replacement.chars()).for_each(drop),
                _ if at < chars.len() => chars[at] = replacement.chars().next().unwrap_or('x'),
                _ => {}
            }
        }
        chars.into_iter().collect()
    }
}

#[test]
fn keys_namespaces_and_prefixes() {
    let mut rng = Rng(1);
    for _ in 0..CASES {
        let text = rng.text(40);
        if validate::key(&text, MAX_KEY_BYTES).is_ok() {
            assert!(!text.is_empty() && text.len() <= MAX_KEY_BYTES);
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        if validate::prefix(&text, MAX_KEY_BYTES).is_ok() {
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
        if validate::namespace(&text).is_ok() {
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
    }
}

#[test]
fn cursors() {
    let mut rng = Rng(2);
    for _ in 0..CASES {
        let (ns, prefix) = ("ns", rng.text(4));
        let key = format!("{prefix}{}", rng.text(8));
        let cursor = cursor::encode(ns, &prefix, &key);
        assert_eq!(cursor::decode(&cursor, ns, &prefix).unwrap(), key);
        // Bound to its namespace and prefix.
        assert!(cursor::decode(&cursor, "other", &prefix).is_err());
        if !prefix.is_empty() {
            assert!(
                cursor::decode(&cursor, ns, "").is_err(),
                "bound to its prefix"
            );
        }
        // Garbage and mutations never panic; an accepted mutation stays inside the prefix.
        let garbage = rng.text(60);
        let _ = cursor::decode(&garbage, ns, &prefix);
        let mutated = rng.mutate(&cursor);
        if let Ok(decoded) = cursor::decode(&mutated, ns, &prefix) {
            assert!(
                decoded.starts_with(&prefix),
                "{mutated:?} escaped its prefix"
            );
        }
    }
}

#[test]
fn json_values() {
    let mut rng = Rng(3);
    let seeds = [
        r#"{"a":[1,2,{"b":"c"}],"d":null}"#,
        r#"[[[[[]]]]]"#,
        r#""text with \" and \\ and \u00e9""#,
        r#"{"k":"\u0000"}"#,
        "12.5e3",
    ];
    for i in 0..CASES {
        let text = if i % 2 == 0 {
            let seed = seeds[rng.below(seeds.len())];
            rng.mutate(seed)
        } else {
            rng.text(30)
        };
        if validate::json("value", &text, MAX_VALUE_BYTES, MAX_JSON_DEPTH).is_ok() {
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("accepted but not JSON: {text:?}: {e}"));
            assert!(!parsed.to_string().contains("\\u0000"), "{text:?}");
        }
    }
    // Depth: exactly the limit is accepted, one more refused, far more refused without
    // exhausting the stack.
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    assert!(
        validate::json(
            "value",
            &nested(MAX_JSON_DEPTH),
            MAX_VALUE_BYTES,
            MAX_JSON_DEPTH
        )
        .is_ok()
    );
    assert!(
        validate::json(
            "value",
            &nested(MAX_JSON_DEPTH + 1),
            MAX_VALUE_BYTES,
            MAX_JSON_DEPTH
        )
        .is_err()
    );
    assert!(validate::json("value", &nested(100_000), 1 << 20, MAX_JSON_DEPTH).is_err());
}

#[test]
fn session_tokens() {
    let mut rng = Rng(4);
    let key = TokenKey::new("k", vec![9u8; 32]).unwrap();
    let verifier = TokenVerifier::new(vec![key.clone()], "aud");
    let now = SystemTime::now();
    let iat = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = TokenClaims {
        aud: "aud".into(),
        sub: "u".into(),
        tenant: "t".into(),
        install: "i".into(),
        extension: "e".into(),
        caps: ["alga.storage".to_owned()].into(),
        iat,
        exp: iat + 60,
        nbf: None,
        quotas: None,
    };
    let valid = key.mint(&claims);
    assert!(verifier.verify(&valid, now).is_ok());
    for _ in 0..CASES {
        let mutated = rng.mutate(&valid);
        if mutated != valid {
            // A changed token can only verify if the change left the decoded bytes equal
            // (base64 padding bits); then it must carry the same claims.
            if let Ok(decoded) = verifier.verify(&mutated, now) {
                assert_eq!(*decoded, claims, "{mutated}");
            }
        }
        let _ = verifier.verify(&rng.text(80), now + Duration::from_secs(1));
    }
}
