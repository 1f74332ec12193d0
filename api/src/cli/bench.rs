//! `tessera bench …` (cargo feature `bench`): benchmarks that print what they measured beside
//! a baseline measured in the same run. Not part of the shipped binary.

use crate::bench;
use crate::settings::Settings;

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Event store workloads W1–W4 against a raw-INSERT/SELECT baseline.
    Store(bench::store::StoreBenchArgs),
    /// Full rebuild of every projection over generated history against a raw COPY baseline.
    Rebuild(bench::rebuild::RebuildBenchArgs),
    /// The API over HTTP on the rebuild bench's data: search and holds against plain SQL.
    Http(bench::http::HttpBenchArgs),
    /// A rush on one slot: 1,000 clients holding until sold out, queued, raced, and a CRUD hot row.
    Onsale(bench::onsale::OnsaleBenchArgs),
    /// One hold decision on a cached slot holding 10 to 9,000 bookings (no database).
    Slot(bench::slot::SlotBenchArgs),
}

/// `tessera bench …`.
pub async fn run(settings: &Settings, command: &BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Store(args) => {
            bench::store::run(&settings.db_config("tessera_bench"), args).await
        }
        BenchCommand::Http(args) => bench::http::run(settings, args).await,
        BenchCommand::Slot(args) => bench::slot::run(args),
        BenchCommand::Onsale(args) => bench::onsale::run(settings, args).await,
        BenchCommand::Rebuild(args) => {
            bench::rebuild::run(
                &settings.db_config("tessera_bench_rebuild"),
                &settings.data_dir,
                args,
            )
            .await
        }
    }
}
