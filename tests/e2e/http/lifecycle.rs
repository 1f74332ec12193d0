//! Accounts over their lifetime: profile changes, password changes that end the other
//! sessions, reset links that work once and expire, and suspensions that take effect at once.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server, assert_problem, eventually};

const PASSWORD: &str = "correct horse battery";

/// Registers `email`; returns its user id.
async fn register(s: &Server, email: &str) -> String {
    let (status, body) = s
        .post(
            "/auth/register",
            None,
            json!({ "email": email, "display_name": "Lee", "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["user_id"].as_str().expect("user").to_owned()
}

async fn login(s: &Server, email: &str, password: &str) -> (StatusCode, Value) {
    s.post(
        "/auth/login",
        None,
        json!({ "email": email, "password": password }),
    )
    .await
}

fn access(tokens: &Value) -> &str {
    tokens["access_token"].as_str().expect("access token")
}

async fn refresh(s: &Server, tokens: &Value) -> (StatusCode, Value) {
    s.post(
        "/auth/refresh",
        None,
        json!({ "refresh_token": tokens["refresh_token"] }),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_changes_what_is_given_and_refuses_what_is_malformed() {
    let s = Server::start(Options::default()).await;
    register(&s, "profile@example.org").await;
    let (_, tokens) = login(&s, "profile@example.org", PASSWORD).await;
    let token = access(&tokens);
    let patch = async |body: Value| {
        s.call(Method::PATCH, "/me", Some(token), Some(body), &[])
            .await
    };

    let (status, _, me) = patch(json!({
        "display_name": " Lee Chan ",
        "phone": "+44 (20) 7946-0958",
        "locale": "de",
    }))
    .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["display_name"], "Lee Chan");
    assert_eq!(me["phone"], "+442079460958");
    assert_eq!(me["locale"], "de");

    // Absent leaves a value, null removes it; nothing changed writes nothing.
    let head = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&s.db.pool)
            .await
            .expect("count")
    };
    let before = head().await;
    let (status, _, me) = patch(json!({ "display_name": "Lee Chan" })).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["phone"], "+442079460958");
    assert_eq!(head().await, before, "an unchanged profile appends nothing");
    let (status, _, me) = patch(json!({ "phone": null })).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["phone"], Value::Null);
    let (_, me) = s.get("/me", Some(token)).await;
    assert_eq!(me["display_name"], "Lee Chan");

    // The phone number is personal data: the log holds it sealed, never in plain text.
    let plain: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE data::text LIKE '%442079460958%'")
            .fetch_one(&s.db.pool)
            .await
            .expect("count");
    assert_eq!(plain, 0, "the phone number is encrypted in the log");

    for (body, code, field) in [
        (json!({ "phone": "12345" }), "user.invalid_phone", "phone"),
        (
            json!({ "display_name": "" }),
            "user.invalid_display_name",
            "display_name",
        ),
        (json!({ "locale": "xx" }), "request.invalid", "locale"),
    ] {
        let (status, headers, problem) = patch(body.clone()).await;
        assert_problem(
            status,
            &headers,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        );
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    let (status, _, problem) = patch(json!({ "email": "x@example.org" })).await;
    assert!(status.is_client_error(), "{problem}");
    let (status, _, _) = s
        .call(Method::PATCH, "/me", None, Some(json!({})), &[])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_ends_every_other_session_at_once() {
    let s = Server::start(Options::default()).await;
    let email = "sessions@example.org";
    register(&s, email).await;
    let (_, here) = login(&s, email, PASSWORD).await;
    let (_, elsewhere) = login(&s, email, PASSWORD).await;

    let change = async |current: &str, new: &str| {
        s.call(
            Method::POST,
            "/me/password",
            Some(access(&here)),
            Some(json!({ "current_password": current, "new_password": new })),
            &[],
        )
        .await
    };
    let (status, headers, problem) = change("not my password", "a brand new secret").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "user.wrong_password",
    );
    let (status, headers, problem) = change(PASSWORD, "short").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "user.weak_password",
    );
    let (status, _, changed) = change(PASSWORD, "a brand new secret").await;
    assert_eq!(status, StatusCode::OK, "{changed}");

    // The session that changed it goes on; the other one ended, access and refresh alike.
    let (status, _) = s.get("/me", Some(access(&here))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = s.get("/me", Some(access(&elsewhere))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = refresh(&s, &elsewhere).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, renewed) = refresh(&s, &here).await;
    assert_eq!(status, StatusCode::OK, "{renewed}");
    let (status, _) = s.get("/me", Some(access(&renewed))).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = login(&s, email, PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, fresh) = login(&s, email, "a brand new secret").await;
    assert_eq!(status, StatusCode::OK, "{fresh}");
    let (status, _) = s.get("/me", Some(access(&fresh))).await;
    assert_eq!(status, StatusCode::OK);

    // The hash is personal data: sealed in the log like the first one.
    let stored: String =
        sqlx::query_scalar("SELECT data::text FROM events WHERE event_type = 'PasswordChanged'")
            .fetch_one(&s.db.pool)
            .await
            .expect("event");
    assert!(!stored.contains("$argon2"), "{stored}");
    s.shutdown().await;
}

/// The reset token of the newest reset message to `to`.
async fn reset_token(s: &Server, admin: &str, to: &str, after: usize) -> String {
    let eml = super::newest_message(s, admin, "password_reset", to, after).await;
    let start = eml.find("token=pr_").expect("a token in the message") + "token=".len();
    eml[start..start + 3 + 64].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_link_works_once_expires_and_tells_nobody_which_accounts_exist() {
    let s = Server::start(Options::default()).await;
    let admin = s.token("admin@tessera.test").await;
    let email = "forgetful@example.org";
    let user = register(&s, email).await;
    let (_, before) = login(&s, email, PASSWORD).await;

    // The same answer for an account and for no account; a message only for the account.
    let (status, known) = s
        .post("/auth/password-reset", None, json!({ "email": email }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{known}");
    let (status, unknown) = s
        .post(
            "/auth/password-reset",
            None,
            json!({ "email": "nobody@example.org" }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(known, unknown);
    let token = reset_token(&s, &admin, &user, 0).await;
    // Only hashes are kept.
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM password_resets")
        .fetch_one(&s.db.pool)
        .await
        .expect("count");
    assert_eq!(kept, 1, "one link, for the one account");

    let confirm = async |token: &str, password: &str| {
        s.call(
            Method::POST,
            "/auth/password-reset/confirm",
            None,
            Some(json!({ "token": token, "new_password": password })),
            &[],
        )
        .await
    };
    // A weak password does not spend the link.
    let (status, headers, problem) = confirm(&token, "short").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "user.weak_password",
    );
    let (status, _, done) = confirm(&token, "reset and remembered").await;
    assert_eq!(status, StatusCode::OK, "{done}");
    // Used once: never again. Every earlier session ended.
    let (status, headers, problem) = confirm(&token, "another new password").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::BAD_REQUEST,
        "auth.reset_link_invalid",
    );
    let (status, _) = s.get("/me", Some(access(&before))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = refresh(&s, &before).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&s, email, PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, after) = login(&s, email, "reset and remembered").await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let (status, _) = s.get("/me", Some(access(&after))).await;
    assert_eq!(status, StatusCode::OK);

    // A link an hour old no longer works (aged in storage: the clock is the database's).
    let (status, _) = s
        .post("/auth/password-reset", None, json!({ "email": email }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let late = reset_token(&s, &admin, &user, 1).await;
    sqlx::query(
        "UPDATE password_resets SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    )
    .execute(&s.db.pool)
    .await
    .expect("age the link");
    let (status, headers, problem) = confirm(&late, "too late for this").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::BAD_REQUEST,
        "auth.reset_link_invalid",
    );
    let (status, headers, problem) = confirm("pr_forged", "whatever it takes").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::BAD_REQUEST,
        "auth.reset_link_invalid",
    );

    // At most three links an hour per account, however often it is asked.
    for _ in 0..3 {
        let (status, _) = s
            .post("/auth/password-reset", None, json!({ "email": email }))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let links = eventually("the requests are handled", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM password_resets WHERE created_at > now() - interval '1 hour'",
        )
        .fetch_one(&s.db.pool)
        .await
        .expect("count");
        (n >= 3).then_some(n)
    })
    .await;
    assert_eq!(links, 3, "the hourly limit holds");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_user_is_refused_at_once_until_reinstated() {
    let s = Server::start(Options::default()).await;
    let admin = s.login("admin@tessera.test").await;
    let admin_token = access(&admin).to_owned();
    let customer = s.login("customer@tessera.test").await;
    let (_, me) = s.get("/me", Some(access(&customer))).await;
    let user = me["user_id"].as_str().expect("user").to_owned();

    let act = async |what: &str, user: &str, body: Value| {
        s.call(
            Method::POST,
            &format!("/admin/users/{user}/{what}"),
            Some(&admin_token),
            Some(body),
            &[],
        )
        .await
    };
    let (status, headers, problem) = act("suspend", &user, json!({ "reason": " " })).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    let admin_id = admin["user_id"].as_str().expect("admin").to_owned();
    let (status, headers, problem) = act("suspend", &admin_id, json!({ "reason": "oops" })).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::CONFLICT,
        "user.self_removal",
    );
    let (status, _, done) = act("suspend", &user, json!({ "reason": "chargeback fraud" })).await;
    assert_eq!(status, StatusCode::OK, "{done}");

    // At once: the token in hand, the refresh token, a new login.
    let (status, problem) = s.get("/me", Some(access(&customer))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    let (status, _) = refresh(&s, &customer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, headers, problem) = s
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "customer@tessera.test", "password": tessera_fixtures::DEMO_PASSWORD })),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::FORBIDDEN,
        "user.suspended",
    );
    // A wrong password does not learn of the suspension.
    let (status, _) = login(&s, "customer@tessera.test", "a wrong password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, headers, problem) = act("suspend", &user, json!({ "reason": "again" })).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::CONFLICT,
        "user.already_suspended",
    );
    // The log records who and why.
    let (actor, reason): (String, Option<String>) =
        sqlx::query_as("SELECT actor, reason FROM events WHERE event_type = 'UserSuspended'")
            .fetch_one(&s.db.pool)
            .await
            .expect("event");
    assert_eq!(actor, format!("user:{admin_id}"));
    assert_eq!(reason.as_deref(), Some("chargeback fraud"));

    let (status, _, done) = act("unsuspend", &user, json!({ "reason": "cleared" })).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let (status, headers, problem) = act("unsuspend", &user, json!({ "reason": "twice" })).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::CONFLICT,
        "user.not_suspended",
    );
    // Reinstated: a new login works; the sessions revoked at the suspension stay revoked.
    let again = s.login("customer@tessera.test").await;
    let (status, _) = s.get("/me", Some(access(&again))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = refresh(&s, &customer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_finds_a_customers_bookings_by_e_mail_address() {
    let s = Server::start(Options::default()).await;
    let admin = s.token("admin@tessera.test").await;
    let customer = s.login("customer@tessera.test").await;
    let id = customer["user_id"].as_str().expect("user").to_owned();
    let (_, slot) = s.free_slot(1, 3).await;
    let (status, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(access(&customer)),
            Some(json!({ "slot_id": slot["slot_id"], "seats": 1 })),
            &[("idempotency-key", "found-by-address".into())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    s.caught_up().await;

    // Any spelling of the address finds the same customer, and only them.
    let (status, page) = s
        .get(
            "/admin/bookings?email=%20Customer@Tessera.TEST&limit=200",
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let total = page["total"].as_i64().expect("total");
    assert!(total > 0, "the demo customer has bookings: {page}");
    let bookings = page["bookings"].as_array().expect("bookings");
    assert!(
        bookings.iter().all(|b| b["customer_id"] == id.as_str()),
        "{page}"
    );
    let (_, by_id) = s
        .get(
            &format!("/admin/bookings?customer_id={id}&limit=200"),
            Some(&admin),
        )
        .await;
    assert_eq!(by_id["total"], total);

    // Filters narrow; an address without an account matches nothing.
    let (_, confirmed) = s
        .get(
            "/admin/bookings?email=customer@tessera.test&status=confirmed",
            Some(&admin),
        )
        .await;
    let confirmed = confirmed["bookings"].as_array().expect("bookings");
    assert!(confirmed.iter().all(|b| b["status"] == "confirmed"));
    let (status, none) = s
        .get("/admin/bookings?email=nobody@example.org", Some(&admin))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(none["total"], 0, "{none}");

    for (query, field) in [
        ("email=not-an-address", "email"),
        (
            &*format!("email=customer@tessera.test&customer_id={id}"),
            "customer_id",
        ),
        ("status=lost", "status"),
        ("limit=0", "limit"),
    ] {
        let (status, headers, problem) = s
            .call(
                Method::GET,
                &format!("/admin/bookings?{query}"),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_problem(
            status,
            &headers,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid",
        );
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let (status, _) = s
        .get(
            "/admin/bookings?email=customer@tessera.test",
            Some(access(&customer)),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_lists_and_finds_users_without_the_read_model_holding_addresses() {
    let s = Server::start(Options::default()).await;
    let admin = s.token("admin@tessera.test").await;
    let customer = s.login("customer@tessera.test").await;
    let id = customer["user_id"].as_str().expect("user").to_owned();
    s.caught_up().await;
    let users = |query: String| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let (status, body) = s.get(&format!("/admin/users?{query}"), Some(&admin)).await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body.as_array().expect("users").clone()
        }
    };

    // By address (any spelling), through the blind index.
    let found = users("email=%20Customer@Tessera.TEST".into()).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["user_id"], id.as_str());
    assert!(users("email=nobody@example.org".into()).await.is_empty());
    // By whole words of the name, any case; by role; a page at a time, newest first.
    let name = found[0]["display_name"].as_str().expect("name").to_owned();
    let word = name
        .split_whitespace()
        .last()
        .expect("a word")
        .to_uppercase();
    let by_name = users(format!("q={}", super::urlencode(&word))).await;
    assert!(
        by_name.iter().any(|u| u["user_id"] == id.as_str()),
        "{word}: {by_name:?}"
    );
    assert!(by_name.iter().all(|u| {
        u["display_name"]
            .as_str()
            .is_some_and(|n| n.to_uppercase().split_whitespace().any(|w| w == word))
    }));
    let providers = users("role=provider&limit=200".into()).await;
    assert!(!providers.is_empty());
    assert!(providers.iter().all(|u| {
        u["roles"]
            .as_array()
            .is_some_and(|r| r.contains(&json!("provider")))
    }));
    let first = users("limit=2".into()).await;
    let second = users("limit=2&offset=2".into()).await;
    assert_eq!(first.len(), 2);
    assert!(
        second.iter().all(|u| !first.contains(u)),
        "pages do not overlap"
    );

    // Suspended users, with the reason.
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/admin/users/{id}/suspend"),
            Some(&admin),
            Some(json!({ "reason": "chargeback under review" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let suspended = eventually("the suspension listed", || async {
        let list = users("suspended=true".into()).await;
        list.iter()
            .any(|u| u["user_id"] == id.as_str())
            .then_some(list)
    })
    .await;
    let me = suspended
        .iter()
        .find(|u| u["user_id"] == id.as_str())
        .expect("listed");
    assert_eq!(me["suspended_reason"], "chargeback under review");

    // No column of the read model holds an address or a name, whatever their spelling.
    let rows: Vec<String> = sqlx::query_scalar("SELECT to_jsonb(u)::text FROM read.users u")
        .fetch_all(&s.db.pool)
        .await
        .expect("rows");
    assert!(!rows.is_empty());
    let lower = name.to_lowercase();
    assert!(
        rows.iter()
            .all(|r| !r.contains("tessera.test") && !r.to_lowercase().contains(&lower)),
        "{rows:?}"
    );

    for (query, field) in [
        ("email=not-an-address", "email"),
        ("role=pilot", "role"),
        ("q=%20-%20", "q"),
        ("limit=201", "limit"),
    ] {
        let (status, headers, problem) = s
            .call(
                Method::GET,
                &format!("/admin/users?{query}"),
                Some(&admin),
                None,
                &[],
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        assert_problem(
            status,
            &headers,
            &problem,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid",
        );
        assert_eq!(problem["errors"][0]["field"], field, "{query}: {problem}");
    }
    let other = s.token("customer1@tessera.test").await;
    let (status, _) = s.get("/admin/users", Some(&other)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wishlist_saves_listings_once_in_order() {
    let s = Server::start(Options::default()).await;
    let token = s.token("customer@tessera.test").await;
    let (_, page) = s.get("/listings?limit=3", None).await;
    let ids: Vec<String> = page["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|l| l["listing_id"].as_str().expect("id").to_owned())
        .collect();
    assert!(ids.len() >= 2, "{page}");
    let put = async |id: &str| {
        s.call(
            Method::PUT,
            &format!("/me/wishlist/{id}"),
            Some(&token),
            None,
            &[],
        )
        .await
    };
    for id in [&ids[1], &ids[0], &ids[1]] {
        let (status, _, body) = put(id).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, list) = s.get("/me/wishlist", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let saved: Vec<&str> = list
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["listing_id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        saved,
        [ids[1].as_str(), ids[0].as_str()],
        "saved once, in order"
    );
    assert_eq!(list[0]["listing"]["listing_id"], ids[1].as_str(), "{list}");
    let saves: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'ListingSaved'")
            .fetch_one(&s.db.pool)
            .await
            .expect("count");
    assert_eq!(saves, 2, "saving again writes nothing");

    let (status, _, _) = s
        .call(
            Method::DELETE,
            &format!("/me/wishlist/{}", ids[1]),
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, list) = s.get("/me/wishlist", Some(&token)).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");

    let (status, headers, problem) = put(&uuid::Uuid::new_v4().to_string()).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::NOT_FOUND,
        "listing.not_found",
    );
    let (status, headers, problem) = put("not-a-uuid").await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::BAD_REQUEST,
        "request.invalid_path",
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_address_is_confirmed_by_its_own_link_and_frees_the_old_one() {
    let s = Server::start(Options::default()).await;
    let admin = s.token("admin@tessera.test").await;
    let id = register(&s, "lee@example.org").await;
    let (_, tokens) = login(&s, "lee@example.org", PASSWORD).await;
    let token = access(&tokens).to_owned();
    let first_link = super::verification_token(&s, &admin, &id, 0).await;

    // A second link on request; both work until they expire.
    let (status, body) = s
        .post("/me/email/verification", Some(&token), json!(null))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    super::verification_token(&s, &admin, &id, 1).await;

    // Changing the address needs the password and a free address.
    let change =
        |password: &str, email: &str| json!({ "current_password": password, "email": email });
    let (status, headers, body) = s
        .call(
            Method::POST,
            "/me/email",
            Some(&token),
            Some(change("wrong password!", "lee.new@example.org")),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "user.wrong_password",
    );
    let (status, headers, body) = s
        .call(
            Method::POST,
            "/me/email",
            Some(&token),
            Some(change(PASSWORD, "Customer@Tessera.test")),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "user.email_taken",
    );
    let (status, body) = s
        .post(
            "/me/email",
            Some(&token),
            change(PASSWORD, " Lee.New@Example.org "),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, me) = s.get("/me", Some(&token)).await;
    assert_eq!(me["email"], "lee.new@example.org");
    assert_eq!(me["email_verified"], false);

    // The link sent to the old address confirms nothing now; the new address's own link does.
    let (status, headers, body) = s
        .call(
            Method::POST,
            "/auth/verify-email",
            None,
            Some(json!({ "token": first_link })),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::BAD_REQUEST,
        "auth.verification_link_invalid",
    );
    let new_link = super::verification_token(&s, &admin, &id, 2).await;
    let (status, body) = s
        .post("/auth/verify-email", None, json!({ "token": new_link }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, me) = s.get("/me", Some(&token)).await;
    assert_eq!(me["email_verified"], true, "{me}");
    let (status, headers, body) = s
        .call(
            Method::POST,
            "/me/email/verification",
            Some(&token),
            None,
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "user.already_verified",
    );

    // Login follows the address; the old one is free for someone else.
    let (status, _) = login(&s, "lee@example.org", PASSWORD).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = login(&s, "lee.new@example.org", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    let other = register(&s, "lee@example.org").await;
    assert_ne!(other, id);
    let found = eventually("both addresses indexed", || async {
        let (_, new) = s
            .get("/admin/users?email=lee.new@example.org", Some(&admin))
            .await;
        let (_, old) = s
            .get("/admin/users?email=lee@example.org", Some(&admin))
            .await;
        (new[0]["user_id"] == id.as_str() && old[0]["user_id"] == other.as_str()).then_some(new)
    })
    .await;
    assert_eq!(found[0]["email_verified"], true, "{found}");
    s.shutdown().await;
}
