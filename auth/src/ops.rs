//! Administrative operations on the access model, each with the rule of who may do it,
//! applied in one place ([`Auth::apply`]) whether they come from `stowage admin` /
//! `stowage token` on the store or from the server's JSON API. Every change is logged
//! as an audit line (target `stowage::audit`) naming who made it.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::error::{AuthError, Result};
use crate::policy::{
    Action, Grant, Namespace, Principal, Rights, Robot, Subject, Team, User, Visibility,
    robot_namespace, valid_account, valid_namespace, valid_pattern, valid_robot,
};
use crate::secret;
use crate::service::{Auth, Caller};
use crate::token::{self, TokenAccess, TokenRecord};

/// One administrative operation; its JSON form is the body of the server's admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Who am I, my teams and what I may administer.
    Whoami,
    /// The policy: all of it for registry admins; for others what concerns them.
    Show,
    /// Create a user (registry admins).
    UserCreate {
        /// Name.
        name: String,
        /// Password for interactive login (none: tokens only).
        #[serde(default)]
        password: Option<String>,
        /// Make them a registry-wide admin.
        #[serde(default)]
        admin: bool,
    },
    /// Delete a user, their grants and team memberships (registry admins).
    UserDelete {
        /// Name.
        name: String,
    },
    /// Set or clear a user's password (the user, or registry admins).
    UserPassword {
        /// Name.
        name: String,
        /// New password; none removes password login.
        #[serde(default)]
        password: Option<String>,
    },
    /// Create a team (registry admins).
    TeamCreate {
        /// Name.
        name: String,
    },
    /// Delete a team and its grants (registry admins).
    TeamDelete {
        /// Name.
        name: String,
    },
    /// Add a user to a team (registry admins).
    TeamAdd {
        /// Team.
        team: String,
        /// User.
        user: String,
    },
    /// Remove a user from a team (registry admins).
    TeamRemove {
        /// Team.
        team: String,
        /// User.
        user: String,
    },
    /// Create a namespace (registry admins, or `admin` on it through a glob grant).
    NamespaceCreate {
        /// Name.
        name: String,
        /// Public or private.
        visibility: Visibility,
    },
    /// Change a namespace's visibility (its admins).
    NamespaceSet {
        /// Name.
        name: String,
        /// Public or private.
        visibility: Visibility,
    },
    /// Forget a namespace's settings and grants on exactly it (registry admins); its
    /// repositories stay, private.
    NamespaceDelete {
        /// Name.
        name: String,
    },
    /// Grant an action (registry admins on any pattern; a namespace's admins on it).
    Grant {
        /// Who.
        subject: Subject,
        /// Namespace or glob.
        namespace: String,
        /// What.
        action: Action,
    },
    /// Take a grant back (the same rule as granting).
    Ungrant {
        /// Who.
        subject: Subject,
        /// Namespace or glob.
        namespace: String,
        /// What.
        action: Action,
    },
    /// Create a robot account `namespace+name` (the namespace's admins).
    RobotCreate {
        /// `namespace+name`.
        name: String,
        /// What it is for.
        #[serde(default)]
        description: String,
    },
    /// Delete a robot, its grants and its tokens stop working (the namespace's admins).
    RobotDelete {
        /// `namespace+name`.
        name: String,
    },
    /// Create a token (for oneself; for a robot by its namespace's admins; for anyone by
    /// registry admins). The answer holds the secret, shown this once.
    TokenCreate {
        /// The account it acts as (default: the caller).
        #[serde(default)]
        owner: Option<Principal>,
        /// Seconds until it expires (none: never).
        #[serde(default)]
        expires_in: Option<u64>,
        /// What it may do at most.
        #[serde(default)]
        access: TokenAccess,
        /// Limit it to namespaces matching this glob.
        #[serde(default)]
        namespace: Option<String>,
        /// What it is for.
        #[serde(default)]
        description: String,
    },
    /// List tokens (one's own; a robot's for its namespace's admins; all for registry
    /// admins, or one owner's with `owner`).
    TokenList {
        /// Only this account's.
        #[serde(default)]
        owner: Option<Principal>,
    },
    /// Revoke a token by id or by the secret itself (whoever may list it).
    TokenRevoke {
        /// Id or secret.
        token: String,
    },
}

impl Op {
    /// Whether the operation changes anything (reads are not audited).
    pub fn changes(&self) -> bool {
        !matches!(self, Op::Whoami | Op::Show | Op::TokenList { .. })
    }

    /// Its name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Whoami => "whoami",
            Op::Show => "show",
            Op::UserCreate { .. } => "user-create",
            Op::UserDelete { .. } => "user-delete",
            Op::UserPassword { .. } => "user-password",
            Op::TeamCreate { .. } => "team-create",
            Op::TeamDelete { .. } => "team-delete",
            Op::TeamAdd { .. } => "team-add",
            Op::TeamRemove { .. } => "team-remove",
            Op::NamespaceCreate { .. } => "namespace-create",
            Op::NamespaceSet { .. } => "namespace-set",
            Op::NamespaceDelete { .. } => "namespace-delete",
            Op::Grant { .. } => "grant",
            Op::Ungrant { .. } => "ungrant",
            Op::RobotCreate { .. } => "robot-create",
            Op::RobotDelete { .. } => "robot-delete",
            Op::TokenCreate { .. } => "token-create",
            Op::TokenList { .. } => "token-list",
            Op::TokenRevoke { .. } => "token-revoke",
        }
    }
}

/// What a token listing shows: the record without its hash.
pub fn token_view(r: &TokenRecord) -> Value {
    let now = Utc::now();
    json!({
        "id": r.id,
        "owner": r.owner.id(),
        "access": r.access,
        "namespace": r.namespace,
        "description": r.description,
        "created": r.created,
        "created_by": r.created_by,
        "expires": r.expires,
        "revoked": r.revoked,
        "last_used": r.last_used,
        "state": r.unusable(now).map_or("active", |why| if why.contains("revoked") { "revoked" } else { "expired" }),
    })
}

fn denied(what: &str) -> AuthError {
    AuthError::Denied(format!("{what} needs rights the caller does not hold"))
}

impl Auth {
    fn ns_admin(&self, caller: &Caller, ns: &str) -> bool {
        self.rights(caller, ns).allows(Action::Admin)
    }

    /// May `caller` manage tokens acting as `owner`?
    fn manages(&self, caller: &Caller, owner: &Principal) -> bool {
        if self.is_admin(caller) {
            return true;
        }
        // A token limited in access cannot mint or manage broader ones.
        let full = caller
            .token
            .as_ref()
            .is_none_or(|t| t.access == TokenAccess::Full);
        match owner {
            Principal::Anonymous => false,
            o if *o == caller.principal => true,
            Principal::Robot(r) => {
                full && robot_namespace(r).is_some_and(|ns| self.ns_admin(caller, ns))
            }
            Principal::User(_) => false,
        }
    }

    /// Checks and carries out one operation for `caller`; the answer is JSON.
    pub async fn apply(&self, caller: &Caller, op: Op) -> Result<Value> {
        if op.changes() && self.enabled() && caller.principal == Principal::Anonymous {
            return Err(AuthError::Unauthenticated(format!(
                "{} needs credentials",
                op.name()
            )));
        }
        let name = op.name();
        let summary = serde_json::to_value(&op).map(redact).unwrap_or(Value::Null);
        let result = self.carry_out(caller, op).await;
        if matches!(result, Ok((_, true))) {
            tracing::info!(
                target: "stowage::audit",
                who = %caller.principal,
                token = caller.token.as_ref().map(|t| t.id.as_str()),
                op = name,
                detail = %summary,
                "policy change"
            );
        }
        result.map(|(v, _)| v)
    }

    async fn carry_out(&self, caller: &Caller, op: Op) -> Result<(Value, bool)> {
        let admin = self.is_admin(caller);
        let need_admin = |what: &str| if admin { Ok(()) } else { Err(denied(what)) };
        let now = Utc::now();
        match op {
            Op::Whoami => Ok((self.whoami(caller), false)),
            Op::Show => Ok((self.show(caller), false)),
            Op::UserCreate {
                name,
                password,
                admin: make_admin,
            } => {
                need_admin("creating a user")?;
                if !valid_account(&name) {
                    return Err(AuthError::invalid(format!(
                        "user name {name:?} must match [a-z0-9][a-z0-9._-]{{0,63}}"
                    )));
                }
                let password = password.map(|p| secret::hash_password(&p)).transpose()?;
                self.update_policy(|p| {
                    if p.users.contains_key(&name) {
                        return Err(AuthError::Exists(format!("user {name}")));
                    }
                    p.users.insert(
                        name.clone(),
                        User {
                            password: password.clone(),
                            admin: make_admin,
                            created: now,
                        },
                    );
                    Ok(())
                })
                .await?;
                Ok((json!({"user": name, "admin": make_admin}), true))
            }
            Op::UserDelete { name } => {
                need_admin("deleting a user")?;
                self.update_policy(|p| {
                    p.users
                        .remove(&name)
                        .ok_or_else(|| AuthError::NotFound(format!("user {name}")))?;
                    for t in p.teams.values_mut() {
                        t.members.remove(&name);
                    }
                    p.grants
                        .retain(|g| g.subject != Subject::User(name.clone()));
                    Ok(())
                })
                .await?;
                Ok((json!({"deleted": name}), true))
            }
            Op::UserPassword { name, password } => {
                if !(admin || caller.principal == Principal::User(name.clone()))
                    || caller
                        .token
                        .as_ref()
                        .is_some_and(|t| t.access != TokenAccess::Full)
                {
                    return Err(denied("setting a password"));
                }
                let password = password.map(|p| secret::hash_password(&p)).transpose()?;
                self.update_policy(|p| {
                    let u = p
                        .users
                        .get_mut(&name)
                        .ok_or_else(|| AuthError::NotFound(format!("user {name}")))?;
                    u.password = password.clone();
                    Ok(())
                })
                .await?;
                Ok((json!({"user": name, "password": password.is_some()}), true))
            }
            Op::TeamCreate { name } => {
                need_admin("creating a team")?;
                if !valid_account(&name) {
                    return Err(AuthError::invalid(format!("invalid team name {name:?}")));
                }
                self.update_policy(|p| {
                    if p.teams.contains_key(&name) {
                        return Err(AuthError::Exists(format!("team {name}")));
                    }
                    p.teams.insert(
                        name.clone(),
                        Team {
                            members: Default::default(),
                            created: now,
                        },
                    );
                    Ok(())
                })
                .await?;
                Ok((json!({"team": name}), true))
            }
            Op::TeamDelete { name } => {
                need_admin("deleting a team")?;
                self.update_policy(|p| {
                    p.teams
                        .remove(&name)
                        .ok_or_else(|| AuthError::NotFound(format!("team {name}")))?;
                    p.grants
                        .retain(|g| g.subject != Subject::Team(name.clone()));
                    Ok(())
                })
                .await?;
                Ok((json!({"deleted": name}), true))
            }
            Op::TeamAdd { team, user } | Op::TeamRemove { team, user } if !admin => {
                let _ = (team, user);
                Err(denied("changing a team"))
            }
            Op::TeamAdd { team, user } => {
                self.update_policy(|p| {
                    if !p.users.contains_key(&user) {
                        return Err(AuthError::NotFound(format!("user {user}")));
                    }
                    p.teams
                        .get_mut(&team)
                        .ok_or_else(|| AuthError::NotFound(format!("team {team}")))?
                        .members
                        .insert(user.clone());
                    Ok(())
                })
                .await?;
                Ok((json!({"team": team, "added": user}), true))
            }
            Op::TeamRemove { team, user } => {
                self.update_policy(|p| {
                    p.teams
                        .get_mut(&team)
                        .ok_or_else(|| AuthError::NotFound(format!("team {team}")))?
                        .members
                        .remove(&user);
                    Ok(())
                })
                .await?;
                Ok((json!({"team": team, "removed": user}), true))
            }
            Op::NamespaceCreate { name, visibility } => {
                if !valid_namespace(&name) {
                    return Err(AuthError::invalid(format!(
                        "namespace {name:?} must be one component of a repository name ([a-z0-9]+([._-][a-z0-9]+)*)"
                    )));
                }
                if !self.ns_admin(caller, &name) {
                    return Err(denied("creating a namespace"));
                }
                self.update_policy(|p| {
                    if p.namespaces.contains_key(&name) {
                        return Err(AuthError::Exists(format!("namespace {name}")));
                    }
                    p.namespaces.insert(
                        name.clone(),
                        Namespace {
                            visibility,
                            created: now,
                        },
                    );
                    Ok(())
                })
                .await?;
                Ok((json!({"namespace": name, "visibility": visibility}), true))
            }
            Op::NamespaceSet { name, visibility } => {
                if !self.ns_admin(caller, &name) {
                    return Err(denied("changing a namespace"));
                }
                self.update_policy(|p| {
                    p.namespaces
                        .get_mut(&name)
                        .ok_or_else(|| AuthError::NotFound(format!("namespace {name}")))?
                        .visibility = visibility;
                    Ok(())
                })
                .await?;
                Ok((json!({"namespace": name, "visibility": visibility}), true))
            }
            Op::NamespaceDelete { name } => {
                need_admin("deleting a namespace")?;
                self.update_policy(|p| {
                    p.namespaces
                        .remove(&name)
                        .ok_or_else(|| AuthError::NotFound(format!("namespace {name}")))?;
                    p.grants.retain(|g| g.namespace != name);
                    Ok(())
                })
                .await?;
                Ok((json!({"deleted": name}), true))
            }
            Op::Grant {
                subject,
                namespace,
                action,
            }
            | Op::Ungrant {
                subject,
                namespace,
                action,
            } if !(admin || (valid_namespace(&namespace) && self.ns_admin(caller, &namespace))) => {
                let _ = (subject, action);
                Err(denied(&format!("granting on {namespace}")))
            }
            Op::Grant {
                subject,
                namespace,
                action,
            } => {
                if !valid_pattern(&namespace) {
                    return Err(AuthError::invalid(format!(
                        "invalid namespace pattern {namespace:?}"
                    )));
                }
                let grant = Grant {
                    subject,
                    namespace,
                    action,
                };
                self.update_policy(|p| {
                    p.grants.insert(grant.clone());
                    Ok(())
                })
                .await?;
                Ok((serde_json::to_value(&grant).unwrap_or(Value::Null), true))
            }
            Op::Ungrant {
                subject,
                namespace,
                action,
            } => {
                let grant = Grant {
                    subject,
                    namespace,
                    action,
                };
                self.update_policy(|p| {
                    if !p.grants.remove(&grant) {
                        return Err(AuthError::NotFound(format!(
                            "grant of {} on {} to {}",
                            grant.action, grant.namespace, grant.subject
                        )));
                    }
                    Ok(())
                })
                .await?;
                Ok((json!({"removed": grant}), true))
            }
            Op::RobotCreate { name, description } => {
                if !valid_robot(&name) {
                    return Err(AuthError::invalid(format!(
                        "robot name {name:?} must be namespace+name"
                    )));
                }
                let ns = robot_namespace(&name).unwrap_or_default();
                if !self.ns_admin(caller, ns) {
                    return Err(denied("creating a robot"));
                }
                self.update_policy(|p| {
                    if p.robots.contains_key(&name) {
                        return Err(AuthError::Exists(format!("robot {name}")));
                    }
                    p.robots.insert(
                        name.clone(),
                        Robot {
                            description: description.clone(),
                            created: now,
                        },
                    );
                    Ok(())
                })
                .await?;
                Ok((json!({"robot": name}), true))
            }
            Op::RobotDelete { name } => {
                let ns = robot_namespace(&name).unwrap_or_default();
                if !self.ns_admin(caller, ns) {
                    return Err(denied("deleting a robot"));
                }
                self.update_policy(|p| {
                    p.robots
                        .remove(&name)
                        .ok_or_else(|| AuthError::NotFound(format!("robot {name}")))?;
                    p.grants
                        .retain(|g| g.subject != Subject::Robot(name.clone()));
                    Ok(())
                })
                .await?;
                Ok((json!({"deleted": name}), true))
            }
            Op::TokenCreate {
                owner,
                expires_in,
                access,
                namespace,
                description,
            } => {
                let owner = owner.unwrap_or_else(|| caller.principal.clone());
                if owner == Principal::Anonymous {
                    return Err(AuthError::invalid(
                        "a token needs an account: name one with --user or --robot",
                    ));
                }
                if !self.policy().exists(&owner, &self.config().admins) {
                    return Err(AuthError::NotFound(owner.to_string()));
                }
                if !self.manages(caller, &owner) {
                    return Err(denied("creating a token for another account"));
                }
                if let Some(ns) = &namespace
                    && !valid_pattern(ns)
                {
                    return Err(AuthError::invalid(format!("invalid namespace {ns:?}")));
                }
                if description.len() > 256 {
                    return Err(AuthError::invalid("descriptions are limited to 256 bytes"));
                }
                // A token made with a limited token is limited the same way at least.
                let (access, namespace) = match &caller.token {
                    Some(t) if caller.principal == owner => (
                        narrower(access, t.access),
                        namespace.or_else(|| t.namespace.clone()),
                    ),
                    _ => (access, namespace),
                };
                let expires = match expires_in {
                    Some(s) => Some(
                        i64::try_from(s)
                            .ok()
                            .and_then(chrono::Duration::try_seconds)
                            .and_then(|d| now.checked_add_signed(d))
                            .ok_or_else(|| AuthError::invalid("expiry out of range"))?,
                    ),
                    None => None,
                };
                let (id, secret_token) = token::generate()?;
                let record = TokenRecord {
                    id,
                    owner,
                    hash: secret::token_hash(&secret_token),
                    access,
                    namespace,
                    description,
                    created: now,
                    created_by: caller.principal.id(),
                    expires,
                    revoked: None,
                    last_used: None,
                };
                let (record, secret_token) = self.store_token(record, secret_token).await?;
                let mut view = token_view(&record);
                view["token"] = Value::String(secret_token);
                Ok((view, true))
            }
            Op::TokenList { owner } => {
                let all = self.tokens().await?;
                let shown: Vec<Value> = all
                    .iter()
                    .filter(|t| owner.as_ref().is_none_or(|o| *o == t.owner))
                    .filter(|t| self.manages(caller, &t.owner))
                    .map(token_view)
                    .collect();
                Ok((json!({ "tokens": shown }), false))
            }
            Op::TokenRevoke { token: given } => {
                let id = match token::parse(&given) {
                    Some(id) => id.to_string(),
                    None if token::is_id(&given) => given.clone(),
                    None => return Err(AuthError::invalid("not a token or token id")),
                };
                let record = self
                    .token(&id)
                    .await?
                    .ok_or_else(|| AuthError::NotFound(format!("token {id}")))?;
                // Holding the secret itself is enough to revoke it (leaked tokens).
                let holds_secret = token::parse(&given).is_some()
                    && secret::same(&record.hash, &secret::token_hash(&given));
                if !holds_secret && !self.manages(caller, &record.owner) {
                    return Err(AuthError::NotFound(format!("token {id}")));
                }
                let record = self
                    .update_token(&id, |r| {
                        if r.revoked.is_some() {
                            return false;
                        }
                        r.revoked = Some(now);
                        true
                    })
                    .await?;
                Ok((token_view(&record), true))
            }
        }
    }

    fn whoami(&self, caller: &Caller) -> Value {
        let policy = self.policy();
        let teams: Vec<&str> = match &caller.principal {
            Principal::User(u) => policy.teams_of(u).collect(),
            _ => Vec::new(),
        };
        let namespaces: Vec<Value> = policy
            .namespaces
            .iter()
            .filter_map(|(ns, n)| {
                let r = self.rights(caller, ns);
                (r != Rights::NONE).then(
                    || json!({"name": ns, "visibility": n.visibility, "actions": r.actions()}),
                )
            })
            .collect();
        json!({
            "principal": caller.principal.id(),
            "name": caller.principal.name(),
            "admin": self.is_admin(caller),
            "auth_enabled": self.enabled(),
            "teams": teams,
            "token": caller.token.as_ref().map(|t| token_view(t)),
            "namespaces": namespaces,
        })
    }

    fn show(&self, caller: &Caller) -> Value {
        let policy = self.policy();
        if self.is_admin(caller) {
            let mut v = serde_json::to_value(&*policy).unwrap_or(Value::Null);
            // Password hashes never leave the store.
            if let Some(users) = v.get_mut("users").and_then(Value::as_object_mut) {
                for u in users.values_mut() {
                    if let Some(o) = u.as_object_mut()
                        && o.remove("password").is_some()
                    {
                        o.insert("password".into(), Value::Bool(true));
                    }
                }
            }
            return v;
        }
        let namespaces: serde_json::Map<String, Value> = policy
            .namespaces
            .iter()
            .filter(|(ns, _)| self.rights(caller, ns) != Rights::NONE)
            .map(|(ns, n)| (ns.clone(), serde_json::to_value(n).unwrap_or(Value::Null)))
            .collect();
        let grants: Vec<&Grant> = policy
            .grants
            .iter()
            .filter(|g| valid_namespace(&g.namespace) && self.ns_admin(caller, &g.namespace))
            .collect();
        json!({ "namespaces": namespaces, "grants": grants })
    }
}

fn narrower(a: TokenAccess, b: TokenAccess) -> TokenAccess {
    use TokenAccess::*;
    match (a, b) {
        (Pull, _) | (_, Pull) => Pull,
        (Push, _) | (_, Push) => Push,
        (Full, Full) => Full,
    }
}

/// An operation as logged: passwords replaced by a mark.
fn redact(mut v: Value) -> Value {
    if let Some(p) = v.get_mut("password")
        && !p.is_null()
    {
        *p = Value::String("***".into());
    }
    v
}
