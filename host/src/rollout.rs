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

    /// Parses `off`, `all`, or extension ids separated by commas or white space (one per line
    /// in a file). A word that looks like a switch (`ALL`, `on`, `none`, `*`, …) is refused, not
    /// taken for an extension id: a typo must not turn storage off for everyone.
    pub fn parse(text: &str) -> Result<Self, String> {
        const SWITCH_WORDS: [&str; 11] = [
            "off", "all", "on", "none", "true", "false", "yes", "no", "enabled", "disabled", "*",
        ];
        match text.trim() {
            "off" => Ok(RolloutPolicy::Off),
            "all" => Ok(RolloutPolicy::All),
            "" => Err("a rollout policy is off, all, or a list of extension ids".into()),
            list => {
                let ids: BTreeSet<String> = list
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|id| !id.is_empty())
                    .map(str::to_owned)
                    .collect();
                match ids
                    .iter()
                    .find(|id| SWITCH_WORDS.contains(&id.to_ascii_lowercase().as_str()))
                {
                    Some(word) => Err(format!(
                        "{word:?} is not an extension id: a rollout policy is `off`, `all`, or \
                         a list of extension ids"
                    )),
                    None => Ok(RolloutPolicy::Extensions(ids)),
                }
            }
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
        assert_eq!(RolloutPolicy::parse(" all\n"), Ok(RolloutPolicy::All));
        assert!(RolloutPolicy::parse(" ").is_err());
        let lines = RolloutPolicy::parse("ext-a\next-b\n").unwrap();
        assert!(lines.allows("ext-a") && lines.allows("ext-b") && !lines.allows("ext-a\next-b"));
        for typo in ["ALL", "On", "none", "*", "ext-a, all", "Off"] {
            let error = RolloutPolicy::parse(typo).unwrap_err();
            assert!(error.contains("not an extension id"), "{typo}: {error}");
        }
    }
}
