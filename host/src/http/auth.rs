//! Session tokens at the gateway: verified by `alga-storage-core`'s [`token`](alga_storage_core::token)
//! module (re-exported here), then turned into the [`CallContext`] of the request — so nothing in
//! the URL or body can name a tenant or install.

pub use alga_storage_core::token::{
    CLOCK_LEEWAY, DEFAULT_MAX_LIFETIME, MIN_KEY_BYTES, TokenClaims, TokenError, TokenKey,
    TokenQuotas, TokenVerifier,
};

use crate::context::CallContext;
use crate::limits::Limits;

/// The context of a request carrying `claims`. The platform mints a session's token knowing the
/// install's plan, so the token may carry the install's quotas (`quotas`) as a Runner's context
/// does; the other limits are the service's `defaults`. The service caps all of them by its
/// maximums.
pub fn context(claims: &TokenClaims, defaults: &Limits) -> CallContext {
    CallContext {
        tenant_id: claims.tenant.clone(),
        install_id: claims.install.clone(),
        extension_id: claims.extension.clone(),
        actor: claims.sub.clone(),
        grants: claims.caps.clone(),
        request_id: None,
        limits: claims.quotas.map(|quotas| Limits {
            max_namespaces: quotas.namespaces,
            max_keys_per_namespace: quotas.keys_per_namespace,
            max_total_bytes: quotas.total_bytes,
            ..*defaults
        }),
    }
}
