//! Hostile input on every auth path, through the router (registry, token endpoint,
//! admin API, metrics, image-stream API): malformed and huge headers, unicode and
//! control bytes in usernames, forged, tampered, expired, other-service and `alg: none`
//! tokens, tokens for another scope. None gets in (a private image stays unread and
//! unlisted), none gets a 500.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::send;
use proptest::prelude::*;
use stowage_auth::jwt::{self, Claims};
use stowage_auth::{Auth, AuthConfig, Caller, Op, Principal, Subject, Visibility};
use stowage_server::auth::{FailedLogins, Gate};
use stowage_server::{AppState, router};
use stowage_storage::{Store, StoreOptions};

struct World {
    app: axum::Router,
    rt: tokio::runtime::Runtime,
    /// A token alice may use for the public namespace only.
    pub_only: String,
    /// The current signing key and its id, as an insider would steal them.
    key: (String, Vec<u8>),
    /// A registry token legitimately issued to alice for pulling `pub/app`.
    pub_jwt: String,
}

fn world() -> World {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let w = rt.block_on(async {
        let store = Store::open(StoreOptions::new("memory://")).await.unwrap();
        let auth = Auth::open(
            &store,
            AuthConfig {
                admins: vec!["root".into()],
                service: "registry.test".into(),
                ..AuthConfig::default()
            },
        )
        .await
        .unwrap();
        let root = Caller::account(Principal::User("root".into()));
        for op in [
            Op::UserCreate {
                name: "alice".into(),
                password: Some("alice password".into()),
                admin: false,
            },
            Op::NamespaceCreate {
                name: "team".into(),
                visibility: Visibility::Private,
            },
            Op::NamespaceCreate {
                name: "pub".into(),
                visibility: Visibility::Public,
            },
            Op::Grant {
                subject: Subject::User("alice".into()),
                namespace: "pub".into(),
                action: stowage_auth::Action::Push,
            },
        ] {
            auth.apply(&root, op).await.unwrap();
        }
        let made = auth
            .apply(
                &root,
                Op::TokenCreate {
                    owner: Some(Principal::User("alice".into())),
                    expires_in: None,
                    access: Default::default(),
                    namespace: Some("pub".into()),
                    description: String::new(),
                },
            )
            .await
            .unwrap();
        let pub_only = made["token"].as_str().unwrap().to_string();
        // A private image, written straight to the store.
        let name = stowage_storage::RepoName::parse("team/app").unwrap();
        let cfg = bytes::Bytes::from_static(b"{}");
        let d = stowage_storage::Digest::sha256(&cfg);
        let repo = store.repository(&name);
        repo.put_blob(
            &d,
            futures::stream::iter([Ok::<_, std::io::Error>(cfg.clone())]),
        )
        .await
        .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d.to_string(), "size": 2},
            "layers": [],
        })
        .to_string();
        let md = stowage_storage::Digest::sha256(manifest.as_bytes());
        repo.put_manifest(
            &md,
            "application/vnd.oci.image.manifest.v1+json",
            bytes::Bytes::from(manifest),
            None,
            &stowage_storage::References {
                blobs: vec![d],
                manifests: vec![],
                required: true,
            },
        )
        .await
        .unwrap();
        repo.set_tag(&stowage_storage::Tag::parse("v1").unwrap(), &md)
            .await
            .unwrap();
        let alice = auth.verify_token(&pub_only).await.unwrap();
        let issued = auth
            .issue(&alice, &jwt::parse_scopes("repository:pub/app:pull"))
            .await
            .unwrap();
        let kid = jwt::header_kid(&issued.token).unwrap();
        let record = store
            .records("auth")
            .unwrap()
            .get(&format!("keys/{kid}"))
            .await
            .unwrap()
            .unwrap()
            .0;
        let v: serde_json::Value = serde_json::from_slice(&record).unwrap();
        let key = hex::decode(v["key"].as_str().unwrap()).unwrap();
        let mut state = AppState::new(store);
        state.gate = Some(Gate {
            auth,
            public_url: Some("http://registry.test".into()),
            https: false,
            public_metrics: false,
            failed: Arc::new(FailedLogins::new(0, Duration::from_secs(60))),
        });
        (router(state), pub_only, (kid, key), issued.token)
    });
    World {
        app: w.0,
        rt,
        pub_only: w.1,
        key: w.2,
        pub_jwt: w.3,
    }
}

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// Registry tokens an attacker might present.
fn forged(w: &World, variant: u8, sub: &str, scope: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let mut c = Claims {
        iss: "registry.test".into(),
        sub: sub.into(),
        aud: "registry.test".into(),
        exp: now + 300,
        nbf: now - 1,
        iat: now,
        jti: "x".into(),
        access: jwt::parse_scopes(scope),
        tid: None,
        pwv: None,
        typ: None,
    };
    let (kid, key) = &w.key;
    match variant % 7 {
        // alg none with our kid.
        0 => format!(
            "{}.{}.",
            b64(format!(r#"{{"alg":"none","typ":"JWT","kid":"{kid}"}}"#).as_bytes()),
            b64(serde_json::to_string(&c).unwrap().as_bytes())
        ),
        // Signed with another key.
        1 => jwt::sign(&c, kid, b"not the registry's key, but 32 bytes long!").unwrap(),
        // Our key, another service.
        2 => {
            c.aud = "other.service".into();
            c.iss = "other.service".into();
            jwt::sign(&c, kid, key).unwrap()
        }
        // Our key, expired.
        3 => {
            c.exp = now - 120;
            c.nbf = now - 600;
            jwt::sign(&c, kid, key).unwrap()
        }
        // A real token with its payload swapped.
        4 => {
            let parts: Vec<&str> = w.pub_jwt.split('.').collect();
            format!(
                "{}.{}.{}",
                parts[0],
                b64(serde_json::to_string(&c).unwrap().as_bytes()),
                parts[2]
            )
        }
        // A refresh token used as an access token, with our key.
        5 => {
            c.typ = Some("refresh".into());
            jwt::sign(&c, kid, key).unwrap()
        }
        // The real token for another scope.
        _ => w.pub_jwt.clone(),
    }
}

fn header_strategy() -> impl Strategy<Value = (u8, String, String, String)> {
    (
        any::<u8>(),
        // usernames and passwords with unicode and control characters
        "\\PC{0,40}|[\\x00-\\x1f\\x7f]{0,8}|.{0,200}",
        "\\PC{0,80}",
        prop_oneof![
            Just("user:alice".to_string()),
            Just("user:root".to_string()),
            Just("user:mallory".to_string()),
            Just("anonymous".to_string()),
            Just("robot:team+ci".to_string()),
            "\\PC{0,30}",
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn nobody_gets_in_and_nothing_breaks((variant, user, pass, sub) in header_strategy()) {
        thread_local! {
            static WORLD: World = world();
        }
        WORLD.with(|w| {
            let scope = "repository:team/app:pull,push,delete";
            let authorization: Vec<u8> = match variant % 9 {
                0 => format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))).into_bytes(),
                1 => format!("Bearer {pass}").into_bytes(),
                2 => format!("Bearer {}", forged(w, variant / 9, &sub, scope)).into_bytes(),
                3 => format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", w.pub_only))).into_bytes(),
                4 => format!("Basic {user}").into_bytes(),
                5 => format!("Bearer {}", "A".repeat(20_000 + usize::from(variant))).into_bytes(),
                6 => format!("Digest {pass}").into_bytes(),
                7 => format!("Bearer stw_{}_{}", "0".repeat(20), "a".repeat(43)).into_bytes(),
                _ => pass.clone().into_bytes(),
            };
            let requests = [
                ("GET", "/v2/team/app/manifests/v1"),
                ("HEAD", "/v2/team/app/manifests/v1"),
                ("GET", "/v2/team/app/tags/list"),
                ("DELETE", "/v2/team/app/manifests/v1"),
                ("POST", "/v2/team/app/blobs/uploads/"),
                ("GET", "/v2/_catalog"),
                ("GET", "/v2/"),
                ("GET", "/auth/token?service=registry.test&scope=repository:team/app:pull"),
                ("GET", "/stowage/v1/whoami"),
                ("GET", "/metrics"),
                ("GET", "/oapi/v1/namespaces/team/imagestreams"),
                ("GET", "/apis/image.openshift.io/v1/namespaces/team/imagestreamtags/app:v1"),
            ];
            for (method, uri) in requests {
                let mut req = Request::builder().method(method).uri(uri);
                if let Ok(v) = axum::http::HeaderValue::from_bytes(&authorization) {
                    req = req.header("authorization", v);
                }
                let (status, headers, body) = w.rt.block_on(send(&w.app, req.body(Body::empty()).unwrap()));
                prop_assert!(!status.is_server_error(), "{method} {uri} -> {status}: {}", String::from_utf8_lossy(&body));
                let text = String::from_utf8_lossy(&body);
                match uri {
                    "/v2/_catalog" => prop_assert!(!text.contains("team/app"), "catalog leaked: {text}"),
                    u if u.starts_with("/v2/team") => prop_assert!(
                        matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST),
                        "{method} {uri} let {:?} in: {status}", String::from_utf8_lossy(&authorization)
                    ),
                    u if u.starts_with("/auth/token") && status == StatusCode::OK => {
                        // Whatever the credentials, a token never grants the private repository.
                        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        let t = v["token"].as_str().unwrap();
                        let payload = t.split('.').nth(1).unwrap();
                        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
                        prop_assert!(!String::from_utf8_lossy(&claims).contains("team/app"), "granted: {}", String::from_utf8_lossy(&claims));
                    }
                    "/metrics" => prop_assert_ne!(status, StatusCode::OK),
                    u if u.contains("/namespaces/team/") => prop_assert!(
                        matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                        "{uri} let {:?} in: {status}", String::from_utf8_lossy(&authorization)
                    ),
                    _ => {}
                }
                if status == StatusCode::UNAUTHORIZED {
                    prop_assert!(headers.contains_key("www-authenticate") || uri.starts_with("/auth/token"), "401 without a challenge at {uri}");
                }
            }
            Ok(())
        })?;
    }
}
