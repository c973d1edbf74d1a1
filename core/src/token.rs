//! Session tokens of iframe UIs: compact JWS (HS256) tokens minted by the platform and verified
//! by the gateway. The host turns verified claims into the call context of the request; nothing
//! in the URL or body can name a tenant or install.
//!
//! The format is plain JWT so the platform can mint tokens with any JWT library: header
//! `{"alg":"HS256","typ":"JWT","kid":…}`, claims [`TokenClaims`]. Several keys are accepted at
//! once (rotation): the `kid` picks one; without `kid` each key is tried.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Shortest accepted signing key: 256 bits, the HMAC-SHA256 block security.
pub const MIN_KEY_BYTES: usize = 32;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(5);

/// Longest token lifetime (`exp - iat`) accepted by default: tokens are per iframe session and
/// refreshed by the host page.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// The claims of a session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Audience: must equal the gateway's configured audience.
    pub aud: String,
    /// Actor (user id) the session acts for; recorded in audit rows.
    pub sub: String,
    /// Tenant owning the data.
    pub tenant: String,
    /// Extension install whose data the iframe reaches.
    pub install: String,
    /// Extension of the install.
    pub extension: String,
    /// Granted capabilities (`alga.storage`, or `alga.storage.read` for read-only sessions).
    pub caps: BTreeSet<String>,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The install's quotas, from the platform's plan for it; without them the gateway's
    /// defaults apply. Either way capped by the gateway's maximums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<TokenQuotas>,
}

/// The `quotas` claim: an install's quotas, named as the `quota-exceeded` error names them.
/// All three are required, so a token never mixes a plan's quotas with a gateway's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct TokenQuotas {
    /// Namespaces holding records.
    pub namespaces: u64,
    /// Records per namespace.
    pub keys_per_namespace: u64,
    /// Bytes of keys, values and metadata across the install.
    pub total_bytes: u64,
}

/// One signing/verification key.
#[derive(Clone)]
pub struct TokenKey {
    /// Key id, carried in the token header.
    pub id: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(id: impl Into<String>, secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "a token key must have at least {MIN_KEY_BYTES} bytes, got {}",
                secret.len()
            ));
        }
        Ok(Self {
            id: id.into(),
            secret,
        })
    }

    /// Parses `ID=SECRET` where SECRET is base64url (padding optional), as given on the command
    /// line or in `ALGA_STORAGE_TOKEN_KEYS`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (id, secret) = text
            .split_once('=')
            .ok_or_else(|| "a token key is written ID=BASE64URL-SECRET".to_owned())?;
        if id.is_empty() {
            return Err("a token key needs a non-empty id before '='".into());
        }
        let secret = URL_SAFE_NO_PAD
            .decode(secret.trim_end_matches('='))
            .map_err(|e| format!("token key {id:?}: secret is not base64url: {e}"))?;
        Self::new(id, secret)
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.secret)
            .expect("HMAC takes keys of any length")
    }

    /// Signs `claims` into a token (what the platform does; here for development and tests).
    pub fn mint(&self, claims: &TokenClaims) -> String {
        let header = serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": self.id });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"))
        );
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }
}

/// Why a token was refused. All of these are 401 responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No `Authorization: Bearer …` header.
    #[error("missing bearer token")]
    Missing,
    /// Not three base64url parts of JSON, or an unsupported algorithm.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No configured key verifies the signature.
    #[error("token signature does not verify")]
    BadSignature,
    /// `exp` is in the past.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future, or the lifetime is longer than allowed.
    #[error("token not valid now: {0}")]
    NotValidNow(String),
    /// `aud` is not this gateway's audience.
    #[error("token audience {0:?} is not this gateway's")]
    WrongAudience(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Most tokens whose signature a verifier remembers (a few MiB at most).
const VERIFIED_CAPACITY: usize = 4096;

/// Verifies session tokens against a set of keys and one audience.
///
/// An iframe sends its one session token with every request: a verifier remembers the tokens
/// whose signature and encoding it checked (by their exact text, up to [`VERIFIED_CAPACITY`]),
/// so a repeated token costs a lookup instead of a MAC and two JSON decodings. The claims are
/// checked against the clock on every use. Clones share what they remember.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<TokenKey>,
    audience: String,
    max_lifetime: Duration,
    verified: Arc<Mutex<HashMap<String, Arc<TokenClaims>>>>,
}

impl std::fmt::Debug for TokenVerifier {
    // Remembered tokens are bearer credentials: never printed, only counted.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.keys)
            .field("audience", &self.audience)
            .field("max_lifetime", &self.max_lifetime)
            .field("remembered", &self.remembered().len())
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier accepting tokens signed by any of `keys` for `audience`.
    pub fn new(keys: Vec<TokenKey>, audience: impl Into<String>) -> Self {
        Self {
            keys,
            audience: audience.into(),
            max_lifetime: DEFAULT_MAX_LIFETIME,
            verified: Arc::default(),
        }
    }

    /// Sets the longest accepted lifetime (`exp - iat`).
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime = max_lifetime;
        self
    }

    /// The audience tokens must carry.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Checks signature, algorithm, audience and validity period at `now`. The claims are
    /// shared with what the verifier remembers, not copied for every request.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Arc<TokenClaims>, TokenError> {
        let known = self.remembered().get(token).cloned();
        if let Some(claims) = known {
            self.check_claims(&claims, now)?;
            return Ok(claims);
        }
        let claims = self.verify_signed(token)?;
        self.check_claims(&claims, now)?;
        let claims = Arc::new(claims);
        self.remember(token, &claims, now);
        Ok(claims)
    }

    fn remembered(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<TokenClaims>>> {
        // The map holds no invariant a panicking holder could break.
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a token that verified. When full, it forgets the expired tokens, or all of
    /// them when that frees less than a quarter (so a full map is not scanned at every insert).
    fn remember(&self, token: &str, claims: &Arc<TokenClaims>, now: SystemTime) {
        let mut verified = self.remembered();
        if verified.len() >= VERIFIED_CAPACITY {
            verified.retain(|_, claims| self.check_claims(claims, now).is_ok());
            if verified.len() > VERIFIED_CAPACITY * 3 / 4 {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), Arc::clone(claims));
    }

    /// The token's claims, if its encoding, algorithm and signature are right.
    fn verify_signed(&self, token: &str) -> Result<TokenClaims, TokenError> {
        let mut parts = token.split('.');
        let (Some(header_part), Some(payload_part), Some(signature_part), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "expected three dot-separated parts".into(),
            ));
        };
        let header: Header = decode_json(header_part, "header")?;
        if header.alg != "HS256" {
            return Err(TokenError::Malformed(format!(
                "algorithm {:?} is not accepted (HS256 only)",
                header.alg
            )));
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature_part)
            .map_err(|_| TokenError::Malformed("signature is not base64url".into()))?;
        let signing_input = &token[..header_part.len() + 1 + payload_part.len()];
        let candidates = self
            .keys
            .iter()
            .filter(|k| header.kid.as_ref().is_none_or(|kid| *kid == k.id));
        let mut verified = false;
        for key in candidates {
            let mut mac = key.mac();
            mac.update(signing_input.as_bytes());
            // Constant-time comparison.
            if mac.verify_slice(&signature).is_ok() {
                verified = true;
                break;
            }
        }
        if !verified {
            return Err(TokenError::BadSignature);
        }
        decode_json(payload_part, "claims")
    }

    fn check_claims(&self, claims: &TokenClaims, now: SystemTime) -> Result<(), TokenError> {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let leeway = CLOCK_LEEWAY.as_secs();
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience(claims.aud.clone()));
        }
        if claims.exp.saturating_add(leeway) <= now {
            return Err(TokenError::Expired);
        }
        if claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotValidNow("issued in the future".into()));
        }
        if let Some(nbf) = claims.nbf
            && nbf > now.saturating_add(leeway)
        {
            return Err(TokenError::NotValidNow("not valid before its nbf".into()));
        }
        if claims.exp.saturating_sub(claims.iat) > self.max_lifetime.as_secs() {
            return Err(TokenError::NotValidNow(format!(
                "lifetime exceeds {} s",
                self.max_lifetime.as_secs()
            )));
        }
        for (field, value) in [
            ("tenant", &claims.tenant),
            ("install", &claims.install),
            ("extension", &claims.extension),
            ("sub", &claims.sub),
        ] {
            if value.is_empty() {
                return Err(TokenError::Malformed(format!("claim {field} is empty")));
            }
        }
        // A zero quota would refuse every write with `quota-exceeded`: a session that may not
        // write gets a read-only capability instead, as manifests refuse zero limits.
        if let Some(quotas) = &claims.quotas
            && [
                quotas.namespaces,
                quotas.keys_per_namespace,
                quotas.total_bytes,
            ]
            .contains(&0)
        {
            return Err(TokenError::Malformed("a quota in claim quotas is 0".into()));
        }
        Ok(())
    }
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str, what: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("{what}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> TokenKey {
        TokenKey::new(id, vec![byte; 32]).unwrap()
    }

    fn claims(now: u64) -> TokenClaims {
        TokenClaims {
            aud: "alga-storage".into(),
            sub: "user-1".into(),
            tenant: "t".into(),
            install: "i".into(),
            extension: "e".into(),
            caps: ["alga.storage".to_owned()].into(),
            iat: now,
            exp: now + 300,
            nbf: None,
            quotas: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    /// `token`, issued at `now` for 300 s, is refused after it expired and before its issue.
    fn assert_refused_outside_its_validity(verifier: &TokenVerifier, token: &str, now: u64) {
        assert_eq!(
            verifier.verify(token, at(now + 400)),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            verifier.verify(token, at(now - 60)),
            Err(TokenError::NotValidNow(_))
        ));
    }

    #[test]
    fn remembers_only_tokens_that_verified_and_checks_them_at_every_use() {
        let key = key("k", 1);
        let verifier = TokenVerifier::new(vec![key.clone()], "alga-storage");
        let now = 1_000_000;
        let token = key.mint(&claims(now));
        assert_eq!(
            verifier.verify(&token, at(now + 400)),
            Err(TokenError::Expired)
        );
        assert!(verifier.remembered().is_empty());
        assert_eq!(*verifier.verify(&token, at(now)).unwrap(), claims(now));
        assert_eq!(verifier.remembered().len(), 1);
        // Remembered, yet expired later and not valid before its issue.
        assert_refused_outside_its_validity(&verifier, &token, now);
        // Clones share what was verified.
        let clone = verifier.clone();
        clone
            .verify(&key.mint(&claims(now + 1)), at(now + 1))
            .unwrap();
        assert_eq!(verifier.remembered().len(), 2);
        // A token differing in one character is verified afresh.
        let mut tampered = token.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == 'A' { 'B' } else { 'A' });
        assert!(verifier.verify(&tampered, at(now)).is_err());
        assert_eq!(verifier.remembered().len(), 2);
    }

    /// `payload` signed as `key` mints: for claims the typed struct cannot express.
    fn sign(key: &TokenKey, payload: &serde_json::Value) -> String {
        let header = serde_json::json!({ "alg": "HS256", "kid": key.id });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let mut mac = key.mac();
        mac.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        )
    }

    #[test]
    fn quotas_come_whole_or_the_token_is_refused() {
        let key = key("k", 1);
        let verifier = TokenVerifier::new(vec![key.clone()], "alga-storage");
        let now = 1_000_000;
        let quotas = TokenQuotas {
            namespaces: 2,
            keys_per_namespace: 3,
            total_bytes: 4,
        };
        let payload = serde_json::to_value(TokenClaims {
            quotas: Some(quotas),
            ..claims(now)
        })
        .unwrap();
        assert_eq!(
            payload["quotas"],
            serde_json::json!({"namespaces": 2, "keys-per-namespace": 3, "total-bytes": 4})
        );
        let verified = verifier.verify(&sign(&key, &payload), at(now)).unwrap();
        assert_eq!(verified.quotas, Some(quotas));
        assert_eq!(
            verifier
                .verify(&key.mint(&claims(now)), at(now))
                .unwrap()
                .quotas,
            None
        );

        let mut bad = payload.clone();
        for quotas in [
            serde_json::json!({"namespaces": 2, "total-bytes": 4}),
            serde_json::json!({"namespaces": 2, "keys-per-namespace": 3, "total-bytes": 4, "x": 1}),
            serde_json::json!({"namespaces": -1, "keys-per-namespace": 3, "total-bytes": 4}),
            serde_json::json!({"namespaces": 2, "keysPerNamespace": 3, "total-bytes": 4}),
            serde_json::json!({"namespaces": 2, "keys-per-namespace": 0, "total-bytes": 4}),
            serde_json::json!("unlimited"),
        ] {
            bad["quotas"] = quotas.clone();
            assert!(
                matches!(
                    verifier.verify(&sign(&key, &bad), at(now)),
                    Err(TokenError::Malformed(_))
                ),
                "{quotas}"
            );
        }
    }

    /// `count` tokens of different users, issued at `now`.
    fn distinct_tokens(key: &TokenKey, count: usize, now: u64) -> Vec<String> {
        (0..count)
            .map(|i| {
                key.mint(&TokenClaims {
                    sub: format!("user-{i}"),
                    ..claims(now)
                })
            })
            .collect()
    }

    #[test]
    fn remembers_at_most_its_capacity() {
        let key = key("k", 1);
        let verifier = TokenVerifier::new(vec![key.clone()], "alga-storage");
        let now = 1_000_000;
        let tokens = distinct_tokens(&key, VERIFIED_CAPACITY + 10, now);
        for token in &tokens {
            verifier.verify(token, at(now)).unwrap();
            assert!(verifier.remembered().len() <= VERIFIED_CAPACITY);
        }
        // Full of unexpired tokens, it started over: the last ones are remembered.
        assert_eq!(verifier.remembered().len(), 10);
        // When full, the expired tokens are forgotten, and only those.
        let later = now + 1_000;
        for token in &tokens[..VERIFIED_CAPACITY - 20] {
            verifier.verify(token, at(now)).unwrap();
        }
        let unexpired = distinct_tokens(&key, 10, later);
        for token in &unexpired {
            verifier.verify(token, at(later)).unwrap();
        }
        assert_eq!(verifier.remembered().len(), VERIFIED_CAPACITY);
        verifier
            .verify(&key.mint(&claims(later + 1)), at(later + 1))
            .unwrap();
        let remembered = verifier.remembered();
        assert_eq!(remembered.len(), 11);
        assert!(unexpired.iter().all(|t| remembered.contains_key(t)));
        assert!(!remembered.contains_key(&tokens[0]));
    }

    #[test]
    fn accepts_any_configured_key_and_refuses_others() {
        let old = key("old", 1);
        let new = key("new", 2);
        let verifier = TokenVerifier::new(vec![old.clone(), new.clone()], "alga-storage");
        let now = 1_000_000;
        assert_eq!(
            *verifier.verify(&old.mint(&claims(now)), at(now)).unwrap(),
            claims(now)
        );
        assert!(verifier.verify(&new.mint(&claims(now)), at(now)).is_ok());
        let stranger = key("new", 3);
        assert_eq!(
            verifier.verify(&stranger.mint(&claims(now)), at(now)),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn refuses_tampered_expired_early_long_and_foreign_tokens() {
        let k = key("k", 1);
        let verifier = TokenVerifier::new(vec![k.clone()], "alga-storage");
        let now = 1_000_000;
        let token = k.mint(&claims(now));
        let (head, rest) = token.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let mut other = claims(now);
        other.tenant = "t2".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let forged = format!("{head}.{forged_payload}.{sig}");
        assert_eq!(
            verifier.verify(&forged, at(now)),
            Err(TokenError::BadSignature)
        );
        assert_refused_outside_its_validity(&verifier, &token, now);
        let mut long = claims(now);
        long.exp = now + 2 * 3600;
        assert!(matches!(
            verifier.verify(&k.mint(&long), at(now)),
            Err(TokenError::NotValidNow(_))
        ));
        let mut foreign = claims(now);
        foreign.aud = "billing".into();
        assert_eq!(
            verifier.verify(&k.mint(&foreign), at(now)),
            Err(TokenError::WrongAudience("billing".into()))
        );
    }

    #[test]
    fn refuses_other_algorithms_and_garbage() {
        let k = key("k", 1);
        let verifier = TokenVerifier::new(vec![k.clone()], "alga-storage");
        let now = 1_000_000;
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(now)).unwrap());
        let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert!(matches!(
            verifier.verify(&none, at(now)),
            Err(TokenError::Malformed(_))
        ));
        for garbage in ["", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(matches!(
                verifier.verify(garbage, at(now)),
                Err(TokenError::Malformed(_))
            ));
        }
    }

    #[test]
    fn parses_keys_from_text() {
        let text = format!("k1={}", URL_SAFE_NO_PAD.encode([7u8; 32]));
        assert_eq!(TokenKey::parse(&text).unwrap().id, "k1");
        assert!(TokenKey::parse("k1").is_err());
        assert!(TokenKey::parse("=abc").is_err());
        assert!(
            TokenKey::parse("k1=c2hvcnQ")
                .unwrap_err()
                .contains("at least 32")
        );
    }
}
