//! What an operator keeps: rules for tagged history and untagged manifests, with
//! overrides per namespace, and the safety margins (grace period, upload expiry).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stowage_storage::RepoName;

/// How one namespace's manifests are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    /// Delete manifests no kept tag revision, live index or live subject reaches.
    /// False keeps every manifest and collects only unreferenced content.
    pub delete_untagged: bool,
    /// Revisions of each tag's history that are kept (the current one counts; at least 1).
    pub keep_tag_revisions: usize,
    /// Manifests pushed, and tag revisions made, more recently than this are kept.
    #[serde(with = "duration_opt")]
    pub keep_younger_than: Option<Duration>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            delete_untagged: true,
            keep_tag_revisions: 3,
            keep_younger_than: None,
        }
    }
}

/// Rules for the whole store, with per-namespace overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Rules where no override applies.
    pub default: Rules,
    /// Overrides by namespace (the first path component of a repository name) or by any
    /// longer prefix of path components (`team/app`); the longest match wins.
    pub namespaces: BTreeMap<String, Rules>,
}

impl Policy {
    /// The rules for one repository.
    pub fn rules_for(&self, repo: &RepoName) -> Rules {
        let name = repo.as_str();
        self.namespaces
            .iter()
            .filter(|(prefix, _)| {
                name == prefix.as_str()
                    || name
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(self.default, |(_, r)| *r)
    }
}

/// Parses `90s`, `15m`, `24h`, `7d`, `2w` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use s, m, h, d or w)"
            ));
        }
    };
    n.checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

/// Durations in configuration files are written as text (`"7d"`).
mod duration_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}s", d.as_secs())),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| super::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("7y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn the_longest_namespace_prefix_wins() {
        let strict = Rules {
            keep_tag_revisions: 1,
            ..Rules::default()
        };
        let lenient = Rules {
            delete_untagged: false,
            ..Rules::default()
        };
        let policy = Policy {
            default: Rules::default(),
            namespaces: [
                ("team".to_string(), strict),
                ("team/keep".to_string(), lenient),
            ]
            .into_iter()
            .collect(),
        };
        let rules = |n: &str| policy.rules_for(&RepoName::parse(n).unwrap());
        assert_eq!(rules("team/app"), strict);
        assert_eq!(rules("team"), strict);
        assert_eq!(rules("team/keep/x"), lenient);
        assert_eq!(rules("teamster/app"), Rules::default());
        assert_eq!(rules("other"), Rules::default());
    }
}
