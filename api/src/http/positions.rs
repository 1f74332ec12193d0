//! Read-your-writes. Every command answers with the log position of its last event; a query may
//! name a minimum position (`Tessera-Min-Position` header or `min_position` parameter) and is
//! answered only once every projection it reads has passed it, waiting a bounded time.
//!
//! Projections announce progress with `NOTIFY` (in the transaction that moves their checkpoint),
//! naming their new position; one listener per process keeps a watch of every projection's
//! position from those notifications (a burst of them counts as one change). It reads the
//! positions from the database only when a notification does not carry one (a generation swap),
//! after (re)connecting, and after half a second without news (a safety net).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tessera_projections::registry::{PROGRESS_CHANNEL, parse_progress};
use tokio::sync::watch;

use super::AppState;
use super::error::ApiError;

pub const MIN_POSITION_HEADER: &str = "tessera-min-position";
pub const POSITION_HEADER: &str = "tessera-position";

/// Where a projection is: its active generation and that generation's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct At {
    pub generation: i64,
    pub position: i64,
}

type Snapshot = Arc<HashMap<String, At>>;

/// Every projection's position, kept current.
#[derive(Debug, Clone)]
pub struct Positions {
    rx: watch::Receiver<Snapshot>,
    wait: Duration,
}

impl Positions {
    /// Starts following projection progress until `shutdown` turns true.
    pub async fn start(
        pool: PgPool,
        wait: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let first = read(&pool).await?;
        let (tx, rx) = watch::channel(Arc::new(first));
        let task = tokio::spawn(async move {
            let mut listener: Option<PgListener> = None;
            while !*shutdown.borrow() {
                // Read every position when nothing said what they are: after (re)connecting,
                // after a quiet spell, after a generation swap.
                let mut read_all = false;
                if listener.is_none() {
                    listener = listen(&pool).await;
                    read_all = true;
                }
                let mut moved: Vec<(String, i64)> = Vec::new();
                let tick = Duration::from_millis(500);
                match listener.as_mut() {
                    Some(l) => {
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            n = tokio::time::timeout(tick, l.recv()) => match n {
                                Err(_quiet) => read_all = true,
                                Ok(Err(e)) => {
                                    tracing::warn!(error = %e, "projection progress listener lost");
                                    listener = None;
                                    read_all = true;
                                }
                                Ok(Ok(first)) => {
                                    // A burst of notifications is taken as one.
                                    let mut note = |payload: &str| match parse_progress(payload) {
                                        (name, Some(at)) => moved.push((name.to_owned(), at)),
                                        // A swap: the generation changed.
                                        (_, None) => read_all = true,
                                    };
                                    note(first.payload());
                                    while let Some(n) = l.next_buffered() {
                                        note(n.payload());
                                    }
                                }
                            }
                        }
                    }
                    None => {
                        tokio::select! {
                            _ = shutdown.changed() => break,
                            _ = tokio::time::sleep(tick) => {}
                        }
                    }
                }
                // A projection not seen yet has no known generation: read it.
                read_all |= {
                    let known = tx.borrow();
                    moved.iter().any(|(name, _)| !known.contains_key(name))
                };
                if read_all {
                    match read(&pool).await {
                        Ok(now) => {
                            tx.send_if_modified(|current| {
                                if **current == now {
                                    false
                                } else {
                                    *current = Arc::new(now);
                                    true
                                }
                            });
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot read projection positions"),
                    }
                } else {
                    tx.send_if_modified(|current| {
                        // A live batch moves its projection's active generation (a projector
                        // checks which one is active in the batch's transaction).
                        let ahead: Vec<_> = moved
                            .into_iter()
                            .filter(|(name, at)| {
                                current.get(name).is_some_and(|known| *at > known.position)
                            })
                            .collect();
                        if ahead.is_empty() {
                            return false;
                        }
                        let mut next = (**current).clone();
                        for (name, at) in ahead {
                            if let Some(known) = next.get_mut(&name) {
                                known.position = known.position.max(at);
                            }
                        }
                        *current = Arc::new(next);
                        true
                    });
                }
            }
        });
        Ok((Self { rx, wait }, task))
    }

    /// The position of `projection` as last seen (0 when unknown).
    pub fn current(&self, projection: &str) -> i64 {
        self.at(projection).map_or(0, |at| at.position)
    }

    /// A number that changes whenever any of `projections` moves or swaps generations (a
    /// rebuilt generation may reach the same position as the one it replaced): what cached
    /// answers are keyed by.
    pub fn version(&self, projections: &[&str]) -> i64 {
        let snapshot = self.rx.borrow();
        projections
            .iter()
            .filter_map(|p| snapshot.get(*p))
            .map(|at| at.generation.wrapping_shl(40).wrapping_add(at.position))
            .fold(0i64, i64::wrapping_add)
    }

    /// The active generation of `projection` and its position, as last seen.
    pub fn at(&self, projection: &str) -> Option<At> {
        self.rx.borrow().get(projection).copied()
    }

    /// Waits until every one of `projections` has passed `min` (bounded); returns at once when
    /// there is no minimum.
    pub async fn wait_for(&self, projections: &[&str], min: Option<i64>) -> Result<(), ApiError> {
        let Some(min) = min else { return Ok(()) };
        let behind = |snapshot: &Snapshot| {
            projections
                .iter()
                .map(|p| (*p, snapshot.get(*p).map_or(0, |at| at.position)))
                .find(|(_, at)| *at < min)
                .map(|(p, at)| (p.to_owned(), at))
        };
        let mut rx = self.rx.clone();
        let waited = tokio::time::timeout(self.wait, async {
            loop {
                if behind(&rx.borrow_and_update()).is_none() {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        match waited {
            Ok(true) => Ok(()),
            _ => {
                let (projection, at) = behind(&self.rx.borrow()).unwrap_or_default();
                Err(ApiError::NotYetConsistent {
                    projection,
                    at,
                    wanted: min,
                })
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let listening = async {
        let mut l = PgListener::connect_with(pool).await?;
        l.listen(PROGRESS_CHANNEL).await?;
        Ok::<_, sqlx::Error>(l)
    };
    listening
        .await
        .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for projection progress"))
        .ok()
}

async fn read(pool: &PgPool) -> sqlx::Result<HashMap<String, At>> {
    Ok(tessera_projections::registry::positions(pool)
        .await?
        .into_iter()
        .map(|(name, generation, position)| {
            (
                name,
                At {
                    generation,
                    position,
                },
            )
        })
        .collect())
}

/// The minimum log position a query must reflect, if the client named one.
#[derive(Debug, Clone, Copy, Default)]
pub struct MinPosition(pub Option<i64>);

/// The `Tessera-Min-Position` header, as documented on every query that reads read models (the
/// OpenAPI document adds its 400 and 503 answers to each operation that declares it).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
pub struct MinPositionHeader {
    /// Answer once the read models have reached this log position (a command's
    /// `Tessera-Position`). A position beyond the log's head is refused at once (400
    /// `request.position_beyond_head`); one the read models do not reach within the wait
    /// answers 503 `read.not_yet_consistent` with `Retry-After`.
    #[serde(rename = "Tessera-Min-Position")]
    #[param(minimum = 0)]
    pub tessera_min_position: Option<i64>,
}

impl<S: Send + Sync> FromRequestParts<S> for MinPosition {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let bad = |v: &str| ApiError::BadRequest {
            code: &crate::http::codes::REQUEST_INVALID_MIN_POSITION,
            detail: format!("a minimum position is a non-negative integer, got {v:?}"),
        };
        let parse = |v: &str| v.trim().parse::<i64>().ok().filter(|p| *p >= 0);
        if let Some(h) = parts.headers.get(MIN_POSITION_HEADER) {
            let v = h.to_str().unwrap_or("");
            return parse(v).map(|p| Self(Some(p))).ok_or_else(|| bad(v));
        }
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "min_position")
                .map(|(_, v)| v.to_owned())
        });
        match from_query {
            Some(v) => parse(&v).map(|p| Self(Some(p))).ok_or_else(|| bad(&v)),
            None => Ok(Self(None)),
        }
    }
}

/// Read models by the projection that builds them.
pub mod reads {
    pub const CATALOG: &[&str] = &["catalog"];
    pub const SEARCH: &[&str] = &["search"];
    pub const BOOKINGS: &[&str] = &["bookings"];
    pub const BOOKING_DETAIL: &[&str] = &["bookings", "payments", "loyalty"];
    pub const LOYALTY: &[&str] = &["loyalty"];
    pub const REVIEWS: &[&str] = &["reviews"];
    pub const STATS: &[&str] = &["stats"];
    pub const PAYMENTS: &[&str] = &["payments"];
    pub const BOOKING_RECEIPT: &[&str] = &["bookings", "payments", "catalog"];
}

impl AppState {
    /// Waits for the projections behind a query (see [`Positions::wait_for`]).
    ///
    /// A minimum beyond the log's head is refused at once (400 `request.position_beyond_head`):
    /// every position a command answers with is in the log before the answer leaves, so such a
    /// position was never handed out and waiting for it could only time out. The head is read
    /// only when a projection is behind the minimum, never on the fast path.
    pub async fn read_after(&self, projections: &[&str], min: MinPosition) -> Result<(), ApiError> {
        if let Some(wanted) = min.0
            && projections
                .iter()
                .any(|p| self.positions.current(p) < wanted)
        {
            let head =
                self.store.head().await.map_err(|e| {
                    ApiError::Command(tessera_commands::error::CommandError::Store(e))
                })?;
            if wanted > head.0 as i64 {
                return Err(ApiError::BadRequest {
                    code: &crate::http::codes::REQUEST_POSITION_BEYOND_HEAD,
                    detail: format!(
                        "position {wanted} is beyond the log's head ({}): no command answered it",
                        head.0
                    ),
                });
            }
        }
        self.positions.wait_for(projections, min.0).await
    }
}
