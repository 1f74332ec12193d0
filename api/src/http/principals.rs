//! Who a token's subject is *now*. A signed access token says who its holder was when it was
//! issued; it stays valid for its whole lifetime. Every authenticated request therefore also
//! checks the subject against the log: an erased (or unknown) user's token is refused at once
//! (401), and a role revoked since the token was issued no longer counts (the caller's roles are
//! those of the token that the user still holds; a role granted later counts from the next
//! login or refresh, as documented). A suspended user's tokens are refused at once too, and so
//! are the tokens of sessions a password change ended.
//!
//! The state of each user is cached. The cache is invalidated from the log: one task per process
//! looks every [`FOLLOW_EVERY`] for the user streams that moved and forgets those users; a
//! process that itself changes a user forgets them before answering. Entries also expire after
//! [`TTL`], a safety net. A load that races with an invalidation is not cached (an epoch counter
//! tells).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use tessera_commands::error::CommandError;
use tessera_domain::user::{Role, SessionsEnded};
use tessera_log::store::EventStore;
use uuid::Uuid;

use super::error::ApiError;

/// Longest time a cached user state is trusted without news from the log.
pub const TTL: Duration = Duration::from_secs(300);
/// How often each process looks for users whose streams moved.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// What the platform knows of a user now; `None` when the user is erased or unknown.
pub type Known = Option<Arc<Standing>>;

/// What a request's authentication depends on of a user's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub roles: BTreeSet<Role>,
    pub suspended: bool,
    /// Sessions started before the last password change have ended (but the one that made it).
    pub sessions_ended: Option<SessionsEnded>,
}

/// The cache of users' current roles.
#[derive(Clone)]
pub struct Principals {
    cache: Cache<Uuid, Known>,
    epoch: Arc<AtomicU64>,
}

impl std::fmt::Debug for Principals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principals")
            .field("cached", &self.cache.entry_count())
            .finish()
    }
}

impl Default for Principals {
    fn default() -> Self {
        Self::new()
    }
}

impl Principals {
    pub fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(200_000)
                .time_to_live(TTL)
                .build(),
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The standing of `user` now, or `None` when they are erased or unknown.
    pub async fn current(&self, store: &dyn EventStore, user: Uuid) -> Result<Known, ApiError> {
        if let Some(known) = self.cache.get(&user).await {
            return Ok(known);
        }
        let before = self.epoch.load(Ordering::Acquire);
        let known = match tessera_commands::users::current_user(
            store,
            tessera_domain::values::UserId(user),
        )
        .await
        {
            Ok(u) => Some(Arc::new(Standing {
                roles: u.roles,
                suspended: u.suspended,
                sessions_ended: u.sessions_ended,
            })),
            Err(CommandError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        if self.epoch.load(Ordering::Acquire) == before {
            self.cache.insert(user, known.clone()).await;
        }
        Ok(known)
    }

    /// Forgets what is known of `user` (their stream has moved).
    pub async fn forget(&self, user: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(&user).await;
    }

    /// Follows the log and forgets every user whose stream moved, until `shutdown` turns true:
    /// every 250 ms it asks which user streams the events since its last look belong to (a
    /// range scan of new positions that reads no payload, so it costs nothing when nothing
    /// changed and little under load). A change made by another process is seen within that
    /// interval; after a failed look the whole cache is dropped, so nothing older than the
    /// outage is trusted.
    pub fn follow(
        &self,
        pool: sqlx::PgPool,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FOLLOW_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen: Option<i64> = None;
            loop {
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tick.tick() => {}
                }
                match this.look(&pool, seen).await {
                    Ok(head) => seen = Some(head),
                    Err(e) => {
                        tracing::warn!(error = %e, "principals: cannot follow the log");
                        this.epoch.fetch_add(1, Ordering::AcqRel);
                        this.cache.invalidate_all();
                    }
                }
            }
        })
    }

    /// Forgets the users whose streams moved after `seen`; returns the head looked up to.
    async fn look(&self, pool: &sqlx::PgPool, seen: Option<i64>) -> sqlx::Result<i64> {
        // Positions at or below the head are committed (ADR 0001).
        let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
            .fetch_one(pool)
            .await?;
        let Some(from) = seen.filter(|from| *from < head) else {
            return Ok(head);
        };
        let streams: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT stream_id FROM events
              WHERE position > $1 AND position <= $2 AND stream_id LIKE 'user-%'",
        )
        .bind(from)
        .bind(head)
        .fetch_all(pool)
        .await?;
        for stream in streams {
            if let Some(id) = stream
                .strip_prefix("user-")
                .and_then(|id| Uuid::parse_str(id).ok())
            {
                self.forget(id).await;
            }
        }
        Ok(head)
    }
}
