//! Delivering the outbox: claim what is due, hand each message to a [`Transport`], record the
//! outcome. A transient failure is retried with exponential backoff and jitter; a permanent
//! refusal (SMTP 5xx) or the last allowed attempt dead-letters the message, where admins see,
//! retry or discard it.
//!
//! Delivery is at least once: a deliverer that dies between the server's acceptance and the
//! `sent` mark sends that message again when its lease ends, with the same bytes and the same
//! Message-ID, by which a receiver recognises the repeat. The `.eml` directory is idempotent
//! outright (one file per message id).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::TimeDelta;
use lettre::address::Envelope;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use rand::Rng;
use sqlx::PgPool;
use tessera_log::clock::Clock;
use uuid::Uuid;

use crate::outbox;

/// Why a send failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SendError {
    /// Retrying cannot help (the server refused the recipient or the message for good).
    pub permanent: bool,
    pub message: String,
}

/// Where messages go.
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug {
    async fn send(&self, id: Uuid, from: &str, to: &str, message: &[u8]) -> Result<(), SendError>;
    /// For logs and `tessera up`'s banner.
    fn describe(&self) -> String;
}

/// The embedded default: each message becomes `<dir>/<id>.eml` (written to a temporary name and
/// renamed, so a reader never sees half a message, and a repeat overwrites the same file).
#[derive(Debug, Clone)]
pub struct MailDir {
    pub dir: PathBuf,
}

#[async_trait]
impl Transport for MailDir {
    async fn send(&self, id: Uuid, _: &str, _: &str, message: &[u8]) -> Result<(), SendError> {
        let transient = |e: std::io::Error| SendError {
            permanent: false,
            message: format!("{}: {e}", self.dir.display()),
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(transient)?;
        let tmp = self.dir.join(format!(".{id}.tmp"));
        tokio::fs::write(&tmp, message).await.map_err(transient)?;
        tokio::fs::rename(&tmp, self.dir.join(format!("{id}.eml")))
            .await
            .map_err(transient)
    }

    fn describe(&self) -> String {
        format!("files in {}", self.dir.display())
    }
}

/// An SMTP server, through lettre: `smtp://user:pass@host:587?tls=required`,
/// `smtps://host:465` (implicit TLS), `smtp://localhost:2525` (plain, for a local relay).
#[derive(Clone)]
pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    url: String,
}

impl fmt::Debug for Smtp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp").field("url", &self.url).finish()
    }
}

impl Smtp {
    pub fn from_url(url: &str) -> Result<Self, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("not an SMTP URL ({e})"))?
            .timeout(Some(Duration::from_secs(20)))
            .build();
        // The password never reaches a log.
        let url = match url.split_once('@') {
            Some((scheme_and_user, host)) => format!(
                "{}@{host}",
                scheme_and_user
                    .split(':')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(":")
            ),
            None => url.to_owned(),
        };
        Ok(Self { transport, url })
    }
}

#[async_trait]
impl Transport for Smtp {
    async fn send(&self, _: Uuid, from: &str, to: &str, message: &[u8]) -> Result<(), SendError> {
        let address = |a: &str| {
            let mailbox: lettre::message::Mailbox = a.parse().map_err(|_| SendError {
                permanent: true,
                message: format!("not a mailbox: {a}"),
            })?;
            Ok::<_, SendError>(mailbox.email)
        };
        let envelope =
            Envelope::new(Some(address(from)?), vec![address(to)?]).map_err(|e| SendError {
                permanent: true,
                message: e.to_string(),
            })?;
        self.transport
            .send_raw(&envelope, message)
            .await
            .map(|_| ())
            .map_err(|e| SendError {
                permanent: e.is_permanent(),
                message: e.to_string(),
            })
    }

    fn describe(&self) -> String {
        format!("SMTP {}", self.url)
    }
}

/// When to try again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait after the first failure; it doubles with each further one.
    pub base: TimeDelta,
    /// The longest wait.
    pub cap: TimeDelta,
    /// Attempts before a message is dead-lettered.
    pub max_attempts: i32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: TimeDelta::seconds(30),
            cap: TimeDelta::hours(1),
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// The wait after `attempts` failed attempts: `base · 2^(attempts-1)` capped, of which a
    /// random half ("equal jitter"), so messages that failed together do not retry together.
    pub fn backoff(&self, attempts: i32, rng: &mut impl Rng) -> TimeDelta {
        let exp = self.base * 2i32.saturating_pow((attempts - 1).clamp(0, 20) as u32);
        let full = exp.min(self.cap).num_milliseconds().max(2);
        TimeDelta::milliseconds(full / 2 + rng.random_range(0..=full / 2))
    }
}

/// What one pass delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    pub sent: u64,
    pub retrying: u64,
    pub dead: u64,
}

/// Sends what is due, pass after pass.
#[derive(Debug, Clone)]
pub struct Deliverer {
    pub pool: PgPool,
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub policy: RetryPolicy,
    /// The sender, `Name <address>`.
    pub from: String,
    /// Opens addresses and messages (sealed with each recipient's data key).
    pub vault: Arc<tessera_log::pii::Vault>,
}

/// How long a claimed message is reserved for its attempt.
const LEASE: TimeDelta = TimeDelta::minutes(2);
/// Messages claimed per round trip.
const BATCH: i64 = 50;

impl Deliverer {
    /// Delivers every message due now (claimed in batches until none is left).
    pub async fn deliver_due(&self) -> Result<Pass, sqlx::Error> {
        let mut pass = Pass::default();
        loop {
            let now = self.clock.now();
            let batch = outbox::claim_due(&self.pool, now, LEASE, BATCH).await?;
            if batch.is_empty() {
                return Ok(pass);
            }
            for m in batch {
                let open = |purpose, sealed| self.vault.open_for(m.recipient, purpose, sealed);
                let opened = match (
                    open(outbox::ADDRESS, &m.address).await,
                    open(outbox::MESSAGE, &m.message).await,
                ) {
                    (Ok(Some(a)), Ok(Some(message))) => {
                        String::from_utf8(a).ok().map(|a| (a, message))
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        return Err(sqlx::Error::Protocol(format!("the vault: {e}")));
                    }
                    _ => None,
                };
                let Some((address, message)) = opened else {
                    // Erased after the message was written: it is never sent.
                    outbox::discard_unreadable(&self.pool, m.id).await?;
                    continue;
                };
                match self
                    .transport
                    .send(m.id, &self.from, &address, &message)
                    .await
                {
                    Ok(()) => {
                        outbox::mark_sent(&self.pool, m.id, self.clock.now()).await?;
                        metrics::counter!("tessera_notifications_sent_total").increment(1);
                        pass.sent += 1;
                    }
                    Err(e) => {
                        let retry_at = (!e.permanent && m.attempts < self.policy.max_attempts)
                            .then(|| {
                                self.clock.now() + self.policy.backoff(m.attempts, &mut rand::rng())
                            });
                        tracing::warn!(id = %m.id, attempts = m.attempts, permanent = e.permanent, error = %e, dead = retry_at.is_none(), "a message was not delivered");
                        outbox::mark_failed(&self.pool, m.id, &e.message, retry_at).await?;
                        metrics::counter!("tessera_notifications_failed_total").increment(1);
                        if retry_at.is_some() {
                            pass.retrying += 1;
                        } else {
                            metrics::counter!("tessera_notifications_dead_total").increment(1);
                            pass.dead += 1;
                        }
                    }
                }
            }
        }
    }

    /// Publishes the queue's gauges.
    pub async fn publish_stats(&self) -> Result<outbox::Stats, sqlx::Error> {
        let s = outbox::stats(&self.pool, self.clock.now()).await?;
        metrics::gauge!("tessera_outbox_pending").set(s.pending as f64);
        metrics::gauge!("tessera_outbox_due").set(s.due as f64);
        metrics::gauge!("tessera_outbox_dead").set(s.dead as f64);
        metrics::gauge!("tessera_outbox_oldest_due_seconds").set(s.oldest_due_seconds as f64);
        Ok(s)
    }

    /// Delivers every `every` until `shutdown` turns true (the gauges with each pass).
    pub async fn run(self, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        tracing::info!(transport = %self.transport.describe(), "delivering messages");
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "delivering messages failed; next pass");
            }
            if let Err(e) = self.publish_stats().await {
                tracing::debug!(error = %e, "outbox gauges not updated");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let policy = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for (attempts, full) in [(1, 30), (2, 60), (3, 120), (7, 1920), (8, 3600), (30, 3600)] {
            for _ in 0..50 {
                let d = policy.backoff(attempts, &mut rng).num_milliseconds();
                assert!(
                    (full * 500..=full * 1000).contains(&d),
                    "attempt {attempts}: {d} ms"
                );
            }
        }
    }
}
