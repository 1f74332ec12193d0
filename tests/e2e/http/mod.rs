//! The HTTP API over real HTTP on a real database: the platform (API, projectors, reactors)
//! runs in the test process on a free port, on a throwaway database holding `tiny` fixtures.

mod auth;
pub(crate) mod console;
mod contract;
mod gdpr;
mod hardening;
mod input;
mod journey;
mod lifecycle;
mod money;
mod notifications;
mod onsale;
mod openapi;
mod provider;
mod rbac;
mod relevance;
mod reschedule;
mod tickets;
mod webhooks;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tessera_api::startup::{Platform, PlatformOptions, StripeConfig};
use tessera_log::store::{PgEventStore, PgStoreOptions};
use tessera_log::testkit::TestDatabase;

const DEADLINE: Duration = Duration::from_secs(60);

/// A running platform and a client for it.
pub struct Server {
    pub url: String,
    pub client: reqwest::Client,
    pub db: TestDatabase,
    pub keys: std::sync::Arc<tessera_api::http::auth::TokenKeys>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    platform: Option<Platform>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub stripe: Option<StripeConfig>,
    pub config: Option<tessera_api::http::ApiConfig>,
    /// Fixture scale and seed (default `tiny`, seed 7).
    pub fixtures: Option<(&'static str, u64)>,
}

impl Server {
    pub async fn start(options: Options) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let db = TestDatabase::new().await;
        let end = chrono::Utc::now()
            .date_naive()
            .and_hms_opt(12, 0, 0)
            .expect("noon")
            .and_utc();
        let (scale, seed) = options.fixtures.unwrap_or(("tiny", 7));
        tessera_fixtures::load(
            db.pool.clone(),
            tessera_fixtures::Scale::named(scale).expect("scale"),
            seed,
            end,
            &|_, _| {},
            None,
        )
        .await
        .expect("load fixtures");
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(PgEventStore::new(
            db.pool.clone(),
            PgStoreOptions::default(),
        ));
        let platform = Platform::start(
            db.pool.clone(),
            store,
            PlatformOptions {
                projectors: true,
                reactors: true,
                stripe: options.stripe,
                jwt_secret: None,
                config: options.config.unwrap_or_default(),
                index_root: dir.path().join("index"),
                projector_label: "e2e".into(),
                seal_key: None,
                seal_every: None,
                // Tests share the machine with other tests: a polite read side would only make
                // their waits longer.
                read_side_nice: 0,
                master_key: None,
                // Messages become files in the server's own folder (`Server::mail`).
                notifications: Some(tessera_api::startup::NotificationOptions::files(
                    dir.path().join("mail"),
                )),
            },
        )
        .await
        .expect("start the platform");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = platform.state.clone();
        let task = tokio::spawn(async move {
            tessera_api::http::serve(listener, state, async move {
                let _ = stopped.await;
            })
            .await
            .expect("serve");
        });
        let server = Self {
            url,
            client: reqwest::Client::new(),
            keys: platform.state.keys.clone(),
            db,
            stop: Some(stop),
            task: Some(task),
            platform: Some(platform),
            _dir: dir,
        };
        server.caught_up().await;
        server
    }

    /// Waits until every projection has applied the whole log as it is now.
    pub async fn caught_up(&self) {
        let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
            .fetch_one(&self.db.pool)
            .await
            .expect("head");
        eventually("projections catch up", || async {
            let status = tessera_projections::status(&self.db.pool)
                .await
                .expect("status");
            assert!(status.iter().all(|s| s.state != "failed"), "{status:?}");
            (status.len() == 8 && status.iter().all(|s| s.position >= head)).then_some(())
        })
        .await;
    }

    /// Where this server's messages are written.
    pub fn mail_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("mail")
    }

    /// Where this server's search index lives.
    pub fn index_root(&self) -> std::path::PathBuf {
        self._dir.path().join("index")
    }

    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.url)
    }

    /// Sends a request; returns status, headers and JSON body (`Null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else if ["/healthz", "/readyz", "/metrics", "/api/"]
            .iter()
            .any(|p| path.starts_with(p))
        {
            format!("{}{path}", self.url)
        } else {
            self.api(path)
        };
        let mut request = self.client.request(method, url);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status} {value}"
        );
        (status, headers, value)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::GET, path, token, None, &[]).await;
        (s, v)
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let (s, _, v) = self.call(Method::POST, path, token, Some(body), &[]).await;
        (s, v)
    }

    /// Logs in; returns the whole token response.
    pub async fn login(&self, email: &str) -> Value {
        let (status, body) = self
            .post(
                "/auth/login",
                None,
                json!({ "email": email, "password": tessera_fixtures::DEMO_PASSWORD }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Logs in with a password; returns the access token.
    pub async fn token_with(&self, email: &str, password: &str) -> String {
        let (status, body) = self
            .post(
                "/auth/login",
                None,
                json!({ "email": email, "password": password }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    pub async fn token(&self, email: &str) -> String {
        self.login(email).await["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// A slot with at least `seats` free seats starting more than `days` days from now.
    pub async fn free_slot(&self, seats: i64, days: i64) -> (String, Value) {
        let (status, page) = self.get("/listings?limit=50", None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let from = (chrono::Utc::now() + chrono::TimeDelta::days(days)).to_rfc3339();
        for hit in page["hits"].as_array().expect("hits") {
            let id = hit["listing_id"].as_str().expect("id");
            let (_, slots) = self
                .get(
                    &format!("/listings/{id}/slots?from={}", urlencode(&from)),
                    None,
                )
                .await;
            if let Some(slot) = slots
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["remaining"].as_i64() >= Some(seats))
            {
                return (id.to_owned(), slot.clone());
            }
        }
        panic!("no listing has a slot with {seats} free seats in {days}+ days");
    }

    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(DEADLINE, task).await;
        }
        if let Some(platform) = self.platform.take() {
            platform.stop().await;
        }
    }
}

pub fn urlencode(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace(':', "%3A")
        .replace(' ', "%20")
        .replace('&', "%26")
}

/// Polls `check` until it returns `Some`, failing after a deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts a problem response: status, `application/problem+json`, and the code.
pub fn assert_problem(
    status: StatusCode,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want: StatusCode,
    code: &str,
) {
    assert_eq!(status, want, "{body}");
    assert_eq!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
        "application/problem+json",
        "{body}"
    );
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], want.as_u16(), "{body}");
    assert!(
        body["type"].as_str().is_some_and(|t| t.ends_with(code)),
        "{body}"
    );
}

/// The newest message with `template` to user `to` (once more than `after` were written), as
/// delivered to the mail folder, quoted-printable decoded.
pub async fn newest_message(
    s: &Server,
    admin: &str,
    template: &str,
    to: &str,
    after: usize,
) -> String {
    let message = eventually(&format!("a {template} message is written"), || async {
        let (_, list) = s
            .get(
                &format!("/admin/outbox?template={template}&recipient={to}"),
                Some(admin),
            )
            .await;
        let list = list.as_array().cloned().unwrap_or_default();
        (list.len() > after).then(|| list[0].clone())
    })
    .await;
    let id = message["id"].as_str().expect("id").to_owned();
    let path = s.mail_dir().join(format!("{id}.eml"));
    eventually(&format!("the {template} message is delivered"), || async {
        std::fs::read_to_string(&path).ok()
    })
    .await
    // Quoted-printable: soft line breaks undone, `=` decoded.
    .replace("=\r\n", "")
    .replace("=3D", "=")
}

/// The token of the newest address-confirmation link sent to user `to`.
pub async fn verification_token(s: &Server, admin: &str, to: &str, after: usize) -> String {
    let eml = newest_message(s, admin, "email_verification", to, after).await;
    let start = eml
        .find("verify-email?token=")
        .expect("a link in the message")
        + "verify-email?token=".len();
    eml[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || *c == '.')
        .collect()
}

/// A slot of `listing` starting `starts_in` from now, two hours long, scheduled by `provider`
/// (at `price` per seat, or the listing's price).
pub async fn new_slot(
    s: &Server,
    provider: &str,
    listing: &str,
    starts_in: chrono::TimeDelta,
    capacity: u32,
    price: Option<i64>,
) -> String {
    let starts = chrono::Utc::now() + starts_in;
    let (status, slot) = s
        .post(
            &format!("/provider/listings/{listing}/slots"),
            Some(provider),
            serde_json::json!({
                "starts_at": starts.to_rfc3339(),
                "ends_at": (starts + chrono::TimeDelta::hours(2)).to_rfc3339(),
                "capacity": capacity,
                "price_minor": price,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{slot}");
    slot["slot_id"].as_str().expect("slot").to_owned()
}

/// Places (under idempotency key `key`) and pays a booking; returns its id.
pub async fn paid_booking(s: &Server, customer: &str, slot: &str, seats: u32, key: &str) -> String {
    let (status, _, placed) = s
        .call(
            reqwest::Method::POST,
            "/bookings",
            Some(customer),
            Some(serde_json::json!({ "slot_id": slot, "seats": seats })),
            &[("idempotency-key", key.into())],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{placed}");
    let id = placed["booking_id"].as_str().expect("booking").to_owned();
    let (status, body) = s
        .post(
            &format!("/bookings/{id}/pay"),
            Some(customer),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["booking_status"], "confirmed", "{body}");
    id
}
