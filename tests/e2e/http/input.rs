//! Bad input gets a clear 4xx problem response, never a 5xx: malformed JSON, unknown fields,
//! wrong types, huge bodies, bad UUIDs, wrong content types, unknown routes, bad queries.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server, assert_problem};

async fn raw(
    s: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut request = s
        .client
        .request(method, s.api(path))
        .header("content-type", content_type)
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn bad_requests_get_problem_responses() {
    let s = Server::start(Options::default()).await;
    let token = s.token("customer@tessera.test").await;
    let json_type = "application/json";

    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        json_type,
        b"{\"slot_id\": ".to_vec(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "request.malformed_json",
    );

    let body = json!({ "slot_id": uuid::Uuid::new_v4(), "seats": 1, "discount": 100 });
    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        json_type,
        body.to_string().into_bytes(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    assert!(
        b["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("discount")),
        "{b}"
    );

    let body = json!({ "slot_id": "not-a-uuid", "seats": 1 });
    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        json_type,
        body.to_string().into_bytes(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    assert_eq!(b["errors"][0]["field"], "slot_id", "{b}");

    let body = json!({ "slot_id": uuid::Uuid::new_v4(), "seats": -3 });
    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        json_type,
        body.to_string().into_bytes(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    assert_eq!(b["errors"][0]["field"], "seats", "{b}");

    let body = json!({ "slot_id": uuid::Uuid::new_v4(), "seats": 0 });
    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        json_type,
        body.to_string().into_bytes(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );

    let huge = format!(
        "{{\"slot_id\":\"{}\",\"seats\":1,\"x\":\"{}\"}}",
        uuid::Uuid::new_v4(),
        "a".repeat(100 * 1024)
    );
    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        json_type,
        huge.into_bytes(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request.too_large",
    );

    let (st, h, b) = raw(
        &s,
        Method::POST,
        "/bookings",
        Some(&token),
        "text/plain",
        b"seats=2".to_vec(),
    )
    .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "request.unsupported_media_type",
    );

    // A booking needs an Idempotency-Key.
    let (st, h, b) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&token),
            Some(json!({ "slot_id": uuid::Uuid::new_v4(), "seats": 1 })),
            &[],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "request.idempotency_key_required",
    );

    // An unknown slot: 404 with the slot's code.
    let (st, h, b) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&token),
            Some(json!({ "slot_id": uuid::Uuid::new_v4(), "seats": 1 })),
            &[("idempotency-key", "unknown-slot".to_owned())],
        )
        .await;
    assert_problem(st, &h, &b, StatusCode::NOT_FOUND, "slot.not_found");

    for path in [
        "/bookings/not-a-uuid",
        "/listings/123/slots",
        "/listings/%00",
    ] {
        let (st, h, b) = s.call(Method::GET, path, Some(&token), None, &[]).await;
        assert_problem(st, &h, &b, StatusCode::BAD_REQUEST, "request.invalid_path");
    }
    let (st, h, b) = s
        .call(Method::GET, "/listings?limit=many", None, None, &[])
        .await;
    assert_problem(st, &h, &b, StatusCode::BAD_REQUEST, "request.invalid_query");
    let (st, h, b) = s
        .call(Method::GET, "/listings?limit=1000", None, None, &[])
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    let (st, h, b) = s
        .call(Method::GET, "/listings?sort=cheapest", None, None, &[])
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    let (st, h, b) = s
        .call(Method::GET, "/listings?lat=38.7", None, None, &[])
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "request.invalid",
    );
    let (st, h, b) = s
        .call(
            Method::GET,
            "/bookings",
            Some(&token),
            None,
            &[("tessera-min-position", "soon".into())],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "request.invalid_min_position",
    );
    // A position far ahead of the log was never handed out: refused at once, not after a wait.
    let (st, h, b) = s
        .call(
            Method::GET,
            "/bookings",
            Some(&token),
            None,
            &[("tessera-min-position", "999999999".into())],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::BAD_REQUEST,
        "request.position_beyond_head",
    );
    assert_eq!(b["retryable"], false);

    let (st, h, b) = s.call(Method::GET, "/no/such/route", None, None, &[]).await;
    assert_problem(st, &h, &b, StatusCode::NOT_FOUND, "request.no_route");
    let (st, h, b) = s.call(Method::DELETE, "/listings", None, None, &[]).await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::METHOD_NOT_ALLOWED,
        "request.method_not_allowed",
    );
    let (st, h, b) = s
        .call(
            Method::GET,
            &format!("/listings/{}", uuid::Uuid::new_v4()),
            None,
            None,
            &[],
        )
        .await;
    assert_problem(st, &h, &b, StatusCode::NOT_FOUND, "listing.not_found");

    // Validation messages name the field.
    let (st, h, b) = s
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": "not an address", "display_name": "X", "password": "long enough password" })),
            &[],
        )
        .await;
    assert_problem(
        st,
        &h,
        &b,
        StatusCode::UNPROCESSABLE_ENTITY,
        "user.invalid_email",
    );
    assert_eq!(b["errors"][0]["field"], "email");
    // Every answer carries a request id, and problems quote it.
    assert!(h.contains_key("x-request-id"));
    assert_eq!(
        b["request_id"].as_str(),
        h.get("x-request-id").and_then(|v| v.to_str().ok())
    );

    // Ops endpoints.
    let (st, _, health) = s.call(Method::GET, "/healthz", None, None, &[]).await;
    assert_eq!(st, StatusCode::OK, "{health}");
    let (st, _, ready) = s.call(Method::GET, "/readyz", None, None, &[]).await;
    assert_eq!(st, StatusCode::OK, "{ready}");
    let metrics = s
        .client
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("tessera_http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tessera_projection_lag_events"),
        "{metrics}"
    );
    s.shutdown().await;
}
