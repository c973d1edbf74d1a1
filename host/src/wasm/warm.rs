//! Instances kept warm between requests, for a Runner that reuses them instead of making one
//! per request (the load harness's `wasm-warm` path: `docs/performance.md`).
//!
//! Guest memory outlives a request, so an instance serves the install it was made for and no
//! other: [`WarmInstances::take`] returns only an instance of the caller's tenant and install,
//! already acting for that caller (actor, grants, request id, limits), as
//! [`StorageCtx::set_call`](super::StorageCtx::set_call) allows. Idle instances are bounded
//! per install and in all; past a bound the least recently used goes.
//!
//! Do not put back an instance whose call trapped or was cancelled (its future dropped): its
//! memory may be half-changed. Grants are checked at every storage call, but what the guest
//! kept in memory from an earlier request of its install is its own: reuse trusts an
//! extension within its install, as its storage does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::OtherInstall;
use crate::context::CallContext;

/// An instance that acts for one caller at a time, always of the install it was made for.
pub trait WarmInstance {
    /// The caller the instance acts for.
    fn call(&self) -> &CallContext;

    /// The caller of the instance's next request; one of another tenant, install or extension
    /// is refused ([`StorageCtx::set_call`](super::StorageCtx::set_call)).
    fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall>;
}

/// How many idle instances are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmLimits {
    /// Most idle instances of one install: as many as it had requests at once, up to this.
    pub max_idle_per_install: usize,
    /// Most idle instances of all installs together. Guest memory does not shrink, so at worst
    /// they hold this many times an instance's memory limit (`GuestLimits::max_memory_bytes`).
    pub max_idle: usize,
}

impl WarmLimits {
    /// 4 per install, 1,024 in all.
    pub const DEFAULT: WarmLimits = WarmLimits {
        max_idle_per_install: 4,
        max_idle: 1024,
    };
}

impl Default for WarmLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Idle instances by install. A request takes one (or makes one when there is none) and puts it
/// back when its call ended without a trap.
pub struct WarmInstances<I> {
    limits: WarmLimits,
    idle: Mutex<Idle<I>>,
}

/// A tenant and an install: what an instance may serve.
type InstallKey = (String, String);

struct Idle<I> {
    /// Each install's idle instances with their sequence numbers, in the order they were put
    /// back: the front is the least recently used, the back the most.
    by_install: HashMap<InstallKey, VecDeque<(u64, I)>>,
    /// Every idle instance's sequence number, oldest first, and its install.
    by_age: BTreeMap<u64, InstallKey>,
    next: u64,
}

impl<I> std::fmt::Debug for WarmInstances<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmInstances")
            .field("limits", &self.limits)
            .field("idle", &self.idle())
            .finish()
    }
}

impl<I: WarmInstance> WarmInstances<I> {
    /// No idle instances yet; at most `limits` of them will be kept.
    pub fn new(limits: WarmLimits) -> Self {
        Self {
            limits,
            idle: Mutex::new(Idle {
                by_install: HashMap::new(),
                by_age: BTreeMap::new(),
                next: 0,
            }),
        }
    }

    /// The most recently used idle instance of `call`'s tenant and install, now acting for
    /// `call`; `None` when there is none (make one).
    pub fn take(&self, call: &CallContext) -> Option<I> {
        let key = (call.tenant_id.clone(), call.install_id.clone());
        let mut instance = {
            let mut guard = self.lock();
            let idle = &mut *guard;
            let instances = idle.by_install.get_mut(&key)?;
            let (seq, instance) = instances.pop_back()?;
            if instances.is_empty() {
                idle.by_install.remove(&key);
            }
            idle.by_age.remove(&seq);
            instance
        };
        // Only a caller of another extension under the same install can be refused: the
        // instance runs another extension's code, so it is not this caller's.
        instance.set_call(call.clone()).ok()?;
        Some(instance)
    }

    /// Keeps `instance` for its install's next request. One instance more than before, so at
    /// most one goes past the limits: the install's own least recently used if the install is
    /// over its limit, else the least recently used of any install if the total is over.
    pub fn put_back(&self, instance: I) {
        let key = (
            instance.call().tenant_id.clone(),
            instance.call().install_id.clone(),
        );
        let dropped = {
            let mut idle = self.lock();
            let seq = idle.next;
            idle.next += 1;
            idle.by_age.insert(seq, key.clone());
            let instances = idle.by_install.entry(key.clone()).or_default();
            instances.push_back((seq, instance));
            if instances.len() > self.limits.max_idle_per_install {
                Some(idle.remove_oldest(&key))
            } else if idle.by_age.len() > self.limits.max_idle {
                let (_, oldest) = idle.by_age.first_key_value().expect("over the limit");
                let oldest = oldest.clone();
                Some(idle.remove_oldest(&oldest))
            } else {
                None
            }
        };
        // Dropping an instance frees its store and returns its slot: not under the lock.
        drop(dropped);
    }
}

impl<I> Idle<I> {
    /// Removes the least recently used idle instance of `key`'s install, which has one: the
    /// front, as an install's instances are in age order.
    fn remove_oldest(&mut self, key: &InstallKey) -> I {
        let instances = self.by_install.get_mut(key).expect("an idle install");
        let (seq, instance) = instances
            .pop_front()
            .expect("an idle install has instances");
        if instances.is_empty() {
            self.by_install.remove(key);
        }
        self.by_age.remove(&seq);
        instance
    }
}

impl<I> WarmInstances<I> {
    /// Idle instances, all installs.
    pub fn idle(&self) -> usize {
        self.lock().by_age.len()
    }

    fn lock(&self) -> MutexGuard<'_, Idle<I>> {
        // Under the lock only a broken invariant panics (an `expect` in `remove_oldest`): use
        // the maps as they are.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An instance with a name, to tell which one comes back; when it has a pool, its drop
    /// checks that the pool's lock is free.
    struct Fake {
        call: CallContext,
        name: &'static str,
        pool: Option<Arc<WarmInstances<Fake>>>,
    }

    impl WarmInstance for Fake {
        fn call(&self) -> &CallContext {
            &self.call
        }

        fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall> {
            if call.extension_id != self.call.extension_id {
                return Err(OtherInstall::new(&self.call, &call));
            }
            self.call = call;
            Ok(())
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            if let Some(pool) = &self.pool {
                let free = pool.idle.try_lock().is_ok();
                assert!(free, "{} dropped under the pool's lock", self.name);
            }
        }
    }

    fn fake(tenant: &str, install: &str, name: &'static str) -> Fake {
        Fake {
            call: CallContext::new(tenant, install),
            name,
            pool: None,
        }
    }

    fn limits(max_idle_per_install: usize, max_idle: usize) -> WarmLimits {
        WarmLimits {
            max_idle_per_install,
            max_idle,
        }
    }

    /// Puts back and takes, checking the two maps agree after every step.
    fn put_back(pool: &WarmInstances<Fake>, instance: Fake) {
        pool.put_back(instance);
        assert_consistent(pool);
    }

    /// Takes every idle instance of an install, most recent first.
    fn names(pool: &WarmInstances<Fake>, tenant: &str, install: &str) -> Vec<&'static str> {
        let call = CallContext::new(tenant, install);
        let names = std::iter::from_fn(|| {
            let name = pool.take(&call).map(|f| f.name);
            assert_consistent(pool);
            name
        });
        names.collect()
    }

    /// Every aged instance is idle under its install and the other way round, each install's
    /// in increasing age, none empty.
    fn assert_consistent(pool: &WarmInstances<Fake>) {
        let idle = pool.lock();
        let mut counted = 0;
        for (key, instances) in &idle.by_install {
            assert!(!instances.is_empty(), "{key:?} is empty");
            let seqs: Vec<u64> = instances.iter().map(|(seq, _)| *seq).collect();
            assert!(seqs.is_sorted(), "{key:?}: {seqs:?}");
            for seq in seqs {
                assert_eq!(idle.by_age.get(&seq), Some(key));
                counted += 1;
            }
        }
        assert_eq!(counted, idle.by_age.len());
    }

    #[test]
    fn an_instance_serves_only_its_own_tenant_and_install() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        put_back(&pool, fake("t", "i", "a"));
        assert!(pool.take(&CallContext::new("t", "j")).is_none());
        // The same install id under another tenant is another install.
        assert!(pool.take(&CallContext::new("u", "i")).is_none());
        let reader = CallContext::new("t", "i").actor("user:1").request_id("r-2");
        let taken = pool.take(&reader).unwrap();
        assert_eq!((taken.name, &taken.call), ("a", &reader));
        assert!(pool.take(&reader).is_none());
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_caller_of_another_extension_gets_none_and_the_instance_goes() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        put_back(&pool, fake("t", "i", "a"));
        let other = CallContext::new("t", "i").extension("other");
        assert!(pool.take(&other).is_none());
        assert_eq!(pool.idle(), 0);
        assert_consistent(&pool);
    }

    #[test]
    fn the_most_recently_used_comes_back_first() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        for name in ["a", "b", "c"] {
            put_back(&pool, fake("t", "i", name));
        }
        assert_eq!(names(&pool, "t", "i"), ["c", "b", "a"]);
    }

    #[test]
    fn an_install_keeps_at_most_its_limit_dropping_its_oldest() {
        let pool = WarmInstances::new(limits(2, 10));
        for name in ["a", "b", "c"] {
            put_back(&pool, fake("t", "i", name));
        }
        put_back(&pool, fake("t", "j", "x"));
        assert_eq!(pool.idle(), 3);
        assert_eq!(names(&pool, "t", "i"), ["c", "b"]);
        assert_eq!(names(&pool, "t", "j"), ["x"]);
    }

    #[test]
    fn past_the_total_the_least_recently_used_of_any_install_goes() {
        let pool = WarmInstances::new(limits(4, 3));
        put_back(&pool, fake("t", "i", "i1"));
        put_back(&pool, fake("t", "j", "j1"));
        put_back(&pool, fake("t", "i", "i2"));
        // Taking and putting back makes j1 the most recently used.
        let j1 = pool.take(&CallContext::new("t", "j")).unwrap();
        put_back(&pool, j1);
        put_back(&pool, fake("t", "k", "k1"));
        assert_eq!(pool.idle(), 3);
        assert_eq!(names(&pool, "t", "i"), ["i2"]);
        assert_eq!(names(&pool, "t", "j"), ["j1"]);
        assert_eq!(names(&pool, "t", "k"), ["k1"]);
        assert!(pool.lock().by_install.is_empty());
    }

    #[test]
    fn the_total_can_take_from_the_install_put_back() {
        let pool = WarmInstances::new(limits(4, 2));
        for name in ["a", "b", "c"] {
            put_back(&pool, fake("t", "i", name));
        }
        assert_eq!(names(&pool, "t", "i"), ["c", "b"]);
    }

    #[test]
    fn an_install_over_its_limit_drops_its_own_oldest_not_another_installs() {
        let pool = WarmInstances::new(limits(1, 2));
        put_back(&pool, fake("t", "i", "i1"));
        put_back(&pool, fake("t", "j", "j1"));
        // Both limits are reached; j's own limit is what j2 passes, and i1, older, stays.
        put_back(&pool, fake("t", "j", "j2"));
        assert_eq!(pool.idle(), 2);
        assert_eq!(names(&pool, "t", "i"), ["i1"]);
        assert_eq!(names(&pool, "t", "j"), ["j2"]);
    }

    #[test]
    fn a_limit_of_zero_keeps_nothing() {
        for limits in [limits(0, 10), limits(4, 0), limits(0, 0)] {
            let pool = WarmInstances::new(limits);
            put_back(&pool, fake("t", "i", "a"));
            assert_eq!(pool.idle(), 0, "{limits:?}");
            assert!(pool.take(&CallContext::new("t", "i")).is_none());
            assert!(pool.lock().by_install.is_empty());
        }
    }

    #[test]
    fn instances_are_dropped_outside_the_lock() {
        let pool = Arc::new(WarmInstances::new(limits(1, 1)));
        for name in ["a", "b", "c"] {
            let mut instance = fake("t", "i", name);
            instance.pool = Some(pool.clone());
            // Each put back drops the one before it.
            pool.put_back(instance);
        }
        let last = pool.take(&CallContext::new("t", "i")).unwrap();
        assert_eq!(last.name, "c");
    }
}
