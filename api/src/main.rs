//! The `tessera` binary: parses the command line and hands over to [`tessera_api::cli`].

/// mimalloc instead of the system allocator: the request path allocates (JSON in and out, query
/// results), and glibc's malloc was a tenth of the API's CPU time under load (ADR 0008).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = match tessera_api::cli::Cli::load() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tessera_api::telemetry::init(&cli.settings.log);
    match tessera_api::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) if error.is::<tessera_api::cli::audit::VerificationFailed>() => {
            std::process::ExitCode::from(2)
        }
        Err(error) => {
            // One line, on standard error (where the log goes too): not once per channel.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
