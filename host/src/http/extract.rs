//! Turning a request into service arguments: the verified caller, JSON bodies within a limit,
//! and HTTP preconditions. Every refusal is an [`ApiError`] (problem+json).

use std::convert::Infallible;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::de::DeserializeOwned;

use super::Shared;
use super::problem::ApiError;
use super::request_layer::RequestId;
use crate::context::CallContext;
use crate::error::StorageError;
use crate::http::auth::TokenError;
use crate::model::Precondition;

/// The caller, from a verified bearer token: the only source of tenant and install.
#[derive(Debug)]
pub struct Caller(pub CallContext);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive (RFC 9110 §11.1).
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case("bearer ").then_some(rest)
            })
            .map(str::trim)
            .ok_or(TokenError::Missing)?;
        let claims = state
            .config
            .verifier
            .verify(token, SystemTime::now())
            .inspect_err(|e| tracing::info!(error = %e, "token refused"))?;
        let mut ctx = super::auth::context(&claims, &state.service.limit_bounds().0);
        // Taken, not copied: a request has one caller.
        if let Some(RequestId(id)) = parts.extensions.remove::<RequestId>() {
            ctx.request_id = Some(id);
        }
        let span = tracing::Span::current();
        span.record("tenant", ctx.tenant_id.as_str());
        span.record("install", ctx.install_id.as_str());
        Ok(Caller(ctx))
    }
}

/// A JSON body of type `T`, read within the route's body limit.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(usize::MAX, |l| l.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::BodyTooLarge { limit }
                } else {
                    StorageError::InvalidInput {
                        field: "body",
                        message: rejection.body_text(),
                    }
                    .into()
                }
            })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            StorageError::InvalidInput {
                field: "body",
                message: e.to_string(),
            }
            .into()
        })
    }
}

/// A request's `If-Match` and `If-None-Match` lines, every one, taken out of its headers without
/// the rest: axum's `HeaderMap` extractor would copy every header of every request, and most
/// requests send neither line (then nothing is allocated).
#[derive(Debug)]
pub struct ConditionalHeaders(pub HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for ConditionalHeaders {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let mut conditional = HeaderMap::new();
        for name in [header::IF_MATCH, header::IF_NONE_MATCH] {
            for value in parts.headers.get_all(&name) {
                conditional.append(name.clone(), value.clone());
            }
        }
        Ok(Self(conditional))
    }
}

/// The body limit of a route, recorded so a refusal can name it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// The write precondition of `If-Match: "<rev>"` or `If-None-Match: *`.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, StorageError> {
    let if_match = single_header(headers, header::IF_MATCH.as_str())?;
    let if_none_match = single_header(headers, header::IF_NONE_MATCH.as_str())?;
    match (if_match, if_none_match) {
        (None, None) => Ok(Precondition::None),
        (Some(_), Some(_)) => Err(StorageError::InvalidInput {
            field: "precondition",
            message: "If-Match and If-None-Match exclude each other".into(),
        }),
        (None, Some(value)) if value.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(value)) => Err(StorageError::InvalidInput {
            field: "precondition",
            message: format!("If-None-Match accepts only *, got {value:?}"),
        }),
        (Some(value), None) => value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .and_then(revision_of)
            .map(Precondition::Revision)
            .ok_or_else(|| StorageError::InvalidInput {
                field: "precondition",
                message: format!("If-Match takes one revision ETag such as \"3\", got {value:?}"),
            }),
    }
}

/// Refuses `If-Match` / `If-None-Match` on a route they do not apply to, rather than doing
/// unguarded what the caller meant to guard. `instead` says what to use.
pub fn no_precondition(headers: &HeaderMap, instead: &str) -> Result<(), StorageError> {
    for name in [header::IF_MATCH, header::IF_NONE_MATCH] {
        if headers.contains_key(&name) {
            return Err(StorageError::InvalidInput {
                field: "precondition",
                message: format!("{name} does not apply here: {instead}"),
            });
        }
    }
    Ok(())
}

/// The ETag of a revision.
pub fn etag(revision: u64) -> String {
    format!("\"{revision}\"")
}

/// The revision inside an ETag, as [`etag`] writes it: digits without leading zeros.
fn revision_of(digits: &str) -> Option<u64> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if canonical { digits.parse().ok() } else { None }
}

/// The one value of a header a write takes once; more than one line is refused, not guessed.
fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, StorageError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(StorageError::InvalidInput {
            field: "precondition",
            message: format!("{name} is given more than once; send it once"),
        });
    }
    ascii(name, value).map(Some)
}

fn ascii<'a>(name: &str, value: &'a HeaderValue) -> Result<&'a str, StorageError> {
    value.to_str().map_err(|_| StorageError::InvalidInput {
        field: "precondition",
        message: format!("{name} is not ASCII"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn preconditions_from_headers() {
        assert_eq!(precondition(&headers(&[])), Ok(Precondition::None));
        assert_eq!(
            precondition(&headers(&[("if-none-match", "*")])),
            Ok(Precondition::Absent)
        );
        assert_eq!(
            precondition(&headers(&[("if-match", "\"42\"")])),
            Ok(Precondition::Revision(42))
        );
        for bad in [
            vec![("if-match", "42")],
            vec![("if-match", "*")],
            vec![("if-match", "W/\"1\"")],
            vec![("if-match", "\"1\", \"2\"")],
            vec![("if-match", "\"-1\"")],
            vec![("if-match", "\"99999999999999999999999\"")],
            vec![("if-none-match", "\"1\"")],
            vec![("if-match", "\"1\""), ("if-none-match", "*")],
            vec![("if-match", "\"02\"")],
            vec![("if-match", "\"\"")],
            vec![("if-match", "\"1\""), ("if-match", "\"1\"")],
            vec![("if-none-match", "*"), ("if-none-match", "*")],
        ] {
            assert!(precondition(&headers(&bad)).is_err(), "{bad:?}");
        }
    }
}
