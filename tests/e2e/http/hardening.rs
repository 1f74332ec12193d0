//! What outside testing broke (issue 19), each kept out by a test: bounded paging, unknown
//! projection names, text the platform refuses, overflowing numbers, replay flags, positions
//! beyond the head, tokens of erased users and revoked roles, the last admin, forged token
//! times, and a login limit nobody else can exhaust for you.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_api::http::auth::{AUDIENCE, Claims, ISSUER};

use super::{Options, Server, assert_problem};

fn key() -> (&'static str, String) {
    ("idempotency-key", uuid::Uuid::new_v4().to_string())
}

async fn hold(s: &Server, token: &str, slot: &str) -> Value {
    let (status, _, body) = s
        .call(
            Method::POST,
            "/bookings",
            Some(token),
            Some(json!({ "slot_id": slot, "seats": 1 })),
            &[key()],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn register(s: &Server, email: &str) -> (String, String) {
    let (status, body) = s
        .post(
            "/auth/register",
            None,
            json!({ "email": email, "display_name": "Grace Hopper", "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["user_id"].as_str().expect("user id").to_owned();
    let (status, login) = s
        .post(
            "/auth/login",
            None,
            json!({ "email": email, "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    (
        id,
        login["access_token"].as_str().expect("token").to_owned(),
    )
}

/// Points 1, 2, 3, 5, 15 and 21: each answer below was a 500, a misleading 409, a wait, or a
/// header and a body that disagreed.
#[tokio::test]
async fn the_surface_answers_bad_input_with_4xx_problems() {
    let s = Server::start(Options::default()).await;
    let customer = s.token("customer@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let analyst = s.token("analyst@tessera.test").await;
    let provider = s.token("provider@tessera.test").await;

    // 1. Paging is bounded: offset + limit ≤ 10,000, whatever fits in the integer type.
    for offset in ["1152921504606846976", "4611686018427387904", "9999999999"] {
        let (st, h, b) = s
            .call(
                Method::GET,
                &format!("/listings?offset={offset}"),
                None,
                None,
                &[],
            )
            .await;
        assert_problem(
            st,
            &h,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid",
        );
    }
    let (st, h, b) = s
        .call(
            Method::GET,
            "/listings?offset=18446744073709551616",
            None,
            None,
            &[],
        )
        .await;
    assert_problem(st, &h, &b, StatusCode::BAD_REQUEST, "request.invalid_query");
    let (st, page) = s.get("/listings?offset=9900&limit=100", None).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let (st, page) = s.get("/listings?lat=41.9&lng=12.5", None).await;
    assert_eq!(
        st,
        StatusCode::OK,
        "a point without a radius gets the default: {page}"
    );

    // 2. An unknown projection is named, with the known ones.
    for names in [json!(["nope"]), json!([""])] {
        let (st, h, b) = s
            .call(
                Method::POST,
                "/projections/rebuild",
                Some(&analyst),
                Some(json!({ "names": names })),
                &[],
            )
            .await;
        assert_problem(
            st,
            &h,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "projection.unknown",
        );
        assert_eq!(b["errors"][0]["field"], "names", "{b}");
        assert!(
            b["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("bookings") && m.contains("search")),
            "{b}"
        );
    }

    // 3. Text with U+0000 or control characters is refused at the boundary, by field.
    let (_, slot) = s.free_slot(1, 3).await;
    let slot = slot["slot_id"].as_str().expect("slot").to_owned();
    let placed = hold(&s, &customer, &slot).await;
    let booking = placed["booking_id"].as_str().expect("booking");
    let (st, h, b) = s
        .call(
            Method::POST,
            &format!("/bookings/{booking}/cancel"),
            Some(&customer),
            Some(json!({ "reason": "changed my mind\u{0}" })),
            &[key()],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    assert_eq!(b["errors"][0]["field"], "reason", "{b}");
    for (body, field) in [
        (
            json!({ "email": "nul\u{0}@example.com", "display_name": "Ada", "password": "correct horse battery" }),
            "email",
        ),
        (
            json!({ "email": "ada@example.com", "display_name": "Ada\u{0}", "password": "correct horse battery" }),
            "display_name",
        ),
        (
            json!({ "email": "ada@example.com", "display_name": "Ada\u{1b}[31m", "password": "correct horse battery" }),
            "display_name",
        ),
    ] {
        let (st, h, b) = s
            .call(Method::POST, "/auth/register", None, Some(body), &[])
            .await;
        assert_problem(
            st,
            &h,
            &b,
            StatusCode::UNPROCESSABLE_ENTITY,
            "request.invalid",
        );
        assert_eq!(b["errors"][0]["field"], field, "{b}");
    }
    let (st, h, b) = s
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": "long@example.com", "display_name": "x".repeat(5_000), "password": "correct horse battery" })),
            &[],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );

    // 5. Overflowing numbers are validation errors, not business rules.
    let (_, me) = s.get("/me", Some(&customer)).await;
    let me_id = me["user_id"].as_str().expect("id").to_owned();
    let (st, h, b) = s
        .call(
            Method::POST,
            &format!("/admin/users/{me_id}/points"),
            Some(&admin),
            Some(json!({ "delta": i64::MAX, "reason": "overflow" })),
            &[],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "loyalty.adjustment_out_of_range",
    );
    assert_eq!(b["errors"][0]["field"], "delta", "{b}");
    let listing = json!({
        "kind": "experience", "title": "Too dear", "description": "d",
        "destination": { "name": "Rome", "country": "IT", "lat": 41.9, "lng": 12.5 },
        "category": "food", "duration_minutes": 60, "price_minor": i64::MAX, "currency": "EUR"
    });
    let (st, h, b) = s
        .call(
            Method::POST,
            "/provider/listings",
            Some(&provider),
            Some(listing),
            &[],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    assert_eq!(b["errors"][0]["field"], "price_minor", "{b}");

    // 15. A replay says so in the header and in the body; the first answer in neither.
    let k = key();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let (st, h, b) = s
            .call(
                Method::POST,
                "/bookings",
                Some(&customer),
                Some(json!({ "slot_id": slot, "seats": 1 })),
                std::slice::from_ref(&k),
            )
            .await;
        assert_eq!(st, StatusCode::CREATED, "{b}");
        answers.push((
            h.get("idempotent-replayed").is_some(),
            b["replayed"].clone(),
        ));
    }
    assert_eq!(
        answers,
        [(false, json!(false)), (true, json!(true))],
        "header and body agree"
    );

    // 21. A position beyond the log's head is refused at once.
    let (st, h, b) = s
        .call(
            Method::GET,
            "/listings",
            None,
            None,
            &[("tessera-min-position", "999999999999".to_owned())],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "request.position_beyond_head",
    );

    // 16. A refused seal is an alert `/readyz` shows (the process stays ready, degraded).
    sqlx::query(
        "INSERT INTO seal_alerts (from_position, to_position, problem) \
         VALUES (5, 9, 'position 7 is missing')",
    )
    .execute(&s.db.pool)
    .await
    .expect("alert");
    let (st, ready) = s.get("/readyz", None).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert!(
        ready["alerts"][0]
            .as_str()
            .is_some_and(|a| a.contains("position 7 is missing")),
        "{ready}"
    );
    s.shutdown().await;
}

/// Points 6, 7, 9 and 10: tokens are checked against who their subject is now, the last admin
/// stays, forged times are refused, and failing logins elsewhere lock nobody out.
#[tokio::test]
async fn tokens_follow_the_log_and_admins_never_run_out() {
    let s = Server::start(Options {
        config: Some(tessera_api::http::ApiConfig {
            login_per_minute: 4,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let admin = s.token("admin@tessera.test").await;
    let (_, me) = s.get("/me", Some(&admin)).await;
    let admin_id = me["user_id"].as_str().expect("id").to_owned();
    let (_, slot) = s.free_slot(1, 3).await;
    let slot = slot["slot_id"].as_str().expect("slot").to_owned();

    // 6. An erased customer's token no longer places bookings.
    let (victim, victim_token) = register(&s, "erase-me@example.com").await;
    hold(&s, &victim_token, &slot).await;
    let (st, b) = s
        .post(
            &format!("/admin/users/{victim}/erase"),
            Some(&admin),
            json!({ "reason": "asked to be forgotten" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, h, b) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&victim_token),
            Some(json!({ "slot_id": slot, "seats": 1 })),
            &[key()],
        )
        .await;
    assert_problem(st, &h, &b, StatusCode::UNAUTHORIZED, "auth.unauthenticated");

    // 6. An erased admin's token no longer reads admin routes; a revoked role stops counting.
    let (second, _) = register(&s, "second-admin@example.com").await;
    let (third, _) = register(&s, "third-admin@example.com").await;
    for who in [&second, &third] {
        let (st, b) = s
            .post(
                &format!("/admin/users/{who}/roles"),
                Some(&admin),
                json!({ "role": "admin", "reason": "on call" }),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "{b}");
    }
    let second_token = s
        .token_with("second-admin@example.com", "correct horse battery")
        .await;
    let third_token = s
        .token_with("third-admin@example.com", "correct horse battery")
        .await;
    let (st, _) = s.get("/admin/stats/daily", Some(&second_token)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, b) = s
        .post(
            &format!("/admin/users/{third}/roles/revoke"),
            Some(&admin),
            json!({ "role": "admin", "reason": "rotation" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, _) = s.get("/admin/stats/daily", Some(&third_token)).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "a revoked role no longer counts");
    let (st, b) = s
        .post(
            &format!("/admin/users/{second}/erase"),
            Some(&admin),
            json!({ "reason": "left the company" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let (st, _) = s.get("/admin/stats/daily", Some(&second_token)).await;
    assert_eq!(
        st,
        StatusCode::UNAUTHORIZED,
        "an erased admin's token is dead"
    );

    // 6. A change another process made (here: written to the log directly, so this process
    // has nothing to forget by itself) reaches this process's token checks by following the log.
    let (elsewhere, elsewhere_token) = register(&s, "changed-elsewhere@example.com").await;
    let (st, _) = s.get("/me/loyalty", Some(&elsewhere_token)).await;
    assert_eq!(st, StatusCode::OK);
    // The platform's own store (personal data is encrypted), not this process's API.
    let store = s.platform.as_ref().expect("platform").state.store.clone();
    let ctx = tessera_commands::handler::CommandContext::new(
        uuid::Uuid::now_v7(),
        format!("user:{admin_id}"),
        chrono::Utc::now(),
    )
    .with_reason("revoked by another process");
    tessera_commands::users::change_role(
        &*store,
        tessera_domain::values::UserId(elsewhere.parse().expect("uuid")),
        tessera_domain::user::Role::Customer,
        false,
        &ctx,
    )
    .await
    .expect("revoke directly");
    super::eventually("the revocation reaches this process", || async {
        let (st, _) = s.get("/me/loyalty", Some(&elsewhere_token)).await;
        (st == StatusCode::FORBIDDEN).then_some(())
    })
    .await;

    // 7. An admin cannot erase or demote themselves.
    for (path, body) in [
        (
            format!("/admin/users/{admin_id}/erase"),
            json!({ "reason": "me" }),
        ),
        (
            format!("/admin/users/{admin_id}/roles/revoke"),
            json!({ "role": "admin", "reason": "me" }),
        ),
    ] {
        let (st, h, b) = s
            .call(Method::POST, &path, Some(&admin), Some(body), &[])
            .await;
        assert_problem(st, &h, &b, StatusCode::CONFLICT, "user.self_removal");
    }
    // 7. Two admins demoting each other at once: one of them stays an admin.
    let (fourth, _) = register(&s, "fourth-admin@example.com").await;
    let (st, b) = s
        .post(
            &format!("/admin/users/{fourth}/roles"),
            Some(&admin),
            json!({ "role": "admin", "reason": "on call" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let fourth_token = s
        .token_with("fourth-admin@example.com", "correct horse battery")
        .await;
    let revoke = |token: String, target: String| {
        let s = &s;
        async move {
            s.post(
                &format!("/admin/users/{target}/roles/revoke"),
                Some(&token),
                json!({ "role": "admin", "reason": "coup" }),
            )
            .await
            .0
        }
    };
    let (a, b) = tokio::join!(
        revoke(admin.clone(), fourth.clone()),
        revoke(fourth_token.clone(), admin_id.clone())
    );
    let still_admin = [
        s.get("/admin/stats/daily", Some(&admin)).await.0,
        s.get("/admin/stats/daily", Some(&fourth_token)).await.0,
    ];
    assert!(
        still_admin.contains(&StatusCode::OK),
        "revocations {a} and {b} left no admin: {still_admin:?}"
    );
    // Which of the two is still an admin depends on which revocation committed first.
    let survivor = if still_admin[0] == StatusCode::OK {
        admin_id.clone()
    } else {
        fourth.clone()
    };

    // 10. Tokens issued in the future, not yet valid, or living too long are refused.
    let now = chrono::Utc::now().timestamp();
    let claims = |iat: i64, exp: i64, nbf: Option<i64>| Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: survivor.clone(),
        iat,
        exp,
        nbf,
        jti: uuid::Uuid::new_v4().to_string(),
        roles: vec![tessera_domain::user::Role::Admin],
        sid: None,
        iat_ms: None,
    };
    for (what, c) in [
        (
            "issued in the future",
            claims(now + 3_600, now + 3_900, None),
        ),
        ("not valid yet", claims(now, now + 600, Some(now + 300))),
        ("living a year", claims(now, now + 365 * 86_400, None)),
    ] {
        let forged = s.keys.sign(&c).expect("sign");
        let (st, _) = s.get("/admin/stats/daily", Some(&forged)).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{what}");
    }
    let fine = s
        .keys
        .sign(&claims(now, now + 600, Some(now)))
        .expect("sign");
    let (st, _) = s.get("/admin/stats/daily", Some(&fine)).await;
    assert_eq!(st, StatusCode::OK, "an ordinary token still works");

    // 9. Failing logins from one client do not lock the owner out from another.
    for _ in 0..4 {
        let (st, _) = s
            .post(
                "/auth/login",
                None,
                json!({ "email": "customer1@tessera.test", "password": "wrong password!" }),
            )
            .await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let (st, h, b) = s
        .call(
            Method::POST,
            "/auth/login",
            None,
            Some(json!({ "email": "customer1@tessera.test", "password": tessera_fixtures::DEMO_PASSWORD })),
            &[],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::TOO_MANY_REQUESTS,
        "request.rate_limited",
    );
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let response = elsewhere
        .post(s.api("/auth/login"))
        .json(&json!({ "email": "customer1@tessera.test", "password": tessera_fixtures::DEMO_PASSWORD }))
        .send()
        .await
        .expect("login from another client");
    assert_eq!(response.status(), StatusCode::OK);
    s.shutdown().await;
}
