//! The RBAC matrix: every route of the API, called by every kind of caller (anonymous, the
//! owning customer, another customer, the owning provider, another provider, admin, auditor,
//! analyst), against the rule it must follow. The OpenAPI document lists no route the matrix
//! does not cover.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Options, Server};

#[derive(Debug, Clone, Copy)]
enum Owned {
    Booking,
    Listing,
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Anyone, signed in or not.
    Public,
    /// Anyone; the body carries the credentials (a wrong one is 401, never 403).
    BodyCredentials,
    /// Any signed-in user.
    SignedIn,
    /// Signed in with one of these roles.
    Roles(&'static [&'static str]),
    /// One of `roles`, and the owner of the resource (or one of `privileged`); a caller with
    /// the role who is not the owner gets `other`.
    Own {
        roles: &'static [&'static str],
        owned: Owned,
        privileged: &'static [&'static str],
        other: StatusCode,
    },
}

struct Caller {
    name: &'static str,
    token: Option<String>,
    roles: BTreeSet<String>,
    owns_booking: bool,
    owns_listing: bool,
}

impl Caller {
    fn any(&self, roles: &[&str]) -> bool {
        roles.iter().any(|r| self.roles.contains(*r))
    }
}

/// What `caller` must get from a route under `rule`: `None` = allowed (neither 401 nor 403).
fn expected(rule: Rule, c: &Caller) -> Option<StatusCode> {
    if c.token.is_none() && !matches!(rule, Rule::Public | Rule::BodyCredentials) {
        return Some(StatusCode::UNAUTHORIZED);
    }
    match rule {
        Rule::Public | Rule::SignedIn | Rule::BodyCredentials => None,
        Rule::Roles(roles) => (!c.any(roles)).then_some(StatusCode::FORBIDDEN),
        Rule::Own {
            roles,
            owned,
            privileged,
            other,
        } => {
            if c.any(privileged) {
                return None;
            }
            if !roles.is_empty() && !c.any(roles) {
                return Some(StatusCode::FORBIDDEN);
            }
            let owner = match owned {
                Owned::Booking => c.owns_booking,
                Owned::Listing => c.owns_listing,
            };
            (!owner).then_some(other)
        }
    }
}

const CUSTOMER: &[&str] = &["customer"];
const ADMIN: &[&str] = &["admin"];

#[tokio::test]
async fn every_route_times_every_role() {
    let s = Server::start(Options {
        config: Some(tessera_api::http::ApiConfig {
            commands_per_second: 10_000,
            login_per_minute: 10_000,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await;

    let mut callers = vec![Caller {
        name: "anonymous",
        token: None,
        roles: BTreeSet::new(),
        owns_booking: false,
        owns_listing: false,
    }];
    for (name, email) in [
        ("customer", "customer@tessera.test"),
        ("other customer", "customer1@tessera.test"),
        ("provider", "provider@tessera.test"),
        ("other provider", "provider1@tessera.test"),
        ("admin", "admin@tessera.test"),
        ("auditor", "auditor@tessera.test"),
        ("analyst", "analyst@tessera.test"),
    ] {
        let login = s.login(email).await;
        callers.push(Caller {
            name,
            token: login["access_token"].as_str().map(str::to_owned),
            roles: login["roles"]
                .as_array()
                .expect("roles")
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            owns_booking: name == "customer",
            owns_listing: name == "provider",
        });
    }
    let token = |name: &str| {
        callers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.token.clone())
            .expect("caller")
    };
    assert!(
        !callers[5].roles.contains("customer"),
        "staff are not customers"
    );

    // The resources: the customer's booking, the provider's listing and slots.
    let (_, mine) = s.get("/provider/listings", Some(&token("provider"))).await;
    let listing = mine[0]["listing_id"]
        .as_str()
        .expect("a listing")
        .to_owned();
    let future = (chrono::Utc::now() + chrono::TimeDelta::days(30)).to_rfc3339();
    let slot_body = json!({ "starts_at": future, "ends_at": (chrono::Utc::now() + chrono::TimeDelta::days(30) + chrono::TimeDelta::hours(2)).to_rfc3339(), "capacity": 20 });
    let (st, slot) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(&token("provider")),
            slot_body.clone(),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{slot}");
    let slot = slot["slot_id"].as_str().expect("slot").to_owned();
    let (st, spare) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(&token("provider")),
            slot_body.clone(),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{spare}");
    let spare = spare["slot_id"].as_str().expect("slot").to_owned();
    let (st, _, placed) = s
        .call(
            Method::POST,
            "/bookings",
            Some(&token("customer")),
            Some(json!({ "slot_id": slot, "seats": 1 })),
            &[("idempotency-key", "rbac-booking".into())],
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{placed}");
    let booking = placed["booking_id"].as_str().expect("booking").to_owned();
    let (_, me) = s.get("/me", Some(&token("customer"))).await;
    let user = me["user_id"].as_str().expect("user").to_owned();
    let unsubscribe = tessera_notify::unsubscribe::token(
        s.keys.unsubscribe_key(),
        tessera_domain::values::UserId(user.parse().expect("uuid")),
    );
    let message = uuid::Uuid::new_v4();
    let schedule_body = json!({
        "rrule": "FREQ=MONTHLY;COUNT=2", "timezone": "Europe/Lisbon",
        "starts": format!("{}T10:00:00", (chrono::Utc::now() + chrono::TimeDelta::days(40)).date_naive()),
        "duration_minutes": 60, "capacity": 5, "horizon_days": 30,
    });
    let (st, schedule) = s
        .post(
            &format!("/provider/listings/{listing}/schedules"),
            Some(&token("provider")),
            schedule_body.clone(),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{schedule}");
    let schedule = schedule["schedule_id"]
        .as_str()
        .expect("schedule")
        .to_owned();

    let listing_body = json!({
        "kind": "experience", "title": "Sunset kayak", "description": "Paddle at dusk.",
        "destination": { "name": "Lisbon", "country": "Portugal", "lat": 38.72, "lng": -9.14 },
        "category": "outdoors", "duration_minutes": 120, "price_minor": 4500, "currency": "EUR"
    });
    let booking_own = |privileged: &'static [&'static str]| Rule::Own {
        roles: CUSTOMER,
        owned: Owned::Booking,
        privileged,
        other: StatusCode::NOT_FOUND,
    };
    let listing_own = Rule::Own {
        roles: &["provider", "admin"],
        owned: Owned::Listing,
        privileged: ADMIN,
        other: StatusCode::FORBIDDEN,
    };
    let routes: Vec<(Method, String, Option<Value>, Rule)> = vec![
        (
            Method::POST,
            "/auth/login".into(),
            Some(json!({ "email": "nobody@example.com", "password": "whatever123" })),
            Rule::BodyCredentials,
        ),
        (
            Method::POST,
            "/auth/register".into(),
            Some(json!({ "email": "x", "display_name": "X", "password": "p" })),
            Rule::Public,
        ),
        (
            Method::POST,
            "/auth/refresh".into(),
            Some(json!({ "refresh_token": "rt_x" })),
            Rule::BodyCredentials,
        ),
        (
            Method::POST,
            "/auth/logout".into(),
            Some(json!({ "refresh_token": "rt_x" })),
            Rule::Public,
        ),
        (Method::GET, "/me".into(), None, Rule::SignedIn),
        (Method::PATCH, "/me".into(), Some(json!({})), Rule::SignedIn),
        (Method::GET, "/me/wishlist".into(), None, Rule::SignedIn),
        (
            Method::PUT,
            format!("/me/wishlist/{listing}"),
            None,
            Rule::SignedIn,
        ),
        (
            Method::DELETE,
            format!("/me/wishlist/{listing}"),
            None,
            Rule::SignedIn,
        ),
        (
            Method::POST,
            "/me/password".into(),
            Some(
                json!({ "current_password": "not the password", "new_password": "not applied anyway" }),
            ),
            Rule::SignedIn,
        ),
        (
            Method::POST,
            "/auth/password-reset".into(),
            Some(json!({ "email": "nobody@example.com" })),
            Rule::Public,
        ),
        (
            Method::POST,
            "/auth/password-reset/confirm".into(),
            Some(json!({ "token": "pr_x", "new_password": "whatever whatever" })),
            Rule::Public,
        ),
        (
            Method::POST,
            "/auth/verify-email".into(),
            Some(json!({ "token": "forged" })),
            Rule::Public,
        ),
        (
            Method::POST,
            "/me/email".into(),
            Some(json!({ "current_password": "not the password", "email": "x@example.org" })),
            Rule::SignedIn,
        ),
        (
            Method::POST,
            "/me/email/verification".into(),
            None,
            Rule::SignedIn,
        ),
        (Method::GET, "/me/preferences".into(), None, Rule::SignedIn),
        (
            Method::PUT,
            "/me/preferences".into(),
            Some(json!({ "locale": "en", "marketing": true })),
            Rule::SignedIn,
        ),
        (
            Method::GET,
            format!("/unsubscribe/{unsubscribe}"),
            None,
            Rule::Public,
        ),
        (
            Method::POST,
            format!("/unsubscribe/{unsubscribe}"),
            None,
            Rule::Public,
        ),
        (
            Method::GET,
            "/webhooks".into(),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::POST,
            "/webhooks".into(),
            Some(
                json!({ "url": "https://hooks.example.com/t", "event_types": ["booking.placed"] }),
            ),
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::GET,
            format!("/webhooks/{message}"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::DELETE,
            format!("/webhooks/{message}"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::POST,
            format!("/webhooks/{message}/enable"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::GET,
            format!("/webhooks/{message}/secret"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::POST,
            format!("/webhooks/{message}/rotate-secret"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::GET,
            format!("/webhooks/{message}/deliveries"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::GET,
            format!("/webhooks/{message}/deliveries/{message}"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::POST,
            format!("/webhooks/{message}/deliveries/{message}/redeliver"),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::GET,
            "/admin/outbox?status=dead".into(),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            "/admin/outbox/stats".into(),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::POST,
            format!("/admin/outbox/{message}/retry"),
            Some(json!({ "reason": "address fixed" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/outbox/{message}/discard"),
            Some(json!({ "reason": "obsolete" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::GET,
            "/me/loyalty".into(),
            None,
            Rule::Roles(CUSTOMER),
        ),
        (
            Method::GET,
            "/me/loyalty/history".into(),
            None,
            Rule::Roles(CUSTOMER),
        ),
        (
            Method::GET,
            "/loyalty/leaderboard".into(),
            None,
            Rule::SignedIn,
        ),
        (Method::GET, "/listings".into(), None, Rule::Public),
        (
            Method::GET,
            format!("/listings/{listing}"),
            None,
            Rule::Public,
        ),
        (
            Method::GET,
            format!("/listings/{listing}/slots"),
            None,
            Rule::Public,
        ),
        (
            Method::GET,
            format!("/listings/{listing}/reviews"),
            None,
            Rule::Public,
        ),
        (
            Method::GET,
            "/provider/listings".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::POST,
            "/provider/listings".into(),
            Some(listing_body.clone()),
            Rule::Roles(&["provider"]),
        ),
        (
            Method::PUT,
            format!("/provider/listings/{listing}"),
            Some(listing_body.clone()),
            listing_own,
        ),
        (
            Method::POST,
            format!("/provider/listings/{listing}/slots"),
            Some(slot_body.clone()),
            listing_own,
        ),
        (
            Method::POST,
            format!("/provider/slots/{spare}/cancel"),
            Some(json!({ "reason": "storm" })),
            listing_own,
        ),
        (
            Method::GET,
            "/provider/earnings".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::PATCH,
            format!("/provider/slots/{slot}"),
            Some(json!({ "capacity": 20 })),
            listing_own,
        ),
        (
            Method::GET,
            format!("/provider/slots/{slot}/manifest"),
            None,
            Rule::Own {
                roles: &["provider", "admin"],
                owned: Owned::Listing,
                privileged: ADMIN,
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::GET,
            format!("/provider/slots/{slot}/manifest?format=csv"),
            None,
            Rule::Own {
                roles: &["provider", "admin"],
                owned: Owned::Listing,
                privileged: ADMIN,
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::GET,
            "/provider/bookings?status=held".into(),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (
            Method::POST,
            format!("/provider/listings/{listing}/schedules"),
            Some(schedule_body.clone()),
            listing_own,
        ),
        (
            Method::GET,
            "/provider/staff".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::PUT,
            format!("/provider/staff/{user}"),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::DELETE,
            format!("/provider/staff/{user}"),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            "/provider/schedules".into(),
            None,
            Rule::Roles(&["provider", "admin"]),
        ),
        (Method::GET, "/tickets/key".into(), None, Rule::Public),
        (
            Method::GET,
            format!("/bookings/{booking}/tickets"),
            None,
            Rule::Own {
                roles: &[],
                owned: Owned::Booking,
                privileged: ADMIN,
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::GET,
            format!("/bookings/{booking}/tickets/1/qr?format=svg"),
            None,
            Rule::Own {
                roles: &[],
                owned: Owned::Booking,
                privileged: ADMIN,
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::POST,
            format!("/provider/slots/{slot}/check-in"),
            Some(json!({ "token": "TK1.x.y" })),
            Rule::Own {
                roles: &["provider", "admin"],
                owned: Owned::Listing,
                privileged: ADMIN,
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::PUT,
            format!("/provider/listings/{listing}/ticket-scanning"),
            Some(json!({ "scans_tickets": false })),
            listing_own,
        ),
        (
            Method::GET,
            format!("/provider/schedules/{schedule}"),
            None,
            Rule::Own {
                roles: &["provider", "admin"],
                owned: Owned::Listing,
                privileged: ADMIN,
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::PUT,
            format!("/provider/schedules/{schedule}"),
            Some(schedule_body.clone()),
            listing_own,
        ),
        (
            Method::POST,
            format!("/provider/schedules/{schedule}/generate"),
            None,
            listing_own,
        ),
        (
            Method::POST,
            format!("/provider/schedules/{schedule}/exceptions"),
            Some(json!({ "date": "2030-01-01" })),
            listing_own,
        ),
        (
            Method::DELETE,
            format!("/provider/schedules/{schedule}/exceptions/2030-01-01"),
            None,
            listing_own,
        ),
        (
            Method::POST,
            format!("/provider/schedules/{schedule}/end"),
            Some(json!({ "reason": "season over" })),
            listing_own,
        ),
        (Method::GET, "/bookings".into(), None, Rule::Roles(CUSTOMER)),
        (
            Method::POST,
            "/bookings".into(),
            Some(json!({ "slot_id": slot, "seats": 1 })),
            Rule::Roles(CUSTOMER),
        ),
        (
            Method::GET,
            format!("/bookings/{booking}"),
            None,
            Rule::Own {
                roles: &[],
                owned: Owned::Booking,
                privileged: &["admin", "auditor"],
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::GET,
            format!("/bookings/{booking}/receipt?format=pdf"),
            None,
            Rule::Own {
                roles: &[],
                owned: Owned::Booking,
                privileged: &["admin", "auditor"],
                other: StatusCode::NOT_FOUND,
            },
        ),
        (
            Method::GET,
            format!("/bookings/{booking}/cancellation-quote"),
            None,
            booking_own(&[]),
        ),
        (
            Method::POST,
            format!("/bookings/{booking}/review"),
            Some(json!({ "rating": 5, "text": "great" })),
            booking_own(&[]),
        ),
        (
            Method::POST,
            format!("/bookings/{booking}/pay"),
            Some(json!({})),
            booking_own(&[]),
        ),
        (
            Method::POST,
            format!("/bookings/{booking}/cancel"),
            Some(json!({})),
            booking_own(&[]),
        ),
        (
            Method::POST,
            format!("/bookings/{booking}/reschedule"),
            Some(json!({ "slot_id": uuid::Uuid::new_v4() })),
            booking_own(&[]),
        ),
        (
            Method::DELETE,
            format!("/bookings/{booking}/move"),
            None,
            booking_own(&[]),
        ),
        (
            Method::POST,
            "/payments/stripe/webhook".into(),
            Some(json!({})),
            Rule::Public,
        ),
        (
            Method::POST,
            format!("/admin/bookings/{booking}/refund"),
            Some(json!({ "amount_minor": 100, "reason": "goodwill" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/bookings/{booking}/force-cancel"),
            Some(json!({ "reason": "fraud check" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/bookings/{booking}/reinstate"),
            Some(json!({ "reason": "our fault" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/bookings/{booking}/reschedule"),
            Some(json!({ "slot_id": uuid::Uuid::new_v4(), "reason": "weather" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/users/{user}/points"),
            Some(json!({ "delta": 10, "reason": "goodwill" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/users/{user}/roles"),
            Some(json!({ "role": "auditor", "reason": "audit" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/users/{user}/roles/revoke"),
            Some(json!({ "role": "auditor", "reason": "done" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/users/{}/erase", uuid::Uuid::new_v4()),
            Some(json!({ "reason": "GDPR request" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::GET,
            "/admin/bookings?status=confirmed".into(),
            None,
            Rule::Roles(ADMIN),
        ),
        (
            Method::GET,
            "/admin/users?role=provider".into(),
            None,
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/users/{}/suspend", uuid::Uuid::new_v4()),
            Some(json!({ "reason": "fraud" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::POST,
            format!("/admin/users/{}/unsuspend", uuid::Uuid::new_v4()),
            Some(json!({ "reason": "cleared" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::GET,
            "/admin/stats/daily".into(),
            None,
            Rule::Roles(&["admin", "analyst", "auditor"]),
        ),
        (
            Method::PUT,
            format!("/admin/providers/{user}/commission"),
            Some(json!({ "commission_bp": 1000, "reason": "deal" })),
            Rule::Roles(ADMIN),
        ),
        (
            Method::GET,
            "/admin/ledger/check".into(),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            "/provider/payout-account".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            "/provider/statement?format=csv".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            format!("/admin/providers/{user}/statement"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::POST,
            "/provider/payout-account".into(),
            Some(json!({})),
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            "/provider/payouts".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            "/provider/invoices".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            "/provider/invoices/INV-2026-000001?format=pdf".into(),
            None,
            Rule::Roles(&["provider"]),
        ),
        (
            Method::GET,
            format!("/admin/providers/{user}/invoices"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            format!("/admin/providers/{user}/payouts"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            "/admin/stats/listings".into(),
            None,
            Rule::Roles(&["admin", "analyst", "auditor"]),
        ),
        (
            Method::GET,
            "/projections".into(),
            None,
            Rule::Roles(&["analyst", "admin"]),
        ),
        (
            Method::POST,
            "/projections/rebuild".into(),
            Some(json!({ "names": ["reviews"] })),
            Rule::Roles(&["analyst", "admin"]),
        ),
        (
            Method::POST,
            format!("/provider/listings/{listing}/retire"),
            Some(json!({ "reason": "season over" })),
            listing_own,
        ),
        (
            Method::GET,
            format!("/audit/bookings/{booking}/history"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            format!("/audit/bookings/{booking}/read-model"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            format!("/audit/streams/booking-{booking}/state"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            "/audit/log?limit=5".into(),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            "/audit/verify".into(),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (
            Method::GET,
            format!("/audit/export?booking={booking}"),
            None,
            Rule::Roles(&["auditor", "admin"]),
        ),
        (Method::GET, "/openapi.json".into(), None, Rule::Public),
        // The operations endpoints, at the root: for probes and scrapers, open to anyone.
        (Method::GET, "/healthz".into(), None, Rule::Public),
        (Method::GET, "/readyz".into(), None, Rule::Public),
        (Method::GET, "/metrics".into(), None, Rule::Public),
    ];

    let mut failures = Vec::new();
    for (method, path, body, rule) in &routes {
        for c in &callers {
            let (status, _, answer) = s
                .call(
                    method.clone(),
                    path,
                    c.token.as_deref(),
                    body.clone(),
                    &[("idempotency-key", uuid::Uuid::new_v4().to_string())],
                )
                .await;
            let ok = match expected(*rule, c) {
                None if matches!(rule, Rule::BodyCredentials) => status != StatusCode::FORBIDDEN,
                None => status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                Some(want) => status == want,
            };
            if !ok {
                failures.push(format!(
                    "{method} {path} as {}: got {status}, expected {} ({answer})",
                    c.name,
                    expected(*rule, c).map_or("allowed".to_owned(), |s| s.to_string())
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "RBAC violations:\n{}",
        failures.join("\n")
    );

    // Authorization comes before validation: a caller without the role gets 401 or 403 even
    // for a body that would not validate (and so learns nothing of the route's schema).
    let invalid = json!({ "not_a_field": ["\u{0}"], "seats": -1 });
    for (method, path, body, rule) in &routes {
        if body.is_none() {
            continue;
        }
        for c in &callers {
            // Refusals by role (or by the lack of a token). Ownership needs the resource and
            // is decided after the body: someone with the role knows the schema anyway.
            let by_role = match rule {
                Rule::Own {
                    roles, privileged, ..
                } => c.token.is_none() || (!c.any(privileged) && !c.any(roles)),
                _ => true,
            };
            let want = match expected(*rule, c) {
                Some(w @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)) if by_role => w,
                _ => continue,
            };
            let (status, _, answer) = s
                .call(
                    method.clone(),
                    path,
                    c.token.as_deref(),
                    Some(invalid.clone()),
                    &[("idempotency-key", uuid::Uuid::new_v4().to_string())],
                )
                .await;
            if status != want {
                failures.push(format!(
                    "{method} {path} with an invalid body as {}: got {status}, expected {want} ({answer})",
                    c.name
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization after validation:\n{}",
        failures.join("\n")
    );

    // What the auditor reads is the log itself: the booking's history, a clean verification
    // and an export that starts with its header.
    let auditor = token("auditor");
    let (st, history) = s
        .get(
            &format!("/audit/bookings/{booking}/history"),
            Some(&auditor),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{history}");
    let types: Vec<&str> = history
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(
        types.contains(&"BookingPlaced") && types.contains(&"SeatsHeld"),
        "{types:?}"
    );
    let (st, report) = s.get("/audit/verify", Some(&auditor)).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report}");
    let (st, _, export) = s
        .call(
            Method::GET,
            &format!("/audit/export?booking={booking}"),
            Some(&auditor),
            None,
            &[],
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let text = export.as_str().expect("NDJSON text");
    assert!(
        text.starts_with("{\"format\":\"tessera-export-v1\""),
        "{text}"
    );
    assert!(
        text.lines().count() > types.len(),
        "a header and every event"
    );

    // Every documented operation is in the matrix.
    let (_, doc) = s.get("/openapi.json", None).await;
    let covered: BTreeSet<(String, String)> = routes
        .iter()
        .map(|(m, p, _, _)| (m.as_str().to_lowercase(), normalise(p)))
        .collect();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        let keys = ops.as_object().expect("ops").keys();
        for method in keys.filter(|k| super::openapi::is_method(k)) {
            let key = (method.clone(), normalise(path));
            assert!(
                covered.contains(&key),
                "{method} {path} is not in the RBAC matrix"
            );
        }
    }
    s.shutdown().await;
}

/// `/bookings/{booking_id}/pay` and `/bookings/<uuid>/pay` both become `/bookings/*/pay`.
/// Query strings are dropped; a stream id such as `booking-<uuid>` is a parameter too.
fn normalise(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|seg| {
            let ends_in_uuid = seg.len() > 36
                && seg.is_char_boundary(seg.len() - 36)
                && uuid::Uuid::parse_str(&seg[seg.len() - 36..]).is_ok();
            let document = seg
                .parse::<tessera_domain::receipt::DocumentNumber>()
                .is_ok();
            // An unsubscribe token: `<user id, 32 hex>.<tag, 32 hex>`.
            let token = seg.split_once('.').is_some_and(|(a, b)| {
                a.len() == 32
                    && b.len() == 32
                    && (a.chars().chain(b.chars())).all(|c| c.is_ascii_hexdigit())
            });
            let date = seg.parse::<chrono::NaiveDate>().is_ok();
            let number = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
            if seg.starts_with('{')
                || date
                || number
                || uuid::Uuid::parse_str(seg).is_ok()
                || ends_in_uuid
                || document
                || token
            {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
