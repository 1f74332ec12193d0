//! Idempotency keys for commands from outside.
//!
//! `claim` either hands out the command id for a first attempt (or for a retry of an attempt
//! that never finished: the command id is the same, so its event ids are too, and the store and
//! the handlers turn a re-run into a replay), or returns the stored result of a finished one.
//! The same key with a different request is refused. Only final results are stored — successes
//! and business refusals; an infrastructure failure leaves the key open for a retry.
//!
//! **Durability without a flush of its own.** A claim commits asynchronously (no WAL flush of its
//! own). That is enough: the command it admits either appends events, whose synchronous commit
//! flushes the WAL up to and past the claim's commit record, or is refused, and the refusal is
//! stored with a synchronous commit ([`IdempotencyKeys::complete`]), which flushes the claim
//! too; or it fails and wrote nothing, and a lost claim is then a key that was never used. The
//! result of a command whose events are in the log is stored asynchronously as well
//! ([`IdempotencyKeys::complete_after_log`]): if a crash loses it, the key reads as unfinished
//! and a retry replays the command from the log, under the same command id.

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::CommandError;
use crate::store::StoreError;

const STORE_RESULT: &str = "UPDATE idempotency_keys SET response = $3, completed_at = now()
     WHERE scope = $1 AND key = $2 AND response IS NULL";

const STORE_RESULT_ASYNC: &str = concat!(
    "UPDATE idempotency_keys SET response = $3, completed_at = now()
      FROM ",
    crate::pg::async_commit!(),
    "
     WHERE scope = $1 AND key = $2 AND response IS NULL"
);

/// Outcome of claiming a key.
#[derive(Debug)]
pub enum Claim<R> {
    /// Run the command with this id (a first attempt, or one whose first attempt never finished).
    Run { command_id: Uuid },
    /// The command already finished with this result.
    Done(R),
}

/// The idempotency key table.
#[derive(Debug, Clone)]
pub struct IdempotencyKeys {
    pool: PgPool,
}

/// SHA-256 of the request's canonical JSON.
pub fn request_hash(request: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(json).to_vec()
}

impl IdempotencyKeys {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Claims `key` for `request` in `scope`.
    pub async fn claim<R: DeserializeOwned>(
        &self,
        scope: &str,
        key: &str,
        request: &impl Serialize,
    ) -> Result<Claim<R>, CommandError> {
        let hash = request_hash(request);
        let fresh = Uuid::new_v4();
        let claimed: Option<Uuid> = sqlx::query_scalar(concat!(
            "INSERT INTO idempotency_keys (scope, key, request_hash, command_id)
             SELECT $1, $2, $3, $4
               FROM ",
            crate::pg::async_commit!(),
            "
             ON CONFLICT (scope, key) DO NOTHING
             RETURNING command_id"
        ))
        .bind(scope)
        .bind(key)
        .bind(&hash)
        .bind(fresh)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)?;
        if let Some(command_id) = claimed {
            return Ok(Claim::Run { command_id });
        }
        let (stored_hash, command_id, response): (Vec<u8>, Uuid, Option<serde_json::Value>) = sqlx::query_as(
            "SELECT request_hash, command_id, response FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from)?;
        if stored_hash != hash {
            return Err(CommandError::IdempotencyKeyReused);
        }
        match response {
            Some(value) => serde_json::from_value(value)
                .map(Claim::Done)
                .map_err(|e| CommandError::Codec(format!("stored idempotent response: {e}"))),
            None => Ok(Claim::Run { command_id }),
        }
    }

    /// Stores the final result of the command that claimed `key`, durably (a refusal: nothing
    /// else records it). The first stored result wins.
    pub async fn complete(
        &self,
        scope: &str,
        key: &str,
        result: &impl Serialize,
    ) -> Result<(), CommandError> {
        self.store_result(scope, key, result, STORE_RESULT).await
    }

    /// Stores the result of a command whose events are already durable in the log, with an
    /// asynchronous commit: losing it in a crash only makes a retry replay from the log.
    pub async fn complete_after_log(
        &self,
        scope: &str,
        key: &str,
        result: &impl Serialize,
    ) -> Result<(), CommandError> {
        self.store_result(scope, key, result, STORE_RESULT_ASYNC)
            .await
    }

    async fn store_result(
        &self,
        scope: &str,
        key: &str,
        result: &impl Serialize,
        sql: &'static str,
    ) -> Result<(), CommandError> {
        let value = serde_json::to_value(result).map_err(|e| CommandError::Codec(e.to_string()))?;
        sqlx::query(sql)
            .bind(scope)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }
}
