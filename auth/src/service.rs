//! [`Auth`]: the access model as a server and the CLI use it. It keeps the policy, tokens
//! and signing keys in the store and caches them, so that authorizing a request costs no
//! read of the store: the policy is re-read every [`AuthConfig::refresh`] (a change made
//! elsewhere is obeyed within that bound; one made through this handle at once), a token's
//! record is re-read when its cached copy is older than the same bound, and last-use
//! times are written at most once a minute per token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest as _, Sha256};
use stowage_storage::{RecordVersion, Records, RepoName, Store};

use crate::error::{AuthError, Result};
use crate::jwt::{self, Claims, ResourceAccess};
use crate::policy::{Action, Policy, Principal, Rights};
use crate::secret;
use crate::token::{self, TokenRecord};

/// The record holding the policy.
const POLICY: &str = "policy";
/// How long one signing key signs; verification accepts the previous period's key too.
const KEY_PERIOD_SECS: i64 = 86_400;
/// Most entries kept in each cache before it is cleared (bounds memory under floods of
/// made-up credentials).
const CACHE_MAX: usize = 10_000;
/// How often a token's last-use time is written at most.
const USAGE_EVERY: Duration = Duration::from_secs(60);
/// Writers of the policy retry this often on conflicts.
const POLICY_RETRIES: usize = 20;

/// How the access model is set up in this process.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Users who are registry-wide administrators whatever the stored policy says (the
    /// configuration's bootstrap admins).
    pub admins: Vec<String>,
    /// The token service's name: issuer and audience of registry tokens.
    pub service: String,
    /// Lifetime of registry tokens.
    pub token_ttl: Duration,
    /// Lifetime of OAuth refresh tokens.
    pub refresh_ttl: Duration,
    /// How stale the cached policy and token records may be.
    pub refresh: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            admins: Vec::new(),
            service: "stowage".into(),
            token_ttl: Duration::from_secs(300),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            refresh: Duration::from_secs(5),
        }
    }
}

/// Who is calling and through what: the principal, the personal token it used (whose
/// limits apply), and the grant of the registry token it presented, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account, or anonymous.
    pub principal: Principal,
    /// The personal token used, if one was.
    pub token: Option<Arc<TokenRecord>>,
    /// What a registry token granted, if one was presented.
    pub granted: Option<Vec<ResourceAccess>>,
}

impl Caller {
    /// Nobody.
    pub fn anonymous() -> Self {
        Caller {
            principal: Principal::Anonymous,
            token: None,
            granted: None,
        }
    }

    /// An account acting with all its rights (the CLI on the store).
    pub fn account(principal: Principal) -> Self {
        Caller {
            principal,
            token: None,
            granted: None,
        }
    }

    /// Whether a registry token's grant covers an action on a resource (always, when no
    /// registry token was presented).
    pub fn granted(&self, kind: &str, name: &str, action: Action) -> bool {
        let Some(g) = &self.granted else {
            return true;
        };
        g.iter().any(|r| {
            r.kind == kind
                && r.name == name
                && r.actions
                    .iter()
                    .any(|a| a == "*" || Action::parse(a) == Some(action))
        })
    }
}

/// A registry token handed out by the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The signed token.
    pub token: String,
    /// Seconds it lives.
    pub expires_in: u64,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// What it grants.
    pub access: Vec<ResourceAccess>,
}

struct CachedToken {
    record: Option<Arc<TokenRecord>>,
    fetched: Instant,
}

struct CachedPassword {
    phc: String,
    at: Instant,
}

struct Inner {
    records: Records,
    config: AuthConfig,
    policy: RwLock<(Arc<Policy>, Option<RecordVersion>)>,
    tokens: Mutex<HashMap<String, CachedToken>>,
    passwords: Mutex<HashMap<[u8; 32], CachedPassword>>,
    /// A per-process salt for the password cache's keys.
    salt: [u8; 32],
    keys: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    used: Mutex<HashMap<String, DateTime<Utc>>>,
}

/// The access model over one store; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("service", &self.inner.config.service)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], key: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| AuthError::Corrupt {
        key: format!("auth/{key}"),
        reason: e.to_string(),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Bytes> {
    serde_json::to_vec_pretty(v)
        .map(Bytes::from)
        .map_err(|e| AuthError::Crypto(format!("encoding JSON: {e}")))
}

/// A fingerprint of a password hash: registry tokens obtained with the password carry
/// it, so changing the password ends them.
fn password_version(phc: &str) -> String {
    hex::encode(&Sha256::digest(phc.as_bytes())[..8])
}

impl Auth {
    /// Opens the access model of a store, reading its policy (absent: an empty one, so
    /// the registry is open unless `config.admins` names someone). A policy that cannot
    /// be read or parsed is an error: access control never fails open.
    pub async fn open(store: &Store, config: AuthConfig) -> Result<Auth> {
        let auth = Auth {
            inner: Arc::new(Inner {
                records: store.records("auth")?,
                config,
                policy: RwLock::new((Arc::new(Policy::default()), None)),
                tokens: Mutex::new(HashMap::new()),
                passwords: Mutex::new(HashMap::new()),
                salt: secret::random_bytes::<32>()?,
                keys: Mutex::new(HashMap::new()),
                used: Mutex::new(HashMap::new()),
            }),
        };
        auth.reload_policy().await?;
        Ok(auth)
    }

    /// This process's configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// The policy as last read.
    pub fn policy(&self) -> Arc<Policy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Whether access control is on (some account exists).
    pub fn enabled(&self) -> bool {
        self.policy().enabled(&self.inner.config.admins)
    }

    /// Whether a caller is a registry-wide administrator (and its token allows admin).
    pub fn is_admin(&self, caller: &Caller) -> bool {
        if !self.enabled() {
            return true;
        }
        self.policy()
            .is_admin(&caller.principal, &self.inner.config.admins)
            && caller
                .token
                .as_ref()
                .is_none_or(|t| t.namespace.is_none() && t.access.rights() == Rights::ALL)
    }

    /// What a caller may do in a namespace: its account's rights, limited by the token
    /// it used. (A registry token's grant is checked per resource: [`Caller::granted`].)
    pub fn rights(&self, caller: &Caller, namespace: &str) -> Rights {
        let rights = self
            .policy()
            .rights(&caller.principal, namespace, &self.inner.config.admins);
        match &caller.token {
            Some(t) => rights.and(t.ceiling(namespace)),
            None => rights,
        }
    }

    /// Re-reads what may have changed elsewhere: the policy now, token records lazily
    /// (their cached copies age out). Servers call this every [`AuthConfig::refresh`],
    /// and [`Auth::flush_usage`] once a minute.
    pub async fn refresh(&self) -> Result<()> {
        self.reload_policy().await
    }

    async fn reload_policy(&self) -> Result<()> {
        let (policy, version) = match self.inner.records.get(POLICY).await? {
            Some((data, v)) => (parse_json::<Policy>(&data, POLICY)?, Some(v)),
            None => (Policy::default(), None),
        };
        *self.inner.policy.write().unwrap_or_else(|e| e.into_inner()) = (Arc::new(policy), version);
        Ok(())
    }

    /// Changes the policy by compare-and-swap: `change` is applied to the current policy
    /// (re-read on conflict and applied again), the result validated and stored, and
    /// this process's cache updated at once. Returns the stored policy.
    pub async fn update_policy<F>(&self, mut change: F) -> Result<Arc<Policy>>
    where
        F: FnMut(&mut Policy) -> Result<()>,
    {
        for attempt in 0..POLICY_RETRIES {
            let (mut policy, version) = match self.inner.records.get(POLICY).await? {
                Some((data, v)) => (parse_json::<Policy>(&data, POLICY)?, Some(v)),
                None => (Policy::default(), None),
            };
            change(&mut policy)?;
            policy.validate()?;
            if self
                .inner
                .records
                .swap(POLICY, version.as_ref(), to_json(&policy)?)
                .await?
            {
                let policy = Arc::new(policy);
                // The version of what we wrote is unknown here; the next refresh reads it.
                *self.inner.policy.write().unwrap_or_else(|e| e.into_inner()) =
                    (policy.clone(), None);
                return Ok(policy);
            }
            let jitter = u64::from(secret::random_bytes::<1>()?[0]) % 16;
            tokio::time::sleep(Duration::from_millis((2 << attempt.min(6)) + jitter)).await;
        }
        Err(AuthError::Conflict)
    }

    // ----- credentials -----

    /// Verifies a password or personal token given as Basic credentials (a token wins
    /// whatever the username, as `docker login -u unused -p <token>` sends it).
    pub async fn verify_basic(&self, username: &str, password: &str) -> Result<Caller> {
        if token::parse(password).is_some() {
            return self.verify_token(password).await;
        }
        self.verify_password(username, password).await?;
        Ok(Caller::account(Principal::User(username.to_string())))
    }

    /// Verifies a bearer credential: a personal token, or a registry token this registry
    /// signed (checked again against the current policy and the token it came from).
    pub async fn verify_bearer(&self, bearer: &str) -> Result<Caller> {
        if token::parse(bearer).is_some() {
            return self.verify_token(bearer).await;
        }
        let claims = self.verify_jwt(bearer).await?;
        if claims.typ.is_some() {
            return Err(AuthError::Unauthenticated(
                "a refresh token grants no access; exchange it at the token endpoint".into(),
            ));
        }
        let mut caller = self.caller_of(&claims).await?;
        caller.granted = Some(claims.access);
        Ok(caller)
    }

    /// Verifies an OAuth refresh token issued by [`Auth::issue_refresh`].
    pub async fn verify_refresh(&self, refresh: &str) -> Result<Caller> {
        let claims = self.verify_jwt(refresh).await?;
        if claims.typ.as_deref() != Some("refresh") {
            return Err(AuthError::Unauthenticated("not a refresh token".into()));
        }
        self.caller_of(&claims).await
    }

    /// A personal token: its record found by id, the hash compared in constant time,
    /// expiry and revocation checked, the owner still existing.
    pub async fn verify_token(&self, presented: &str) -> Result<Caller> {
        let fail = |m: &str| AuthError::Unauthenticated(m.to_string());
        let id = token::parse(presented).ok_or_else(|| fail("malformed token"))?;
        let record = self
            .token_record(id)
            .await?
            .ok_or_else(|| fail("unknown token"))?;
        if !secret::same(&record.hash, &secret::token_hash(presented)) {
            return Err(fail("unknown token"));
        }
        if let Some(why) = record.unusable(Utc::now()) {
            return Err(fail(why));
        }
        if !self
            .policy()
            .exists(&record.owner, &self.inner.config.admins)
        {
            return Err(fail("the token's account no longer exists"));
        }
        lock(&self.inner.used).insert(record.id.clone(), Utc::now());
        Ok(Caller {
            principal: record.owner.clone(),
            token: Some(record),
            granted: None,
        })
    }

    async fn verify_password(&self, username: &str, password: &str) -> Result<()> {
        let fail = || AuthError::Unauthenticated("wrong username or password".into());
        let policy = self.policy();
        let phc = policy
            .users
            .get(username)
            .and_then(|u| u.password.clone())
            .ok_or_else(fail)?;
        let mut h = Sha256::new();
        h.update(self.inner.salt);
        h.update(username.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if let Some(c) = lock(&self.inner.passwords).get(&key)
            && c.phc == phc
            && c.at.elapsed() < Duration::from_secs(600)
        {
            return Ok(());
        }
        let (pw, stored) = (password.to_string(), phc.clone());
        let ok = tokio::task::spawn_blocking(move || secret::verify_password(&pw, &stored))
            .await
            .map_err(|e| AuthError::Crypto(e.to_string()))?;
        if !ok {
            return Err(fail());
        }
        let mut cache = lock(&self.inner.passwords);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            key,
            CachedPassword {
                phc,
                at: Instant::now(),
            },
        );
        Ok(())
    }

    async fn token_record(&self, id: &str) -> Result<Option<Arc<TokenRecord>>> {
        if let Some(c) = lock(&self.inner.tokens).get(id)
            && c.fetched.elapsed() < self.inner.config.refresh
        {
            return Ok(c.record.clone());
        }
        let name = format!("tokens/{id}");
        let record = match self.inner.records.get(&name).await? {
            Some((data, _)) => Some(Arc::new(parse_json::<TokenRecord>(&data, &name)?)),
            None => None,
        };
        let mut cache = lock(&self.inner.tokens);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(
            id.to_string(),
            CachedToken {
                record: record.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(record)
    }

    async fn caller_of(&self, claims: &Claims) -> Result<Caller> {
        let fail = |m: &str| AuthError::Unauthenticated(m.to_string());
        let principal = Principal::parse_id(&claims.sub).ok_or_else(|| fail("bad subject"))?;
        let policy = self.policy();
        if !policy.exists(&principal, &self.inner.config.admins) {
            return Err(fail("the token's account no longer exists"));
        }
        let mut caller = Caller::account(principal.clone());
        if let Some(tid) = &claims.tid {
            let record = self
                .token_record(tid)
                .await?
                .filter(|r| r.owner == principal)
                .ok_or_else(|| fail("the token it was issued for is gone"))?;
            if let Some(why) = record.unusable(Utc::now()) {
                return Err(fail(why));
            }
            caller.token = Some(record);
        }
        if let Some(pwv) = &claims.pwv {
            let current = principal
                .name()
                .and_then(|n| policy.users.get(n))
                .and_then(|u| u.password.as_deref())
                .map(password_version);
            if current.as_deref() != Some(pwv.as_str()) {
                return Err(fail("the password changed since the token was issued"));
            }
        }
        Ok(caller)
    }

    // ----- registry tokens -----

    async fn verify_jwt(&self, token: &str) -> Result<Claims> {
        let fail = |m: String| AuthError::Unauthenticated(m);
        let kid = jwt::header_kid(token).ok_or_else(|| fail("malformed bearer token".into()))?;
        let period = jwt::period_of(&kid).ok_or_else(|| fail("unknown signing key".into()))?;
        let now = Utc::now().timestamp() / KEY_PERIOD_SECS;
        if !(now - 1..=now + 1).contains(&period) {
            return Err(fail("the token's signing key has been retired".into()));
        }
        let key = self
            .key(&kid, false)
            .await?
            .ok_or_else(|| fail("unknown signing key".into()))?;
        jwt::verify(token, &key, &self.inner.config.service).map_err(fail)
    }

    /// A signing key by id: cached, else read from the store, else (when `create`)
    /// created — first writer wins, so replicas agree on every period's key.
    async fn key(&self, kid: &str, create: bool) -> Result<Option<Arc<Vec<u8>>>> {
        if let Some(k) = lock(&self.inner.keys).get(kid) {
            return Ok(Some(k.clone()));
        }
        let name = format!("keys/{kid}");
        let mut data = self.inner.records.get(&name).await?.map(|(d, _)| d);
        if data.is_none() && create {
            let fresh = serde_json::json!({
                "key": hex::encode(secret::random_bytes::<32>()?),
                "created": Utc::now(),
            });
            self.inner.records.create(&name, to_json(&fresh)?).await?;
            data = self.inner.records.get(&name).await?.map(|(d, _)| d);
            self.retire_keys().await?;
        }
        let Some(data) = data else {
            return Ok(None);
        };
        let v: serde_json::Value = parse_json(&data, &name)?;
        let key = v
            .get("key")
            .and_then(|k| k.as_str())
            .and_then(|k| hex::decode(k).ok())
            .filter(|k| k.len() >= 32)
            .ok_or_else(|| AuthError::Corrupt {
                key: name.clone(),
                reason: "no 256-bit key".into(),
            })?;
        let key = Arc::new(key);
        lock(&self.inner.keys).insert(kid.to_string(), key.clone());
        Ok(Some(key))
    }

    /// Deletes keys older than the previous period (their tokens have all expired).
    async fn retire_keys(&self) -> Result<()> {
        let now = Utc::now().timestamp() / KEY_PERIOD_SECS;
        for e in self.inner.records.list("keys").await? {
            let kid = e.name.trim_start_matches("keys/");
            if jwt::period_of(kid).is_some_and(|p| p < now - 1) {
                self.inner.records.delete(&e.name).await?;
                lock(&self.inner.keys).remove(kid);
            }
        }
        Ok(())
    }

    fn claims(&self, caller: &Caller, ttl: Duration) -> Result<Claims> {
        let now = Utc::now().timestamp();
        let pwv = match (&caller.principal, &caller.token) {
            (Principal::User(n), None) => self
                .policy()
                .users
                .get(n)
                .and_then(|u| u.password.as_deref())
                .map(password_version),
            _ => None,
        };
        Ok(Claims {
            iss: self.inner.config.service.clone(),
            sub: caller.principal.id(),
            aud: self.inner.config.service.clone(),
            exp: now + ttl.as_secs() as i64,
            nbf: now - 1,
            iat: now,
            jti: hex::encode(secret::random_bytes::<12>()?),
            access: Vec::new(),
            tid: caller.token.as_ref().map(|t| t.id.clone()),
            pwv,
            typ: None,
        })
    }

    async fn sign(&self, claims: &Claims) -> Result<String> {
        let kid = jwt::kid(Utc::now().timestamp() / KEY_PERIOD_SECS);
        let key = self
            .key(&kid, true)
            .await?
            .ok_or_else(|| AuthError::Crypto("signing key vanished".into()))?;
        jwt::sign(claims, &kid, &key)
    }

    /// What of the requested scopes a caller holds: for each repository, the asked
    /// actions it may take there; the catalog to anyone (its listing is filtered).
    pub fn grant(&self, caller: &Caller, requested: &[ResourceAccess]) -> Vec<ResourceAccess> {
        let mut out = Vec::new();
        for r in requested {
            let actions: Vec<String> = match r.kind.as_str() {
                "repository" => {
                    let Ok(name) = RepoName::parse(&r.name) else {
                        continue;
                    };
                    let rights = self.rights(caller, name.namespace());
                    let mut acts: Vec<String> = Vec::new();
                    for a in &r.actions {
                        let held: Vec<Action> = match a.as_str() {
                            "*" => rights.actions(),
                            other => Action::parse(other)
                                .filter(|x| rights.allows(*x))
                                .into_iter()
                                .collect(),
                        };
                        for h in held {
                            if !acts.iter().any(|x| x == h.as_str()) {
                                acts.push(h.as_str().to_string());
                            }
                        }
                    }
                    acts
                }
                "registry" if r.name == "catalog" => vec!["*".to_string()],
                _ => Vec::new(),
            };
            if !actions.is_empty() {
                out.push(ResourceAccess {
                    kind: r.kind.clone(),
                    name: r.name.clone(),
                    actions,
                });
            }
        }
        out
    }

    /// Signs a registry token for the granted part of `requested`.
    pub async fn issue(&self, caller: &Caller, requested: &[ResourceAccess]) -> Result<Issued> {
        let ttl = self.inner.config.token_ttl;
        let mut claims = self.claims(caller, ttl)?;
        claims.access = self.grant(caller, requested);
        let token = self.sign(&claims).await?;
        Ok(Issued {
            token,
            expires_in: ttl.as_secs(),
            issued_at: Utc::now(),
            access: claims.access,
        })
    }

    /// Signs an OAuth refresh token for an authenticated caller.
    pub async fn issue_refresh(&self, caller: &Caller) -> Result<String> {
        if caller.principal == Principal::Anonymous {
            return Err(AuthError::Unauthenticated(
                "refresh tokens need credentials".into(),
            ));
        }
        let mut claims = self.claims(caller, self.inner.config.refresh_ttl)?;
        claims.typ = Some("refresh".into());
        self.sign(&claims).await
    }

    // ----- personal tokens -----

    /// Stores a new token's record; returns it with the secret (shown once).
    pub async fn store_token(
        &self,
        record: TokenRecord,
        secret_token: String,
    ) -> Result<(TokenRecord, String)> {
        let name = format!("tokens/{}", record.id);
        if !self.inner.records.create(&name, to_json(&record)?).await? {
            return Err(AuthError::Exists(format!("token {}", record.id)));
        }
        Ok((record, secret_token))
    }

    /// Every token record (revoked and expired ones too), newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut out = Vec::new();
        for e in self.inner.records.list("tokens").await? {
            if let Some((data, _)) = self.inner.records.get(&e.name).await? {
                out.push(parse_json::<TokenRecord>(&data, &e.name)?);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// One token's record, read from the store.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRecord>> {
        if !token::is_id(id) {
            return Ok(None);
        }
        let name = format!("tokens/{id}");
        match self.inner.records.get(&name).await? {
            Some((data, _)) => Ok(Some(parse_json(&data, &name)?)),
            None => Ok(None),
        }
    }

    /// Changes a token's record by compare-and-swap (`change` returns false to leave it).
    pub async fn update_token<F>(&self, id: &str, mut change: F) -> Result<TokenRecord>
    where
        F: FnMut(&mut TokenRecord) -> bool,
    {
        let name = format!("tokens/{id}");
        for _ in 0..POLICY_RETRIES {
            let Some((data, version)) = self.inner.records.get(&name).await? else {
                return Err(AuthError::NotFound(format!("token {id}")));
            };
            let mut record: TokenRecord = parse_json(&data, &name)?;
            if !change(&mut record) {
                return Ok(record);
            }
            if self
                .inner
                .records
                .swap(&name, Some(&version), to_json(&record)?)
                .await?
            {
                lock(&self.inner.tokens).remove(id);
                return Ok(record);
            }
        }
        Err(AuthError::Conflict)
    }

    /// Writes last-use times gathered since the last flush (at most one write per token
    /// per minute); a token revoked meanwhile is left as it is.
    pub async fn flush_usage(&self) -> Result<()> {
        let used: Vec<(String, DateTime<Utc>)> = lock(&self.inner.used).drain().collect();
        for (id, at) in used {
            let result = self
                .update_token(&id, |r| {
                    let stale = r
                        .last_used
                        .is_none_or(|l| (at - l).to_std().is_ok_and(|d| d >= USAGE_EVERY));
                    if stale && r.revoked.is_none() {
                        r.last_used = Some(at);
                        true
                    } else {
                        false
                    }
                })
                .await;
            match result {
                Ok(_) | Err(AuthError::NotFound(_)) => {}
                Err(e) => tracing::warn!(token = %id, error = %e, "recording a token's last use"),
            }
        }
        Ok(())
    }
}
