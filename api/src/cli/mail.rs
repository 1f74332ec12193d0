//! `tessera outbox …` (what people were told; dead letters retried or discarded by an admin,
//! with a reason) and `tessera mail tail` (the messages written to the data folder's `mail/`
//! when no SMTP server is configured, printed as they arrive).

#![allow(clippy::print_stdout)] // A command line prints its answers.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tessera_domain::user::Role;
use tessera_domain::values::UserId;
use tessera_notify::outbox::{self, Change};
use uuid::Uuid;

use crate::settings::Settings;
use crate::startup::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum OutboxCommand {
    /// List messages, newest first.
    List {
        /// Only `pending`, `sent`, `dead` or `discarded` ones.
        #[arg(long)]
        status: Option<String>,
        /// Only those to this user.
        #[arg(long)]
        recipient: Option<Uuid>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Queue depth, the oldest waiting message's age, sent, dead.
    Stats,
    /// Put a dead or discarded message back in the queue.
    Retry {
        id: Uuid,
        /// The admin (user id), recorded on the message.
        #[arg(long = "as", value_name = "ADMIN_ID")]
        admin: Uuid,
        #[arg(long)]
        reason: String,
    },
    /// Give up on a pending or dead message.
    Discard {
        id: Uuid,
        #[arg(long = "as", value_name = "ADMIN_ID")]
        admin: Uuid,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum MailCommand {
    /// Print the messages in the data folder's `mail/` (the last few, then each new one as it
    /// arrives, until Ctrl-C).
    Tail {
        /// How many of the messages already there to print first.
        #[arg(long, short = 'n', default_value_t = 10)]
        lines: usize,
        /// Print what is there and exit.
        #[arg(long)]
        no_follow: bool,
    },
}

async fn admin(db: &Database, admin: Uuid) -> anyhow::Result<()> {
    let store = crate::startup::store(db).await?;
    let user = tessera_commands::users::current_user(&*store, UserId(admin))
        .await
        .with_context(|| format!("{admin} is not a user"))?;
    anyhow::ensure!(
        user.roles.contains(&Role::Admin),
        "{admin} does not hold the admin role"
    );
    Ok(())
}

pub async fn run_outbox(db: &Database, command: &OutboxCommand) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    match command {
        OutboxCommand::List {
            status,
            recipient,
            limit,
            json,
        } => {
            let mut rows = outbox::list(
                &db.pool,
                &outbox::Filter {
                    status: status.clone(),
                    recipient: *recipient,
                    limit: *limit,
                    ..outbox::Filter::default()
                },
            )
            .await?;
            let vault = crate::startup::vault(db).await?;
            outbox::reveal(&vault, &mut rows).await?;
            for r in rows {
                if *json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "{} {:<9} {:<22} {:<32} {} attempts {}{}",
                        r.id,
                        r.status,
                        r.template,
                        r.address.as_deref().unwrap_or("(erased)"),
                        r.created_at.format("%Y-%m-%d %H:%M"),
                        r.attempts,
                        r.last_error
                            .map(|e| format!(", last error: {e}"))
                            .unwrap_or_default()
                    );
                }
            }
        }
        OutboxCommand::Stats => {
            let s = outbox::stats(&db.pool, now).await?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        OutboxCommand::Retry {
            id,
            admin: a,
            reason,
        }
        | OutboxCommand::Discard {
            id,
            admin: a,
            reason,
        } => {
            anyhow::ensure!(!reason.trim().is_empty(), "a reason is required");
            admin(db, *a).await?;
            let retry = matches!(command, OutboxCommand::Retry { .. });
            let verb = if retry { "retried" } else { "discarded" };
            let note = format!("{verb} by user:{a}: {}", reason.trim());
            let change = if retry {
                outbox::retry(&db.pool, *id, now, &note).await?
            } else {
                outbox::discard(&db.pool, *id, &note).await?
            };
            match change {
                Change::Done => println!("message {id} {verb}"),
                Change::NotFound => anyhow::bail!("no message {id}"),
                Change::NotAllowed => anyhow::bail!("message {id} cannot be {verb} in its state"),
            }
        }
    }
    Ok(())
}

/// `From`, `To`, `Subject` and `Date` of a raw message, unfolded.
fn summary(eml: &str) -> String {
    let head = eml.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let field = |name: &str| {
        unfolded
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    format!(
        "Date: {}\nFrom: {}\nTo: {}\nSubject: {}",
        field("Date"),
        decode_words(&field("From")),
        decode_words(&field("To")),
        decode_words(&field("Subject"))
    )
}

/// Headers outside ASCII arrive as RFC 2047 encoded words (`=?utf-8?b?…?=`); shown decoded.
fn decode_words(raw: &str) -> String {
    use base64::Engine;
    use std::fmt::Write;
    let mut out = String::new();
    for word in raw.split_whitespace() {
        let decoded = word
            .strip_prefix("=?utf-8?b?")
            .or_else(|| word.strip_prefix("=?UTF-8?B?"))
            .and_then(|w| w.strip_suffix("?="))
            .and_then(|w| base64::engine::general_purpose::STANDARD.decode(w).ok())
            .and_then(|b| String::from_utf8(b).ok());
        match decoded {
            Some(d) => out.push_str(&d),
            None => {
                if !out.is_empty() {
                    out.push(' ');
                }
                let _ = write!(out, "{word}");
            }
        }
    }
    out
}

/// The messages in `dir`, oldest first (by modification time, then name).
fn messages(dir: &Path) -> Vec<(std::time::SystemTime, String)> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((modified, e.file_name().to_string_lossy().into_owned()))
        })
        .collect();
    found.sort();
    found
}

pub async fn run_mail(settings: &Settings, command: &MailCommand) -> anyhow::Result<()> {
    let MailCommand::Tail { lines, no_follow } = command;
    let dir = settings.mail_dir();
    if settings.smtp_url.is_some() {
        println!(
            "(messages go to the SMTP server of TESSERA_SMTP_URL; {} holds only older ones)",
            dir.display()
        );
    }
    let mut seen = BTreeSet::new();
    let existing = messages(&dir);
    let skip = existing.len().saturating_sub(*lines);
    for (i, (_, name)) in existing.into_iter().enumerate() {
        if i >= skip {
            print_message(&dir, &name);
        }
        seen.insert(name);
    }
    if *no_follow {
        return Ok(());
    }
    println!("-- following {} (Ctrl-C stops)", dir.display());
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {}
        }
        for (_, name) in messages(&dir) {
            if seen.insert(name.clone()) {
                print_message(&dir, &name);
            }
        }
    }
}

fn print_message(dir: &Path, name: &str) {
    if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
        println!("== {name}\n{}\n", summary(&text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_headers_print_decoded() {
        assert_eq!(decode_words("=?utf-8?b?QmVzdMOkdGlndA==?="), "Bestätigt");
        assert_eq!(decode_words("Plain words"), "Plain words");
        assert_eq!(
            decode_words("=?utf-8?b?S29maSBHYXJjw61h?= <customer6@tessera.test>"),
            "Kofi García <customer6@tessera.test>"
        );
    }
}
