//! Access control on the HTTP side: who is calling (Basic with a token or password, a
//! personal token or a registry token as Bearer, or nobody), what each route needs
//! ([`need`], the table every request passes through), the one decision
//! ([`Gate::authorize`]), the Docker token endpoint, the admin API and the limit on
//! failed logins.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use stowage_auth::jwt::{ResourceAccess, parse_scopes};
use stowage_auth::{Action, Auth, AuthError, Caller, Op, Principal};
use stowage_storage::RepoName;

use crate::error::{ApiError, ErrorCode};
use crate::route::Route;

/// What a request needs before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing (the API's base answers anyone when access control is off, and
    /// authenticated callers when it is on: that is how `docker login` probes).
    Login,
    /// The catalog: anyone; what it lists is filtered by pull rights.
    Catalog,
    /// An action on a repository.
    Repo(RepoName, Action),
    /// An action on a whole namespace (the image-stream listings).
    Namespace(String, Action),
}

/// The route table's access column: what each endpoint and method needs.
pub fn need(route: &Route, method: &Method) -> Need {
    let repo = |n: &RepoName, a| Need::Repo(n.clone(), a);
    match route {
        Route::Base => Need::Login,
        Route::Catalog => Need::Catalog,
        Route::Tags(n) | Route::Referrers(n, _) => repo(n, Action::Pull),
        Route::Manifest(n, _) | Route::Blob(n, _) => match *method {
            Method::GET | Method::HEAD => repo(n, Action::Pull),
            Method::DELETE => repo(n, Action::Delete),
            _ => repo(n, Action::Push),
        },
        Route::UploadStart(n) | Route::Upload(n, _) => repo(n, Action::Push),
    }
}

/// Consecutive failed logins per client address, to slow down guessing.
#[derive(Debug, Default)]
pub struct FailedLogins {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailedLogins {
    /// At most `limit` failures per `window` per address (0: no limit).
    pub fn new(limit: u32, window: Duration) -> Self {
        FailedLogins {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, addr: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(addr), true) = (addr, self.limit > 0) else {
            return Ok(());
        };
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(&addr) {
            Some((n, since)) if *n >= self.limit && since.elapsed() < self.window => {
                let wait = self.window.saturating_sub(since.elapsed()).as_secs() + 1;
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::Toomanyrequests,
                    format!("too many failed logins from {addr}; retry in {wait} s"),
                )
                .with_header(header::RETRY_AFTER, wait.to_string()))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, addr: Option<IpAddr>) {
        let (Some(addr), true) = (addr, self.limit > 0) else {
            return;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 100_000 {
            seen.retain(|_, (_, since)| since.elapsed() < self.window);
        }
        let e = seen.entry(addr).or_insert((0, Instant::now()));
        if e.1.elapsed() >= self.window {
            *e = (0, Instant::now());
        }
        e.0 += 1;
    }
}

/// Access control as the server holds it: the model, how the token service presents
/// itself, and the failed-login limit. `None` in the state: no access control at all.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The access model over the store.
    pub auth: Auth,
    /// Public base URL for the token realm; taken from the request's Host when unset.
    pub public_url: Option<String>,
    /// Whether this server speaks HTTPS (for a realm built from Host).
    pub https: bool,
    /// Who may read `/metrics` when access control is on: anyone, or registry admins.
    pub public_metrics: bool,
    /// Failed logins per client address.
    pub failed: Arc<FailedLogins>,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
}

/// Splits `Authorization` into scheme and credentials.
fn authorization(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    if value.len() > 16 * 1024 {
        return Err(unauthorized("the Authorization header is too long"));
    }
    let (scheme, rest) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthorized("malformed Authorization header"))?;
    Ok(Some((scheme.to_ascii_lowercase(), rest.trim().to_string())))
}

/// Decodes Basic credentials into username and password.
fn basic(credentials: &str) -> Result<(String, String), ApiError> {
    let bad = || unauthorized("malformed Basic credentials");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (user, pass) = text.split_once(':').ok_or_else(bad)?;
    Ok((user.to_string(), pass.to_string()))
}

impl Gate {
    /// Who is calling. Missing credentials are anonymous; wrong ones are a 401 (and
    /// count against the address's failed logins).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        addr: Option<IpAddr>,
    ) -> Result<Caller, ApiError> {
        // An open registry (no account yet) ignores credentials: a client that sends
        // some anyway, stale or meant for another registry, is served like anyone.
        if !self.auth.enabled() {
            return Ok(Caller::anonymous());
        }
        let parsed = authorization(headers).map_err(|e| self.challenge(headers, None, e))?;
        let Some((scheme, credentials)) = parsed else {
            return Ok(Caller::anonymous());
        };
        self.failed.check(addr)?;
        let result = match scheme.as_str() {
            "basic" => match basic(&credentials) {
                Ok((user, pass)) => self.auth.verify_basic(&user, &pass).await,
                Err(e) => Err(AuthError::Unauthenticated(e.message)),
            },
            "bearer" => self.auth.verify_bearer(&credentials).await,
            other => Err(AuthError::Unauthenticated(format!(
                "unsupported authorization scheme {other:?}"
            ))),
        };
        match result {
            Ok(caller) => Ok(caller),
            Err(AuthError::Unauthenticated(why)) => {
                self.failed.failed(addr);
                Err(self.challenge(headers, None, unauthorized(why)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The token endpoint's URL.
    fn realm(&self, headers: &HeaderMap) -> String {
        let base = crate::address::public_base(self.public_url.as_deref(), self.https, headers);
        format!("{base}/auth/token")
    }

    /// Adds the Bearer challenge that sends clients to the token endpoint.
    fn challenge(&self, headers: &HeaderMap, scope: Option<String>, e: ApiError) -> ApiError {
        let mut value = format!(
            "Bearer realm=\"{}\",service=\"{}\"",
            self.realm(headers),
            self.auth.config().service
        );
        if let Some(scope) = scope {
            value.push_str(&format!(",scope=\"{scope}\""));
        }
        e.with_header(header::WWW_AUTHENTICATE, value)
    }

    /// The one access decision: may `caller` do what `need` says? A caller who lacks
    /// the right gets a challenge if anonymous (log in) or presenting a registry token
    /// that lacks the scope (fetch a wider one), else 403 DENIED.
    pub fn authorize(
        &self,
        caller: &Caller,
        need: &Need,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        if !self.auth.enabled() {
            return Ok(());
        }
        let anonymous = caller.principal == Principal::Anonymous;
        match need {
            Need::Login if anonymous => {
                Err(self.challenge(headers, None, unauthorized("authentication required")))
            }
            Need::Login => Ok(()),
            Need::Catalog => {
                if caller.granted("registry", "catalog", Action::Pull) {
                    Ok(())
                } else {
                    Err(self.challenge(
                        headers,
                        Some("registry:catalog:*".into()),
                        unauthorized("the token does not cover the catalog"),
                    ))
                }
            }
            Need::Namespace(ns, action) => {
                if self.auth.rights(caller, ns).allows(*action) {
                    Ok(())
                } else if anonymous {
                    Err(self.challenge(
                        headers,
                        None,
                        unauthorized(format!("authentication required to {action} in {ns}")),
                    ))
                } else {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        ErrorCode::Denied,
                        format!("{} may not {action} in namespace {ns}", caller.principal),
                    ))
                }
            }
            Need::Repo(name, action) => {
                let scope = match action {
                    Action::Push => format!("repository:{name}:pull,push"),
                    a => format!("repository:{name}:{a}"),
                };
                if !self.auth.rights(caller, name.namespace()).allows(*action) {
                    if anonymous {
                        return Err(self.challenge(
                            headers,
                            Some(scope),
                            unauthorized(format!("authentication required to {action} {name}")),
                        ));
                    }
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        ErrorCode::Denied,
                        format!("{} may not {action} {name}", caller.principal),
                    ));
                }
                if !caller.granted("repository", name.as_str(), *action) {
                    return Err(self.challenge(
                        headers,
                        Some(format!("{scope}\",error=\"insufficient_scope")),
                        unauthorized(format!("the token does not grant {action} on {name}")),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether the caller may pull from a repository (for listings and mounts).
    pub fn may_pull(&self, caller: &Caller, name: &RepoName) -> bool {
        !self.auth.enabled()
            || self
                .auth
                .rights(caller, name.namespace())
                .allows(Action::Pull)
    }

    /// Whether the caller may read `/metrics`.
    pub fn may_read_metrics(&self, caller: &Caller) -> bool {
        self.public_metrics || self.auth.is_admin(caller)
    }
}

fn client_addr(parts: &axum::http::request::Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

/// `GET /auth/token` (Basic or anonymous) and `POST /auth/token` (OAuth2 password and
/// refresh_token grants): a registry token for the granted part of the scopes.
pub async fn token_endpoint(State(gate): State<Gate>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let addr = client_addr(&parts);
    let result = async {
        let mut params: Vec<(String, String)> = crate::api::query_pairs(&parts.uri).collect();
        let form = parts.method == Method::POST;
        if form {
            let bytes = axum::body::to_bytes(Body::new(body), 64 * 1024)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorCode::Unsupported,
                        "token requests are limited to 64 KiB",
                    )
                })?;
            params.extend(url::form_urlencoded::parse(&bytes).into_owned());
        }
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Some(service) = get("service")
            && service != gate.auth.config().service
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorCode::Unsupported,
                format!(
                    "this token service is {:?}, not {service:?}",
                    gate.auth.config().service
                ),
            ));
        }
        let scopes: Vec<ResourceAccess> = params
            .iter()
            .filter(|(k, _)| k == "scope")
            .flat_map(|(_, v)| parse_scopes(v))
            .collect();
        let caller = if form && get("grant_type").is_some() {
            gate.failed.check(addr)?;
            let verified = match get("grant_type") {
                Some("password") => {
                    gate.auth
                        .verify_basic(get("username").unwrap_or(""), get("password").unwrap_or(""))
                        .await
                }
                Some("refresh_token") => {
                    gate.auth
                        .verify_refresh(get("refresh_token").unwrap_or(""))
                        .await
                }
                Some(other) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        ErrorCode::Unsupported,
                        format!("unsupported grant_type {other:?}"),
                    ));
                }
                None => unreachable!("checked above"),
            };
            verified.inspect_err(|e| {
                if matches!(e, AuthError::Unauthenticated(_)) {
                    gate.failed.failed(addr);
                }
            })?
        } else {
            gate.authenticate(&parts.headers, addr).await?
        };
        let issued = gate.auth.issue(&caller, &scopes).await?;
        let mut body = serde_json::json!({
            "token": issued.token,
            "access_token": issued.token,
            "expires_in": issued.expires_in,
            "issued_at": issued.issued_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        let offline = get("access_type") == Some("offline") || get("offline_token") == Some("true");
        if (form || offline) && caller.principal != Principal::Anonymous {
            body["refresh_token"] = gate.auth.issue_refresh(&caller).await?.into();
        }
        Ok(json(StatusCode::OK, &body))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /stowage/v1/admin`: one [`Op`] as JSON, answered with its JSON result.
/// `GET /stowage/v1/whoami`: the caller, its teams and namespaces.
pub async fn admin_endpoint(State(gate): State<Gate>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let addr = client_addr(&parts);
    let result = async {
        let caller = gate.authenticate(&parts.headers, addr).await?;
        let op = if parts.method == Method::GET {
            Op::Whoami
        } else {
            let bytes = axum::body::to_bytes(Body::new(body), 256 * 1024)
                .await
                .map_err(|_| {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorCode::Unsupported,
                        "admin requests are limited to 256 KiB",
                    )
                })?;
            serde_json::from_slice::<Op>(&bytes).map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::Unsupported,
                    format!("not an admin operation: {e}"),
                )
            })?
        };
        match gate.auth.apply(&caller, op).await {
            Ok(v) => Ok(json(StatusCode::OK, &v)),
            Err(AuthError::Unauthenticated(m)) => {
                Err(gate.challenge(&parts.headers, None, unauthorized(m)))
            }
            Err(e) => Err(e.into()),
        }
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// Caller of a request as the dispatcher sees it.
pub async fn caller_of(
    gate: Option<&Gate>,
    parts: &axum::http::request::Parts,
) -> Result<Caller, ApiError> {
    match gate {
        Some(g) => g.authenticate(&parts.headers, client_addr(parts)).await,
        None => Ok(Caller::anonymous()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_storage::{Digest, Reference};

    /// The access column of the route table.
    #[test]
    fn every_route_declares_what_it_needs() {
        let n = RepoName::parse("team/app").unwrap();
        let d = Digest::sha256(b"x");
        let id: stowage_storage::UploadId = "0f5c4a60-7a4b-4f0e-9a35-95f0d3e0c1a2".parse().unwrap();
        let r = |a| Need::Repo(n.clone(), a);
        let m = Route::Manifest(n.clone(), Reference::Digest(d.clone()));
        let b = Route::Blob(n.clone(), d.clone());
        let cases = [
            (Route::Base, Method::GET, Need::Login),
            (Route::Catalog, Method::GET, Need::Catalog),
            (Route::Tags(n.clone()), Method::GET, r(Action::Pull)),
            (
                Route::Referrers(n.clone(), d.clone()),
                Method::GET,
                r(Action::Pull),
            ),
            (m.clone(), Method::GET, r(Action::Pull)),
            (m.clone(), Method::HEAD, r(Action::Pull)),
            (m.clone(), Method::PUT, r(Action::Push)),
            (m.clone(), Method::DELETE, r(Action::Delete)),
            (b.clone(), Method::GET, r(Action::Pull)),
            (b.clone(), Method::HEAD, r(Action::Pull)),
            (b.clone(), Method::DELETE, r(Action::Delete)),
            (Route::UploadStart(n.clone()), Method::POST, r(Action::Push)),
            (
                Route::Upload(n.clone(), id.clone()),
                Method::PATCH,
                r(Action::Push),
            ),
            (
                Route::Upload(n.clone(), id.clone()),
                Method::PUT,
                r(Action::Push),
            ),
            (
                Route::Upload(n.clone(), id.clone()),
                Method::GET,
                r(Action::Push),
            ),
            (
                Route::Upload(n.clone(), id),
                Method::DELETE,
                r(Action::Push),
            ),
        ];
        for (route, method, want) in cases {
            assert_eq!(need(&route, &method), want, "{method} {route:?}");
        }
    }

    #[test]
    fn failed_logins_are_limited_per_address() {
        let f = FailedLogins::new(3, Duration::from_secs(60));
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..3 {
            assert!(f.check(Some(a)).is_ok());
            f.failed(Some(a));
        }
        let e = f.check(Some(a)).unwrap_err();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(f.check(Some(b)).is_ok(), "other addresses are not affected");
        assert!(f.check(None).is_ok());
    }
}
