//! Who is calling: the per-call context an embedder builds from its own trusted state.

use std::collections::BTreeSet;

use crate::limits::Limits;

/// The capability an install needs for any storage call.
pub const STORAGE_CAPABILITY: &str = "alga.storage";

/// The capability that allows reads only (for users whose role lets them view, not edit).
/// Writes with it alone are refused with `capability-denied`.
pub const STORAGE_READ_CAPABILITY: &str = "alga.storage.read";

/// The caller of a storage operation. Built by the embedder (the Runner's per-instance state or
/// the gateway's verified token), never from guest input: it is what scopes every query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The tenant owning the data; every query filters on it first.
    pub tenant_id: String,
    /// The extension install whose data this is.
    pub install_id: String,
    /// The extension the install is of (recorded in audit rows).
    pub extension_id: String,
    /// Who acts: a user id, `system:…`, or the extension itself (recorded in audit rows).
    pub actor: String,
    /// Capabilities granted to the install by the embedder.
    pub grants: BTreeSet<String>,
    /// Correlates this call with the embedder's request, if it has one.
    pub request_id: Option<String>,
    /// The install's limits, if the embedder sets them; otherwise the service's defaults apply.
    /// Either way they are capped by the service's maximums.
    pub limits: Option<Limits>,
}

impl CallContext {
    /// Whom an instance made for this caller may serve: its tenant, install and extension
    /// (guest memory outlives a request; see [`crate::wasm::StorageCtx::set_call`]).
    pub(crate) fn instance_ids(&self) -> (&str, &str, &str) {
        (&self.tenant_id, &self.install_id, &self.extension_id)
    }

    /// A context for `(tenant_id, install_id)` with no grants; add them with [`Self::grant`].
    pub fn new(tenant_id: impl Into<String>, install_id: impl Into<String>) -> Self {
        let install_id = install_id.into();
        Self {
            tenant_id: tenant_id.into(),
            extension_id: install_id.clone(),
            actor: format!("install:{install_id}"),
            install_id,
            grants: BTreeSet::new(),
            request_id: None,
            limits: None,
        }
    }

    /// Adds a granted capability.
    pub fn grant(mut self, capability: impl Into<String>) -> Self {
        self.grants.insert(capability.into());
        self
    }

    /// Sets the extension id recorded in audit rows.
    pub fn extension(mut self, extension_id: impl Into<String>) -> Self {
        self.extension_id = extension_id.into();
        self
    }

    /// Sets the actor recorded in audit rows.
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Sets the request id recorded in audit rows and logs.
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the install's limits (capped by the service's maximums).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Whether the install holds `capability`.
    pub fn has_grant(&self, capability: &str) -> bool {
        self.grants.contains(capability)
    }
}
