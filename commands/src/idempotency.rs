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

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tessera_log::clock::new_command_id;
use uuid::Uuid;

use crate::error::CommandError;
use tessera_log::pg::coalesce::Coalescer;
use tessera_log::store::StoreError;

const STORE_RESULT: &str = "UPDATE idempotency_keys SET response = $3, completed_at = now()
     WHERE scope = $1 AND key = $2 AND response IS NULL";

/// Claims a batch of keys; returns the fresh command ids of the keys it inserted.
const CLAIM_BATCH: &str = concat!(
    "INSERT INTO idempotency_keys (scope, key, request_hash, command_id)
     SELECT k.scope, k.key, k.request_hash, k.command_id
       FROM unnest($1::text[], $2::text[], $3::bytea[], $4::uuid[])
            AS k(scope, key, request_hash, command_id),
            ",
    tessera_log::pg::async_commit!(),
    "
     ON CONFLICT (scope, key) DO NOTHING
     RETURNING command_id"
);

// The batch statements below run on connections that keep one generic plan (see
// `IdempotencyKeys::writers`), and a generic plan is made once, with the table's size at the
// time. On a table that has just been created, or emptied, that size is zero, and a plain join
// of the keys with the table is planned as a scan of the whole table: a plan kept while the
// table grows by a thousand keys a second (it was the first paced hold run on fresh data,
// where this statement took 0.6 ms per key instead of 0.06). So each key is looked up on its
// own (a `LATERAL` subquery that `OFFSET 0` keeps from being merged into a join), and the
// connections have sequential scans off: a probe of the primary key whatever the statistics.

const READ_BATCH: &str = "SELECT f.scope, f.key, f.request_hash, f.command_id, f.response
       FROM unnest($1::text[], $2::text[]) AS u(scope, key)
            CROSS JOIN LATERAL (
              SELECT scope, key, request_hash, command_id, response FROM idempotency_keys
               WHERE scope = u.scope AND key = u.key OFFSET 0) AS f";

const STORE_RESULTS_ASYNC: &str = concat!(
    "UPDATE idempotency_keys k SET response = v.response, completed_at = now()
       FROM (SELECT f.row_id, u.response
               FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS u(scope, key, response)
                    CROSS JOIN LATERAL (
                      SELECT ctid AS row_id FROM idempotency_keys
                       WHERE scope = u.scope AND key = u.key AND response IS NULL OFFSET 0) AS f
            ) AS v,
            ",
    tessera_log::pg::async_commit!(),
    "
      WHERE k.ctid = v.row_id AND k.response IS NULL"
);

/// Most claims (or results) one coalesced statement carries.
const MAX_BATCH: usize = 256;

/// Coalesced statements of one kind in flight at once.
const IN_FLIGHT: usize = 3;

/// Outcome of claiming a key.
#[derive(Debug)]
pub enum Claim<R> {
    /// Run the command with this id (a first attempt, or one whose first attempt never finished).
    Run { command_id: Uuid },
    /// The command already finished with this result.
    Done(R),
}

/// The idempotency key table.
///
/// Claims, and results stored after the log, are written in coalesced statements: what
/// concurrent requests ask while one statement is in flight goes out as the next one (ADR 0009).
/// Cloning shares the coalescers; they start on the runtime of the first call.
#[derive(Debug, Clone)]
pub struct IdempotencyKeys {
    pool: PgPool,
    writers: Arc<OnceLock<Writers>>,
}

#[derive(Debug)]
struct Writers {
    claims: Coalescer<NewClaim, Found>,
    results: Coalescer<NewResult, ()>,
}

#[derive(Debug)]
struct NewClaim {
    scope: String,
    key: String,
    hash: Vec<u8>,
    /// Fresh for every claim, so the ids a batch's `RETURNING` gives back name its winners.
    command_id: Uuid,
}

/// What a claim found.
#[derive(Debug)]
enum Found {
    /// The key was free and is now ours, under the claim's fresh command id.
    Claimed,
    /// The key was claimed before (by an earlier request, or earlier in the same batch).
    Stored {
        hash: Vec<u8>,
        command_id: Uuid,
        response: Option<serde_json::Value>,
    },
}

#[derive(Debug)]
struct NewResult {
    scope: String,
    key: String,
    response: serde_json::Value,
}

/// SHA-256 of the request's canonical JSON.
pub fn request_hash(request: &impl Serialize) -> Vec<u8> {
    let json = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(json).to_vec()
}

impl IdempotencyKeys {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            writers: Arc::new(OnceLock::new()),
        }
    }

    fn writers(&self) -> &Writers {
        self.writers.get_or_init(|| {
            // The coalesced statements take arrays of any length. PostgreSQL plans a prepared
            // statement afresh for its parameters while that plan looks cheaper than the
            // generic one, and for a batch of one it always does: paced at 1,000 holds/s the
            // results statement was planned on 16,083 of 20,417 executions, 2.4 s of planning
            // for 1.7 s of executing. The coalescers' own connections keep the generic plan
            // (an index probe per row of the batch) and skip the planner.
            let connect = writer_options(&self.pool);
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(2 * IN_FLIGHT as u32)
                .acquire_timeout(std::time::Duration::from_secs(30))
                .connect_lazy_with(connect);
            let (claims, results) = (pool.clone(), pool);
            Writers {
                claims: Coalescer::start(MAX_BATCH, IN_FLIGHT, move |batch| {
                    let pool = claims.clone();
                    async move { claim_batch(&pool, batch).await }
                }),
                results: Coalescer::start(MAX_BATCH, IN_FLIGHT, move |batch| {
                    let pool = results.clone();
                    async move { store_results(&pool, batch).await }
                }),
            }
        })
    }

    /// Claims `key` for `request` in `scope`.
    pub async fn claim<R: DeserializeOwned>(
        &self,
        scope: &str,
        key: &str,
        request: &impl Serialize,
    ) -> Result<Claim<R>, CommandError> {
        let hash = request_hash(request);
        let fresh = new_command_id();
        let found = self
            .writers()
            .claims
            .call(NewClaim {
                scope: scope.to_owned(),
                key: key.to_owned(),
                hash: hash.clone(),
                command_id: fresh,
            })
            .await?;
        let (stored_hash, command_id, response) = match found {
            Found::Claimed => return Ok(Claim::Run { command_id: fresh }),
            Found::Stored {
                hash,
                command_id,
                response,
            } => (hash, command_id, response),
        };
        if stored_hash != hash {
            return Err(CommandError::IdempotencyKeyReused);
        }
        match response {
            Some(value) => serde_json::from_value(value)
                .map(Claim::Done)
                .map_err(|e| CommandError::Idempotency(format!("stored idempotent response: {e}"))),
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
        let value =
            serde_json::to_value(result).map_err(|e| CommandError::Idempotency(e.to_string()))?;
        sqlx::query(STORE_RESULT)
            .bind(scope)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    /// Stores the result of a command whose events are already durable in the log, with an
    /// asynchronous commit: losing it in a crash only makes a retry replay from the log.
    pub async fn complete_after_log(
        &self,
        scope: &str,
        key: &str,
        result: &impl Serialize,
    ) -> Result<(), CommandError> {
        let response =
            serde_json::to_value(result).map_err(|e| CommandError::Idempotency(e.to_string()))?;
        self.writers()
            .results
            .call(NewResult {
                scope: scope.to_owned(),
                key: key.to_owned(),
                response,
            })
            .await?;
        Ok(())
    }
}

/// How the coalescers connect: generic plans only, and no sequential scans (see
/// `READ_BATCH`).
fn writer_options(pool: &PgPool) -> sqlx::postgres::PgConnectOptions {
    (*pool.connect_options()).clone().options([
        ("plan_cache_mode", "force_generic_plan"),
        ("enable_seqscan", "off"),
    ])
}

/// A claimed key as stored.
#[derive(Debug, sqlx::FromRow)]
struct StoredKey {
    scope: String,
    key: String,
    request_hash: Vec<u8>,
    command_id: Uuid,
    response: Option<serde_json::Value>,
}

/// One statement claims every key of the batch that is free; a second reads the others (keys
/// claimed before, and repeats within the batch, which are inserted once).
async fn claim_batch(pool: &PgPool, claims: Vec<NewClaim>) -> Result<Vec<Found>, StoreError> {
    let mut seen = HashSet::new();
    let firsts: Vec<&NewClaim> = claims
        .iter()
        .filter(|c| seen.insert((c.scope.as_str(), c.key.as_str())))
        .collect();
    let claimed: HashSet<Uuid> = sqlx::query_scalar(CLAIM_BATCH)
        .bind(firsts.iter().map(|c| c.scope.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|c| c.hash.as_slice()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|c| c.command_id).collect::<Vec<_>>())
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let taken: Vec<&NewClaim> = claims
        .iter()
        .filter(|c| !claimed.contains(&c.command_id))
        .collect();
    let mut stored = std::collections::HashMap::new();
    if !taken.is_empty() {
        let rows: Vec<StoredKey> = sqlx::query_as(READ_BATCH)
            .bind(taken.iter().map(|c| c.scope.as_str()).collect::<Vec<_>>())
            .bind(taken.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
            .fetch_all(pool)
            .await?;
        for row in rows {
            stored.insert((row.scope.clone(), row.key.clone()), row);
        }
    }
    claims
        .iter()
        .map(|c| {
            if claimed.contains(&c.command_id) {
                return Ok(Found::Claimed);
            }
            let row = stored
                .get(&(c.scope.clone(), c.key.clone()))
                .ok_or_else(|| {
                    StoreError::Backend(format!("idempotency key {:?} vanished", c.key))
                })?;
            Ok(Found::Stored {
                hash: row.request_hash.clone(),
                command_id: row.command_id,
                response: row.response.clone(),
            })
        })
        .collect()
}

/// One statement stores every result of the batch (the first for a key repeated in it).
async fn store_results(pool: &PgPool, results: Vec<NewResult>) -> Result<Vec<()>, StoreError> {
    let mut seen = HashSet::new();
    let firsts: Vec<&NewResult> = results
        .iter()
        .filter(|r| seen.insert((r.scope.as_str(), r.key.as_str())))
        .collect();
    sqlx::query(STORE_RESULTS_ASYNC)
        .bind(firsts.iter().map(|r| r.scope.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|r| r.key.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|r| &r.response).collect::<Vec<_>>())
        .execute(pool)
        .await?;
    Ok(vec![(); results.len()])
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use tessera_log::testkit::TestDatabase;

    /// The generic plan of each batch statement, made on a writer's connection while the
    /// table is empty and analyzed: the worst case for a plan that is kept.
    #[tokio::test]
    async fn batch_statements_probe_the_key_even_when_planned_on_an_empty_table() {
        let db = TestDatabase::new().await;
        sqlx::query("ANALYZE idempotency_keys")
            .execute(&db.pool)
            .await
            .expect("analyze");
        let mut conn = sqlx::PgConnection::connect_with(&writer_options(&db.pool))
            .await
            .expect("connect");
        let statements = [
            ("read_batch", READ_BATCH, "('{a}', '{b}')"),
            (
                "store_results",
                STORE_RESULTS_ASYNC,
                "('{a}', '{b}', '{\"{}\"}')",
            ),
            (
                "claim_batch",
                CLAIM_BATCH,
                "('{a}', '{b}', '{\"\\\\x00\"}', '{00000000-0000-0000-0000-000000000000}')",
            ),
        ];
        for (name, sql, args) in statements {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE {name} AS {sql}")))
                .execute(&mut conn)
                .await
                .expect("prepare");
            let plan: Vec<String> =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN EXECUTE {name}{args}")))
                    .fetch_all(&mut conn)
                    .await
                    .expect("explain");
            let plan = plan.join("\n");
            assert!(
                !plan.contains("Seq Scan"),
                "{name} scans the table:\n{plan}"
            );
            if name != "claim_batch" {
                assert!(
                    plan.contains("Index Scan using idempotency_keys_pkey"),
                    "{name} does not probe the key:\n{plan}"
                );
                assert!(
                    !plan.contains("Join Filter"),
                    "{name} joins by filter:\n{plan}"
                );
            }
        }
    }
}
