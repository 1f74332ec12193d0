//! Providers' everyday tools over HTTP: resizing and repricing a slot (placed bookings keep
//! their price), the slot's manifest as JSON and CSV (names masked after erasure, cells safe
//! for spreadsheets) and the filtered, paged list of a provider's bookings.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server, assert_problem, eventually};

async fn book(s: &Server, token: &str, slot: &str, seats: i64, key: &str) -> Value {
    let (status, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(token),
            Some(json!({ "slot_id": slot, "seats": seats })),
            &[("idempotency-key", key.into())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    placed
}

async fn patch(s: &Server, token: &str, slot: &str, body: Value) -> (StatusCode, Value) {
    let (status, headers, answer) = s
        .call(
            Method::PATCH,
            &format!("/provider/slots/{slot}"),
            Some(token),
            Some(body),
            &[],
        )
        .await;
    if !status.is_success() {
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
    }
    (status, answer)
}

/// A booking's total, once the read model has it.
async fn total(s: &Server, token: &str, booking: &Value) -> i64 {
    let id = booking["booking_id"].as_str().expect("booking");
    let at = booking["position"].as_i64().expect("position");
    let (status, _, detail) = s
        .call(
            Method::GET,
            &format!("/bookings/{id}"),
            Some(token),
            None,
            &[("tessera-min-position", at.to_string())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    detail["booking"]["total_minor"].as_i64().expect("total")
}

/// Registers a customer with this name and returns (user id, access token).
async fn customer_named(s: &Server, email: &str, name: &str) -> (String, String) {
    let (status, body) = s
        .post(
            "/auth/register",
            None,
            json!({ "email": email, "display_name": name, "password": "a long passphrase" }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["user_id"].as_str().expect("user").to_owned();
    (id, s.token_with(email, "a long passphrase").await)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_provider_resizes_and_reprices_a_slot_and_sees_who_is_coming() {
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let other = s.token("provider1@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let (_, me) = s.get("/me", Some(&customer)).await;
    let name = me["display_name"].as_str().expect("name").to_owned();

    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();
    let starts = chrono::Utc::now() + chrono::TimeDelta::days(20);
    let (status, slot) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(&provider),
            json!({
                "starts_at": starts.to_rfc3339(),
                "ends_at": (starts + chrono::TimeDelta::hours(3)).to_rfc3339(),
                "capacity": 3,
                "price_minor": 5000,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slot}");
    let slot = slot["slot_id"].as_str().expect("slot").to_owned();

    // Two seats at the first price, paid.
    let first = book(&s, &customer, &slot, 2, "manifest-1").await;
    let first_id = first["booking_id"].as_str().expect("booking").to_owned();
    assert_eq!(total(&s, &customer, &first).await, 10_000);
    let (status, paid) = s
        .post(
            &format!("/bookings/{first_id}/pay"),
            Some(&customer),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");

    // A new price applies to bookings placed from now on; the placed one keeps its price.
    let (status, changed) = patch(&s, &provider, &slot, json!({ "price_minor": 6000 })).await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    // Capacity never below the seats taken; the listing's other provider may not touch it.
    let (status, refused) = patch(&s, &provider, &slot, json!({ "capacity": 1 })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["code"], "slot.capacity_below_taken");
    let (status, refused) = patch(&s, &other, &slot, json!({ "capacity": 9 })).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    for (body, field) in [
        (json!({}), "capacity"),
        (json!({ "price_minor": -1 }), "price_minor"),
        (json!({ "capacity": 0 }), ""),
    ] {
        let (status, refused) = patch(&s, &provider, &slot, body.clone()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {refused}"
        );
        if !field.is_empty() {
            assert_eq!(refused["errors"][0]["field"], field, "{refused}");
        }
    }
    let (status, changed) = patch(&s, &admin, &slot, json!({ "capacity": 4 })).await;
    assert_eq!(status, StatusCode::OK, "an admin may: {changed}");

    let (who, named) = customer_named(&s, "formula@example.com", "=HYPERLINK(\"x\")").await;
    let second = book(&s, &named, &slot, 2, "manifest-2").await;
    assert_eq!(total(&s, &named, &second).await, 12_000, "the new price");
    let (status, _, full) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&customer),
            Some(json!({ "slot_id": slot, "seats": 1 })),
            &[("idempotency-key", "manifest-3".into())],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "4 seats, all taken: {full}");
    assert_eq!(total(&s, &customer, &first).await, 10_000, "kept its price");

    // The manifest: both bookings, their seats, status and contact.
    let manifest = eventually("both bookings on the manifest", || async {
        let (status, m) = s
            .get(&format!("/provider/slots/{slot}/manifest"), Some(&provider))
            .await;
        assert_eq!(status, StatusCode::OK, "{m}");
        (m["bookings"].as_array().map(Vec::len) == Some(2) && m["confirmed_seats"] == 2)
            .then_some(m)
    })
    .await;
    assert_eq!(manifest["capacity"], 4);
    assert_eq!(manifest["held_seats"], 2);
    let rows = manifest["bookings"].as_array().expect("rows");
    assert_eq!(rows[0]["booking_id"], first_id.as_str());
    assert_eq!(rows[0]["contact_name"], name.as_str());
    assert_eq!(rows[0]["status"], "confirmed");
    assert_eq!(rows[1]["contact_name"], "=HYPERLINK(\"x\")");
    assert_eq!(rows[1]["status"], "held");

    // As CSV, with the formula defused.
    let response = s
        .client
        .get(s.api(&format!("/provider/slots/{slot}/manifest?format=csv")))
        .bearer_auth(&provider)
        .send()
        .await
        .expect("csv");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    let csv = response.text().await.expect("body");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[0].starts_with("booking_id,contact_name,seats,status"),
        "{csv}"
    );
    assert!(lines[1].contains(&format!(",{name},2,confirmed,")), "{csv}");
    assert!(
        lines[2].contains(",\"'=HYPERLINK(\"\"x\"\")\",2,held,"),
        "{csv}"
    );

    // Someone else's slot is not found; a bad format is refused.
    let (status, headers, body) = s
        .call(
            Method::GET,
            &format!("/provider/slots/{slot}/manifest"),
            Some(&other),
            None,
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &body,
        StatusCode::NOT_FOUND,
        "slot.not_found",
    );
    let (status, body) = s
        .get(
            &format!("/provider/slots/{slot}/manifest?format=xml"),
            Some(&provider),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Erased, the customer's name is masked on the manifest.
    let (status, erased) = s
        .post(
            &format!("/admin/users/{who}/erase"),
            Some(&admin),
            json!({ "reason": "asked to be forgotten" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{erased}");
    let (_, m) = s
        .get(&format!("/provider/slots/{slot}/manifest"), Some(&provider))
        .await;
    assert_eq!(m["bookings"][1]["contact_name"], "[erased]", "{m}");
    assert!(!m.to_string().contains("HYPERLINK"), "{m}");

    // The provider's bookings: filtered by slot and status, paged, counted.
    let (status, page) = s
        .get(
            &format!("/provider/bookings?slot_id={slot}&limit=1"),
            Some(&provider),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["total"], 2, "{page}");
    assert_eq!(page["bookings"].as_array().map(Vec::len), Some(1));
    let (_, next) = s
        .get(
            &format!("/provider/bookings?slot_id={slot}&limit=1&offset=1"),
            Some(&provider),
        )
        .await;
    assert_ne!(
        page["bookings"][0]["booking_id"],
        next["bookings"][0]["booking_id"]
    );
    let (_, confirmed) = s
        .get(
            &format!("/provider/bookings?listing_id={listing}&status=confirmed"),
            Some(&provider),
        )
        .await;
    assert!(
        confirmed["bookings"]
            .as_array()
            .expect("bookings")
            .iter()
            .all(|b| b["status"] == "confirmed" && b["listing_id"] == listing.as_str()),
        "{confirmed}"
    );
    assert!(confirmed["total"].as_i64() >= Some(1));
    // Another provider's list holds none of this provider's bookings; an admin's holds all.
    let (_, theirs) = s
        .get(&format!("/provider/bookings?slot_id={slot}"), Some(&other))
        .await;
    assert_eq!(theirs["total"], 0, "{theirs}");
    let (_, all) = s
        .get(&format!("/provider/bookings?slot_id={slot}"), Some(&admin))
        .await;
    assert_eq!(all["total"], 2, "{all}");
    let from = chrono::Utc::now() + chrono::TimeDelta::days(19);
    let to = chrono::Utc::now() + chrono::TimeDelta::days(21);
    let (_, window) = s
        .get(
            &format!(
                "/provider/bookings?from={}&to={}",
                super::urlencode(&from.to_rfc3339()),
                super::urlencode(&to.to_rfc3339())
            ),
            Some(&provider),
        )
        .await;
    assert!(
        window["bookings"]
            .as_array()
            .expect("bookings")
            .iter()
            .any(|b| b["slot_id"] == slot.as_str()),
        "{window}"
    );
    for query in ["status=lost", "limit=0", "limit=201", "offset=-1"] {
        let (status, body) = s
            .get(&format!("/provider/bookings?{query}"), Some(&provider))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {body}");
    }
    let (status, body) = s
        .get(
            &format!(
                "/provider/bookings?from={}&to={}",
                super::urlencode(&to.to_rfc3339()),
                super::urlencode(&from.to_rfc3339())
            ),
            Some(&provider),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

fn created(outcome: &Value) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    outcome["created"]
        .as_array()
        .expect("created")
        .iter()
        .map(|g| {
            (
                g["slot_id"].as_str().expect("slot").to_owned(),
                g["starts_at"]
                    .as_str()
                    .expect("start")
                    .parse()
                    .expect("time"),
            )
        })
        .collect()
}

async fn slot_view(s: &Server, listing: &str, slot: &str, at: i64) -> Value {
    let (status, _, slots) = s
        .call(
            Method::GET,
            &format!("/listings/{listing}/slots?all=true"),
            None,
            None,
            &[("tessera-min-position", at.to_string())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{slots}");
    slots
        .as_array()
        .expect("slots")
        .iter()
        .find(|v| v["slot_id"] == slot)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recurring_schedule_generates_slots_once_and_changes_only_unbooked_ones() {
    use chrono::Datelike;
    let s = Server::start(Options::default()).await;
    let provider = s.token("provider@tessera.test").await;
    let other = s.token("provider1@tessera.test").await;
    let customer = s.token("customer@tessera.test").await;
    let (_, mine) = s.get("/provider/listings", Some(&provider)).await;
    let listing = mine[0]["listing_id"].as_str().expect("listing").to_owned();

    let first = (chrono::Utc::now() + chrono::TimeDelta::days(2)).date_naive();
    let body = |rrule: &str, capacity: u32| {
        json!({
            "rrule": rrule,
            "starts": format!("{first}T09:00:00"),
            "timezone": "Europe/Lisbon",
            "duration_minutes": 120,
            "capacity": capacity,
            "horizon_days": 30,
        })
    };
    // Refusals first: bad rule, frequency, zone; someone else's listing.
    for (bad, code) in [
        (
            json!({ "rrule": "FREQ=SOMETIMES" }),
            "schedule.invalid_rule",
        ),
        (json!({ "rrule": "FREQ=SECONDLY" }), "schedule.invalid_rule"),
        (
            json!({ "timezone": "Mars/Olympus" }),
            "schedule.invalid_rule",
        ),
        (json!({ "horizon_days": 0 }), "schedule.invalid"),
        (json!({ "duration_minutes": 0 }), "schedule.invalid"),
    ] {
        let mut b = body("FREQ=WEEKLY;BYDAY=TU,SA", 10);
        for (k, v) in bad.as_object().expect("object") {
            b[k] = v.clone();
        }
        let (status, headers, answer) = s
            .call(
                Method::POST,
                &format!("/provider/listings/{listing}/schedules"),
                Some(&provider),
                Some(b),
                &[],
            )
            .await;
        assert_problem(
            status,
            &headers,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        );
    }
    let (status, answer) = s
        .post(
            &format!("/provider/listings/{listing}/schedules"),
            Some(&other),
            body("FREQ=WEEKLY;BYDAY=TU,SA", 10),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");

    // Every Tuesday and Saturday at 09:00 Lisbon time for 30 days.
    let (status, _, defined) = s
        .call(
            Method::POST,
            &format!("/provider/listings/{listing}/schedules"),
            Some(&provider),
            Some(body("FREQ=WEEKLY;BYDAY=TU,SA", 10)),
            &[("idempotency-key", "schedule-1".into())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{defined}");
    let schedule = defined["schedule_id"]
        .as_str()
        .expect("schedule")
        .to_owned();
    let slots = created(&defined);
    assert!((8..=10).contains(&slots.len()), "{defined}");
    for (_, at) in &slots {
        assert!(
            matches!(at.weekday(), chrono::Weekday::Tue | chrono::Weekday::Sat),
            "{at}"
        );
        assert!(*at > chrono::Utc::now() && *at < chrono::Utc::now() + chrono::TimeDelta::days(30));
        // 09:00 in Lisbon is 08:00 or 09:00 UTC (summer or winter time).
        assert!([8, 9].contains(&chrono::Timelike::hour(at)), "{at}");
    }
    // A retry answers the same; generating again creates nothing.
    let (_, headers, again) = s
        .call(
            Method::POST,
            &format!("/provider/listings/{listing}/schedules"),
            Some(&provider),
            Some(body("FREQ=WEEKLY;BYDAY=TU,SA", 10)),
            &[("idempotency-key", "schedule-1".into())],
        )
        .await;
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(again["schedule_id"], schedule.as_str());
    for _ in 0..2 {
        let (status, generated) = s
            .post(
                &format!("/provider/schedules/{schedule}/generate"),
                Some(&provider),
                json!(null),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{generated}");
        assert_eq!(created(&generated).len(), 0, "nothing twice: {generated}");
    }
    let at = defined["position"].as_i64().expect("position");
    for (slot, _) in &slots {
        let v = slot_view(&s, &listing, slot, at).await;
        assert_eq!(v["capacity"], 10, "{v}");
    }

    // A customer books the first Saturday; the schedule becomes Tuesdays only, 12 seats.
    let (saturday, saturday_at) = slots
        .iter()
        .find(|(_, at)| at.weekday() == chrono::Weekday::Sat)
        .cloned()
        .expect("a Saturday");
    book(&s, &customer, &saturday, 1, "schedule-booking").await;
    let (status, _, changed) = s
        .call(
            Method::PUT,
            &format!("/provider/schedules/{schedule}"),
            Some(&provider),
            Some(body("FREQ=WEEKLY;BYDAY=TU", 12)),
            &[("idempotency-key", "schedule-change".into())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    let ids = |k: &str| -> Vec<String> {
        changed[k]
            .as_array()
            .expect(k)
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(ids("kept_booked"), vec![saturday.clone()], "{changed}");
    let tuesdays: Vec<_> = slots
        .iter()
        .filter(|(_, at)| at.weekday() == chrono::Weekday::Tue)
        .map(|(id, _)| id.clone())
        .collect();
    let saturdays = slots.len() - tuesdays.len();
    assert_eq!(ids("revised").len(), tuesdays.len(), "{changed}");
    assert_eq!(ids("withdrawn").len(), saturdays - 1, "{changed}");
    assert!(
        created(&changed).is_empty(),
        "every Tuesday exists: {changed}"
    );
    let at = changed["position"].as_i64().expect("position");
    let booked = slot_view(&s, &listing, &saturday, at).await;
    assert_eq!(
        booked["capacity"], 10,
        "a booked slot stays as it was: {booked}"
    );
    assert_eq!(booked["cancelled"], false, "{booked}");
    let tuesday = slot_view(&s, &listing, &tuesdays[0], at).await;
    assert_eq!(tuesday["capacity"], 12, "{tuesday}");
    for (slot, when) in &slots {
        if when.weekday() == chrono::Weekday::Sat && *slot != saturday {
            let v = slot_view(&s, &listing, slot, at).await;
            assert_eq!(v["cancelled"], true, "withdrawn: {v}");
        }
    }

    // One Tuesday out, then back (a new slot); a booked date cannot be taken out.
    let tuesday_at = slots
        .iter()
        .find(|(id, _)| *id == tuesdays[0])
        .map(|(_, at)| *at)
        .expect("tuesday");
    let (status, out) = s
        .post(
            &format!("/provider/schedules/{schedule}/exceptions"),
            Some(&provider),
            json!({ "date": tuesday_at.date_naive() }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    let v = slot_view(
        &s,
        &listing,
        &tuesdays[0],
        out["position"].as_i64().expect("p"),
    )
    .await;
    assert_eq!(v["cancelled"], true, "{v}");
    let (status, headers, refused) = s
        .call(
            Method::POST,
            &format!("/provider/schedules/{schedule}/exceptions"),
            Some(&provider),
            Some(json!({ "date": saturday_at.date_naive() })),
            &[],
        )
        .await;
    // The booked Saturday is no longer a rule date, but it is still the schedule's slot.
    assert_problem(
        status,
        &headers,
        &refused,
        StatusCode::CONFLICT,
        "schedule.occurrence_booked",
    );
    let (status, _, back) = s
        .call(
            Method::DELETE,
            &format!(
                "/provider/schedules/{schedule}/exceptions/{}",
                tuesday_at.date_naive()
            ),
            Some(&provider),
            None,
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{back}");
    let again = created(&back);
    assert_eq!(again.len(), 1, "{back}");
    assert_eq!(again[0].1, tuesday_at);
    assert_ne!(again[0].0, tuesdays[0], "a new slot");

    // The schedule as the provider sees it; others do not see it.
    let (status, _, view) = s
        .call(
            Method::GET,
            &format!("/provider/schedules/{schedule}"),
            Some(&provider),
            None,
            &[("tessera-min-position", back["position"].to_string())],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["rrule"], "FREQ=WEEKLY;BYDAY=TU");
    assert_eq!(view["capacity"], 12);
    assert_eq!(view["exceptions"], json!([]));
    let (status, _) = s
        .get(&format!("/provider/schedules/{schedule}"), Some(&other))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = s
        .get(
            &format!("/provider/schedules?listing_id={listing}"),
            Some(&provider),
        )
        .await;
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|v| v["schedule_id"] == schedule.as_str())
    );
    let (status, _, refused) = s
        .call(
            Method::PUT,
            &format!("/provider/schedules/{schedule}"),
            Some(&other),
            Some(body("FREQ=WEEKLY;BYDAY=TU", 12)),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    // Ended: future unbooked slots withdrawn, the booked one stays; nothing more changes.
    let (status, ended) = s
        .post(
            &format!("/provider/schedules/{schedule}/end"),
            Some(&provider),
            json!({ "reason": "season over" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["kept_booked"], json!([saturday.clone()]), "{ended}");
    assert!(!ended["withdrawn"].as_array().expect("withdrawn").is_empty());
    let (status, headers, refused) = s
        .call(
            Method::POST,
            &format!("/provider/schedules/{schedule}/generate"),
            Some(&provider),
            None,
            &[],
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "an ended schedule generates nothing: {refused}"
    );
    assert!(created(&refused).is_empty());
    let _ = headers;
    let (status, headers, refused) = s
        .call(
            Method::PUT,
            &format!("/provider/schedules/{schedule}"),
            Some(&provider),
            Some(body("FREQ=WEEKLY;BYDAY=TU", 12)),
            &[],
        )
        .await;
    assert_problem(
        status,
        &headers,
        &refused,
        StatusCode::CONFLICT,
        "schedule.ended",
    );
}
