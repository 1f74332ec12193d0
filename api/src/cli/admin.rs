//! `tessera admin …`: the compensating commands and GDPR erasure from the command line. Each one
//! names the admin who issues it (who must hold the admin role) and requires a reason; both are
//! recorded on the events, exactly as over HTTP.

#![allow(clippy::print_stdout)] // A command line prints its answers.

use anyhow::Context;
use tessera_commands::admin;
use tessera_commands::booking::{BookingConfig, current_booking};
use tessera_commands::handler::{CommandContext, Executed};
use tessera_domain::user::Role;
use tessera_domain::values::{BookingId, Money, UserId};
use tessera_log::clock::new_command_id;
use uuid::Uuid;

use crate::settings::Settings;
use crate::startup::db::Database;

#[derive(Debug, Clone, clap::Args)]
pub struct Issuer {
    /// The admin issuing the command (user id); recorded as the actor.
    #[arg(long = "as", value_name = "ADMIN_ID")]
    pub admin: Uuid,
    /// Why (required; recorded on every event).
    #[arg(long)]
    pub reason: String,
    /// Command id: the same id retried is applied once (default: a fresh one).
    #[arg(long)]
    pub command_id: Option<Uuid>,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// Refund part or all of what was paid for a booking (amount in minor units).
    Refund {
        booking: Uuid,
        #[arg(long)]
        amount_minor: i64,
        #[command(flatten)]
        issuer: Issuer,
    },
    /// Cancel a booking; `--waive-fee` refunds everything, otherwise its policy applies.
    ForceCancel {
        booking: Uuid,
        #[arg(long)]
        waive_fee: bool,
        #[command(flatten)]
        issuer: Issuer,
    },
    /// Bring an expired booking back to held (only with room, unless `--allow-overbook`).
    Reinstate {
        booking: Uuid,
        #[arg(long)]
        allow_overbook: bool,
        #[command(flatten)]
        issuer: Issuer,
    },
    /// Add or remove loyalty points.
    Points {
        user: Uuid,
        #[arg(long, allow_hyphen_values = true)]
        delta: i64,
        #[command(flatten)]
        issuer: Issuer,
    },
    /// GDPR erasure: records the erasure and destroys the person's data key.
    Erase {
        user: Uuid,
        #[command(flatten)]
        issuer: Issuer,
    },
}

pub async fn run(db: &Database, settings: &Settings, command: &AdminCommand) -> anyhow::Result<()> {
    let store = crate::startup::store(db).await?;
    let vault = crate::startup::vault(db).await?;
    let issuer = match command {
        AdminCommand::Refund { issuer, .. }
        | AdminCommand::ForceCancel { issuer, .. }
        | AdminCommand::Reinstate { issuer, .. }
        | AdminCommand::Points { issuer, .. }
        | AdminCommand::Erase { issuer, .. } => issuer,
    };
    let admin_user = tessera_commands::users::current_user(&*store, UserId(issuer.admin))
        .await
        .with_context(|| format!("{} is not a user", issuer.admin))?;
    anyhow::ensure!(
        admin_user.roles.contains(&Role::Admin),
        "{} does not hold the admin role",
        issuer.admin
    );
    let ctx = CommandContext::new(
        issuer.command_id.unwrap_or_else(new_command_id),
        format!("user:{}", issuer.admin),
        chrono::Utc::now(),
    )
    .with_reason(issuer.reason.clone());
    let executed: Executed = match command {
        AdminCommand::Refund {
            booking,
            amount_minor,
            ..
        } => {
            let (b, _) = current_booking(&*store, BookingId(*booking)).await?;
            let amount = Money {
                minor: *amount_minor,
                currency: b.total.currency,
            };
            admin::refund(&*store, BookingId(*booking), amount, &ctx).await?
        }
        AdminCommand::ForceCancel {
            booking, waive_fee, ..
        } => {
            admin::force_cancel(
                &*store,
                BookingId(*booking),
                UserId(issuer.admin),
                *waive_fee,
                &ctx,
            )
            .await?
        }
        AdminCommand::Reinstate {
            booking,
            allow_overbook,
            ..
        } => {
            admin::reinstate(
                &*store,
                &BookingConfig {
                    hold_ttl: chrono::TimeDelta::seconds(settings.hold_ttl_secs as i64),
                },
                BookingId(*booking),
                *allow_overbook,
                &ctx,
            )
            .await?
        }
        AdminCommand::Points { user, delta, .. } => {
            admin::adjust_points(&*store, UserId(*user), *delta, &ctx).await?
        }
        AdminCommand::Erase { user, .. } => {
            admin::erase_user(&*store, &vault, UserId(*user), &ctx).await?
        }
    };
    println!(
        "{} at position {} (command {}, by user:{}, reason: {})",
        if executed.replayed {
            "already applied"
        } else {
            "applied"
        },
        executed.position,
        ctx.command_id,
        issuer.admin,
        issuer.reason
    );
    Ok(())
}
