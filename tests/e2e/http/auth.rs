//! Tokens: forged, expired and foreign access tokens are refused; refresh tokens rotate and a
//! reused one revokes its family; login is rate limited.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tessera_api::http::auth::{AUDIENCE, Claims, ISSUER, TokenKeys};

use super::{Options, Server, assert_problem};

fn claims(sub: &str) -> Claims {
    let now = chrono::Utc::now().timestamp();
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: sub.into(),
        iat: now,
        exp: now + 600,
        nbf: None,
        jti: "t".into(),
        roles: vec![tessera_domain::user::Role::Admin],
        sid: None,
        iat_ms: None,
    }
}

fn b64(bytes: &[u8]) -> String {
    // base64url without padding, enough for a hand-made `alg: none` token.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_get_401() {
    let s = Server::start(Options::default()).await;
    let good = s.login("customer@tessera.test").await;
    let sub = good["user_id"].as_str().expect("user id").to_owned();
    let token = good["access_token"].as_str().expect("token");
    let (status, me) = s.get("/me", Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["email"], "customer@tessera.test");

    let ttl = std::time::Duration::from_secs(600);
    let other_key = TokenKeys::from_secret(b"another-deployment-secret-0123456789", ttl, ttl);
    let mut expired = claims(&sub);
    expired.exp = chrono::Utc::now().timestamp() - 3600;
    let mut wrong_aud = claims(&sub);
    wrong_aud.aud = "someone-else".into();
    let mut wrong_iss = claims(&sub);
    wrong_iss.iss = "evil".into();
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(serde_json::to_string(&claims(&sub))
            .expect("json")
            .as_bytes())
    );
    let cases = [
        ("alg none", none),
        ("wrong key", other_key.sign(&claims(&sub)).expect("sign")),
        ("expired", s.keys.sign(&expired).expect("sign")),
        ("wrong audience", s.keys.sign(&wrong_aud).expect("sign")),
        ("wrong issuer", s.keys.sign(&wrong_iss).expect("sign")),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in cases {
        let (status, headers, body) = s.call(Method::GET, "/me", Some(&token), None, &[]).await;
        assert_problem(
            status,
            &headers,
            &body,
            StatusCode::UNAUTHORIZED,
            "auth.unauthenticated",
        );
        assert!(headers.contains_key("www-authenticate"), "{what}");
    }
    // No token at all.
    let (status, headers, body) = s.call(Method::GET, "/me", None, None, &[]).await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::UNAUTHORIZED,
        "auth.unauthenticated",
    );
    // The properly signed admin claim works: the signature, not the claims, is the authority.
    let (status, _) = s
        .get("/me", Some(&s.keys.sign(&claims(&sub)).expect("sign")))
        .await;
    assert_eq!(status, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let s = Server::start(Options::default()).await;
    let first = s.login("customer@tessera.test").await;
    let r1 = first["refresh_token"].as_str().expect("refresh").to_owned();

    let (status, second) = s
        .post("/auth/refresh", None, json!({ "refresh_token": r1 }))
        .await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let r2 = second["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    assert_ne!(r1, r2);
    let (status, _) = s.get("/me", second["access_token"].as_str()).await;
    assert_eq!(status, StatusCode::OK);

    // r1 again: a reuse. Refused, and r2 (same family) dies with it.
    let (status, body) = s
        .post("/auth/refresh", None, json!({ "refresh_token": r1 }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _) = s
        .post("/auth/refresh", None, json!({ "refresh_token": r2 }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Another session is unaffected, until it logs out.
    let other = s.login("customer@tessera.test").await;
    let r3 = other["refresh_token"].as_str().expect("refresh").to_owned();
    let (status, _, _) = s
        .call(
            Method::POST,
            "/auth/logout",
            None,
            Some(json!({ "refresh_token": r3 })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .post("/auth/refresh", None, json!({ "refresh_token": r3 }))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .post(
            "/auth/refresh",
            None,
            json!({ "refresh_token": "rt_unknown" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    s.shutdown().await;
}

#[tokio::test]
async fn logins_and_commands_are_rate_limited() {
    let s = Server::start(Options {
        config: Some(tessera_api::http::ApiConfig {
            login_per_minute: 3,
            commands_per_second: 1,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let wrong = json!({ "email": "customer@tessera.test", "password": "wrong password!" });
    for _ in 0..3 {
        let (status, body) = s.post("/auth/login", None, wrong.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["code"], "user.bad_credentials");
    }
    let (status, headers, body) = s
        .call(Method::POST, "/auth/login", None, Some(wrong.clone()), &[])
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "request.rate_limited",
    );
    let retry: u64 = headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
    // Per address: another account still logs in.
    let token = s.token("provider@tessera.test").await;

    // Commands: one per second with a burst of two; ten in a row cannot all pass.
    let mut statuses = Vec::new();
    for i in 0..10 {
        let (status, _, _) = s
            .call(
                Method::POST,
                "/bookings",
                Some(&token),
                Some(json!({ "slot_id": uuid::Uuid::new_v4(), "seats": 1 })),
                &[("idempotency-key", format!("k{i}"))],
            )
            .await;
        statuses.push(status);
    }
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    s.shutdown().await;
}
