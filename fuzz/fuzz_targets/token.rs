//! Session tokens. The first byte's parity picks the mode (the seeds use `0` and `1`): the rest
//! is either a whole token from outside (which must never verify unless it is correctly signed),
//! or a header and claims that the target signs itself, so the fuzzer reaches the JSON decoding
//! and every claims check behind the signature. Whatever verifies satisfies the audience,
//! lifetime and validity rules.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use alga_storage_core::token::{CLOCK_LEEWAY, DEFAULT_MAX_LIFETIME, TokenKey, TokenVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const SECRET: [u8; 32] = [7; 32];
/// A fixed clock, so a crash reproduces.
const NOW: u64 = 1_800_000_000;

fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&SECRET).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let verifier = TokenVerifier::new(vec![TokenKey::new("k1", SECRET.to_vec()).unwrap()], "aud");
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    let token = if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        text.to_owned()
    } else {
        // Header and claims separated by the first newline; a header is made up if none.
        match rest.iter().position(|&b| b == b'\n') {
            Some(at) => sign(&rest[..at], &rest[at + 1..]),
            None => sign(br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#, rest),
        }
    };
    if let Ok(claims) = verifier.verify(&token, now) {
        let leeway = CLOCK_LEEWAY.as_secs();
        assert_eq!(claims.aud, "aud");
        assert!(claims.exp + leeway > NOW, "expired: {claims:?}");
        assert!(claims.iat <= NOW + leeway, "from the future: {claims:?}");
        assert!(
            claims.nbf.is_none_or(|nbf| nbf <= NOW + leeway),
            "{claims:?}"
        );
        assert!(claims.exp.saturating_sub(claims.iat) <= DEFAULT_MAX_LIFETIME.as_secs());
        assert!(!claims.tenant.is_empty() && !claims.install.is_empty());
    }
});
