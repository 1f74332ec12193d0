//! The `tessera` binary: parses the command line and hands over to [`tessera_api::cli`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = tessera_api::cli::Cli::parse();
    tessera_api::telemetry::init();
    match tessera_api::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<tessera_api::audit::VerificationFailed>() => {
            std::process::ExitCode::from(2)
        }
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
