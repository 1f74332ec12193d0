//! Logging setup: a tracing filter from the settings (`--log` / `RUST_LOG`, default
//! `info,sqlx=warn`), human-readable to stderr.

use tracing_subscriber::EnvFilter;

/// Installs the process's subscriber; a filter that does not parse falls back to the default,
/// with a warning naming it.
pub fn init(filter: &str) {
    const DEFAULT: &str = "info,sqlx=warn";
    let (parsed, refused) = match EnvFilter::try_new(filter) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new(DEFAULT), Some(e)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(parsed)
        .with_writer(std::io::stderr)
        .try_init();
    if let Some(e) = refused {
        tracing::warn!(filter, error = %e, "the log filter does not parse; logging at {DEFAULT}");
    }
}
