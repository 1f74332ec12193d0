//! `tessera ledger check`: the double-entry ledger recomputed from the log, its invariants
//! checked, and reconciled with the payment gateway's own records (Stripe's when Stripe is
//! configured, the simulated gateway's book otherwise). Prints every finding; exits non-zero on
//! any.

#![allow(clippy::print_stdout)] // A command line prints its answers.

use std::sync::Arc;

use anyhow::Context;
use tessera_commands::gateway::{PaymentGateway, SimulatedGateway, StripeGateway};
use tessera_commands::ledger;

use crate::settings::Settings;
use crate::startup::db::Database;

#[derive(Debug, clap::Subcommand)]
pub enum LedgerCommand {
    /// Recompute the ledger from the log and reconcile it with the gateway.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    db: &Database,
    settings: &Settings,
    command: &LedgerCommand,
) -> anyhow::Result<()> {
    let LedgerCommand::Check { json } = command;
    let store = crate::startup::store(db).await?;
    let gateway: Arc<dyn PaymentGateway> = match settings.stripe() {
        Some(s) => Arc::new(
            StripeGateway::new(&s.secret_key, &s.webhook_secret, s.api_base.as_deref())
                .context("cannot set up the Stripe client")?,
        ),
        None => Arc::new(SimulatedGateway::new().0.with_book(db.pool.clone())),
    };
    let report = ledger::check(&*store, &*gateway)
        .await
        .context("the ledger check could not run")?;
    if *json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "ledger: {} postings up to log position {}, reconciled with the {} gateway",
            report.postings, report.position, report.gateway
        );
        for b in &report.balances {
            println!("  {:<60} {:>14} {}", b.account, b.amount_minor, b.currency);
        }
        for v in &report.violations {
            println!("VIOLATION  {v}");
        }
        for d in &report.differences {
            println!("DIFFERENCE {d}");
        }
        for (series, numbers) in &report.documents.series {
            println!("  series {series:<20} {numbers:>8} numbers");
        }
        for f in &report.documents.findings {
            println!("SERIES     {f}");
        }
        if report.is_clean() {
            println!(
                "ok: every posting balances, every invariant holds, the gateway agrees, every series is dense"
            );
        }
    }
    anyhow::ensure!(
        report.is_clean(),
        "the ledger check found {} violation(s), {} difference(s) and {} series finding(s)",
        report.violations.len(),
        report.differences.len(),
        report.documents.findings.len()
    );
    Ok(())
}
