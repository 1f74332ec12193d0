//! On-sale over HTTP (issue 21): a thousand buyers on one slot at once are queued and decided in
//! batches, never answered `request.contention`; a small slot sells exactly its capacity.

use std::collections::BTreeMap;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Options, Server, eventually, urlencode};

/// A new slot of `capacity` seats on the demo provider's first listing, 30 days out: (listing,
/// slot).
async fn new_slot(s: &Server, capacity: u32) -> (String, String) {
    let provider = s.token("provider@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"]
        .as_str()
        .expect("a listing")
        .to_owned();
    let starts = chrono::Utc::now() + chrono::TimeDelta::days(30);
    let (status, slot) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(&provider),
            json!({ "starts_at": starts.to_rfc3339(), "ends_at": (starts + chrono::TimeDelta::hours(2)).to_rfc3339(), "capacity": capacity }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slot}");
    (
        listing,
        slot["slot_id"].as_str().expect("slot id").to_owned(),
    )
}

/// Waits until the read side shows `slot` of `listing` with `remaining` seats left.
async fn shows_remaining(s: &Server, listing: &str, slot: &str, remaining: i64) {
    let from = chrono::Utc::now().to_rfc3339();
    eventually("the slot's remaining seats", || async {
        let (_, slots) = s
            .get(
                &format!(
                    "/listings/{listing}/slots?all=true&from={}",
                    urlencode(&from)
                ),
                None,
            )
            .await;
        slots
            .as_array()?
            .iter()
            .find(|v| v["slot_id"] == slot && v["remaining"].as_i64() == Some(remaining))
            .map(|_| ())
    })
    .await;
}

/// `n` one-seat holds on `slot` sent at once, each with its own key, by the fixtures' customers
/// in turn; the count of each (status, code) answered.
async fn rush(s: &Arc<Server>, slot: &str, n: usize) -> BTreeMap<(u16, String), usize> {
    let mut tokens = Vec::new();
    for i in 0..10 {
        let email = if i == 0 {
            "customer@tessera.test".to_owned()
        } else {
            format!("customer{i}@tessera.test")
        };
        tokens.push(s.token(&email).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (s, barrier, token, slot) = (
                s.clone(),
                barrier.clone(),
                tokens[i % tokens.len()].clone(),
                slot.to_owned(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let (status, _, body) = s
                    .call(
                        Method::POST,
                        "/bookings",
                        Some(&token),
                        Some(json!({ "slot_id": slot, "seats": 1 })),
                        &[("idempotency-key", uuid::Uuid::new_v4().to_string())],
                    )
                    .await;
                let code = body["code"].as_str().unwrap_or("").to_owned();
                (status.as_u16(), code, body)
            })
        })
        .collect();
    let mut counts = BTreeMap::new();
    for task in tasks {
        let (status, code, body) = task.await.expect("task");
        if status == 201 {
            assert!(body["booking_id"].is_string(), "{body}");
        }
        *counts.entry((status, code)).or_default() += 1;
    }
    counts
}

fn options() -> Options {
    Options {
        config: Some(tessera_api::http::ApiConfig {
            // A thousand holds from ten customers at once is within their rate here.
            commands_per_second: 10_000,
            ..tessera_api::http::ApiConfig::default()
        }),
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_buyers_on_one_slot_all_get_their_seat() {
    let s = Arc::new(Server::start(options()).await);
    let (listing, slot) = new_slot(&s, 10_000).await;
    let counts = rush(&s, &slot, 1_000).await;
    assert_eq!(
        counts,
        BTreeMap::from([((201, String::new()), 1_000)]),
        "1,000 × 201 and no contention"
    );
    shows_remaining(&s, &listing, &slot, 9_000).await;
    // The queues report what they did: batch sizes and what waits.
    let metrics = s
        .client
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for name in ["tessera_slot_batch_size", "tessera_slot_queue_waiting"] {
        assert!(metrics.contains(name), "{name} missing from {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_buyers_on_ten_seats_sell_exactly_ten() {
    let s = Arc::new(Server::start(options()).await);
    let (listing, slot) = new_slot(&s, 10).await;
    let counts = rush(&s, &slot, 1_000).await;
    assert_eq!(
        counts,
        BTreeMap::from([
            ((201, String::new()), 10),
            ((409, "slot.sold_out".to_owned()), 990)
        ]),
    );
    shows_remaining(&s, &listing, &slot, 0).await;
}
