//! `tessera audit …`: what auditors run against the log itself (never the read models).

#![allow(clippy::print_stdout)] // A command line prints its answers.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use tessera_log::audit::{self, AsOf, LogQuery, SealKey, VerifyOptions};
use tessera_log::store::StreamId;
use tokio::io::{AsyncWrite, BufReader, BufWriter};
use uuid::Uuid;

use crate::settings::Settings;
use crate::startup::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Seal every committed event not yet sealed (Merkle root, chained, Ed25519-signed).
    Seal,
    /// List the seals.
    Seals,
    /// Re-derive every hash chain and seal; report OK or the first event or seal that does not
    /// match (exit status 2).
    Verify(VerifyArgs),
    /// Every event that touched a booking, across streams, in log order.
    History(HistoryArgs),
    /// The state of one aggregate (a stream such as booking-<id>) as of a position or a time,
    /// replayed through the domain.
    State(StateArgs),
    /// What the bookings read model said about a booking at a moment (its projection logic
    /// replayed over the booking's events up to then; nothing live is read or changed).
    ReadModel(HistoryArgs),
    /// Browse the global log with a cursor.
    Log(LogArgs),
    /// Stream an NDJSON export (a range of positions, or one booking's history) with hashes.
    Export(ExportArgs),
    /// Check an NDJSON export offline: event hashes, chain links, seals and signatures.
    VerifyExport(VerifyExportArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    #[arg(long)]
    pub from: Option<u64>,
    #[arg(long)]
    pub to: Option<u64>,
    /// The Ed25519 public key (64 hex characters) seals must verify with. Default: the seal key's.
    #[arg(long)]
    pub public_key: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct AsOfArgs {
    /// Only what the log held at this position.
    #[arg(long, conflicts_with = "at")]
    pub position: Option<u64>,
    /// Only what the log had recorded by this time (RFC 3339).
    #[arg(long)]
    pub at: Option<DateTime<Utc>>,
}

impl AsOfArgs {
    fn as_of(&self) -> AsOf {
        match (self.position, self.at) {
            (Some(p), _) => AsOf::Position(p),
            (None, Some(t)) => AsOf::Time(t),
            (None, None) => AsOf::Head,
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct HistoryArgs {
    pub booking_id: Uuid,
    #[command(flatten)]
    pub as_of: AsOfArgs,
    /// One JSON object per event instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// Stream, e.g. booking-<uuid>, slot-<uuid>, loyalty-<user uuid>.
    pub stream: String,
    #[command(flatten)]
    pub as_of: AsOfArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long = "type")]
    pub event_type: Option<String>,
    #[arg(long)]
    pub stream_prefix: Option<String>,
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[arg(long, conflicts_with = "booking")]
    pub from: Option<u64>,
    #[arg(long, conflicts_with = "booking")]
    pub to: Option<u64>,
    /// Export this booking's history instead of a range.
    #[arg(long)]
    pub booking: Option<Uuid>,
    /// Write to this file (default: standard output).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VerifyExportArgs {
    pub file: PathBuf,
    /// Pin the seal key (default: the one the file's header names).
    #[arg(long)]
    pub public_key: Option<String>,
}

/// A verification that found problems (the report is already printed): exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("verification failed")]
pub struct VerificationFailed;

fn public_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).context("the public key is not hex")?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("an Ed25519 public key has 32 bytes"))
}

fn bar(len: u64) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} verifying [{bar:30}] {pos}/{len} positions, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

pub async fn run(db: &Database, settings: &Settings, command: &AuditCommand) -> anyhow::Result<()> {
    let pool = &db.pool;
    let vault = crate::startup::vault(db).await?;
    let seal_key = settings.seal_key.as_ref().map(|k| k.expose());
    match command {
        AuditCommand::Seal => {
            let key = SealKey::load(pool, seal_key).await?;
            let seals = audit::seal_now(pool, &key, audit::DEFAULT_SEAL_RANGE).await?;
            if seals.is_empty() {
                println!("nothing new to seal");
            }
            for s in seals {
                println!(
                    "seal #{}: positions {}..{} ({} events), root {}, signed by {}",
                    s.seq,
                    s.from_position,
                    s.to_position,
                    s.event_count,
                    s.merkle_root,
                    hex::encode(&s.public_key)
                );
            }
        }
        AuditCommand::Seals => {
            for s in audit::list_seals(pool).await? {
                println!(
                    "#{:<4} {:>9}..{:<9} {:>8} events  root {}  sealed {}",
                    s.seq,
                    s.from_position,
                    s.to_position,
                    s.event_count,
                    s.merkle_root,
                    s.sealed_at.to_rfc3339()
                );
            }
        }
        AuditCommand::Verify(args) => {
            let trusted_key = match &args.public_key {
                Some(k) => public_key(k)?,
                None => SealKey::load(pool, seal_key).await?.public_key(),
            };
            let options = VerifyOptions {
                from: args.from,
                to: args.to,
                trusted_key,
            };
            let progress = bar(0);
            let report = audit::verify(pool, &options, &mut |done, total| {
                progress.set_length(total);
                progress.set_position(done);
            })
            .await?;
            progress.finish_and_clear();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "checked positions {}..{} of {}: {} events, {} seals, seal key {}",
                    report.from,
                    report.to,
                    report.head,
                    report.events,
                    report.seals,
                    report.trusted_key
                );
                // The window no seal protects yet: its events are checked by their chains
                // only, so deleting the newest of them (and lowering the head) would not show.
                println!(
                    "unsealed: {} events, the oldest recorded {:.1} s ago",
                    report.unsealed_events, report.unsealed_age_seconds
                );
                match report.first() {
                    None => {
                        println!("OK: every hash chain and seal re-derives from the stored events")
                    }
                    Some(first) => {
                        println!(
                            "FAILED: {} problem(s); the first in log order is",
                            report.total_problems
                        );
                        println!("  {first}");
                        for p in report.problems.iter().skip(1).take(9) {
                            println!("  then {p}");
                        }
                    }
                }
            }
            if !report.ok() {
                return Err(VerificationFailed.into());
            }
        }
        AuditCommand::History(args) => {
            let mut entries =
                audit::booking_history(pool, args.booking_id, args.as_of.as_of()).await?;
            audit::add_personal_views(&vault, &mut entries).await?;
            for e in entries {
                if args.json {
                    println!("{}", serde_json::to_string(&e)?);
                } else {
                    println!(
                        "{:>7}  {}  {:<22} {:<48} v{:<3} by {}{}{}",
                        e.position,
                        e.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                        e.event_type,
                        e.stream,
                        e.version,
                        e.actor,
                        e.reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default(),
                        match (&e.link, &e.caused_by) {
                            (_, Some(c)) => format!("  <- caused by {c}"),
                            (Some(l), None) if l == "cause" => "  [cause]".to_owned(),
                            _ => String::new(),
                        }
                    );
                }
            }
        }
        AuditCommand::ReadModel(args) => {
            let as_of = args.as_of.as_of();
            let events = audit::booking_events(pool, args.booking_id, as_of).await?;
            let view =
                tessera_projections::replay::booking_read_model(pool, args.booking_id, events)
                    .await?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "as_of": as_of, "read_model": view })
                )?
            );
        }
        AuditCommand::State(args) => {
            let stream = StreamId::new(args.stream.clone())?;
            let state = audit::state_as_of(pool, &vault, &stream, args.as_of.as_of()).await?;
            println!("{}", serde_json::to_string_pretty(&state)?);
        }
        AuditCommand::Log(args) => {
            let page = audit::browse(
                pool,
                &LogQuery {
                    after: args.after,
                    limit: Some(args.limit),
                    event_type: args.event_type.clone(),
                    stream_prefix: args.stream_prefix.clone(),
                    since: args.since,
                    until: args.until,
                },
            )
            .await?;
            let mut page = page;
            audit::add_personal_views(&vault, &mut page.events).await?;
            for e in &page.events {
                if args.json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!(
                        "{:>7}  {}  {:<22} {:<48} v{:<3} by {}",
                        e.position,
                        e.recorded_at.format("%Y-%m-%d %H:%M:%S"),
                        e.event_type,
                        e.stream,
                        e.version,
                        e.actor
                    );
                }
            }
            if !args.json {
                match page.next_after {
                    Some(next) => println!("next page: --after {next}"),
                    None => println!("end of the log"),
                }
            }
        }
        AuditCommand::Export(args) => {
            let key = SealKey::load(pool, seal_key).await?.public_key();
            let mut out: Box<dyn AsyncWrite + Unpin + Send> = match &args.output {
                Some(path) => Box::new(BufWriter::new(
                    tokio::fs::File::create(path)
                        .await
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )),
                None => Box::new(BufWriter::new(tokio::io::stdout())),
            };
            let written = match args.booking {
                Some(id) => {
                    audit::export_booking(pool, &vault, id, AsOf::Head, key, &mut out).await?
                }
                None => {
                    audit::export_range(pool, &vault, args.from, args.to, key, &mut out).await?
                }
            };
            if let Some(path) = &args.output {
                println!("exported {written} events to {}", path.display());
            }
        }
        AuditCommand::VerifyExport(args) => {
            let file = tokio::fs::File::open(&args.file)
                .await
                .with_context(|| format!("cannot open {}", args.file.display()))?;
            let key = args.public_key.as_deref().map(public_key).transpose()?;
            let check = audit::verify_export(BufReader::new(file), key).await?;
            if check.ok() {
                println!(
                    "OK: {} events and {} seals in {} re-derive",
                    check.events,
                    check.seals,
                    args.file.display()
                );
            } else {
                println!("FAILED: {} problem(s)", check.total_problems);
                for p in &check.problems {
                    println!("  {p}");
                }
                return Err(VerificationFailed.into());
            }
        }
    }
    Ok(())
}
