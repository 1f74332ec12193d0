//! Global seals: every so often the sealer takes the range of positions after the last seal up
//! to the committed head, computes the Merkle root of its events ([`super::merkle`]), chains it
//! to the previous seal and signs it with Ed25519. Deleting, reordering or rewriting any sealed
//! event (even with its stream's chain recomputed) changes a root; rewriting a seal breaks its
//! signature or the chain of seals.

use std::time::Duration;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use chrono::{DateTime, SubsecRound, Utc};
use futures::TryStreamExt;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::watch;

use super::AuditError;
use super::merkle::{MerkleBuilder, leaf};
use crate::store::Hash;

/// Name of the generated seal key in `api_secrets` (used when none is configured).
const SECRET_NAME: &str = "seal_ed25519_seed";
/// Only one sealer writes at a time (the others skip their turn).
const SEAL_LOCK: i64 = 0x7465_7373_7365_616c;
/// Largest range one seal covers, so that a failing seal narrows a problem down.
pub const DEFAULT_SEAL_RANGE: u64 = 100_000;

/// The Ed25519 key that signs seals.
pub struct SealKey {
    pair: Ed25519KeyPair,
    public: [u8; 32],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealKey(public {})", hex::encode(self.public))
    }
}

impl SealKey {
    /// A key from its 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self, AuditError> {
        if seed.len() != 32 {
            return Err(AuditError::Key(format!(
                "an Ed25519 seed has 32 bytes, this one has {}",
                seed.len()
            )));
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| AuditError::Key(format!("the seed is not usable: {e}")))?;
        let public = <[u8; 32]>::try_from(pair.public_key().as_ref())
            .map_err(|_| AuditError::Key("unexpected public key length".into()))?;
        Ok(Self { pair, public })
    }

    /// The configured key (64 hex characters, `TESSERA_SEAL_KEY`), or else the one generated for
    /// this database on first use. A key kept only in the database it seals protects against
    /// accidents, not against someone who can write to that database: production configures it.
    pub async fn load(pool: &PgPool, configured: Option<&str>) -> Result<Self, AuditError> {
        if let Some(hex_seed) = configured {
            let seed = hex::decode(hex_seed.trim())
                .map_err(|e| AuditError::Key(format!("TESSERA_SEAL_KEY is not hex: {e}")))?;
            return Self::from_seed(&seed);
        }
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO api_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(SECRET_NAME)
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
        let seed: Vec<u8> = sqlx::query_scalar("SELECT secret FROM api_secrets WHERE name = $1")
            .bind(SECRET_NAME)
            .fetch_one(pool)
            .await?;
        Self::from_seed(&seed)
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }
}

/// Whether `signature` is `public_key`'s Ed25519 signature of `message`.
pub fn signature_holds(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

/// One stored seal.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Seal {
    pub seq: u64,
    pub from_position: u64,
    pub to_position: u64,
    pub event_count: u64,
    pub merkle_root: Hash,
    /// The previous seal's hash (zeros before the first seal).
    pub previous_hash: Hash,
    pub seal_hash: Hash,
    #[serde(serialize_with = "as_hex")]
    pub signature: Vec<u8>,
    #[serde(serialize_with = "as_hex")]
    pub public_key: Vec<u8>,
    pub sealed_at: DateTime<Utc>,
    /// SHA-256 of the seal's leaf digests (format v2; `None` for seals made before them).
    pub witness: Option<Hash>,
}

/// Bytes of each event's Merkle leaf a v2 seal keeps as its witness.
pub const DIGEST_LEN: usize = 8;

fn as_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// What a seal's hash (and so its signature) covers. A v2 seal (with a `witness`) covers its
/// witness too, so its leaf digests cannot be rewritten or dropped without breaking it.
#[allow(clippy::too_many_arguments)]
pub fn seal_hash(
    seq: u64,
    from_position: u64,
    to_position: u64,
    event_count: u64,
    merkle_root: &Hash,
    previous_hash: &Hash,
    sealed_at: DateTime<Utc>,
    witness: Option<&Hash>,
) -> Hash {
    let mut h = Sha256::new();
    h.update(if witness.is_some() {
        b"tessera-seal-v2"
    } else {
        b"tessera-seal-v1"
    });
    h.update(seq.to_be_bytes());
    h.update(from_position.to_be_bytes());
    h.update(to_position.to_be_bytes());
    h.update(event_count.to_be_bytes());
    h.update(merkle_root.0);
    h.update(previous_hash.0);
    h.update(sealed_at.timestamp_micros().to_be_bytes());
    if let Some(w) = witness {
        h.update(w.0);
    }
    Hash(h.finalize().into())
}

/// The witness of a seal's leaf digests.
pub fn witness_of(digests: &[u8]) -> Hash {
    Hash(Sha256::digest(digests).into())
}

impl Seal {
    /// Recomputes this seal's hash from its stored fields.
    pub fn recomputed_hash(&self) -> Hash {
        seal_hash(
            self.seq,
            self.from_position,
            self.to_position,
            self.event_count,
            &self.merkle_root,
            &self.previous_hash,
            self.sealed_at,
            self.witness.as_ref(),
        )
    }
}

/// The leaf digests of seal `seq` (v2 seals), if it has them and they match its witness.
pub async fn leaf_digests(pool: &PgPool, seal: &Seal) -> Result<Option<Vec<u8>>, AuditError> {
    let Some(witness) = seal.witness else {
        return Ok(None);
    };
    let digests: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT leaf_digests FROM log_seals WHERE seq = $1")
            .bind(seal.seq as i64)
            .fetch_optional(pool)
            .await?
            .flatten();
    Ok(digests.filter(|d| witness_of(d) == witness))
}

#[derive(sqlx::FromRow)]
pub(crate) struct SealRow {
    seq: i64,
    from_position: i64,
    to_position: i64,
    event_count: i64,
    merkle_root: Vec<u8>,
    previous_hash: Vec<u8>,
    seal_hash: Vec<u8>,
    signature: Vec<u8>,
    public_key: Vec<u8>,
    sealed_at: DateTime<Utc>,
    witness: Option<Vec<u8>>,
}

/// A 32-byte column as a hash (anything else becomes zeros, which no check accepts).
fn hash_of(bytes: &[u8]) -> Hash {
    Hash::from_slice(bytes).unwrap_or(Hash([0; 32]))
}

impl From<SealRow> for Seal {
    fn from(r: SealRow) -> Self {
        Self {
            seq: r.seq as u64,
            from_position: r.from_position as u64,
            to_position: r.to_position as u64,
            event_count: r.event_count as u64,
            merkle_root: hash_of(&r.merkle_root),
            previous_hash: hash_of(&r.previous_hash),
            seal_hash: hash_of(&r.seal_hash),
            signature: r.signature,
            public_key: r.public_key,
            sealed_at: r.sealed_at,
            witness: r.witness.as_deref().map(hash_of),
        }
    }
}

pub(crate) const SEAL_COLUMNS: &str = "seq, from_position, to_position, event_count, merkle_root, \
     previous_hash, seal_hash, signature, public_key, sealed_at, witness";

/// Every seal, in order.
pub async fn list_seals(pool: &PgPool) -> Result<Vec<Seal>, AuditError> {
    let rows: Vec<SealRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SEAL_COLUMNS} FROM log_seals ORDER BY seq"
    )))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Seal::from).collect())
}

/// Seals every committed event after the last seal, in ranges of at most `max_range` positions.
/// Returns the new seals (none when another sealer holds the turn or nothing is new).
///
/// A seal vouches for what it covers, so the range is checked first, as `verify` would: every
/// position present once (dense) and every event following its stream's chain. A range that is
/// not is refused ([`AuditError::SealRefused`]) and an alert is raised (`seal_alerts`, which
/// `/readyz` reports); nothing is sealed until the log is repaired.
pub async fn seal_now(
    pool: &PgPool,
    key: &SealKey,
    max_range: u64,
) -> Result<Vec<Seal>, AuditError> {
    let max_range = max_range.max(1);
    let mut tx = pool.begin().await?;
    let turn: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(SEAL_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !turn {
        return Ok(Vec::new());
    }
    let last: Option<(i64, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT seq, to_position, seal_hash FROM log_seals ORDER BY seq DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    // Positions at or below the head are committed: they are assigned under the head's row lock.
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(&mut *tx)
        .await?;
    let (mut seq, mut sealed_to, mut previous) = match last {
        Some((seq, to, hash)) => (seq as u64, to as u64, hash_of(&hash)),
        None => (0, 0, Hash([0; 32])),
    };
    let head = head as u64;
    if sealed_to >= head {
        return Ok(Vec::new());
    }
    let report = super::verify::verify(
        pool,
        &super::verify::VerifyOptions {
            from: Some(sealed_to + 1),
            to: Some(head),
            trusted_key: key.public_key(),
        },
        &mut |_, _| {},
    )
    .await?;
    if let Some(problem) = report.problems.iter().find(|p| p.position > sealed_to) {
        return Err(refuse(pool, sealed_to + 1, head, problem.to_string()).await);
    }
    let mut seals = Vec::new();
    while sealed_to < head {
        let from = sealed_to + 1;
        let to = head.min(sealed_to + max_range);
        let mut tree = MerkleBuilder::new();
        let mut digests = Vec::with_capacity(((to - from + 1) as usize) * DIGEST_LEN);
        {
            let mut rows = sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT position, hash FROM events WHERE position BETWEEN $1 AND $2 ORDER BY position",
            )
            .bind(from as i64)
            .bind(to as i64)
            .fetch(&mut *tx);
            let mut expected = from;
            while let Some((position, hash)) = rows.try_next().await? {
                if position as u64 != expected {
                    drop(rows);
                    let problem = format!(
                        "position {expected} holds no event (the next one is at {position})"
                    );
                    return Err(refuse(pool, from, to, problem).await);
                }
                expected += 1;
                let leaf = leaf(position as u64, &hash_of(&hash));
                digests.extend_from_slice(&leaf.0[..DIGEST_LEN]);
                tree.push(leaf);
            }
            if expected != to + 1 {
                drop(rows);
                let problem = format!("positions {expected}..{to} hold no event");
                return Err(refuse(pool, from, to, problem).await);
            }
        }
        seq += 1;
        let sealed_at = Utc::now().trunc_subsecs(6);
        let root = tree.root();
        let witness = witness_of(&digests);
        let hash = seal_hash(
            seq,
            from,
            to,
            tree.leaves(),
            &root,
            &previous,
            sealed_at,
            Some(&witness),
        );
        let seal = Seal {
            seq,
            from_position: from,
            to_position: to,
            event_count: tree.leaves(),
            merkle_root: root,
            previous_hash: previous,
            seal_hash: hash,
            signature: key.sign(&hash.0),
            public_key: key.public_key().to_vec(),
            sealed_at,
            witness: Some(witness),
        };
        sqlx::query(
            "INSERT INTO log_seals (seq, from_position, to_position, event_count, merkle_root, \
             previous_hash, seal_hash, signature, public_key, sealed_at, leaf_digests, witness) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(seal.seq as i64)
        .bind(seal.from_position as i64)
        .bind(seal.to_position as i64)
        .bind(seal.event_count as i64)
        .bind(seal.merkle_root.0.as_slice())
        .bind(seal.previous_hash.0.as_slice())
        .bind(seal.seal_hash.0.as_slice())
        .bind(seal.signature.as_slice())
        .bind(seal.public_key.as_slice())
        .bind(seal.sealed_at)
        .bind(digests.as_slice())
        .bind(witness.0.as_slice())
        .execute(&mut *tx)
        .await?;
        previous = hash;
        sealed_to = to;
        seals.push(seal);
    }
    // What is sealed now was sound: alerts about it are over.
    sqlx::query(
        "UPDATE seal_alerts SET cleared_at = now() WHERE cleared_at IS NULL AND from_position <= $1",
    )
    .bind(sealed_to as i64)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(seals)
}

/// Raises the alert for a refused range (once while it stays open) and builds the error.
async fn refuse(pool: &PgPool, from: u64, to: u64, problem: String) -> AuditError {
    tracing::error!(from, to, %problem, "the sealer refuses a range that is not dense and chained");
    metrics::counter!("tessera_seal_refusals_total").increment(1);
    let raised = sqlx::query(
        "INSERT INTO seal_alerts (from_position, to_position, problem)
         SELECT $1, $2, $3 WHERE NOT EXISTS (
             SELECT 1 FROM seal_alerts WHERE cleared_at IS NULL AND from_position = $1 AND problem = $3)",
    )
    .bind(from as i64)
    .bind(to as i64)
    .bind(&problem)
    .execute(pool)
    .await;
    if let Err(e) = raised {
        tracing::error!(error = %e, "cannot record the sealing alert");
    }
    AuditError::SealRefused { from, to, problem }
}

/// Open sealing alerts: (raised at, first position, last position, problem).
pub async fn open_alerts(
    pool: &PgPool,
) -> Result<Vec<(DateTime<Utc>, i64, i64, String)>, AuditError> {
    Ok(sqlx::query_as(
        "SELECT raised_at, from_position, to_position, problem FROM seal_alerts
          WHERE cleared_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?)
}

/// The unsealed window: events after the last seal, and how long ago the oldest of them was
/// recorded (0 when there are none).
pub async fn unsealed(pool: &PgPool) -> Result<(u64, f64), AuditError> {
    let (count, age): (i64, Option<f64>) = sqlx::query_as(
        "SELECT h.position - coalesce(s.to_position, 0),
                extract(epoch FROM now() - e.recorded_at)::float8
           FROM log_head h
           LEFT JOIN LATERAL (SELECT to_position FROM log_seals ORDER BY seq DESC LIMIT 1) s ON true
           LEFT JOIN events e ON e.position = coalesce(s.to_position, 0) + 1
          WHERE h.id = 1",
    )
    .fetch_one(pool)
    .await?;
    Ok((count.max(0) as u64, age.unwrap_or(0.0).max(0.0)))
}

/// Seals periodically until `stopped` turns true, and once more when it does (so a clean stop
/// leaves nothing unsealed): the sealing process of `tessera up`. Each round also publishes the
/// unsealed window as metrics (`tessera_log_unsealed_events`, `tessera_log_unsealed_age_seconds`).
pub async fn run_sealer(
    pool: PgPool,
    key: SealKey,
    every: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last_round = tokio::select! {
            _ = stopped.changed() => true,
            _ = tick.tick() => false,
        };
        match seal_now(&pool, &key, DEFAULT_SEAL_RANGE).await {
            Ok(seals) => {
                for s in seals {
                    tracing::info!(seq = s.seq, from = s.from_position, to = s.to_position, root = %s.merkle_root, "log sealed");
                }
            }
            // Already logged at error, counted and recorded as an alert.
            Err(AuditError::SealRefused { .. }) => {}
            Err(e) => tracing::error!(error = %e, "sealing the log failed"),
        }
        if let Ok((count, age)) = unsealed(&pool).await {
            metrics::gauge!("tessera_log_unsealed_events").set(count as f64);
            metrics::gauge!("tessera_log_unsealed_age_seconds").set(age);
        }
        if last_round {
            break;
        }
    }
}
