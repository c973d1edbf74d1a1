//! Session tokens at the gateway: verified by `alga-storage-core`'s [`token`](alga_storage_core::token)
//! module (re-exported here), then turned into the [`CallContext`] of the request — so nothing in
//! the URL or body can name a tenant or install.

pub use alga_storage_core::token::{
    CLOCK_LEEWAY, DEFAULT_MAX_LIFETIME, MIN_KEY_BYTES, TokenClaims, TokenError, TokenKey,
    TokenVerifier,
};

use crate::context::CallContext;

impl From<&TokenClaims> for CallContext {
    fn from(claims: &TokenClaims) -> Self {
        let mut ctx = CallContext::new(&claims.tenant, &claims.install)
            .extension(&claims.extension)
            .actor(&claims.sub);
        ctx.grants = claims.caps.clone();
        ctx
    }
}
