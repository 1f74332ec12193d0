//! Messages over HTTP: a booking paid through the API is confirmed by e-mail (a `.eml` file
//! in the server's mail folder, with its calendar entry), the outbox shows admins and auditors
//! what each person was told, preferences and the one-click unsubscribe link change what is
//! sent, and every refusal is a problem response.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server, eventually};

async fn outbox(s: &Server, token: &str, query: &str) -> Vec<Value> {
    let (status, body) = s.get(&format!("/admin/outbox?{query}"), Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body.as_array().expect("messages").clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paid_booking_is_confirmed_by_mail_and_the_outbox_shows_who_was_told_what() {
    let s = Server::start(Options::default()).await;
    let customer = s.token("customer@tessera.test").await;
    let admin = s.token("admin@tessera.test").await;
    let auditor = s.token("auditor@tessera.test").await;

    // The demo's own recent history already wrote messages into the mail folder.
    eventually("the demo's messages reach the mail folder", || async {
        let n = std::fs::read_dir(s.mail_dir())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count()
            })
            .unwrap_or(0);
        (n > 0).then_some(())
    })
    .await;

    let (_, slot) = s.free_slot(1, 3).await;
    let slot_id = slot["slot_id"].as_str().expect("slot");
    let (status, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&customer),
            Some(json!({ "slot_id": slot_id, "seats": 1 })),
            &[("idempotency-key", "mail-booking".into())],
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

    // Held, then confirmed: both sent to the customer; the provider told of the booking.
    let messages = eventually("the confirmation is sent", || async {
        let m = outbox(&s, &auditor, &format!("booking_id={booking}")).await;
        m.iter()
            .any(|r| r["template"] == "booking_confirmed" && r["status"] == "sent")
            .then_some(m)
    })
    .await;
    let confirmed = messages
        .iter()
        .find(|r| r["template"] == "booking_confirmed")
        .expect("confirmed");
    assert_eq!(confirmed["address"], "customer@tessera.test", "{confirmed}");
    assert_eq!(confirmed["event_type"], "BookingConfirmed");
    assert!(messages.iter().any(|r| r["template"] == "booking_placed"));
    assert!(
        messages
            .iter()
            .any(|r| r["template"] == "hold_lapsing" && r["status"] == "discarded"),
        "paid in time: the hold warning is discarded: {messages:?}"
    );
    let id = confirmed["id"].as_str().expect("id");
    let eml = std::fs::read_to_string(s.mail_dir().join(format!("{id}.eml"))).expect("the .eml");
    assert!(
        eml.contains("To: customer@tessera.test") || eml.contains("<customer@tessera.test>"),
        "{eml}"
    );
    assert!(eml.contains("text/calendar") && eml.contains("BEGIN:VEVENT"));
    // The text parts are quoted-printable: soft line breaks undone, the link is whole.
    assert!(
        eml.replace("=\r\n", "")
            .contains(&format!("bookings/{booking}"))
    );

    // Admins cannot resend a sent message or discard it; unknown ids and empty reasons refused.
    let (status, body) = s
        .post(
            &format!("/admin/outbox/{id}/retry"),
            Some(&admin),
            json!({ "reason": "again" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["code"], "message.wrong_state");
    let (status, body) = s
        .post(
            &format!("/admin/outbox/{id}/discard"),
            Some(&admin),
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = s
        .post(
            &format!("/admin/outbox/{}/retry", uuid::Uuid::new_v4()),
            Some(&admin),
            json!({ "reason": "x" }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "message.not_found");
    let (status, body) = s
        .post(
            &format!("/admin/outbox/{id}/retry"),
            Some(&admin),
            json!({ "reason": " " }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = s
        .post(
            &format!("/admin/outbox/{id}/retry"),
            Some(&admin),
            json!({ "reason": "a\u{0}b" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "reason", "{body}");
    let (status, body) = s.get("/admin/outbox?template=a%00b", Some(&admin)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = s.get("/admin/outbox?status=lost", Some(&admin)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = s.get("/admin/outbox", Some(&customer)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, stats) = s.get("/admin/outbox/stats", Some(&auditor)).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    assert!(stats["sent"].as_i64() >= Some(2), "{stats}");

    // Preferences: German, no optional messages; a language we do not write is refused.
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/me/preferences",
            Some(&customer),
            Some(json!({ "locale": "de", "marketing": true })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, prefs) = s.get("/me/preferences", Some(&customer)).await;
    assert_eq!(prefs, json!({ "locale": "de", "marketing": true }));
    let (status, _, body) = s
        .call(
            Method::PUT,
            "/me/preferences",
            Some(&customer),
            Some(json!({ "locale": "xx", "marketing": true })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // One click (RFC 8058): a mail client POSTs the form to the link; no login needed.
    let (_, me) = s.get("/me", Some(&customer)).await;
    let user: uuid::Uuid = me["user_id"].as_str().expect("id").parse().expect("uuid");
    let token = tessera_notify::unsubscribe::token(
        s.keys.unsubscribe_key(),
        tessera_domain::values::UserId(user),
    );
    let (status, page) = s.get(&format!("/unsubscribe/{token}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.as_str()
            .is_some_and(|p| p.contains("<form method=\"post\"")),
        "{page}"
    );
    let (_, prefs) = s.get("/me/preferences", Some(&customer)).await;
    assert_eq!(prefs["marketing"], true, "a GET changes nothing");
    let response = s
        .client
        .post(s.api(&format!("/unsubscribe/{token}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), StatusCode::OK);
    let (_, prefs) = s.get("/me/preferences", Some(&customer)).await;
    assert_eq!(prefs, json!({ "locale": "de", "marketing": false }));
    let forged = format!("{}.{}", user.simple(), "0".repeat(32));
    let (status, body) = s
        .post(&format!("/unsubscribe/{forged}"), None, json!({}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["code"], "unsubscribe.invalid_link");
    s.shutdown().await;
}
