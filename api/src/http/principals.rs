//! Who a token's subject is *now*. A signed access token says who its holder was when it was
//! issued; it stays valid for its whole lifetime. Every authenticated request therefore also
//! checks the subject against the log: an erased (or unknown) user's token is refused at once
//! (401), and a role revoked since the token was issued no longer counts (the caller's roles are
//! those of the token that the user still holds; a role granted later counts from the next
//! login or refresh, as documented).
//!
//! The state of each user is cached. The cache is invalidated from the log: one task per process
//! follows the log's user events and forgets the users they touch; a process that itself
//! changes a user forgets them before answering. Entries also expire after [`TTL`], which bounds
//! staleness should the follower ever fall behind. A load that races with an invalidation is not
//! cached (an epoch counter tells).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use moka::future::Cache;
use tessera_commands::error::CommandError;
use tessera_commands::store::EventStore;
use tessera_domain::user::Role;
use uuid::Uuid;

use super::error::ApiError;

/// Longest time a cached user state is trusted without news from the log.
pub const TTL: Duration = Duration::from_secs(30);

/// What the platform knows of a user now; `None` when the user is erased or unknown.
type Known = Option<Arc<BTreeSet<Role>>>;

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

    /// The roles `user` holds now, or `None` when they are erased or unknown.
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
            Ok(u) => Some(Arc::new(u.roles)),
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

    /// Follows the log from its head and forgets every user an event touches, until `shutdown`
    /// turns true. A broken subscription is reopened where it stopped; after a break the whole
    /// cache is dropped, so nothing older than the outage is trusted.
    pub fn follow(
        &self,
        store: Arc<dyn EventStore>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut after = loop {
                match store.head().await {
                    Ok(p) => break p,
                    Err(e) => {
                        tracing::warn!(error = %e, "principals: cannot read the log head");
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            };
            while !*shutdown.borrow() {
                let mut events = store.subscribe_all(after);
                loop {
                    let next = tokio::select! {
                        _ = shutdown.changed() => return,
                        next = events.next() => next,
                    };
                    let Some(next) = next else { break };
                    match next {
                        Ok(e) => {
                            after = e.position;
                            if e.stream_id.category() == "user"
                                && let Some(id) = e
                                    .stream_id
                                    .as_str()
                                    .split_once('-')
                                    .and_then(|(_, id)| Uuid::parse_str(id).ok())
                            {
                                this.forget(id).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "principals: log subscription failed");
                            break;
                        }
                    }
                }
                this.epoch.fetch_add(1, Ordering::AcqRel);
                this.cache.invalidate_all();
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    }
}
