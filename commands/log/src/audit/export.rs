//! NDJSON exports of a range of the log or of one booking's history, streamed page by page
//! (constant memory), and their offline verification.
//!
//! Format `tessera-export-v1`, one JSON object per line:
//! - first a header: `{"format": "tessera-export-v1", "scope": …, "public_key": …, …}`;
//! - for range exports, `{"seal": {…}}` for every seal inside the range, whose Merkle roots and
//!   signatures re-derive from the event lines;
//! - then one line per event: every stored field, the payload byte for byte, its `hash` and the
//!   `previous_hash` of its stream, so each event re-derives on its own.
//!
//! Checking a file holds one Merkle builder per seal (a few per million events), not the events.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};
use uuid::Uuid;

use super::AuditError;
use super::history::{AsOf, COLUMNS, LogEntry, add_personal_views, booking_history};
use super::merkle::{MerkleBuilder, leaf};
use super::seal::{Seal, list_seals, signature_holds};
use crate::pii::Vault;
use crate::store::postgres::EventRow;
use crate::store::{EventMetadata, GENESIS_HASH, Hash, StreamId, chain_hash};

pub const FORMAT: &str = "tessera-export-v1";
const PAGE: i64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportHeader {
    pub format: String,
    /// `range` or `booking`.
    pub scope: String,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub booking_id: Option<Uuid>,
    pub head: u64,
    pub exported_at: DateTime<Utc>,
    /// Hex Ed25519 key the seals in this export are signed with.
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealLine {
    seal: SealOut,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SealOut {
    seq: u64,
    from_position: u64,
    to_position: u64,
    event_count: u64,
    merkle_root: String,
    previous_hash: String,
    seal_hash: String,
    signature: String,
    public_key: String,
    sealed_at: DateTime<Utc>,
    /// SHA-256 of the seal's leaf digests (v2 seals), which its hash covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    witness: Option<String>,
}

impl From<&Seal> for SealOut {
    fn from(s: &Seal) -> Self {
        Self {
            seq: s.seq,
            from_position: s.from_position,
            to_position: s.to_position,
            event_count: s.event_count,
            merkle_root: s.merkle_root.to_hex(),
            previous_hash: s.previous_hash.to_hex(),
            seal_hash: s.seal_hash.to_hex(),
            signature: hex::encode(&s.signature),
            public_key: hex::encode(&s.public_key),
            sealed_at: s.sealed_at,
            witness: s.witness.map(|w| w.to_hex()),
        }
    }
}

async fn line<W: AsyncWrite + Unpin>(
    out: &mut W,
    value: &impl Serialize,
) -> Result<(), AuditError> {
    let mut text = serde_json::to_vec(value).map_err(|e| AuditError::Invalid(e.to_string()))?;
    text.push(b'\n');
    out.write_all(&text).await.map_err(io)
}

fn io(e: std::io::Error) -> AuditError {
    AuditError::Invalid(format!("cannot write the export: {e}"))
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    event: EventRow,
    previous_hash: Option<Vec<u8>>,
}

fn entry(row: Row) -> Result<LogEntry, AuditError> {
    let previous = row.previous_hash.map(|h| hex::encode(&h));
    let event = row.event.into_event()?;
    let first = event.stream_version == 1;
    let mut e = LogEntry::from_event(event)?;
    e.previous_hash = Some(if first {
        GENESIS_HASH.to_hex()
    } else {
        previous.unwrap_or_default()
    });
    Ok(e)
}

fn prefixed(columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| {
            if c.starts_with("data::text") {
                "e.data::text AS data".to_owned()
            } else {
                format!("e.{c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Streams positions `from..=to` of the log (default: all of it) to `out`; returns the number of
/// events written.
pub async fn export_range<W: AsyncWrite + Unpin>(
    pool: &PgPool,
    vault: &Vault,
    from: Option<u64>,
    to: Option<u64>,
    public_key: [u8; 32],
    out: &mut W,
) -> Result<u64, AuditError> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let from = from.unwrap_or(1).max(1);
    let to = to.unwrap_or(head as u64).min(head as u64);
    line(
        out,
        &ExportHeader {
            format: FORMAT.into(),
            scope: "range".into(),
            from: Some(from),
            to: Some(to),
            booking_id: None,
            head: head as u64,
            exported_at: Utc::now(),
            public_key: hex::encode(public_key),
        },
    )
    .await?;
    for s in list_seals(pool).await? {
        if s.from_position >= from && s.to_position <= to {
            line(
                out,
                &SealLine {
                    seal: SealOut::from(&s),
                },
            )
            .await?;
        }
    }
    let sql = format!(
        "SELECT {}, p.hash AS previous_hash FROM events e \
           LEFT JOIN events p ON p.stream_id = e.stream_id AND p.stream_version = e.stream_version - 1 \
          WHERE e.position > $1 AND e.position <= $2 ORDER BY e.position LIMIT $3",
        prefixed(COLUMNS)
    );
    let mut cursor = from as i64 - 1;
    let mut written = 0;
    loop {
        let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(cursor)
            .bind(to as i64)
            .bind(PAGE)
            .fetch_all(pool)
            .await?;
        let Some(last) = rows.last() else { break };
        cursor = last.event.position();
        let mut entries = rows.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?;
        add_personal_views(vault, &mut entries).await?;
        for e in &entries {
            line(out, e).await?;
            written += 1;
        }
    }
    out.flush().await.map_err(io)?;
    Ok(written)
}

/// Writes one booking's history (see [`booking_history`]) to `out`.
pub async fn export_booking<W: AsyncWrite + Unpin>(
    pool: &PgPool,
    vault: &Vault,
    booking_id: Uuid,
    as_of: AsOf,
    public_key: [u8; 32],
    out: &mut W,
) -> Result<u64, AuditError> {
    let mut entries = booking_history(pool, booking_id, as_of).await?;
    add_personal_views(vault, &mut entries).await?;
    let positions: Vec<i64> = entries.iter().map(|e| e.position as i64).collect();
    let previous: HashMap<i64, Vec<u8>> = sqlx::query_as::<_, (i64, Vec<u8>)>(
        "SELECT e.position, p.hash FROM events e \
           JOIN events p ON p.stream_id = e.stream_id AND p.stream_version = e.stream_version - 1 \
          WHERE e.position = ANY($1)",
    )
    .bind(&positions)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    line(
        out,
        &ExportHeader {
            format: FORMAT.into(),
            scope: "booking".into(),
            from: None,
            to: None,
            booking_id: Some(booking_id),
            head: head as u64,
            exported_at: Utc::now(),
            public_key: hex::encode(public_key),
        },
    )
    .await?;
    let mut written = 0;
    for mut e in entries {
        e.previous_hash = Some(if e.version == 1 {
            GENESIS_HASH.to_hex()
        } else {
            previous
                .get(&(e.position as i64))
                .map(hex::encode)
                .unwrap_or_default()
        });
        line(out, &e).await?;
        written += 1;
    }
    out.flush().await.map_err(io)?;
    Ok(written)
}

/// What an offline check of an export found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExportCheck {
    pub events: u64,
    pub seals: u64,
    /// Problems, in file order (at most 100 kept).
    pub problems: Vec<String>,
    pub total_problems: u64,
}

impl ExportCheck {
    pub fn ok(&self) -> bool {
        self.total_problems == 0
    }

    fn bad(&mut self, p: String) {
        self.total_problems += 1;
        if self.problems.len() < 100 {
            self.problems.push(p);
        }
    }
}

fn hex32(s: &str) -> Option<Hash> {
    hex::decode(s).ok().and_then(|b| Hash::from_slice(&b))
}

#[derive(Deserialize)]
struct Probe {
    format: Option<serde::de::IgnoredAny>,
    seal: Option<serde::de::IgnoredAny>,
}

/// Re-derives every event's hash, the chain links between events of the same stream, the
/// positions of a range export, and each seal's Merkle root, hash and signature, from the file
/// alone. `trusted_key` pins the seal key (default: the one the header names).
pub async fn verify_export<R: AsyncBufRead + Unpin>(
    input: R,
    trusted_key: Option<[u8; 32]>,
) -> Result<ExportCheck, AuditError> {
    let mut check = ExportCheck::default();
    let mut lines = input.lines();
    let Some(first) = lines.next_line().await.map_err(io)? else {
        return Err(AuditError::Invalid("the export is empty".into()));
    };
    let header: ExportHeader = serde_json::from_str(&first)
        .map_err(|e| AuditError::Invalid(format!("the first line is not an export header: {e}")))?;
    if header.format != FORMAT {
        return Err(AuditError::Invalid(format!(
            "unknown export format {}",
            header.format
        )));
    }
    let key = match trusted_key {
        Some(k) => k.to_vec(),
        None => hex::decode(&header.public_key).unwrap_or_default(),
    };
    let range = header.scope == "range";
    let mut expected = header.from.unwrap_or(1);
    // Seals with the Merkle tree of the events read so far in their range.
    let mut seals: Vec<(Seal, MerkleBuilder)> = Vec::new();
    let mut last_in_stream: HashMap<String, (u64, Hash)> = HashMap::new();
    let mut number = 1u64;
    while let Some(text) = lines.next_line().await.map_err(io)? {
        number += 1;
        let probe: Probe = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                check.bad(format!("line {number} is not JSON: {e}"));
                continue;
            }
        };
        if probe.format.is_some() {
            check.bad(format!("line {number}: a second header"));
        } else if probe.seal.is_some() {
            let Ok(SealLine { seal: s }) = serde_json::from_str::<SealLine>(&text) else {
                check.bad(format!("line {number}: a seal line that does not parse"));
                continue;
            };
            check.seals += 1;
            let (Some(root), Some(previous), Some(stored)) = (
                hex32(&s.merkle_root),
                hex32(&s.previous_hash),
                hex32(&s.seal_hash),
            ) else {
                check.bad(format!("seal #{}: malformed hashes", s.seq));
                continue;
            };
            let seal = Seal {
                seq: s.seq,
                from_position: s.from_position,
                to_position: s.to_position,
                event_count: s.event_count,
                merkle_root: root,
                previous_hash: previous,
                seal_hash: stored,
                signature: hex::decode(&s.signature).unwrap_or_default(),
                public_key: hex::decode(&s.public_key).unwrap_or_default(),
                sealed_at: s.sealed_at,
                witness: s.witness.as_deref().and_then(hex32),
            };
            if seal.recomputed_hash() != seal.seal_hash {
                check.bad(format!(
                    "seal #{}: its fields do not hash to its stored hash",
                    s.seq
                ));
            }
            if seal.public_key != key || !signature_holds(&key, &seal.seal_hash.0, &seal.signature)
            {
                check.bad(format!(
                    "seal #{}: the signature does not verify with the trusted key",
                    s.seq
                ));
            }
            seals.push((seal, MerkleBuilder::new()));
        } else {
            let e: LogEntry = match serde_json::from_str(&text) {
                Ok(e) => e,
                Err(err) => {
                    check.bad(format!(
                        "line {number}: an event line that does not parse: {err}"
                    ));
                    continue;
                }
            };
            check.events += 1;
            if range {
                if e.position != expected {
                    check.bad(format!(
                        "position {}: expected position {expected} next (events are missing or out of order)",
                        e.position
                    ));
                }
                expected = e.position + 1;
            }
            let (Some(hash), Some(previous)) =
                (hex32(&e.hash), e.previous_hash.as_deref().and_then(hex32))
            else {
                check.bad(format!(
                    "position {}: missing or malformed hashes",
                    e.position
                ));
                continue;
            };
            let Ok(stream) = StreamId::new(e.stream.clone()) else {
                check.bad(format!("position {}: invalid stream id", e.position));
                continue;
            };
            let metadata = EventMetadata {
                correlation_id: e.correlation_id,
                causation_id: e.causation_id,
                actor: e.actor.clone(),
                reason: e.reason.clone(),
            };
            let fields = crate::store::HashedFields {
                event_id: e.event_id,
                stream_id: &stream,
                stream_version: e.version,
                event_type: &e.event_type,
                schema_version: e.schema_version,
                data: e.data.get(),
                metadata: &metadata,
                recorded_at: e.recorded_at,
                effective_at: e.effective_at,
            };
            if chain_hash(&previous, &fields) != hash {
                check.bad(format!(
                    "position {}, stream {} version {}: the event does not match its hash",
                    e.position, e.stream, e.version
                ));
            }
            if let Some((v, h)) = last_in_stream.get(&e.stream)
                && *v + 1 == e.version
                && *h != previous
            {
                check.bad(format!(
                    "position {}, stream {} version {}: does not link to version {v}'s hash",
                    e.position, e.stream, e.version
                ));
            }
            last_in_stream.insert(e.stream.clone(), (e.version, hash));
            if let Some((_, tree)) = seals
                .iter_mut()
                .find(|(s, _)| (s.from_position..=s.to_position).contains(&e.position))
            {
                tree.push(leaf(e.position, &hash));
            }
        }
    }
    for (seal, tree) in &seals {
        if tree.root() != seal.merkle_root || tree.leaves() != seal.event_count {
            check.bad(format!(
                "seal #{} over positions {}..{}: the events in this file do not produce its Merkle root",
                seal.seq, seal.from_position, seal.to_position
            ));
        }
    }
    if range
        && let Some(to) = header.to
        && expected <= to
    {
        check.bad(format!(
            "positions {expected}..{to} are missing from the file"
        ));
    }
    Ok(check)
}
