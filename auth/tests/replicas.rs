//! Two `Auth` handles on one store behave as two replicas: changes made through one are
//! seen by the other after a refresh, registry tokens signed by one verify on the other,
//! concurrent policy changes are all kept, revocations reach cached tokens within the
//! refresh bound, and last use is recorded on flush, not per request. Run on memory
//! (one store shared in-process), local disk and S3 (two opens of one store).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use stowage_auth::jwt::parse_scopes;
use stowage_auth::{Action, Auth, AuthConfig, Caller, Op, Principal, Subject, Visibility};
use stowage_storage::Store;
use stowage_storage::testkit::{self, Kind};

fn config() -> AuthConfig {
    AuthConfig {
        admins: vec!["root".into()],
        service: "test".into(),
        refresh: Duration::from_millis(300),
        ..AuthConfig::default()
    }
}

/// Two handles on one store, each through its own open of it (as two processes).
async fn replicas(kind: Kind) -> (Auth, Auth, Option<tempfile::TempDir>) {
    let (options, dir) = testkit::options(kind);
    let a = Store::open(options.clone()).await.unwrap();
    let b = match kind {
        // Memory is one process's: share the store itself.
        Kind::Memory => a.clone(),
        _ => Store::open(options).await.unwrap(),
    };
    (
        Auth::open(&a, config()).await.unwrap(),
        Auth::open(&b, config()).await.unwrap(),
        dir,
    )
}

fn root() -> Caller {
    Caller::account(Principal::User("root".into()))
}

/// A new token of alice's, made by root: the answer with its secret.
async fn alices_token(auth: &Auth) -> serde_json::Value {
    auth.apply(
        &root(),
        Op::TokenCreate {
            owner: Some(Principal::User("alice".into())),
            expires_in: None,
            access: Default::default(),
            namespace: None,
            description: String::new(),
        },
    )
    .await
    .unwrap()
}

async fn behave_as_replicas(a: Auth, b: Auth) {
    a.apply(
        &root(),
        Op::UserCreate {
            name: "alice".into(),
            password: None,
            admin: false,
        },
    )
    .await
    .unwrap();
    a.apply(
        &root(),
        Op::NamespaceCreate {
            name: "team".into(),
            visibility: Visibility::Private,
        },
    )
    .await
    .unwrap();
    // Concurrent grants through both handles: none lost (compare-and-swap).
    let grants = (0..8).map(|i| {
        let h = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            h.apply(
                &root(),
                Op::Grant {
                    subject: Subject::User("alice".into()),
                    namespace: format!("ns{i}"),
                    action: Action::Pull,
                },
            )
            .await
            .unwrap();
        }
    });
    futures_join(grants).await;
    // Each handle saw its own writes at once; the other's after a refresh.
    a.refresh().await.unwrap();
    b.refresh().await.unwrap();
    assert_eq!(a.policy().grants.len(), 8, "{:?}", a.policy().grants);
    assert_eq!(b.policy().grants.len(), 8, "{:?}", b.policy().grants);

    // A token made on A works on B; a registry token signed by A verifies on B.
    let made = alices_token(&a).await;
    let secret = made["token"].as_str().unwrap().to_string();
    let alice = b.verify_token(&secret).await.unwrap();
    assert_eq!(alice.principal, Principal::User("alice".into()));
    let issued = a
        .issue(&alice, &parse_scopes("repository:ns3/app:pull,push"))
        .await
        .unwrap();
    assert_eq!(issued.access.len(), 1);
    assert_eq!(issued.access[0].actions, ["pull"], "push was not granted");
    let on_b = b.verify_bearer(&issued.token).await.unwrap();
    assert!(on_b.granted("repository", "ns3/app", Action::Pull));
    assert!(!on_b.granted("repository", "ns3/app", Action::Push));

    // Revoked on A: B refuses the token and the registry token within the bound.
    a.apply(
        &root(),
        Op::TokenRevoke {
            token: made["id"].as_str().unwrap().into(),
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.verify_token(&secret).await.is_err());
    assert!(b.verify_bearer(&issued.token).await.is_err());

    // Last use: recorded by a flush, once.
    let fresh = alices_token(&a).await;
    let id = fresh["id"].as_str().unwrap();
    let fresh = fresh["token"].as_str().unwrap();
    for _ in 0..50 {
        b.verify_token(fresh).await.unwrap();
    }
    assert!(a.token(id).await.unwrap().unwrap().last_used.is_none());
    b.flush_usage().await.unwrap();
    assert!(a.token(id).await.unwrap().unwrap().last_used.is_some());

    // Deleting the account ends its tokens on the other replica after a refresh.
    a.apply(
        &root(),
        Op::UserDelete {
            name: "alice".into(),
        },
    )
    .await
    .unwrap();
    b.refresh().await.unwrap();
    assert!(b.verify_token(fresh).await.is_err());
}

/// Runs the futures at once, on the runtime's threads.
async fn futures_join<F>(fs: impl Iterator<Item = F>)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handles: Vec<_> = fs.map(tokio::spawn).collect();
    for h in handles {
        h.await.unwrap();
    }
}

async fn replicas_agree(kind: Kind) {
    let (a, b, _dir) = replicas(kind).await;
    behave_as_replicas(a, b).await;
}

stowage_storage::on_every_backend!(replicas_agree);
