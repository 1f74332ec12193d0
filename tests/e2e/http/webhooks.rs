//! Webhooks over HTTP: a provider and an admin register endpoints, a booking on the provider's
//! slot reaches a local receiver signed (Standard Webhooks) and in log order, the delivery log
//! shows each attempt, a redelivery carries the same id, a rotated secret signs beside the old
//! one; other providers see nothing of it; and endpoints aimed at internal addresses are refused.

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_notify::webhooks::{UrlPolicy, verify};

use super::{Options, Server, eventually};

#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signature: String,
    body: String,
}

async fn receiver() -> (
    String,
    Arc<Mutex<Vec<Received>>>,
    tokio::task::JoinHandle<()>,
) {
    let got: Arc<Mutex<Vec<Received>>> = Arc::default();
    let state = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned()
                };
                state.lock().expect("lock").push(Received {
                    id: h("webhook-id"),
                    timestamp: h("webhook-timestamp").parse().unwrap_or_default(),
                    signature: h("webhook-signature"),
                    body,
                });
                "thanks"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got, task)
}

fn verified(secret: &str, r: &Received) -> bool {
    verify(
        secret,
        &r.id,
        r.timestamp,
        &r.body,
        &r.signature,
        chrono::Utc::now().timestamp(),
        300,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_aimed_at_internal_addresses_are_refused() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    for url in [
        "http://127.0.0.1:8080/api/v1/admin/outbox",
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://10.0.0.7/hook",
    ] {
        let (status, body) = s
            .post(
                "/webhooks",
                Some(&provider),
                json!({ "url": url, "event_types": ["booking.placed"] }),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{url}: {body}");
        assert_eq!(body["errors"][0]["field"], "url", "{body}");
    }
    let (status, body) = s
        .post(
            "/webhooks",
            Some(&provider),
            json!({ "url": "https://hooks.example.com/t", "event_types": ["booking.teleported"] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "event_types", "{body}");
    let (status, body) = s
        .post(
            "/webhooks",
            Some(&provider),
            json!({ "url": "https://hooks.example.com/t", "event_types": ["booking.placed"], "description": "a\u{0}b" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "description", "{body}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_booking_on_a_providers_slot_reaches_its_endpoint_signed_and_in_order() {
    let s = Server::start(Options {
        config: Some(tessera_api::http::ApiConfig {
            webhook_urls: UrlPolicy {
                allow_http: true,
                allow_private: true,
            },
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;
    let (url, got, task) = receiver().await;
    let provider = s.token("provider@tessera.test").await;
    let other = s.token("provider1@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;

    let (status, created) = s
        .post(
            "/webhooks",
            Some(&provider),
            json!({ "url": url, "event_types": ["booking.placed", "booking.confirmed"], "description": "my booking system" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let endpoint = created["endpoint"]["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created["endpoint"]["scope"], "provider");
    let (status, admins) = s
        .post(
            "/webhooks",
            Some(&admin),
            json!({ "url": url, "event_types": ["booking.confirmed"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{admins}");
    assert_eq!(admins["endpoint"]["scope"], "all");
    let (_, listed) = s.get("/webhooks", Some(&provider)).await;
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(1),
        "only their own: {listed}"
    );
    let (status, _) = s.get(&format!("/webhooks/{endpoint}"), Some(&other)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another provider's endpoint does not exist for them"
    );
    let (status, _) = s.get("/webhooks", Some(&customer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A new slot of the provider's, booked and paid by a customer.
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"]
        .as_str()
        .expect("a listing")
        .to_owned();
    let starts = chrono::Utc::now() + chrono::TimeDelta::days(20);
    let (status, slot) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(&provider),
            json!({ "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::TimeDelta::hours(2)).to_rfc3339(), "capacity": 10 }),
        )
        .await;
    assert!(status.is_success(), "{slot}");
    let slot_id = slot["slot_id"].as_str().expect("slot").to_owned();
    let (status, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&customer),
            Some(json!({ "slot_id": slot_id, "seats": 2 })),
            &[("idempotency-key", "webhook-booking".into())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let booking = placed["booking_id"].as_str().expect("booking").to_owned();
    let (status, paid) = s
        .post(
            &format!("/bookings/{booking}/pay"),
            Some(&customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");

    let about_it = || {
        got.lock()
            .expect("lock")
            .iter()
            .filter(|r| r.body.contains(&booking))
            .cloned()
            .collect::<Vec<_>>()
    };
    let received = eventually("three deliveries about the booking", || async {
        let r = about_it();
        (r.len() >= 3).then_some(r)
    })
    .await;
    let mine: Vec<&Received> = received.iter().filter(|r| verified(&secret, r)).collect();
    let types: Vec<String> = mine
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).expect("json")["type"]
                .as_str()
                .expect("type")
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        ["booking.placed", "booking.confirmed"],
        "in log order"
    );
    let admin_secret = admins["secret"].as_str().expect("secret");
    assert!(
        received.iter().any(|r| verified(admin_secret, r)),
        "the admin's endpoint too"
    );
    let body: Value = serde_json::from_str(&mine[1].body).expect("json");
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], mine[1].id.as_str());
    assert_eq!(body["data"]["seats"], 2);
    assert_eq!(body["data"]["slot_id"], slot_id.as_str());

    // The delivery log: status, latency, the answer's start; each attempt.
    let (status, log) = s
        .get(&format!("/webhooks/{endpoint}/deliveries"), Some(&provider))
        .await;
    assert_eq!(status, StatusCode::OK, "{log}");
    let delivered = log
        .as_array()
        .expect("deliveries")
        .iter()
        .find(|d| d["event_type"] == "booking.confirmed")
        .expect("the confirmation")
        .clone();
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["last_status"], 200);
    assert_eq!(delivered["last_response"], "thanks");
    assert!(delivered["last_latency_ms"].as_i64().is_some());
    let delivery = delivered["id"].as_str().expect("id").to_owned();
    let (_, detail) = s
        .get(
            &format!("/webhooks/{endpoint}/deliveries/{delivery}"),
            Some(&provider),
        )
        .await;
    assert_eq!(
        detail["attempts"].as_array().map(Vec::len),
        Some(1),
        "{detail}"
    );

    // Rotated: the redelivery carries the same id, signed by the new and the old secret.
    let (status, rotated) = s
        .post(
            &format!("/webhooks/{endpoint}/rotate-secret"),
            Some(&provider),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, secret);
    let (status, _, _) = s
        .call(
            Method::POST,
            &format!("/webhooks/{endpoint}/deliveries/{delivery}/redeliver"),
            Some(&provider),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let again = eventually("the redelivery", || async {
        let r = about_it();
        (r.len() > received.len())
            .then(|| r.last().cloned())
            .flatten()
    })
    .await;
    assert_eq!(again.id, mine[1].id, "the same webhook-id");
    assert!(verified(&new_secret, &again) && verified(&secret, &again));
    let (status, body) = s
        .post(
            &format!("/webhooks/{endpoint}/enable"),
            Some(&provider),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "webhook.not_disabled");
    let (status, _, _) = s
        .call(
            Method::DELETE,
            &format!("/webhooks/{endpoint}"),
            Some(&provider),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = s
        .get(&format!("/webhooks/{endpoint}"), Some(&provider))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    task.abort();
    s.shutdown().await;
}
