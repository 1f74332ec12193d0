//! Tickets and the door over HTTP: a confirmed booking's signed tickets (verified offline with
//! the published key) and their QR codes, two scanners racing for one ticket (exactly one
//! wins), forged and wrong-slot and cancelled tickets refused, and no-shows after the slot.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server, assert_problem};

async fn slot_in(s: &Server, provider: &str, listing: &str, hours: i64, capacity: u32) -> String {
    super::new_slot(
        s,
        provider,
        listing,
        chrono::TimeDelta::hours(hours),
        capacity,
        None,
    )
    .await
}

/// Places and pays a booking; returns its id.
async fn paid(s: &Server, customer: &str, slot: &str, seats: u32, key: &str) -> String {
    super::paid_booking(s, customer, slot, seats, key).await
}

async fn tickets(s: &Server, token: &str, booking: &str) -> Vec<Value> {
    let (status, body) = s
        .get(&format!("/bookings/{booking}/tickets"), Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("tickets").clone()
}

async fn scan(
    s: &Server,
    token: &str,
    slot: &str,
    ticket: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    s.call(
        Method::POST,
        &format!("/provider/slots/{slot}/check-in"),
        Some(token),
        Some(json!({ "token": ticket })),
        &[],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn tickets_admit_once_at_the_right_door_and_no_shows_follow_the_slot() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let other_provider = s.token("provider1@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let stranger = s.token("customer1@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let (status, _, set) = s
        .call(
            Method::PUT,
            &format!("/provider/listings/{listing}/ticket-scanning"),
            Some(&provider),
            Some(json!({ "scans_tickets": true })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{set}");

    // Check-in opens 24 hours before the start: a slot in 10 hours is open.
    let slot = slot_in(&s, &provider, &listing, 10, 6).await;
    let elsewhere = slot_in(&s, &provider, &listing, 12, 6).await;
    let booking = paid(&s, &customer, &slot, 2, "ticket-1").await;

    // One ticket per seat, for the customer (and admins) only.
    let issued = tickets(&s, &customer, &booking).await;
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert_eq!(tickets(&s, &admin, &booking).await.len(), 2);
    let (status, _) = s
        .get(&format!("/bookings/{booking}/tickets"), Some(&stranger))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Verified offline with the published key alone.
    let (_, key) = s.get("/tickets/key", None).await;
    assert_eq!(key["algorithm"], "Ed25519");
    let public: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(key["public_key"].as_str().expect("key"))
        .expect("base64")
        .try_into()
        .expect("32 bytes");
    for (i, t) in issued.iter().enumerate() {
        let token = t["token"].as_str().expect("token");
        let ticket = tessera_commands::tickets::verify(&public, token).expect("genuine");
        assert_eq!(ticket.booking_id.0.to_string(), booking);
        assert_eq!(ticket.slot_id.0.to_string(), slot);
        assert_eq!(ticket.seat as usize, i + 1);
        assert_eq!(t["ticket_id"], ticket.id().to_string());
    }

    // QR codes as PNG and SVG.
    let png = s
        .client
        .get(s.api(&format!("/bookings/{booking}/tickets/1/qr")))
        .bearer_auth(&customer)
        .send()
        .await
        .expect("png");
    assert_eq!(png.status(), StatusCode::OK);
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.expect("bytes");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    let svg = s
        .client
        .get(s.api(&format!("/bookings/{booking}/tickets/2/qr?format=svg")))
        .bearer_auth(&customer)
        .send()
        .await
        .expect("svg");
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    assert!(svg.text().await.expect("svg").contains("<svg"));
    for path in [
        format!("/bookings/{booking}/tickets/3/qr"),
        format!("/bookings/{booking}/tickets/1/qr?format=gif"),
    ] {
        let (status, body) = s.get(&path, Some(&customer)).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{path}: {status} {body}"
        );
    }

    // Two scanners at once on the same ticket: exactly one checks it in.
    let first = issued[0]["token"].as_str().expect("token").to_owned();
    let (a, b) = tokio::join!(
        scan(&s, &provider, &slot, &first),
        scan(&s, &admin, &slot, &first)
    );
    let (won, lost) = if a.0 == StatusCode::OK {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(won.0, StatusCode::OK, "{}", won.2);
    assert_eq!(won.2["seat"], 1);
    assert_eq!(won.2["seats"], 2);
    assert_eq!(won.2["checked_in_seats"], 1);
    assert_problem(
        lost.0,
        &lost.1,
        &lost.2,
        StatusCode::CONFLICT,
        "ticket.already_checked_in",
    );
    assert!(
        lost.2["detail"]
            .as_str()
            .expect("detail")
            .contains("checked in at"),
        "{}",
        lost.2
    );
    // Scanning it again later says the same.
    let again = scan(&s, &provider, &slot, &first).await;
    assert_problem(
        again.0,
        &again.1,
        &again.2,
        StatusCode::CONFLICT,
        "ticket.already_checked_in",
    );

    // Forged tokens; the wrong door; someone else's door.
    let mut tampered = first.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    for bad in [tampered.as_str(), "TK1.bm9wZQ.bm9wZQ", "hello", ""] {
        let r = scan(&s, &provider, &slot, bad).await;
        assert_problem(
            r.0,
            &r.1,
            &r.2,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ticket.forged",
        );
    }
    let second = issued[1]["token"].as_str().expect("token").to_owned();
    let r = scan(&s, &provider, &elsewhere, &second).await;
    assert_problem(r.0, &r.1, &r.2, StatusCode::CONFLICT, "ticket.wrong_slot");
    let r = scan(&s, &other_provider, &slot, &second).await;
    assert_problem(r.0, &r.1, &r.2, StatusCode::NOT_FOUND, "slot.not_found");

    // A cancelled booking's ticket admits no one.
    let cancelled = paid(&s, &customer, &slot, 1, "ticket-2").await;
    let gone = tickets(&s, &customer, &cancelled).await[0]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (status, body) = s
        .post(
            &format!("/bookings/{cancelled}/cancel"),
            Some(&customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = scan(&s, &provider, &slot, &gone).await;
    assert_problem(r.0, &r.1, &r.2, StatusCode::CONFLICT, "ticket.not_valid");
    let (status, headers, body) = s
        .call(
            Method::GET,
            &format!("/bookings/{cancelled}/tickets"),
            Some(&customer),
            None,
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::CONFLICT,
        "ticket.not_confirmed",
    );

    // The manifest counts who is in; the ticket list says when and by whom.
    let (_, _, manifest) = s
        .call(
            Method::GET,
            &format!("/provider/slots/{slot}/manifest"),
            Some(&provider),
            None,
            &[("tessera-min-position", won.2["position"].to_string())],
        )
        .await;
    assert_eq!(manifest["checked_in_seats"], 1, "{manifest}");
    let t = tickets(&s, &customer, &booking).await;
    assert!(
        t[0]["checked_in_at"].is_string() && t[1]["checked_in_at"].is_null(),
        "{t:?}"
    );

    // After the slot: the attended booking completes, the other is a no-show (no review).
    let absent = paid(&s, &customer, &slot, 1, "ticket-3").await;
    let store = tessera_log::store::PgEventStore::new(s.db.pool.clone(), Default::default());
    let after = chrono::Utc::now() + chrono::TimeDelta::hours(13);
    for id in [&booking, &absent] {
        let ctx = tessera_commands::handler::CommandContext::new(
            uuid::Uuid::new_v4(),
            "system:complete",
            after,
        );
        tessera_commands::booking::complete_booking(
            &store,
            tessera_domain::values::BookingId(id.parse().expect("uuid")),
            &ctx,
        )
        .await
        .expect("completed");
    }
    let status_of = |id: String| {
        let s = &s;
        let customer = customer.clone();
        async move {
            super::eventually("the read model", || {
                let (s, customer, id) = (s, customer.clone(), id.clone());
                async move {
                    let (_, d) = s.get(&format!("/bookings/{id}"), Some(&customer)).await;
                    let st = d["booking"]["status"].as_str().unwrap_or("").to_owned();
                    (st == "completed" || st == "no_show").then_some(st)
                }
            })
            .await
        }
    };
    assert_eq!(status_of(booking.clone()).await, "completed");
    assert_eq!(status_of(absent.clone()).await, "no_show");
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/bookings/{absent}/review"),
            Some(&customer),
            Some(json!({ "rating": 5, "text": "never went" })),
            &[],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a no-show does not review: {body}"
    );
    let (_, page) = s
        .get(
            &format!("/provider/bookings?slot_id={slot}&status=no_show"),
            Some(&provider),
        )
        .await;
    assert_eq!(page["total"], 1, "{page}");
}

#[tokio::test(flavor = "multi_thread")]
async fn door_staff_check_in_for_their_provider_only_while_they_are_staff() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let other_provider = s.token("provider1@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let helper = s.login("customer1@tessera.test").await;
    let helper_id = helper["user_id"].as_str().expect("user").to_owned();
    let helper = helper["access_token"].as_str().expect("token").to_owned();
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let slot = slot_in(&s, &provider, &listing, 10, 6).await;
    let booking = paid(&s, &customer, &slot, 2, "staff-1").await;
    let issued = tickets(&s, &customer, &booking).await;
    let first = issued[0]["token"].as_str().expect("token").to_owned();
    let second = issued[1]["token"].as_str().expect("token").to_owned();

    // Not staff yet: refused before the body is looked at.
    let (status, headers, problem) = scan(&s, &helper, &slot, &first).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::FORBIDDEN,
        "auth.forbidden",
    );

    let staff = async |method: Method, token: &str, user: &str| {
        s.call(
            method,
            &format!("/provider/staff/{user}"),
            Some(token),
            None,
            &[],
        )
        .await
    };
    for _ in 0..2 {
        let (status, _, body) = staff(Method::PUT, &provider, &helper_id).await;
        assert_eq!(status, StatusCode::OK, "adding twice is fine: {body}");
    }
    let (_, list) = s.get("/provider/staff", Some(&provider)).await;
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["user_id"], helper_id.as_str());
    let (status, headers, problem) =
        staff(Method::PUT, &provider, &uuid::Uuid::new_v4().to_string()).await;
    assert_problem(
        status,
        &headers,
        &problem,
        StatusCode::NOT_FOUND,
        "user.not_found",
    );

    // Staff check in at their provider's door, recorded as themselves.
    let (status, _, done) = scan(&s, &helper, &slot, &first).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let by: String = sqlx::query_scalar(
        "SELECT data->>'by' FROM events WHERE event_type = 'TicketCheckedIn' AND stream_id = $1",
    )
    .bind(format!("booking-{booking}"))
    .fetch_one(&s.db.pool)
    .await
    .expect("event");
    assert_eq!(by, helper_id, "the scan names who scanned");

    // Not at another provider's door: that provider's slot is theirs alone.
    let (_, theirs) = s.get("/provider/listings", Some(&other_provider)).await;
    let their_listing = theirs[0]["listing_id"]
        .as_str()
        .expect("listing")
        .to_owned();
    let their_slot = slot_in(&s, &other_provider, &their_listing, 10, 6).await;
    let (status, _, _) = scan(&s, &helper, &their_slot, &second).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Removed: refused at once.
    let (status, _, _) = staff(Method::DELETE, &provider, &helper_id).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = scan(&s, &helper, &slot, &second).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = staff(Method::PUT, &customer, &helper_id).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only providers name staff");
    s.shutdown().await;
}
