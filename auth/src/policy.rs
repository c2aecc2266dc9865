//! The access policy: users, robots, teams, namespaces and grants, kept as one record in
//! the store (`auth/policy`) and replaced by compare-and-swap. The decision of what a
//! principal may do in a namespace is a pure function of it ([`Policy::rights`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{AuthError, Result};

/// What a request needs in a namespace. `Push` implies `Pull`; `Admin` implies all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Read manifests, blobs, tags and referrers; see the repository in the catalog.
    Pull,
    /// Upload blobs and manifests, move tags.
    Push,
    /// Delete manifests, tags and blob links.
    Delete,
    /// Manage the namespace: visibility, grants, robots.
    Admin,
}

impl Action {
    /// Every action, in order.
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    /// The spelling used in scopes, configuration and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    /// Parses `pull`, `push`, `delete` or `admin` (and `*`, Docker's word for all, as admin).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "pull" => Some(Action::Pull),
            "push" => Some(Action::Push),
            "delete" => Some(Action::Delete),
            "admin" | "*" => Some(Action::Admin),
            _ => None,
        }
    }

    fn implied(self) -> Rights {
        match self {
            Action::Pull => Rights::PULL,
            Action::Push => Rights::PULL.with(Rights::PUSH),
            Action::Delete => Rights::DELETE,
            Action::Admin => Rights::ALL,
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of actions, as held by a principal in one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Rights(u8);

impl Rights {
    /// Nothing.
    pub const NONE: Rights = Rights(0);
    /// Pull only.
    pub const PULL: Rights = Rights(1);
    /// Push (alone; use [`Action::Push`] for what it implies).
    pub const PUSH: Rights = Rights(2);
    /// Delete.
    pub const DELETE: Rights = Rights(4);
    /// Admin.
    pub const ADMIN: Rights = Rights(8);
    /// Everything.
    pub const ALL: Rights = Rights(15);

    /// Union.
    pub const fn with(self, other: Rights) -> Rights {
        Rights(self.0 | other.0)
    }

    /// Intersection.
    pub const fn and(self, other: Rights) -> Rights {
        Rights(self.0 & other.0)
    }

    /// Whether `action` is among these rights.
    pub fn allows(self, action: Action) -> bool {
        let bit = match action {
            Action::Pull => Rights::PULL,
            Action::Push => Rights::PUSH,
            Action::Delete => Rights::DELETE,
            Action::Admin => Rights::ADMIN,
        };
        self.0 & bit.0 != 0
    }

    /// The actions held, in order.
    pub fn actions(self) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| self.allows(*a))
            .collect()
    }

    /// What `action` grants, with what it implies.
    pub fn of(action: Action) -> Rights {
        action.implied()
    }
}

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subject {
    /// A person.
    User(String),
    /// A robot account (`namespace+name`).
    Robot(String),
    /// Every member of a team.
    Team(String),
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::User(n) => write!(f, "user {n}"),
            Subject::Robot(n) => write!(f, "robot {n}"),
            Subject::Team(n) => write!(f, "team {n}"),
        }
    }
}

/// An authenticated identity (or nobody).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A person.
    User(String),
    /// A robot account.
    Robot(String),
}

impl Principal {
    /// `user:alice`, `robot:team+ci` or `anonymous`: the `sub` of signed tokens and the
    /// `who` of audit lines.
    pub fn id(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".into(),
            Principal::User(n) => format!("user:{n}"),
            Principal::Robot(n) => format!("robot:{n}"),
        }
    }

    /// The inverse of [`Principal::id`].
    pub fn parse_id(s: &str) -> Option<Principal> {
        match s.split_once(':') {
            None if s == "anonymous" => Some(Principal::Anonymous),
            Some(("user", n)) if valid_account(n) => Some(Principal::User(n.into())),
            Some(("robot", n)) if valid_robot(n) => Some(Principal::Robot(n.into())),
            _ => None,
        }
    }

    /// The account name, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Principal::Anonymous => None,
            Principal::User(n) | Principal::Robot(n) => Some(n),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

/// Whether anonymous callers may pull from and list a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anonymous pull and listing.
    Public,
    /// Only those with grants (and registry admins) see it.
    #[default]
    Private,
}

/// A person's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Argon2id hash in PHC form; `None`: tokens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Registry-wide administrator.
    #[serde(default)]
    pub admin: bool,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// A robot account, owned by a namespace, for CI: tokens only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Robot {
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// A team of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    /// User names.
    #[serde(default)]
    pub members: BTreeSet<String>,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// A namespace's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Public or private.
    pub visibility: Visibility,
    /// When it was created.
    pub created: DateTime<Utc>,
}

/// An action granted to a subject on the namespaces a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant {
    /// Who.
    pub subject: Subject,
    /// A namespace, or a glob of namespaces (`*` matches any run of characters).
    pub namespace: String,
    /// What (with what it implies).
    pub action: Action,
}

/// The whole policy: what `auth/policy` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Robots by name (`namespace+name`).
    pub robots: BTreeMap<String, Robot>,
    /// Teams by name.
    pub teams: BTreeMap<String, Team>,
    /// Namespaces by name; one not listed is private.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Grants, kept sorted and without repeats.
    pub grants: BTreeSet<Grant>,
}

/// Whether a glob (`*` for any run of characters) matches a namespace.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A user or team name: `[a-z0-9][a-z0-9._-]{0,63}`.
pub fn valid_account(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

/// A namespace: one component of an OCI repository name, `[a-z0-9]+([._-][a-z0-9]+)*`.
pub fn valid_namespace(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && stowage_storage::RepoName::parse(s).is_ok_and(|n| n.namespace() == s)
}

/// A grant's namespace pattern: a namespace with `*` wildcards.
pub fn valid_pattern(s: &str) -> bool {
    s == "*"
        || (!s.is_empty()
            && s.len() <= 128
            && s.bytes().all(|c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'.' | b'_' | b'-' | b'*')
            }))
}

/// A robot name: `namespace+name`.
pub fn valid_robot(s: &str) -> bool {
    match s.split_once('+') {
        Some((ns, name)) => valid_namespace(ns) && valid_account(name),
        None => false,
    }
}

/// The namespace that owns a robot.
pub fn robot_namespace(robot: &str) -> Option<&str> {
    robot.split_once('+').map(|(ns, _)| ns)
}

impl Policy {
    /// Whether access control is on: some account exists (or `bootstrap_admins` names one).
    pub fn enabled(&self, bootstrap_admins: &[String]) -> bool {
        !self.users.is_empty() || !self.robots.is_empty() || !bootstrap_admins.is_empty()
    }

    /// Whether a principal is a registry-wide administrator.
    pub fn is_admin(&self, who: &Principal, bootstrap_admins: &[String]) -> bool {
        match who {
            Principal::User(n) => {
                bootstrap_admins.iter().any(|a| a == n)
                    || self.users.get(n).is_some_and(|u| u.admin)
            }
            _ => false,
        }
    }

    /// Whether a principal names an account that exists.
    pub fn exists(&self, who: &Principal, bootstrap_admins: &[String]) -> bool {
        match who {
            Principal::Anonymous => true,
            Principal::User(n) => {
                self.users.contains_key(n) || bootstrap_admins.iter().any(|a| a == n)
            }
            Principal::Robot(n) => self.robots.contains_key(n),
        }
    }

    /// Visibility of a namespace (private unless created public).
    pub fn visibility(&self, namespace: &str) -> Visibility {
        self.namespaces
            .get(namespace)
            .map(|n| n.visibility)
            .unwrap_or_default()
    }

    /// Teams a user belongs to.
    pub fn teams_of<'a>(&'a self, user: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.teams
            .iter()
            .filter(move |(_, t)| t.members.contains(user))
            .map(|(n, _)| n.as_str())
    }

    /// Everything a principal may do in a namespace: registry admins everything, anyone
    /// pull on public namespaces, and the grants to it, to its teams, or (for a robot)
    /// to it by name. Accounts that do not exist hold nothing beyond the public.
    pub fn rights(&self, who: &Principal, namespace: &str, bootstrap_admins: &[String]) -> Rights {
        if !self.enabled(bootstrap_admins) {
            return Rights::ALL;
        }
        let mut rights = Rights::NONE;
        if self.visibility(namespace) == Visibility::Public {
            rights = rights.with(Rights::PULL);
        }
        if !self.exists(who, bootstrap_admins) || *who == Principal::Anonymous {
            return rights;
        }
        if self.is_admin(who, bootstrap_admins) {
            return Rights::ALL;
        }
        for g in &self.grants {
            let applies = match (&g.subject, who) {
                (Subject::User(u), Principal::User(n)) => u == n,
                (Subject::Robot(r), Principal::Robot(n)) => r == n,
                (Subject::Team(t), Principal::User(n)) => {
                    self.teams.get(t).is_some_and(|t| t.members.contains(n))
                }
                _ => false,
            };
            if applies && glob_matches(&g.namespace, namespace) {
                rights = rights.with(Rights::of(g.action));
            }
        }
        rights
    }

    /// Checks the policy's own consistency: names valid, grants naming what exists.
    pub fn validate(&self) -> Result<()> {
        for n in self.users.keys().chain(self.teams.keys()) {
            if !valid_account(n) {
                return Err(AuthError::invalid(format!("invalid account name {n:?}")));
            }
        }
        for n in self.robots.keys() {
            if !valid_robot(n) {
                return Err(AuthError::invalid(format!("invalid robot name {n:?}")));
            }
        }
        for n in self.namespaces.keys() {
            if !valid_namespace(n) {
                return Err(AuthError::invalid(format!("invalid namespace {n:?}")));
            }
        }
        for t in self.teams.values() {
            if let Some(m) = t.members.iter().find(|m| !self.users.contains_key(*m)) {
                return Err(AuthError::invalid(format!("team member {m:?} is no user")));
            }
        }
        for g in &self.grants {
            if !valid_pattern(&g.namespace) {
                return Err(AuthError::invalid(format!(
                    "invalid namespace pattern {:?}",
                    g.namespace
                )));
            }
            let known = match &g.subject {
                Subject::User(u) => self.users.contains_key(u),
                Subject::Robot(r) => self.robots.contains_key(r),
                Subject::Team(t) => self.teams.contains_key(t),
            };
            if !known {
                return Err(AuthError::NotFound(g.subject.to_string()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            password: None,
            admin: false,
            created: Utc::now(),
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        for u in ["alice", "bob", "carol", "root"] {
            p.users.insert(u.into(), user());
        }
        p.users.get_mut("root").unwrap().admin = true;
        p.robots.insert(
            "team+ci".into(),
            Robot {
                description: String::new(),
                created: Utc::now(),
            },
        );
        p.teams.insert(
            "devs".into(),
            Team {
                members: ["bob".to_string()].into(),
                created: Utc::now(),
            },
        );
        for (ns, v) in [("team", Visibility::Private), ("pub", Visibility::Public)] {
            p.namespaces.insert(
                ns.into(),
                Namespace {
                    visibility: v,
                    created: Utc::now(),
                },
            );
        }
        let g = |s: Subject, ns: &str, a| Grant {
            subject: s,
            namespace: ns.into(),
            action: a,
        };
        p.grants
            .insert(g(Subject::User("alice".into()), "team", Action::Push));
        p.grants
            .insert(g(Subject::Team("devs".into()), "te*", Action::Pull));
        p.grants
            .insert(g(Subject::Robot("team+ci".into()), "team", Action::Push));
        p.grants
            .insert(g(Subject::User("carol".into()), "pub", Action::Delete));
        p.validate().unwrap();
        p
    }

    /// The decision as a table: who, namespace, and what they may do there.
    #[test]
    fn rights_as_a_table() {
        let p = policy();
        let u = |n: &str| Principal::User(n.into());
        let r = |n: &str| Principal::Robot(n.into());
        let push = Rights::of(Action::Push);
        let cases: Vec<(Principal, &str, Rights)> = vec![
            (Principal::Anonymous, "team", Rights::NONE),
            (Principal::Anonymous, "pub", Rights::PULL),
            (Principal::Anonymous, "unknown", Rights::NONE),
            (u("alice"), "team", push),
            (u("alice"), "pub", Rights::PULL),
            (u("alice"), "other", Rights::NONE),
            (u("bob"), "team", Rights::PULL),
            (u("bob"), "teapot", Rights::PULL),
            (u("bob"), "pub", Rights::PULL),
            (u("carol"), "pub", Rights::PULL.with(Rights::DELETE)),
            (u("carol"), "team", Rights::NONE),
            (u("root"), "team", Rights::ALL),
            (u("root"), "anything", Rights::ALL),
            (u("mallory"), "team", Rights::NONE),
            (u("mallory"), "pub", Rights::PULL),
            (r("team+ci"), "team", push),
            (r("team+ci"), "pub", Rights::PULL),
            (r("team+other"), "team", Rights::NONE),
        ];
        for (who, ns, want) in cases {
            assert_eq!(p.rights(&who, ns, &[]), want, "{who} in {ns}");
        }
        // A bootstrap admin from the configuration holds everything.
        assert_eq!(p.rights(&u("ops"), "team", &["ops".into()]), Rights::ALL);
        // No accounts at all: the registry is open.
        let open = Policy::default();
        assert!(!open.enabled(&[]));
        assert_eq!(open.rights(&Principal::Anonymous, "x", &[]), Rights::ALL);
    }

    #[test]
    fn globs_match_whole_names() {
        for (p, n, want) in [
            ("*", "anything", true),
            ("team", "team", true),
            ("team", "teams", false),
            ("te*", "team", true),
            ("*-ci", "app-ci", true),
            ("*-ci", "app-cd", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(glob_matches(p, n), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_account("alice") && valid_account("a.b-c_1"));
        for bad in ["", "Alice", "-a", "a b", "ä", "a\0", &"a".repeat(65)] {
            assert!(!valid_account(bad), "{bad:?}");
        }
        assert!(valid_namespace("tripleo") && valid_namespace("a-b.c"));
        assert!(!valid_namespace("a/b") && !valid_namespace("A") && !valid_namespace(".."));
        assert!(valid_robot("team+ci") && !valid_robot("team") && !valid_robot("+ci"));
        assert_eq!(
            Principal::parse_id("robot:team+ci"),
            Some(Principal::Robot("team+ci".into()))
        );
        assert_eq!(Principal::parse_id("user:"), None);
        assert_eq!(Principal::parse_id("user:A"), None);
    }
}
