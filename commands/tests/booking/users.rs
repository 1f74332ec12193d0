//! Registration and login.

use std::sync::Arc;

use tessera_commands::error::CommandError;
use tessera_commands::handler::{load, stream_of};
use tessera_commands::users::{authenticate, register_user};
use tessera_domain::user::{Role, UserAggregate, UserError, UserState};
use uuid::Uuid;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_hashes_passwords_and_keeps_emails_unique() {
    let db = TestDatabase::new().await;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
        db.pool.clone(),
        PgStoreOptions::default(),
    ));
    let c = ctx("anonymous", t(1, 9));
    let (id, _) = register_user(
        &*store,
        "Ada@Example.org",
        "Ada",
        "correct horse battery",
        &c,
    )
    .await
    .expect("register");
    // A retried command is the same registration.
    let (again, replay) = register_user(
        &*store,
        "Ada@Example.org",
        "Ada",
        "correct horse battery",
        &c,
    )
    .await
    .expect("retry");
    assert!(replay.replayed && again == id);
    let UserState::Registered(user) =
        load::<UserAggregate>(&*store, stream_of::<UserAggregate>(id), Uuid::nil())
            .await
            .expect("load")
            .state
    else {
        panic!("registered");
    };
    assert!(
        user.password_hash.starts_with("$argon2id$"),
        "argon2id hash stored, never the password"
    );
    assert!(user.roles.contains(&Role::Customer));

    let taken = register_user(
        &*store,
        "ada@example.org",
        "Other",
        "another password!",
        &ctx("anonymous", t(1, 9)),
    )
    .await;
    assert!(
        matches!(taken, Err(CommandError::User(UserError::EmailTaken))),
        "{taken:?}"
    );
    let weak = register_user(
        &*store,
        "bob@example.org",
        "Bob",
        "short",
        &ctx("anonymous", t(1, 9)),
    )
    .await;
    assert!(matches!(
        weak,
        Err(CommandError::User(UserError::WeakPassword))
    ));
    let bad = register_user(
        &*store,
        "not an email",
        "Bob",
        "long enough pw",
        &ctx("anonymous", t(1, 9)),
    )
    .await;
    assert!(matches!(
        bad,
        Err(CommandError::User(UserError::InvalidEmail))
    ));

    // Two concurrent sign-ups with one address: exactly one account.
    let attempts: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                register_user(
                    &*store,
                    "eve@example.org",
                    "Eve",
                    "a fine password",
                    &ctx("anonymous", t(1, 9)),
                )
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for a in attempts {
        match a.await.expect("task") {
            Ok(_) => ok += 1,
            Err(CommandError::User(UserError::EmailTaken)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 1);

    assert_eq!(
        authenticate(&*store, "ADA@example.org", "correct horse battery")
            .await
            .expect("login")
            .id,
        id
    );
    for (email, password) in [
        ("ada@example.org", "wrong password"),
        ("nobody@example.org", "correct horse battery"),
    ] {
        let err = authenticate(&*store, email, password)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, CommandError::User(UserError::BadCredentials)),
            "{err}"
        );
    }
}
