//! GDPR crypto-shredding over HTTP: personal data never reaches the database in plaintext; an
//! admin's erasure destroys the person's key, after which no read model, index file, export or
//! API answer holds their e-mail or name, the log still verifies, and statistics still count
//! their bookings.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::{Options, Server};

/// Tables (in every schema: the log, read models, keys, secrets) with a row containing `needle`.
async fn tables_containing(pool: &PgPool, needle: &str) -> Vec<String> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema, table_name FROM information_schema.tables \
          WHERE table_type = 'BASE TABLE' \
            AND table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    let mut found = Vec::new();
    for (schema, table) in tables {
        let sql = format!(
            "SELECT count(*) FROM \"{schema}\".\"{table}\" t WHERE t::text ILIKE '%' || $1 || '%'"
        );
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(needle)
            .fetch_one(pool)
            .await
            .expect("search");
        if n > 0 {
            found.push(format!("{schema}.{table}"));
        }
    }
    found
}

/// Files under `dir` (the search index) whose bytes contain `needle`.
fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes
                    .windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

async fn totals(s: &Server, admin: &str) -> Value {
    let (status, stats) = s.get("/admin/stats/daily", Some(admin)).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    let rows = stats.as_array().expect("rows");
    let sum = |k: &str| rows.iter().filter_map(|r| r[k].as_i64()).sum::<i64>();
    json!({ "placed": sum("bookings_placed"), "revenue": sum("revenue_minor") })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erased_person_leaves_no_personal_data_and_the_log_still_verifies() {
    let s = Server::start(Options::default()).await;
    let (email, name) = ("grace.quuxhopper@example.org", "Grace Quuxhopper");
    let (status, _, body) = s
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": email, "display_name": name, "password": "correct horse battery" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, login) = s
        .post(
            "/auth/login",
            None,
            json!({ "email": email, "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["access_token"].as_str().expect("token").to_owned();
    let (_, me) = s.get("/me", Some(&token)).await;
    let user = me["user_id"].as_str().expect("user id").to_owned();
    assert_eq!(
        me["email"], email,
        "the platform reads its own data back: {me}"
    );

    // Encrypted from the first append: no table holds the address or the name in plaintext.
    s.caught_up().await;
    for needle in [email, name, "quuxhopper"] {
        assert_eq!(
            tables_containing(&s.db.pool, needle).await,
            Vec::<String>::new(),
            "{needle}"
        );
    }
    let auditor = s.token("auditor@tessera.test").await;
    let state_path = format!("/audit/streams/user-{user}/state");
    let (status, before) = s.get(&state_path, Some(&auditor)).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!(before["state"]["Registered"]["email"], email, "{before}");
    let registration = format!("/audit/log?event_type=UserRegistered&stream_prefix=user-{user}");
    let (_, log) = s.get(&registration, Some(&auditor)).await;
    let stored = &log["events"][0];
    assert_eq!(stored["personal"]["email"], email, "{log}");
    for field in ["email", "password_hash"] {
        assert!(
            stored["data"][field]
                .as_str()
                .is_some_and(|e| e.starts_with("pii:v1:")),
            "{field} is encrypted with the person's key: {log}"
        );
    }
    assert_eq!(
        tables_containing(&s.db.pool, "$argon2id$").await,
        Vec::<String>::new(),
        "no password hash in plaintext anywhere"
    );

    // A customer with bookings, erased too: the statistics must not change.
    let admin = s.token("admin@tessera.test").await;
    let customer: uuid::Uuid = sqlx::query_scalar(
        "SELECT (data->>'customer_id')::uuid FROM events WHERE event_type = 'BookingPlaced' \
           AND stream_id IN (SELECT stream_id FROM events WHERE event_type = 'BookingConfirmed') \
         ORDER BY position LIMIT 1",
    )
    .fetch_one(&s.db.pool)
    .await
    .expect("a customer with a confirmed booking");
    let stats_before = totals(&s, &admin).await;

    for (who, key) in [(user.clone(), "erase-1"), (customer.to_string(), "erase-2")] {
        let (status, _, body) = s
            .call(
                Method::POST,
                &format!("/admin/users/{who}/erase"),
                Some(&admin),
                Some(json!({ "reason": "GDPR request #4711" })),
                &[("idempotency-key", key.into())],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // A reason is required.
    let (status, _, body) = s
        .call(
            Method::POST,
            &format!("/admin/users/{user}/erase"),
            Some(&admin),
            Some(json!({ "reason": " " })),
            &[("idempotency-key", "erase-3".into())],
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    s.caught_up().await;

    // Gone everywhere: tables, index files, the full export, the API.
    for needle in [email, name, "quuxhopper"] {
        assert_eq!(
            tables_containing(&s.db.pool, needle).await,
            Vec::<String>::new(),
            "{needle}"
        );
    }
    let index_root = s.index_root();
    assert_eq!(
        files_containing(&index_root, "quuxhopper"),
        Vec::<String>::new()
    );
    let (status, _, export) = s
        .call(Method::GET, "/audit/export", Some(&auditor), None, &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    let export = export.as_str().expect("NDJSON");
    assert!(export.contains("UserErased") && !export.to_lowercase().contains("quuxhopper"));
    let (status, after) = s.get(&state_path, Some(&auditor)).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    let registered = &after["state"]["Registered"];
    assert_eq!(registered["display_name"], "[erased]", "{after}");
    assert!(
        registered["email"]
            .as_str()
            .is_some_and(|e| e.ends_with("@erased.invalid")),
        "{after}"
    );
    assert_eq!(registered["erased"], true);
    let (_, log) = s.get(&registration, Some(&auditor)).await;
    let stored = &log["events"][0];
    assert_eq!(stored["personal"]["display_name"], "[erased]", "{log}");
    assert!(
        stored["personal"]["email"]
            .as_str()
            .is_some_and(|e| e.ends_with("@erased.invalid")),
        "{log}"
    );
    let (status, _) = s
        .post(
            "/auth/login",
            None,
            json!({ "email": email, "password": "correct horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, log) = s.get(&registration, Some(&auditor)).await;
    assert_eq!(
        log["events"][0]["personal"]["password_hash"], "[erased]",
        "the hash is shredded with the key: {log}"
    );

    // The address is free again: registering it is like registering any new address (201, a
    // new account, nothing of the old one), and tells nobody it was ever used.
    let (status, _, again) = s
        .call(
            Method::POST,
            "/auth/register",
            None,
            Some(json!({ "email": email, "display_name": "Someone Else", "password": "another horse battery" })),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_ne!(again["user_id"].as_str(), Some(user.as_str()));
    let (status, _) = s
        .post(
            "/auth/login",
            None,
            json!({ "email": email, "password": "another horse battery" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The erasure is in the log with the admin and the reason; the log verifies; the erased
    // customer's bookings still count.
    let (_, log) = s
        .get("/audit/log?event_type=UserErased&limit=10", Some(&auditor))
        .await;
    let erasures = log["events"].as_array().expect("events");
    assert!(
        erasures
            .iter()
            .any(|e| e["stream"] == format!("user-{user}")
                && e["reason"] == "GDPR request #4711"
                && e["actor"].as_str().is_some_and(|a| a.starts_with("user:"))),
        "{log}"
    );
    let (_, report) = s.get("/audit/verify", Some(&auditor)).await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(totals(&s, &admin).await, stats_before);
    s.shutdown().await;
}
