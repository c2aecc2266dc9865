//! Personal and robot tokens: `stw_<id>_<secret>`, 256 random bits behind a public id.
//! The store keeps each token's record under `auth/tokens/<id>` with the SHA-256 of the
//! whole token, never the token itself; the id finds the record without a listing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::policy::{Action, Principal, Rights, glob_matches};
use crate::secret;

/// What every token starts with, so that leaked ones are easy to find in logs and scans.
pub const PREFIX: &str = "stw_";

/// What a token may do at most (further limited by its owner's rights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenAccess {
    /// Pull only.
    Pull,
    /// Pull and push.
    Push,
    /// Whatever the owner may do.
    #[default]
    Full,
}

impl TokenAccess {
    /// The rights this ceiling lets through.
    pub fn rights(self) -> Rights {
        match self {
            TokenAccess::Pull => Rights::PULL,
            TokenAccess::Push => Rights::of(Action::Push),
            TokenAccess::Full => Rights::ALL,
        }
    }

    /// Parses `pull`, `push` or `full`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pull" => Some(TokenAccess::Pull),
            "push" => Some(TokenAccess::Push),
            "full" | "all" => Some(TokenAccess::Full),
            _ => None,
        }
    }
}

/// A token as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (also the record's name).
    pub id: String,
    /// The account it acts as.
    pub owner: Principal,
    /// SHA-256 of the whole token, hex.
    pub hash: String,
    /// What it may do at most.
    #[serde(default)]
    pub access: TokenAccess,
    /// Limited to the namespaces this glob matches, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// When it was made, and by whom.
    pub created: DateTime<Utc>,
    /// Who made it (`user:alice`).
    #[serde(default)]
    pub created_by: String,
    /// It stops working at this time, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    /// It stopped working at this time, if revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<DateTime<Utc>>,
    /// Last seen in use (recorded at most once a minute per server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<DateTime<Utc>>,
}

impl TokenRecord {
    /// Why it cannot be used now, if it cannot.
    pub fn unusable(&self, now: DateTime<Utc>) -> Option<&'static str> {
        if self.revoked.is_some() {
            Some("the token was revoked")
        } else if self.expires.is_some_and(|e| e <= now) {
            Some("the token has expired")
        } else {
            None
        }
    }

    /// The most it lets through in a namespace.
    pub fn ceiling(&self, namespace: &str) -> Rights {
        match &self.namespace {
            Some(glob) if !glob_matches(glob, namespace) => Rights::NONE,
            _ => self.access.rights(),
        }
    }
}

/// A fresh token: its id and the whole secret string to hand out once.
pub fn generate() -> Result<(String, String)> {
    let id = hex::encode(secret::random_bytes::<10>()?);
    let secret = secret::b64(&secret::random_bytes::<32>()?);
    let token = format!("{PREFIX}{id}_{secret}");
    Ok((id, token))
}

/// The id of something shaped like a token, or `None`.
pub fn parse(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok_id = id.len() == 20 && id.bytes().all(|c| c.is_ascii_hexdigit());
    let ok_secret = (16..=128).contains(&secret.len())
        && secret
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    (ok_id && ok_secret).then_some(id)
}

/// Whether `s` looks like a token id (20 hex digits).
pub fn is_id(s: &str) -> bool {
    s.len() == 20 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_to_their_id() {
        let (id, token) = generate().unwrap();
        assert_eq!(parse(&token), Some(id.as_str()));
        assert!(token.len() >= 4 + 20 + 1 + 43);
        for bad in [
            "",
            "stw_",
            "stw_abc_def",
            "xyz_0123456789abcdef0123_aaaaaaaaaaaaaaaaaaaa",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let (_, other) = generate().unwrap();
        assert_ne!(token, other);
    }
}
