//! Registry tokens of the Docker token flow: short-lived JWTs (HS256) that this registry
//! signs for the granted part of a request's scopes and verifies on later requests. The
//! signing keys are records in the store (`auth/keys/<kid>`), one per rotation period,
//! so every replica verifies every other's tokens and keys rotate with no coordination.

use serde::{Deserialize, Serialize};

/// One resource of a scope, and the actions asked for or granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, `*`.
    pub actions: Vec<String>,
}

/// Parses one `scope` parameter (`repository:ns/app:pull,push`, `registry:catalog:*`);
/// several may be joined by spaces. Malformed parts are skipped, as the spec's
/// token servers do: they can only ever be granted nothing.
pub fn parse_scopes(scope: &str) -> Vec<ResourceAccess> {
    scope
        .split(' ')
        .filter_map(|s| {
            let (kind, rest) = s.split_once(':')?;
            let (name, actions) = rest.rsplit_once(':')?;
            let kind = kind.split('(').next().unwrap_or(kind);
            if kind.is_empty() || name.is_empty() || name.len() > 512 {
                return None;
            }
            Some(ResourceAccess {
                kind: kind.to_string(),
                name: name.to_string(),
                actions: actions
                    .split(',')
                    .filter(|a| !a.is_empty())
                    .take(8)
                    .map(str::to_string)
                    .collect(),
            })
        })
        .take(64)
        .collect()
}

/// The claims of a registry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// This registry's service name.
    pub iss: String,
    /// The principal (`user:alice`, `robot:team+ci`, `anonymous`).
    pub sub: String,
    /// The service the token is for (the same service name).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Unique id.
    pub jti: String,
    /// What was granted.
    #[serde(default)]
    pub access: Vec<ResourceAccess>,
    /// The personal token it was obtained with, checked again on every use (so a
    /// revocation reaches tokens already issued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// A fingerprint of the password it was obtained with (a password change ends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pwv: Option<String>,
    /// `refresh` for OAuth refresh tokens, which grant no access themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

/// The key id of a rotation period: periods are counted from the Unix epoch.
pub fn kid(period: i64) -> String {
    format!("k{period}")
}

/// The rotation period a key id names.
pub fn period_of(kid: &str) -> Option<i64> {
    kid.strip_prefix('k')?.parse().ok()
}

/// Signs claims with a key.
pub fn sign(claims: &Claims, kid: &str, key: &[u8]) -> crate::Result<String> {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_secret(key),
    )
    .map_err(|e| crate::AuthError::Crypto(e.to_string()))
}

/// The key id a token names, if it is shaped like a JWT we sign (HS256 with a kid).
pub fn header_kid(token: &str) -> Option<String> {
    if token.len() > 16 * 1024 {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    (header.alg == jsonwebtoken::Algorithm::HS256)
        .then_some(header.kid)
        .flatten()
}

/// Verifies signature, issuer, audience and times; the claims if all hold.
pub fn verify(token: &str, key: &[u8], service: &str) -> Result<Claims, String> {
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&[service]);
    v.set_issuer(&[service]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, &jsonwebtoken::DecodingKey::from_secret(key), &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            iss: "reg".into(),
            sub: "user:alice".into(),
            aud: "reg".into(),
            exp: now + exp_in,
            nbf: now - 1,
            iat: now,
            jti: "j".into(),
            access: parse_scopes("repository:team/app:pull,push"),
            tid: None,
            pwv: None,
            typ: None,
        }
    }

    #[test]
    fn tokens_verify_only_with_their_key_service_and_time() {
        let key = b"0123456789abcdef0123456789abcdef";
        let t = sign(&claims(60), "k1", key).unwrap();
        assert_eq!(header_kid(&t).as_deref(), Some("k1"));
        assert_eq!(verify(&t, key, "reg").unwrap().access[0].name, "team/app");
        assert!(verify(&t, b"another key, another key, another", "reg").is_err());
        assert!(verify(&t, key, "other-service").is_err());
        let expired = sign(&claims(-60), "k1", key).unwrap();
        assert!(verify(&expired, key, "reg").is_err());
        // alg none: a header that says so, no signature.
        let b64 = |s: &str| crate::secret::b64(s.as_bytes());
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT","kid":"k1"}"#),
            b64(&serde_json::to_string(&claims(60)).unwrap())
        );
        assert_eq!(header_kid(&none), None);
        assert!(verify(&none, key, "reg").is_err());
        // Tampered payload, original signature.
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims(60);
        c.access = parse_scopes("repository:other/app:push");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_string(&c).unwrap()),
            parts[2]
        );
        assert!(verify(&forged, key, "reg").is_err());
    }

    #[test]
    fn scopes_parse_as_the_spec_writes_them() {
        let s = parse_scopes(
            "repository:a/b:pull,push registry:catalog:* repository:localhost:5000/x:pull bogus",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].actions, ["pull", "push"]);
        assert_eq!(s[1].kind, "registry");
        assert_eq!(s[2].name, "localhost:5000/x");
        assert!(parse_scopes("repository(plugin):a:pull")[0].kind == "repository");
    }
}
