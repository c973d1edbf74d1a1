//! The rollout policy: the embedder's switch above grants. Turning storage off stops every
//! extension call with `capability-denied` and keeps every byte; turning it on again restores
//! access to the same data. Operator calls (schema registration, counter repair) are not
//! extension calls and are not affected.

use std::collections::BTreeSet;

/// Which extensions may use storage at all.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RolloutPolicy {
    /// No extension: every storage call is refused.
    Off,
    /// Only these extension ids (staged rollout).
    Extensions(BTreeSet<String>),
    /// Every extension whose install holds the grant.
    #[default]
    All,
}

impl RolloutPolicy {
    /// Whether `extension_id` may use storage under this policy.
    pub fn allows(&self, extension_id: &str) -> bool {
        match self {
            RolloutPolicy::Off => false,
            RolloutPolicy::Extensions(ids) => ids.contains(extension_id),
            RolloutPolicy::All => true,
        }
    }

    /// Parses `off`, `all`, or a comma-separated list of extension ids.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(RolloutPolicy::Off),
            "all" => Ok(RolloutPolicy::All),
            "" => Err("a rollout policy is off, all, or a list of extension ids".into()),
            list => Ok(RolloutPolicy::Extensions(
                list.split(',')
                    .map(str::trim)
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_allow_what_they_say() {
        assert!(!RolloutPolicy::Off.allows("a"));
        assert!(RolloutPolicy::All.allows("a"));
        let some = RolloutPolicy::parse("a, b").unwrap();
        assert!(some.allows("a") && some.allows("b") && !some.allows("c"));
        assert_eq!(RolloutPolicy::parse("off"), Ok(RolloutPolicy::Off));
        assert!(RolloutPolicy::parse(" ").is_err());
    }
}
