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
        None,
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
        None,
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
        None,
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
        None,
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
        None,
        &ctx("anonymous", t(1, 9)),
    )
    .await;
    assert!(matches!(
        bad,
        Err(CommandError::User(UserError::InvalidEmail))
    ));
    // A control character would end up in mail headers: refused when given, not stored.
    let nul = register_user(
        &*store,
        "bo\u{0}b@example.org",
        "Bob",
        "long enough pw",
        None,
        &ctx("anonymous", t(1, 9)),
    )
    .await;
    assert!(matches!(
        nul,
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
                    None,
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

#[tokio::test]
async fn a_referral_earns_the_referrer_200_points() {
    use tessera_commands::reactor::{LoyaltyReactor, ManualClock, ReactorRunner};
    use tessera_domain::loyalty::LoyaltyAggregate;
    let db = TestDatabase::new().await;
    let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(
        db.pool.clone(),
        PgStoreOptions::default(),
    ));
    let (referrer, _) = register_user(
        &*store,
        "ref@example.org",
        "Ref",
        "a fine password",
        None,
        &ctx("anonymous", t(1, 9)),
    )
    .await
    .expect("referrer");
    register_user(
        &*store,
        "new@example.org",
        "New",
        "a fine password",
        Some(referrer),
        &ctx("anonymous", t(1, 9)),
    )
    .await
    .expect("referred");
    let unknown = register_user(
        &*store,
        "x@example.org",
        "X",
        "a fine password",
        Some(UserId(Uuid::new_v4())),
        &ctx("anonymous", t(1, 9)),
    )
    .await;
    assert!(matches!(unknown, Err(CommandError::NotFound { .. })));
    let runner = ReactorRunner {
        store: Arc::clone(&store),
        pool: db.pool.clone(),
        clock: Arc::new(ManualClock::new(t(1, 9))),
    };
    runner
        .run_until_idle(&LoyaltyReactor {
            store: Arc::clone(&store),
        })
        .await
        .expect("loyalty");
    let account = load::<LoyaltyAggregate>(
        &*store,
        stream_of::<LoyaltyAggregate>(referrer),
        Uuid::nil(),
    )
    .await
    .expect("load")
    .state;
    assert_eq!(account.balance, 200);
}
