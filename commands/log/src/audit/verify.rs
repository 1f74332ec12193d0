//! `tessera audit verify`: re-derives every stream's hash chain and every global seal from the
//! stored bytes, in one forward pass over the log (pages by position, so memory stays constant
//! whatever the size of the log), and reports the first event or seal that does not match.

use serde::Serialize;
use sqlx::PgPool;

use super::AuditError;
use super::merkle::{MerkleBuilder, leaf};
use super::seal::{DIGEST_LEN, Seal, signature_holds};
use crate::store::postgres::EventRow;
use crate::store::{GENESIS_HASH, Hash, chain_hash};

const PAGE: i64 = 2_000;
/// Problems kept in a report (all are counted).
const KEPT: usize = 1_000;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// First position to check (default 1). Widened to the start of the seal covering it.
    pub from: Option<u64>,
    /// Last position to check (default the head). Widened to the end of the seal covering it.
    pub to: Option<u64>,
    /// The Ed25519 public key seals must be signed with.
    pub trusted_key: [u8; 32],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The stored hash does not follow from the event's bytes and its predecessor's hash.
    HashMismatch,
    /// Positions without an event (an event was deleted).
    MissingPositions,
    /// A stream skips versions (an event of it was deleted).
    VersionGap,
    /// A stream's events are not in log order.
    OutOfOrder,
    /// A stored row cannot even be read as an event.
    Unreadable,
    /// The Merkle root of a seal's range does not match the log.
    SealRootMismatch,
    /// The event at a sealed position is not the one the seal's witness recorded there
    /// (moved, swapped, replaced): the first such position of a seal whose root differs.
    SealedEventMismatch,
    /// A seal's fields do not hash to its stored hash.
    SealHashMismatch,
    /// A seal's signature is invalid, or made with another key than the trusted one.
    SealSignature,
    /// A seal does not follow the previous one (hash link, number or range).
    SealChainBroken,
}

/// One thing that does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Where in the log (for a seal: the last position it covers).
    pub position: u64,
    pub kind: ProblemKind,
    pub stream: Option<String>,
    pub version: Option<u64>,
    /// The seal concerned (or covering the position).
    pub seal: Option<u64>,
    pub detail: String,
}

impl Problem {
    fn order_key(&self) -> (u64, bool, ProblemKind) {
        (
            self.position,
            self.kind >= ProblemKind::SealRootMismatch,
            self.kind,
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "position {}", self.position)?;
        if let Some(stream) = &self.stream {
            write!(f, ", stream {stream}")?;
        }
        if let Some(v) = self.version {
            write!(f, " version {v}")?;
        }
        if let Some(s) = self.seal {
            write!(f, ", seal #{s}")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub from: u64,
    pub to: u64,
    pub head: u64,
    pub events: u64,
    pub seals: u64,
    /// Events after the last seal (checked by their chains only).
    pub unsealed_events: u64,
    /// How long ago the oldest unsealed event was recorded, in seconds (0 when none): the
    /// window in which deleting the newest events and lowering the head goes unnoticed.
    pub unsealed_age_seconds: f64,
    pub trusted_key: String,
    /// The first problems in log order (at most 1,000).
    pub problems: Vec<Problem>,
    pub total_problems: u64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.total_problems == 0
    }

    /// The first event or seal that does not match, in log order.
    pub fn first(&self) -> Option<&Problem> {
        self.problems.first()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    #[sqlx(flatten)]
    event: EventRow,
    prev_hash: Option<Vec<u8>>,
    prev_position: Option<i64>,
}

struct Problems {
    kept: Vec<Problem>,
    total: u64,
}

impl Problems {
    fn add(&mut self, p: Problem) {
        self.total += 1;
        self.kept.push(p);
        if self.kept.len() > 4 * KEPT {
            self.trim();
        }
    }

    fn trim(&mut self) {
        self.kept.sort_by_key(Problem::order_key);
        self.kept.truncate(KEPT);
    }
}

/// The seal being re-derived while the scan passes through its range.
struct OpenSeal<'a> {
    seal: &'a Seal,
    tree: MerkleBuilder,
    /// The seal's witness (v2 seals): each sealed leaf's first bytes, in position order.
    digests: Option<Vec<u8>>,
    /// The first position whose leaf differs from the witness, if any.
    first_changed: Option<u64>,
}

impl<'a> OpenSeal<'a> {
    async fn open(pool: &PgPool, seal: &'a Seal) -> Result<Self, AuditError> {
        Ok(Self {
            seal,
            tree: MerkleBuilder::new(),
            digests: super::seal::leaf_digests(pool, seal).await?,
            first_changed: None,
        })
    }

    fn push(&mut self, position: u64, leaf: Hash) {
        if self.first_changed.is_none()
            && let Some(d) = &self.digests
        {
            let at = (position - self.seal.from_position) as usize * DIGEST_LEN;
            if d.get(at..at + DIGEST_LEN) != Some(&leaf.0[..DIGEST_LEN]) {
                self.first_changed = Some(position);
            }
        }
        self.tree.push(leaf);
    }
}

/// Verifies chains, positions and seals; `progress` receives the number of positions done.
pub async fn verify(
    pool: &PgPool,
    options: &VerifyOptions,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<VerifyReport, AuditError> {
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head WHERE id = 1")
        .fetch_one(pool)
        .await?;
    let head = head as u64;
    let all_seals = super::seal::list_seals(pool).await?;
    let mut problems = Problems {
        kept: Vec::new(),
        total: 0,
    };

    // The chain of seals, all of it (a few rows per million events).
    let mut previous: Option<&Seal> = None;
    for s in &all_seals {
        let mut bad = |kind, detail: String| {
            problems.add(Problem {
                position: s.to_position,
                kind,
                stream: None,
                version: None,
                seal: Some(s.seq),
                detail,
            })
        };
        if s.recomputed_hash() != s.seal_hash {
            bad(
                ProblemKind::SealHashMismatch,
                format!(
                    "seal #{} was altered: its fields do not hash to its stored hash",
                    s.seq
                ),
            );
        }
        if s.public_key != options.trusted_key {
            bad(
                ProblemKind::SealSignature,
                format!(
                    "seal #{} is signed by key {}, not the trusted key",
                    s.seq,
                    hex::encode(&s.public_key)
                ),
            );
        } else if !signature_holds(&s.public_key, &s.seal_hash.0, &s.signature) {
            bad(
                ProblemKind::SealSignature,
                format!("seal #{}'s signature does not verify", s.seq),
            );
        }
        let (seq, from, link) = match previous {
            None => (1, 1, Hash([0; 32])),
            Some(p) => (p.seq + 1, p.to_position + 1, p.seal_hash),
        };
        if s.seq != seq || s.from_position != from || s.to_position < s.from_position {
            bad(
                ProblemKind::SealChainBroken,
                format!(
                    "seal #{} covers {}..{} but seal #{seq} should start at position {from}",
                    s.seq, s.from_position, s.to_position
                ),
            );
        }
        if s.previous_hash != link {
            bad(
                ProblemKind::SealChainBroken,
                format!("seal #{} does not link to the previous seal's hash", s.seq),
            );
        }
        previous = Some(s);
    }

    // The range to scan, widened to whole seals.
    let mut from = options.from.unwrap_or(1).max(1);
    let mut to = options.to.map_or(head, |t| t.min(head));
    for s in &all_seals {
        if s.from_position <= from && from <= s.to_position {
            from = s.from_position;
        }
        if s.from_position <= to && to <= s.to_position {
            to = s.to_position;
        }
    }
    let seals: Vec<&Seal> = all_seals
        .iter()
        .filter(|s| s.from_position >= from && s.to_position <= to)
        .collect();
    let mut next_seal = 0;
    let mut open: Option<OpenSeal<'_>> = None;
    let close = |open: OpenSeal<'_>, problems: &mut Problems| {
        let s = open.seal;
        if open.tree.root() != s.merkle_root || open.tree.leaves() != s.event_count {
            if let Some(position) = open.first_changed {
                problems.add(Problem {
                    position,
                    kind: ProblemKind::SealedEventMismatch,
                    stream: None,
                    version: None,
                    seal: Some(s.seq),
                    detail: format!(
                        "the event at position {position} is not the one seal #{} sealed there: \
                         it was moved, swapped with another or replaced",
                        s.seq
                    ),
                });
            }
            problems.add(Problem {
                position: s.to_position,
                kind: ProblemKind::SealRootMismatch,
                stream: None,
                version: None,
                seal: Some(s.seq),
                detail: format!(
                    "seal #{} over positions {}..{} does not match the log: it sealed {} events, \
                     the log now holds {} there, and the Merkle roots differ",
                    s.seq,
                    s.from_position,
                    s.to_position,
                    s.event_count,
                    open.tree.leaves()
                ),
            });
        }
    };
    let covering = |position: u64| {
        all_seals
            .iter()
            .find(|s| s.from_position <= position && position <= s.to_position)
            .map(|s| s.seq)
    };

    let mut expected = from;
    let mut events = 0u64;
    let mut cursor = from as i64 - 1;
    loop {
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT e.position, e.event_id, e.stream_id, e.stream_version, e.event_type, \
                    e.schema_version, e.data::text AS data, e.correlation_id, e.causation_id, \
                    e.actor, e.reason, e.recorded_at, e.effective_at, e.hash, \
                    p.hash AS prev_hash, p.position AS prev_position \
               FROM events e \
               LEFT JOIN events p ON p.stream_id = e.stream_id \
                                 AND p.stream_version = e.stream_version - 1 \
              WHERE e.position > $1 AND e.position <= $2 \
              ORDER BY e.position LIMIT $3",
        )
        .bind(cursor)
        .bind(to as i64)
        .bind(PAGE)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else { break };
        cursor = last.event.position();
        for row in rows {
            let position = row.event.position() as u64;
            events += 1;
            // Seals: close those that end before this position, open the one covering it.
            while let Some(o) = open.take() {
                if position <= o.seal.to_position {
                    open = Some(o);
                    break;
                }
                close(o, &mut problems);
            }
            while open.is_none()
                && next_seal < seals.len()
                && seals[next_seal].from_position <= position
            {
                let s = seals[next_seal];
                next_seal += 1;
                if position <= s.to_position {
                    open = Some(OpenSeal::open(pool, s).await?);
                } else {
                    close(OpenSeal::open(pool, s).await?, &mut problems);
                }
            }
            if position > expected {
                problems.add(Problem {
                    position: expected,
                    kind: ProblemKind::MissingPositions,
                    stream: None,
                    version: None,
                    seal: covering(expected),
                    detail: if position - expected == 1 {
                        format!("position {expected} is missing: its event was deleted")
                    } else {
                        format!(
                            "positions {expected}..{} are missing: their events were deleted",
                            position - 1
                        )
                    },
                });
            }
            expected = position + 1;
            let (prev_hash, prev_position) = (row.prev_hash, row.prev_position);
            let event = match row.event.into_event() {
                Ok(e) => e,
                Err(e) => {
                    problems.add(Problem {
                        position,
                        kind: ProblemKind::Unreadable,
                        stream: None,
                        version: None,
                        seal: covering(position),
                        detail: e.to_string(),
                    });
                    continue;
                }
            };
            if let Some(o) = open.as_mut() {
                o.push(position, leaf(position, &event.hash));
            }
            let mut bad = |kind, detail: String| {
                problems.add(Problem {
                    position,
                    kind,
                    stream: Some(event.stream_id.to_string()),
                    version: Some(event.stream_version),
                    seal: covering(position),
                    detail,
                })
            };
            let previous = match (event.stream_version, prev_hash) {
                (1, _) => Some(GENESIS_HASH),
                (_, Some(h)) => Hash::from_slice(&h),
                (v, None) => {
                    bad(
                        ProblemKind::VersionGap,
                        format!(
                            "{} is version {v} but version {} of its stream is missing: an event was deleted",
                            event.event_type,
                            v - 1
                        ),
                    );
                    None
                }
            };
            if let Some(p) = prev_position
                && p as u64 >= position
            {
                bad(
                    ProblemKind::OutOfOrder,
                    format!(
                        "version {} of the stream sits at position {p}, after version {} at {position}: the log order was changed",
                        event.stream_version - 1,
                        event.stream_version
                    ),
                );
            }
            if let Some(previous) = previous
                && chain_hash(&previous, &event.hashed_fields()) != event.hash
            {
                bad(
                    ProblemKind::HashMismatch,
                    format!(
                        "{} (event {}) does not match its stored hash: its content or its predecessor was altered",
                        event.event_type, event.event_id
                    ),
                );
            }
        }
        progress(cursor as u64 - from + 1, to.saturating_sub(from) + 1);
    }
    if expected <= to {
        problems.add(Problem {
            position: expected,
            kind: ProblemKind::MissingPositions,
            stream: None,
            version: None,
            seal: covering(expected),
            detail: format!(
                "positions {expected}..{to} hold no event (the log's head is at {head}): they were deleted"
            ),
        });
    }
    if let Some(o) = open.take() {
        close(o, &mut problems);
    }
    for s in &seals[next_seal..] {
        close(OpenSeal::open(pool, s).await?, &mut problems);
    }
    problems.trim();
    let sealed_to = all_seals.last().map_or(0, |s| s.to_position);
    Ok(VerifyReport {
        from,
        to,
        head,
        events,
        seals: all_seals.len() as u64,
        unsealed_events: head.saturating_sub(sealed_to),
        unsealed_age_seconds: super::seal::unsealed(pool).await?.1,
        trusted_key: hex::encode(options.trusted_key),
        problems: problems.kept,
        total_problems: problems.total,
    })
}
