//! Instances kept warm between requests, for a Runner that reuses them instead of making one
//! per request (the load harness's `wasm-warm` path: `docs/performance.md`).
//!
//! Guest memory outlives a request, so an instance serves the install it was made for and no
//! other: [`WarmInstances::take`] returns only an instance of the caller's tenant, install and
//! extension, already acting for that caller (actor, grants, request id, limits), as
//! [`StorageCtx::set_call`](super::StorageCtx::set_call) allows. Idle instances are bounded
//! per install and in all; past a bound the least recently used goes.
//!
//! Do not put back an instance whose call trapped or was cancelled (its future dropped): its
//! memory may be half-changed. Grants are checked at every storage call, but what the guest
//! kept in memory from an earlier request of its install is its own: reuse trusts an
//! extension within its install, as its storage does.

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashTable;

use super::OtherInstall;
use crate::context::CallContext;

/// An instance that acts for one caller at a time, always of the install it was made for.
pub trait WarmInstance {
    /// The caller the instance acts for. Read under the pool's lock when it is put back:
    /// return a field.
    fn call(&self) -> &CallContext;

    /// The caller of the instance's next request. [`WarmInstances::take`] passes only callers
    /// of the tenant, install and extension of [`Self::call`], which must be accepted; one of
    /// another is refused ([`StorageCtx::set_call`](super::StorageCtx::set_call)).
    fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall>;
}

/// How many idle instances are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmLimits {
    /// Most idle instances of one install (and extension: an install normally runs one): as
    /// many as it had requests at once, up to this.
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
    /// Hashes a caller's [`CallContext::instance_ids`] to find its install's idle instances.
    hasher: RandomState,
    idle: Mutex<Idle<I>>,
}

/// An idle instance's number: instances put back later have higher ones.
type Seq = u64;

/// The hash of an install's [`CallContext::instance_ids`].
type InstallHash = u64;

/// How many entries beyond twice the idle instances are kept before the entries of installs
/// with none idle are swept.
const SWEEP_SLACK: usize = 64;

struct Idle<I> {
    /// An entry per install, found by hash: a request's look-up copies no id (a copy is an
    /// allocation). An install's entry stays when its last idle instance is taken, as that
    /// instance most likely comes back; the entries with none idle are swept once all entries
    /// exceed twice the idle instances plus [`SWEEP_SLACK`], so each sweep follows more than
    /// half as many takes or evictions as the entries it visits.
    installs: HashTable<IdleOfInstall<I>>,
    /// Every idle instance, oldest first, and its install's hash.
    by_age: BTreeMap<Seq, InstallHash>,
    /// The number of the next instance put back.
    next_seq: Seq,
}

/// The idle instances of one tenant, install and extension (an install normally runs one
/// extension).
struct IdleOfInstall<I> {
    hash: InstallHash,
    tenant_id: String,
    install_id: String,
    extension_id: String,
    /// The idle instances in the order they were put back: the front is the least recently
    /// used, the back the most. Empty while all the install's instances are busy or gone.
    instances: VecDeque<(Seq, I)>,
}

impl<I> IdleOfInstall<I> {
    /// The ids these instances were made for, as [`CallContext::instance_ids`] gives them.
    fn ids(&self) -> (&str, &str, &str) {
        (&self.tenant_id, &self.install_id, &self.extension_id)
    }

    /// Whether these instances may serve `call`.
    fn serves(&self, call: &CallContext) -> bool {
        self.ids() == call.instance_ids()
    }
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
            hasher: RandomState::new(),
            idle: Mutex::new(Idle {
                installs: HashTable::new(),
                by_age: BTreeMap::new(),
                next_seq: 0,
            }),
        }
    }

    /// The most recently used idle instance of `call`'s tenant, install and extension, now
    /// acting for `call`; `Err(call)` when there is none (make one for it).
    ///
    /// # Panics
    /// When the instance's [`WarmInstance::set_call`] refuses a caller of its own tenant,
    /// install and extension (which [`StorageCtx::set_call`](super::StorageCtx::set_call)
    /// never does).
    #[expect(
        clippy::result_large_err,
        reason = "not an error: the caller given back, moved once to make an instance for"
    )]
    pub fn take(&self, call: CallContext) -> Result<I, CallContext> {
        let hash = self.hasher.hash_one(call.instance_ids());
        let idle = self.lock().take(hash, &call);
        // `set_call` is the Runner's code: not under the lock.
        let Some(mut instance) = idle else {
            return Err(call);
        };
        if let Err(refused) = instance.set_call(call) {
            panic!("a warm instance refused a caller of its own ids: {refused}");
        }
        Ok(instance)
    }

    /// Keeps `instance` for its install's next request. One instance more than before, so at
    /// most one goes past the limits: the install's own least recently used if the install is
    /// over its limit, else the least recently used of any install if the total is over.
    pub fn put_back(&self, instance: I) {
        let hash = self.hasher.hash_one(instance.call().instance_ids());
        let dropped = self.lock().put_back(hash, instance, self.limits);
        // Dropping an instance frees its store and returns its slot: not under the lock.
        drop(dropped);
    }
}

impl<I: WarmInstance> Idle<I> {
    /// Keeps `instance`, whose ids hash to `hash`; returns the one it pushed past `limits`, if
    /// any.
    fn put_back(&mut self, hash: InstallHash, instance: I, limits: WarmLimits) -> Option<I> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let call = instance.call();
        let install = self
            .installs
            .entry(hash, |install| install.serves(call), |install| install.hash)
            .or_insert_with(|| IdleOfInstall {
                hash,
                tenant_id: call.tenant_id.clone(),
                install_id: call.install_id.clone(),
                extension_id: call.extension_id.clone(),
                instances: VecDeque::new(),
            })
            .into_mut();
        install.instances.push_back((seq, instance));
        self.by_age.insert(seq, hash);
        let (oldest, its_install) = if install.instances.len() > limits.max_idle_per_install {
            let (its_oldest, _) = install.instances.front().expect("one was just put back");
            (*its_oldest, hash)
        } else if self.by_age.len() > limits.max_idle {
            let (oldest, its_install) = self.by_age.first_key_value().expect("over the limit");
            (*oldest, *its_install)
        } else {
            return None;
        };
        Some(self.remove_front(oldest, its_install))
    }
}

impl<I> Idle<I> {
    /// Takes the most recently used instance that may serve `call`, whose ids hash to `hash`.
    fn take(&mut self, hash: InstallHash, call: &CallContext) -> Option<I> {
        let install = self
            .installs
            .find_mut(hash, |install| install.serves(call))?;
        let (seq, instance) = install.instances.pop_back()?;
        self.by_age.remove(&seq);
        self.sweep_if_mostly_empty();
        Some(instance)
    }

    /// Removes the idle instance numbered `seq` of the install hashed `hash`, which is the
    /// front of that install's instances (its least recently used).
    fn remove_front(&mut self, seq: Seq, hash: InstallHash) -> I {
        let front_is_seq = |install: &IdleOfInstall<I>| {
            let front = install.instances.front();
            front.is_some_and(|(front, _)| *front == seq)
        };
        let install = self.installs.find_mut(hash, front_is_seq);
        let install = install.expect("an idle instance's install");
        let (_, instance) = install.instances.pop_front().expect("found by its front");
        self.by_age.remove(&seq);
        self.sweep_if_mostly_empty();
        instance
    }

    /// Drops the entries of installs with none idle when they are too many ([`SWEEP_SLACK`]).
    fn sweep_if_mostly_empty(&mut self) {
        if self.installs.len() > 2 * self.by_age.len() + SWEEP_SLACK {
            self.installs
                .retain(|install| !install.instances.is_empty());
        }
    }
}

impl<I> WarmInstances<I> {
    /// Idle instances, all installs.
    pub fn idle(&self) -> usize {
        self.lock().by_age.len()
    }

    fn lock(&self) -> MutexGuard<'_, Idle<I>> {
        // Under the lock only a broken invariant (an `expect` in `Idle`'s methods) or an
        // instance's `call` panics: use the maps as they are.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// An instance with a name, to tell which one comes back; when it has a pool, its drop
    /// checks that the pool's lock is free. With `refuse`, it breaks `set_call`'s rule.
    struct Fake {
        call: CallContext,
        name: &'static str,
        pool: Option<Arc<WarmInstances<Fake>>>,
        refuse: bool,
        /// Tells instances apart where names would not do (`matches_a_simple_model`).
        id: usize,
    }

    impl WarmInstance for Fake {
        fn call(&self) -> &CallContext {
            &self.call
        }

        fn set_call(&mut self, call: CallContext) -> Result<(), OtherInstall> {
            if self.call.instance_ids() != call.instance_ids() || self.refuse {
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
            refuse: false,
            id: 0,
        }
    }

    fn limits(max_idle_per_install: usize, max_idle: usize) -> WarmLimits {
        WarmLimits {
            max_idle_per_install,
            max_idle,
        }
    }

    /// Puts back, checking the two maps agree after.
    fn put_back(pool: &WarmInstances<Fake>, instance: Fake) {
        pool.put_back(instance);
        assert_consistent(pool);
    }

    /// Takes every idle instance of an install, most recent first.
    fn names(pool: &WarmInstances<Fake>, tenant: &str, install: &str) -> Vec<&'static str> {
        let names = std::iter::from_fn(|| {
            let name = pool.take(CallContext::new(tenant, install)).ok();
            assert_consistent(pool);
            name.map(|f| f.name)
        });
        names.collect()
    }

    /// Every aged instance is idle under its install and the other way round, each install's
    /// in increasing age, each install under the hash of its own ids, none twice, and entries
    /// with none idle within the sweep's bound.
    fn assert_consistent(pool: &WarmInstances<Fake>) {
        let idle = pool.lock();
        let mut counted = 0;
        for install in &idle.installs {
            let ids = install.ids();
            let seqs: Vec<Seq> = install.instances.iter().map(|(seq, _)| *seq).collect();
            assert!(seqs.is_sorted(), "{ids:?}: {seqs:?}");
            for (seq, instance) in &install.instances {
                let serves = install.serves(&instance.call);
                assert!(serves, "{ids:?} holds another's instance");
                assert_eq!(idle.by_age.get(seq), Some(&install.hash));
                counted += 1;
            }
            assert_eq!(install.hash, pool.hasher.hash_one(ids), "{ids:?}");
            let holding = idle.installs.iter().filter(|other| other.ids() == ids);
            assert_eq!(holding.count(), 1, "{ids:?} is held twice");
        }
        assert_eq!(counted, idle.by_age.len());
        let entries = idle.installs.len();
        assert!(entries <= 2 * counted + SWEEP_SLACK, "{entries} entries");
    }

    /// The ids of the idle instances, least recently put back first.
    fn held(pool: &WarmInstances<Fake>) -> Vec<usize> {
        let idle = pool.lock();
        let mut held: Vec<(Seq, usize)> = (idle.installs.iter())
            .flat_map(|install| install.instances.iter().map(|(seq, f)| (*seq, f.id)))
            .collect();
        held.sort();
        held.into_iter().map(|(_, id)| id).collect()
    }

    #[test]
    fn an_instance_serves_only_its_own_tenant_and_install() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        put_back(&pool, fake("t", "i", "a"));
        assert!(pool.take(CallContext::new("t", "j")).is_err());
        // The same install id under another tenant is another install.
        assert!(pool.take(CallContext::new("u", "i")).is_err());
        let reader = CallContext::new("t", "i").actor("user:1").request_id("r-2");
        let taken = pool.take(reader.clone()).unwrap();
        assert_eq!((taken.name, &taken.call), ("a", &reader));
        // With none idle, the caller comes back as it was, to make an instance for.
        let returned = pool.take(reader.clone()).err();
        assert_eq!(returned.as_ref(), Some(&reader));
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_caller_of_another_extension_gets_none_and_the_instance_stays() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        put_back(&pool, fake("t", "i", "a"));
        let other = CallContext::new("t", "i").extension("other");
        assert_eq!(pool.take(other.clone()).err(), Some(other));
        assert_eq!(pool.idle(), 1);
        assert_consistent(&pool);
        assert_eq!(names(&pool, "t", "i"), ["a"]);
    }

    #[test]
    fn instances_of_two_extensions_of_an_install_are_kept_apart() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        let mut other = fake("t", "i", "x");
        other.call.extension_id = "other".to_owned();
        put_back(&pool, fake("t", "i", "a"));
        put_back(&pool, other);
        put_back(&pool, fake("t", "i", "b"));
        let taken = pool.take(CallContext::new("t", "i").extension("other"));
        assert_eq!(taken.ok().map(|f| f.name), Some("x"));
        assert_consistent(&pool);
        assert_eq!(names(&pool, "t", "i"), ["b", "a"]);
    }

    #[test]
    fn an_instance_refusing_its_own_installs_caller_is_a_bug_outside_the_lock() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        let mut broken = fake("t", "i", "a");
        broken.refuse = true;
        put_back(&pool, broken);
        let taking = || pool.take(CallContext::new("t", "i")).is_ok();
        let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(taking));
        let panic = taken.expect_err("a panic");
        let message = panic.downcast_ref::<String>().expect("a formatted message");
        let expected = "a warm instance refused a caller of its own ids";
        assert!(message.starts_with(expected), "{message}");
        // The instance was taken out before it refused, and the lock was not held.
        assert!(!pool.idle.is_poisoned());
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
        let j1 = pool.take(CallContext::new("t", "j")).unwrap();
        put_back(&pool, j1);
        put_back(&pool, fake("t", "k", "k1"));
        assert_eq!(pool.idle(), 3);
        assert_eq!(names(&pool, "t", "i"), ["i2"]);
        assert_eq!(names(&pool, "t", "j"), ["j1"]);
        assert_eq!(names(&pool, "t", "k"), ["k1"]);
        assert_eq!(pool.idle(), 0);
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
            assert!(pool.take(CallContext::new("t", "i")).is_err());
        }
    }

    #[test]
    fn entries_of_installs_with_none_idle_are_swept() {
        let pool = WarmInstances::new(WarmLimits::DEFAULT);
        let installs: Vec<String> = (0..200).map(|n| format!("i{n}")).collect();
        for install in &installs {
            put_back(&pool, fake("t", install, "a"));
        }
        // Each take leaves its install's entry with none idle, as while its request runs. The
        // entries stay until all of them pass twice the idle instances plus the slack: at the
        // 133rd take (200 > 2 x 67 + 64), which leaves 67, and at the 199th (67 > 2 x 1 + 64).
        for (taken, install) in (1..).zip(&installs) {
            assert!(pool.take(CallContext::new("t", install)).is_ok());
            assert_consistent(&pool);
            let expected = match taken {
                ..133 => 200,
                133..199 => 67,
                _ => 1,
            };
            assert_eq!(pool.lock().installs.len(), expected, "after {taken} takes");
        }
        // The first install's entry was swept, the last one's stays; both are kept again.
        let has_entry = |install: &str| {
            let idle = pool.lock();
            idle.installs
                .iter()
                .any(|entry| entry.install_id == install)
        };
        assert!(!has_entry(&installs[0]) && has_entry(&installs[199]));
        for install in [&installs[0], &installs[199]] {
            put_back(&pool, fake("t", install, "back"));
            assert_eq!(names(&pool, "t", install), ["back"]);
        }
    }

    #[test]
    fn entries_emptied_by_evictions_are_swept() {
        let pool = WarmInstances::new(limits(4, 8));
        // From the 9th on, each put back evicts the least recently used, another install's
        // only instance, leaving its entry with none idle (`assert_consistent` bounds them).
        for n in 0..200 {
            put_back(&pool, fake("t", &format!("i{n}"), "a"));
        }
        assert_eq!(pool.idle(), 8);
        let entries = pool.lock().installs.len();
        assert!(
            entries <= 2 * 8 + SWEEP_SLACK,
            "{entries} entries for 8 idle instances"
        );
        let left: Vec<_> = (192..200)
            .flat_map(|n| names(&pool, "t", &format!("i{n}")))
            .collect();
        assert_eq!(left, ["a"; 8]);
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
        let last = pool.take(CallContext::new("t", "i")).unwrap();
        assert_eq!(last.name, "c");
    }

    /// A long pseudo-random sequence of takes and put-backs over a few installs (two of them
    /// one install's two extensions), with small limits, gives what a plain list in the order
    /// of putting back gives: take the install's last, drop its first when it is over its
    /// limit, else the first of all when the total is over.
    #[test]
    fn matches_a_simple_model() {
        let callers = [
            CallContext::new("t", "i"),
            CallContext::new("t", "j"),
            CallContext::new("u", "i"),
            CallContext::new("t", "i").extension("other"),
        ];
        let same = |a: &CallContext, b: &CallContext| a.instance_ids() == b.instance_ids();
        let limits_tried = [(2, 5), (3, 3), (1, 2), (4, 1024), (0, 3), (2, 0)];
        for (max_idle_per_install, max_idle) in limits_tried {
            let pool: WarmInstances<Fake> =
                WarmInstances::new(limits(max_idle_per_install, max_idle));
            // (caller's index, instance id), least recently put back first.
            let mut model: Vec<(usize, usize)> = Vec::new();
            let mut busy: Vec<Fake> = Vec::new();
            let mut state = 0x2545_f491_u64;
            for step in 0..4_000 {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                let draw = (state >> 33) as usize;
                let who = draw % callers.len();
                if (draw / callers.len()).is_multiple_of(2) || busy.is_empty() {
                    let expected = model.iter().rposition(|(c, _)| *c == who);
                    let expected = expected.map(|at| model.remove(at).1);
                    match pool.take(callers[who].clone()) {
                        Ok(instance) => {
                            assert_eq!(Some(instance.id), expected, "step {step}");
                            assert!(same(&instance.call, &callers[who]), "step {step}");
                            busy.push(instance);
                        }
                        Err(call) => {
                            assert_eq!(expected, None, "step {step}");
                            assert_eq!(call, callers[who], "step {step}");
                            busy.push(Fake {
                                call,
                                name: "made",
                                pool: None,
                                refuse: false,
                                id: step,
                            });
                        }
                    }
                } else {
                    let instance = busy.swap_remove(draw % busy.len());
                    let caller = callers.iter().position(|c| same(c, &instance.call));
                    let caller = caller.expect("one of the callers");
                    model.push((caller, instance.id));
                    let held = model.iter().filter(|(c, _)| *c == caller).count();
                    if held > max_idle_per_install {
                        let first = model.iter().position(|(c, _)| *c == caller);
                        model.remove(first.expect("held"));
                    } else if model.len() > max_idle {
                        model.remove(0);
                    }
                    put_back(&pool, instance);
                }
                let model_ids: Vec<usize> = model.iter().map(|(_, id)| *id).collect();
                assert_eq!(held(&pool), model_ids, "step {step}");
                assert_eq!(pool.idle(), model.len(), "step {step}");
            }
        }
    }
}
