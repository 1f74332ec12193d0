//! The HTTP API (axum, under `/api/v1`). Commands go through the command handlers; queries read
//! the PostgreSQL read models and the tantivy index, never the event store (the audit endpoints
//! will be the one exception).
//!
//! Cross-cutting rules live here: request ids and tracing spans, the body limit, request latency
//! metrics, problem responses for unknown routes, and the typed extractors whose rejections become
//! problem responses.

pub mod auth;
pub mod error;
pub mod positions;
pub mod routes;

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
use tessera_commands::clock::Clock;
use tessera_commands::gateway::{PaymentGateway, StripeGateway};
use tessera_commands::handler::AggregateCache;
use tessera_commands::idempotency::IdempotencyKeys;
use tessera_commands::store::EventStore;
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
    /// Decided state of hot aggregates; `None` when turned off.
    pub aggregates: Option<AggregateCache>,
    pub idempotency: IdempotencyKeys,
    pub limits: Arc<RateLimits>,
    pub index_root: PathBuf,
    pub metrics: Option<PrometheusHandle>,
    /// The Ed25519 public key seals are verified with.
    pub seal_public_key: [u8; 32],
    /// Personal-data keys (erasure destroys them).
    pub vault: Arc<tessera_commands::pii::Vault>,
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
    pub vault: Arc<tessera_commands::pii::Vault>,
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
        Self {
            search: Arc::new(SearchIndex::new(parts.pool.clone(), &parts.index_root)),
            idempotency: IdempotencyKeys::new(parts.pool.clone()),
            pool: parts.pool,
            store: parts.store,
            gateway: parts.gateway,
            stripe: parts.stripe,
            clock: parts.clock,
            booking: BookingConfig::default(),
            keys: Arc::new(parts.keys),
            positions: parts.positions,
            cache: Cache::builder()
                .max_capacity(c.cache_capacity)
                .time_to_live(Duration::from_secs(60))
                .build(),
            aggregates: (c.aggregate_capacity > 0)
                .then(|| AggregateCache::new(c.aggregate_capacity)),
            limits: Arc::new(RateLimits::new(c)),
            index_root: parts.index_root,
            metrics: parts.metrics,
            seal_public_key: parts.seal_public_key,
            vault: parts.vault,
        }
    }

    /// Refuses with 429 when `user` is over their command rate.
    pub fn limit_commands(&self, user: uuid::Uuid) -> Result<(), ApiError> {
        self.limits.commands(user)
    }

    /// Refuses with 429 when `email` is over its login rate.
    pub fn limit_login(&self, email: &str) -> Result<(), ApiError> {
        self.limits.login(email)
    }
}

/// Rate limits per login address and per user's commands.
pub struct RateLimits {
    login: DefaultKeyedRateLimiter<String>,
    commands: DefaultKeyedRateLimiter<uuid::Uuid>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("login_keys", &self.login.len())
            .field("command_keys", &self.commands.len())
            .finish()
    }
}

impl RateLimits {
    pub fn new(c: &ApiConfig) -> Self {
        Self {
            login: RateLimiter::keyed(quota(c.login_per_minute, c.login_per_minute, true)),
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

    /// Refuses with 429 when `email` is over its login rate.
    pub fn login(&self, email: &str) -> Result<(), ApiError> {
        self.login
            .check_key(&email.trim().to_lowercase())
            .map_err(|not_until| ApiError::RateLimited {
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            })
    }

    /// Forgets the state of every key whose limit has fully replenished (such a key is
    /// indistinguishable from a new one); returns how many keys are still tracked. Without this
    /// the limiters would keep an entry for every e-mail address ever tried and every user ever
    /// seen: a spray of made-up addresses at the login route would grow memory without bound.
    /// `serve` runs it every minute.
    pub fn forget_idle(&self) -> usize {
        self.login.retain_recent();
        self.login.shrink_to_fit();
        self.commands.retain_recent();
        self.commands.shrink_to_fit();
        self.login.len() + self.commands.len()
    }
}

/// `Json` whose rejections are problem responses (400 malformed, 415, 413, 422 with the field).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(req, state).await?;
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

/// The whole router, with its OpenAPI document served at `/api/v1/openapi.json`.
pub fn router(state: AppState) -> axum::Router {
    let (api, openapi) = routes::api().split_for_parts();
    let openapi = Arc::new(document(openapi));
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
        .fallback(|uri: axum::http::Uri| async move { ApiError::NoRoute(uri.path().to_owned()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_context))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// The OpenAPI document (for tests and `tessera openapi`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(routes::api().split_for_parts().1)
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
    let served = axum::serve(listener, router(state))
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
        limits
            .login("someone@example.test")
            .expect("first login attempt");
        // One command cell replenishes within a millisecond; the login one needs a minute.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let tracked = limits.forget_idle();
            if tracked == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{tracked} keys still tracked"
            );
            std::thread::yield_now();
        }
        assert!(
            limits.login("SOMEONE@example.test ").is_err(),
            "the address that is still limited was kept"
        );
    }
}
