//! The HTTP API (axum, under `/api/v1`). Commands go through the command handlers; queries read
//! the PostgreSQL read models and the tantivy index, never the event store (the audit endpoints,
//! which replay the log itself, are the one exception).
//!
//! Cross-cutting rules live here: request ids and tracing spans, the body limit, request latency
//! metrics, problem responses for unknown routes, and the typed extractors whose rejections become
//! problem responses.

pub mod auth;
pub mod codes;
pub mod console;
pub mod contract;
pub mod error;
pub mod pdf;
pub mod positions;
pub mod principals;
pub mod routes;
pub mod text;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use metrics_exporter_prometheus::PrometheusHandle;
use moka::future::Cache;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use tessera_commands::booking::BookingConfig;
use tessera_commands::gateway::{PaymentGateway, StripeGateway};
use tessera_commands::handler::AggregateCache;
use tessera_commands::idempotency::IdempotencyKeys;
use tessera_commands::onsale::{QueueConfig, SlotQueues};
use tessera_log::clock::Clock;
use tessera_log::store::EventStore;
use tessera_projections::search::SearchIndex;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use self::auth::TokenKeys;
use self::error::ApiError;
use self::positions::{POSITION_HEADER, Positions};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Limits and timeouts of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Login attempts per e-mail address and minute.
    pub login_per_minute: u32,
    /// Commands per user and second (with a burst of twice that).
    pub commands_per_second: u32,
    /// How long a query waits for projections to reach a requested position.
    pub read_wait: Duration,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Entries of the read cache (listing details, search pages); 0 turns it off.
    pub cache_capacity: u64,
    /// Aggregates (slots, listings) the command side keeps decided state of; 0 turns it off.
    pub aggregate_capacity: u64,
    /// How long held seats stay held.
    pub hold_ttl: Duration,
    /// Bounds of the per-slot queues of holds (used when `aggregate_capacity` is above 0).
    pub slot_queues: QueueConfig,
    /// How long a provider's share stays held after its slot ends (disputes, complaints).
    pub dispute_window: Duration,
    /// Where webhook endpoints may point (default: public HTTPS addresses only).
    pub webhook_urls: tessera_notify::webhooks::UrlPolicy,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            login_per_minute: 10,
            commands_per_second: 20,
            read_wait: Duration::from_secs(2),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            cache_capacity: 20_000,
            aggregate_capacity: 100_000,
            hold_ttl: Duration::from_secs(15 * 60),
            slot_queues: QueueConfig::default(),
            dispute_window: Duration::from_secs(48 * 3600),
            webhook_urls: tessera_notify::webhooks::UrlPolicy::default(),
        }
    }
}

/// Cached read results: (projection position when read, JSON body).
pub type ReadCache = Cache<String, (i64, Arc<serde_json::Value>)>;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub store: Arc<dyn EventStore>,
    pub gateway: Arc<dyn PaymentGateway>,
    /// Set when payments go through Stripe: verifies its webhooks.
    pub stripe: Option<Arc<StripeGateway>>,
    pub clock: Arc<dyn Clock>,
    pub booking: BookingConfig,
    pub keys: Arc<TokenKeys>,
    pub positions: Positions,
    pub search: Arc<SearchIndex>,
    pub cache: ReadCache,
    /// Decided state of hot aggregates, and their turns; `None` when turned off.
    pub aggregates: Option<AggregateCache>,
    /// The per-slot queues holds wait in (with `aggregates`).
    pub queues: Option<SlotQueues>,
    pub idempotency: IdempotencyKeys,
    pub limits: Arc<RateLimits>,
    pub index_root: PathBuf,
    pub metrics: Option<PrometheusHandle>,
    /// The Ed25519 public key seals are verified with.
    pub seal_public_key: [u8; 32],
    /// The Ed25519 key tickets are signed with.
    pub tickets: Arc<tessera_commands::tickets::TicketKey>,
    /// Personal-data keys (erasure destroys them).
    pub vault: Arc<tessera_log::pii::Vault>,
    /// Users' current roles, checked on every authenticated request.
    pub principals: principals::Principals,
    /// Where webhook endpoints may point.
    pub webhook_urls: tessera_notify::webhooks::UrlPolicy,
    /// Sender and links of the messages the API itself writes (password resets); `None`
    /// when the deployment sends no messages.
    pub notify: Option<Arc<tessera_notify::NotifyConfig>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// The parts an [`AppState`] is made of that the composition root provides.
#[derive(Debug)]
pub struct StateParts {
    pub pool: PgPool,
    pub store: Arc<dyn EventStore>,
    pub gateway: Arc<dyn PaymentGateway>,
    pub stripe: Option<Arc<StripeGateway>>,
    pub clock: Arc<dyn Clock>,
    pub keys: TokenKeys,
    pub positions: Positions,
    pub index_root: PathBuf,
    pub metrics: Option<PrometheusHandle>,
    pub config: ApiConfig,
    pub seal_public_key: [u8; 32],
    pub tickets: tessera_commands::tickets::TicketKey,
    pub vault: Arc<tessera_log::pii::Vault>,
    /// The process's aggregate cache (shared with its reactors), when turned on.
    pub aggregates: Option<AggregateCache>,
    pub notify: Option<tessera_notify::NotifyConfig>,
}

fn quota(per: u32, burst: u32, minute: bool) -> Quota {
    let per = std::num::NonZeroU32::new(per.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    let burst = std::num::NonZeroU32::new(burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN);
    if minute {
        Quota::per_minute(per).allow_burst(burst)
    } else {
        Quota::per_second(per).allow_burst(burst)
    }
}

impl AppState {
    pub fn new(parts: StateParts) -> Self {
        let c = &parts.config;
        let booking = BookingConfig {
            hold_ttl: chrono::TimeDelta::from_std(c.hold_ttl)
                .unwrap_or(chrono::TimeDelta::minutes(15)),
        };
        let queues = parts.aggregates.as_ref().map(|cache| {
            SlotQueues::new(parts.store.clone(), cache.clone(), booking, c.slot_queues)
        });
        Self {
            search: Arc::new(SearchIndex::new(parts.pool.clone(), &parts.index_root)),
            idempotency: IdempotencyKeys::new(parts.pool.clone()),
            pool: parts.pool,
            store: parts.store,
            gateway: parts.gateway,
            stripe: parts.stripe,
            clock: parts.clock,
            booking,
            keys: Arc::new(parts.keys),
            positions: parts.positions,
            cache: Cache::builder()
                .max_capacity(c.cache_capacity)
                .time_to_live(Duration::from_secs(60))
                .build(),
            queues,
            aggregates: parts.aggregates,
            limits: Arc::new(RateLimits::new(c)),
            index_root: parts.index_root,
            metrics: parts.metrics,
            seal_public_key: parts.seal_public_key,
            tickets: Arc::new(parts.tickets),
            vault: parts.vault,
            principals: principals::Principals::new(),
            webhook_urls: c.webhook_urls,
            notify: parts.notify.map(Arc::new),
        }
    }

    /// Refuses with 429 when `user` is over their command rate.
    pub fn limit_commands(&self, user: uuid::Uuid) -> Result<(), ApiError> {
        self.limits.commands(user)
    }

    /// Refuses with 429 when `email` is over its login rate from `client`, or over its rate
    /// from everywhere.
    pub fn limit_login(&self, email: &str, client: std::net::IpAddr) -> Result<(), ApiError> {
        self.limits.login(email, client)
    }
}

/// The address of the client a request came from (the peer of its connection; `0.0.0.0` when
/// the server was not started with connection info, as in `oneshot` tests).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ))
    }
}

/// Rate limits per login address and per user's commands.
///
/// Logins are limited per (address, client): a client guessing one account's password gets
/// `login_per_minute` tries a minute, and someone elsewhere cannot lock the owner out by
/// failing on purpose. A looser limit per address alone ([`LOGIN_ADDRESS_FACTOR`] times that)
/// still bounds guessing spread over many clients.
pub struct RateLimits {
    login: DefaultKeyedRateLimiter<(String, std::net::IpAddr)>,
    login_address: DefaultKeyedRateLimiter<String>,
    commands: DefaultKeyedRateLimiter<uuid::Uuid>,
}

/// How many clients' worth of login attempts one address gets per minute in all.
pub const LOGIN_ADDRESS_FACTOR: u32 = 10;

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("login_keys", &(self.login.len() + self.login_address.len()))
            .field("command_keys", &self.commands.len())
            .finish()
    }
}

impl RateLimits {
    pub fn new(c: &ApiConfig) -> Self {
        Self {
            login: RateLimiter::keyed(quota(c.login_per_minute, c.login_per_minute, true)),
            login_address: RateLimiter::keyed(quota(
                c.login_per_minute.saturating_mul(LOGIN_ADDRESS_FACTOR),
                c.login_per_minute.saturating_mul(LOGIN_ADDRESS_FACTOR),
                true,
            )),
            commands: RateLimiter::keyed(quota(
                c.commands_per_second,
                c.commands_per_second * 2,
                false,
            )),
        }
    }

    /// Refuses with 429 when `user` is over their command rate.
    pub fn commands(&self, user: uuid::Uuid) -> Result<(), ApiError> {
        self.commands
            .check_key(&user)
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Refuses with 429 when `email` is over its login rate from `client` or in all.
    pub fn login(&self, email: &str, client: std::net::IpAddr) -> Result<(), ApiError> {
        let limited = |not_until: governor::NotUntil<_>| ApiError::RateLimited {
            retry_after: not_until.wait_time_from(DefaultClock::default().now()),
        };
        let email = email.trim().to_lowercase();
        self.login
            .check_key(&(email.clone(), client))
            .map_err(limited)?;
        self.login_address.check_key(&email).map_err(limited)
    }

    /// Forgets the state of every key whose limit has fully replenished (such a key is
    /// indistinguishable from a new one); returns how many keys are still tracked. Without this
    /// the limiters would keep an entry for every e-mail address ever tried and every user ever
    /// seen: a spray of made-up addresses at the login route would grow memory without bound.
    /// `serve` runs it every minute.
    pub fn forget_idle(&self) -> usize {
        self.login.retain_recent();
        self.login.shrink_to_fit();
        self.login_address.retain_recent();
        self.login_address.shrink_to_fit();
        self.commands.retain_recent();
        self.commands.shrink_to_fit();
        self.login.len() + self.login_address.len() + self.commands.len()
    }
}

/// `Json` whose rejections are problem responses (400 malformed, 415, 413, 422 with the field),
/// and whose text passes the platform's text policy ([`text`]) before it is decoded.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit: BODY_LIMIT }
                } else {
                    ApiError::BadRequest {
                        code: &crate::http::codes::REQUEST_UNREADABLE_BODY,
                        detail: r.body_text(),
                    }
                }
            })?;
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_bytes(&bytes)?;
        let refused = text::check(&value);
        if !refused.is_empty() {
            return Err(ApiError::Invalid(refused));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes)?;
        Ok(Self(value))
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Path` whose rejections (a malformed id) are 400 problem responses.
#[derive(Debug, Clone, Copy)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// `Query` whose rejections are 400 problem responses.
#[derive(Debug, Clone, Copy)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

/// A command's answer: its body, with the log position of its last event in the
/// `Tessera-Position` header (and in the body, as `position`).
#[derive(Debug)]
pub struct Accepted<T> {
    pub status: StatusCode,
    pub position: i64,
    pub body: T,
}

impl Accepted<routes::CommandResult> {
    /// 200 with a command's plain result.
    pub fn ok(executed: &tessera_commands::handler::Executed) -> Self {
        Self {
            status: StatusCode::OK,
            position: executed.position.0 as i64,
            body: routes::CommandResult::from(executed),
        }
    }
}

impl<T: Serialize> IntoResponse for Accepted<T> {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        response
            .headers_mut()
            .insert(POSITION_HEADER, HeaderValue::from(self.position));
        response
    }
}

/// Sets the request id task-local (problem bodies and logs quote it), opens the request's
/// tracing span and records its latency.
async fn request_context(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("request", request_id = %id, %method, %route);
    let started = Instant::now();
    let response = error::REQUEST_ID
        .scope(
            id,
            tracing::Instrument::instrument(next.run(request), span.clone()),
        )
        .await;
    let status = response.status().as_u16();
    metrics::histogram!(
        "tessera_http_request_duration_seconds",
        "method" => method.to_string(),
        "route" => route,
        "status" => status.to_string(),
    )
    .record(started.elapsed().as_secs_f64());
    span.in_scope(|| tracing::debug!(status, "served"));
    response
}

/// How much of an over-large body is read (and dropped) before answering 413, so that the
/// connection closes cleanly instead of resetting under the client's answer.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads the whole request body before routing (at most [`BODY_LIMIT`]; an over-large one is
/// drained up to [`DRAIN_LIMIT`] and refused with 413). A route may refuse a request before its
/// body extractor runs (roles are checked first): a body left unread would make the server
/// close the connection with data still in flight, and the client's socket would be reset
/// under the answer.
async fn read_body(request: Request, next: Next) -> Response {
    use futures::StreamExt as _;
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return ApiError::BadRequest {
                code: &crate::http::codes::REQUEST_UNREADABLE_BODY,
                detail: "the request body could not be read".into(),
            }
            .into_response();
        };
        seen += chunk.len();
        if seen <= BODY_LIMIT {
            buffer.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > BODY_LIMIT {
        return ApiError::PayloadTooLarge { limit: BODY_LIMIT }.into_response();
    }
    next.run(Request::from_parts(parts, axum::body::Body::from(buffer)))
        .await
}

/// Makes every error answer a problem response, whatever produced it: the handlers' errors
/// already are; this turns what a layer or an extractor outside our own types answers (axum's
/// rejections, the body limit, a panic caught by a layer) into one too, with the status kept
/// and a code named after it.
async fn problems_only(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // Problems are already problems; the console's error pages are pages for people.
    let is_problem_or_page = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/problem+json")
                || v.as_bytes().starts_with(b"text/html")
        });
    if is_problem_or_page {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let error = error::ApiError::from_status(status, text);
    let mut converted = error.into_response();
    for name in [axum::http::header::RETRY_AFTER, axum::http::header::ALLOW] {
        if let Some(v) = parts.headers.get(&name) {
            converted.headers_mut().insert(name, v.clone());
        }
    }
    converted
}

/// The whole router, with its OpenAPI document served at `/api/v1/openapi.json`.
pub fn router(state: AppState) -> axum::Router {
    let (api, openapi) = routes::api().split_for_parts();
    let openapi = Arc::new(contract::complete(
        serde_json::to_value(document(openapi)).unwrap_or_default(),
    ));
    let doc = {
        let openapi = openapi.clone();
        move || {
            let openapi = openapi.clone();
            async move { axum::Json((*openapi).clone()) }
        }
    };
    axum::Router::new()
        .nest(
            "/api/v1",
            api.route("/openapi.json", axum::routing::get(doc)),
        )
        .merge(routes::ops::router())
        .merge(console::router())
        .fallback(|uri: axum::http::Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        // A panic is a bug: the request gets an opaque 500 problem (and the log the panic),
        // never a dropped connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(read_body))
        .layer(axum::middleware::from_fn(problems_only))
        .layer(axum::middleware::from_fn(request_context))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The OpenAPI document as served (for tests and tools).
pub fn openapi() -> serde_json::Value {
    contract::complete(
        serde_json::to_value(document(routes::api().split_for_parts().1)).unwrap_or_default(),
    )
}

/// The whole document: the `/api/v1` routes (its server) and the operations endpoints, which
/// are served at the root (a server of their own on each of their path items).
fn document(mut api: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi as _;
    use utoipa::openapi::server::Server;
    api.servers = Some(vec![Server::new("/api/v1")]);
    let mut ops = routes::ops::OpsDoc::openapi();
    for item in ops.paths.paths.values_mut() {
        item.servers = Some(vec![Server::new("/")]);
    }
    api.merge(ops);
    routes::webhooks::document(&mut api);
    let this = utoipa::openapi::path::OperationBuilder::new()
        .tag("ops")
        .operation_id(Some("openapi"))
        .summary(Some("This document (OpenAPI 3.1)"))
        .response(
            "200",
            utoipa::openapi::ResponseBuilder::new()
                .description("The OpenAPI document of this API")
                .build(),
        );
    api.paths.paths.insert(
        "/openapi.json".into(),
        utoipa::openapi::PathItem::new(utoipa::openapi::path::HttpMethod::Get, this),
    );
    api
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = tokio::spawn({
        let state = state.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                state.limits.forget_idle();
            }
        }
    });
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sweeper.abort();
    served
}

#[cfg(test)]
mod rate_limit_tests {
    use super::{ApiConfig, RateLimits};

    /// Keys whose limits have replenished are forgotten; keys still limited are kept.
    #[test]
    fn idle_keys_are_forgotten_and_limited_ones_kept() {
        let limits = RateLimits::new(&ApiConfig {
            login_per_minute: 1,
            commands_per_second: 1_000,
            ..ApiConfig::default()
        });
        for i in 0..500 {
            limits
                .commands(uuid::Uuid::from_u128(i))
                .expect("under the limit");
        }
        let client = std::net::IpAddr::from([127, 0, 0, 1]);
        limits
            .login("someone@example.test", client)
            .expect("first login attempt");
        // One command cell replenishes within a millisecond; the login one needs a minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let tracked = limits.forget_idle();
            if tracked == 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{tracked} keys still tracked"
            );
            std::thread::yield_now();
        }
        assert!(
            limits.login("SOMEONE@example.test ", client).is_err(),
            "the address that is still limited was kept"
        );
        assert!(
            limits
                .login(
                    "someone@example.test",
                    std::net::IpAddr::from([10, 0, 0, 9])
                )
                .is_ok(),
            "another client is not locked out by the first one's failures"
        );
    }
}
