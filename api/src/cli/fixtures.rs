//! `tessera fixtures load`: deterministic demo and benchmark data, generated through the
//! command handlers into an empty log.

use chrono::NaiveDate;

use crate::startup::db::Database;
use crate::startup::{FixtureLoad, load_fixtures};

#[derive(Debug, clap::Subcommand)]
pub enum FixturesCommand {
    /// Generate history into an empty log (same seed and day, same log).
    Load(FixturesArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct FixturesArgs {
    /// tiny | small | medium | large
    #[arg(long, default_value = "small")]
    pub scale: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Last day of the history (slots run 90 days past it). Default: today.
    #[arg(long)]
    pub until: Option<NaiveDate>,
    /// Append every command straight to PostgreSQL instead of staging the log in memory and
    /// copying it in bulk (the same log, much slower: the baseline of the staged load).
    #[arg(long)]
    pub direct: bool,
}

/// `tessera fixtures …`.
pub async fn run(db: &Database, command: &FixturesCommand) -> anyhow::Result<()> {
    match command {
        FixturesCommand::Load(args) => {
            let load = FixtureLoad {
                scale: args.scale.clone(),
                seed: args.seed,
                until: args.until,
                direct: args.direct,
                quiet: false,
            };
            load_fixtures(db, &load).await.map(|_| ())
        }
    }
}
