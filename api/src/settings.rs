//! The one typed configuration of a `tessera` process: [`Settings`], loaded once in the
//! composition root and passed down. Every knob is a flag, an environment variable and a key of
//! an optional TOML file (`--config`), in that order of precedence over its default. Library
//! crates never read the environment; this is the only file that does (a tidy test keeps it so).
//! The README's settings table is generated from these definitions (a test keeps them equal).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::parser::ValueSource;
use serde::{Deserialize, Serialize};

/// A secret value: parsed like a string, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Everything a `tessera` process can be configured with. Flags are global: they may come
/// before or after the subcommand.
#[derive(Debug, Clone, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// TOML file of settings (keys are the flag names with `_` for `-`); flags and environment
    /// variables override it.
    #[arg(long, env = "TESSERA_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// PostgreSQL to use. Without it, an embedded cluster is started in the data folder.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<Secret>,
    /// Data folder: the embedded PostgreSQL cluster, the search indexes and `mail/`.
    #[arg(
        long,
        env = "TESSERA_DATA_DIR",
        default_value = ".tessera",
        global = true
    )]
    pub data_dir: PathBuf,
    /// Connections in this process's PostgreSQL pool.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 20, global = true,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_connections: u32,
    /// Folder holding PostgreSQL's `initdb` and `pg_ctl` for the embedded cluster; default: the
    /// first found on `PATH`, then the newest under /usr/lib/postgresql.
    #[arg(long, env = "TESSERA_PG_BIN", global = true)]
    pub pg_bin: Option<PathBuf>,

    /// Address the API listens on (port 0: any free port).
    #[arg(
        long,
        env = "TESSERA_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub addr: SocketAddr,
    /// HS256 secret for access tokens (at least 32 bytes); default: one generated per database.
    #[arg(
        long,
        env = "TESSERA_JWT_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub jwt_secret: Option<Secret>,
    /// Ed25519 seed (64 hex characters) that signs the log's seals; default: one generated per
    /// database. Keep it outside the database for real tamper evidence.
    #[arg(long, env = "TESSERA_SEAL_KEY", global = true, hide_env_values = true)]
    pub seal_key: Option<Secret>,
    /// Master key (64 hex characters) that wraps personal-data keys; default: one generated per
    /// database (demos only).
    #[arg(
        long,
        env = "TESSERA_MASTER_KEY",
        global = true,
        hide_env_values = true
    )]
    pub master_key: Option<Secret>,

    /// Stripe secret key; without it payments go through the simulated gateway.
    #[arg(long, env = "STRIPE_SECRET_KEY", global = true, hide_env_values = true)]
    pub stripe_secret_key: Option<Secret>,
    /// Secret that Stripe signs webhooks with.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        global = true,
        hide_env_values = true
    )]
    pub stripe_webhook_secret: Option<Secret>,
    /// Stripe's API root (tests aim it at a local fake).
    #[arg(long, env = "STRIPE_API_BASE", global = true)]
    pub stripe_api_base: Option<String>,

    /// How long held seats stay held before the hold expires, in seconds.
    #[arg(long, env = "TESSERA_HOLD_TTL_SECS", default_value_t = 900, global = true,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub hold_ttl_secs: u64,
    /// How long a provider's share stays held after its slot ends, in seconds (disputes).
    #[arg(long, env = "TESSERA_DISPUTE_WINDOW_SECS", default_value_t = 172_800, global = true,
          value_parser = clap::value_parser!(u64).range(0..=2_592_000))]
    pub dispute_window_secs: u64,
    /// Login attempts per e-mail address, client and minute (ten times that per address).
    #[arg(long, env = "TESSERA_LOGIN_PER_MINUTE", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_per_minute: u32,
    /// Commands per user and second (with a burst of twice that).
    #[arg(long, env = "TESSERA_COMMANDS_PER_SECOND", default_value_t = 20, global = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub commands_per_second: u32,
    /// How long a query waits for the read models to reach a requested position, in ms.
    #[arg(
        long,
        env = "TESSERA_READ_WAIT_MS",
        default_value_t = 2_000,
        global = true
    )]
    pub read_wait_ms: u64,
    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "TESSERA_ACCESS_TTL_SECS", default_value_t = 900, global = true,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds.
    #[arg(long, env = "TESSERA_REFRESH_TTL_SECS", default_value_t = 2_592_000, global = true,
          value_parser = clap::value_parser!(u64).range(60..))]
    pub refresh_ttl_secs: u64,
    /// Entries of the read cache (listing details, search pages); 0 turns it off.
    #[arg(
        long,
        env = "TESSERA_CACHE_CAPACITY",
        default_value_t = 20_000,
        global = true
    )]
    pub cache_capacity: u64,
    /// Aggregates (slots, listings) whose decided state the command side keeps; 0 turns it off.
    #[arg(
        long,
        env = "TESSERA_AGGREGATE_CAPACITY",
        default_value_t = 100_000,
        global = true
    )]
    pub aggregate_capacity: u64,
    /// Holds that may wait in one slot's queue (a rush on one slot); one more is answered 503
    /// `service.busy` with `Retry-After`.
    #[arg(long, env = "TESSERA_SLOT_QUEUE_DEPTH", default_value_t = 4_096, global = true,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub slot_queue_depth: u64,
    /// Most holds on one slot decided and appended together.
    #[arg(long, env = "TESSERA_SLOT_BATCH", default_value_t = 256, global = true,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub slot_batch: u64,

    /// SMTP server for messages (`smtp://user:pass@host:587?tls=required`, `smtps://host:465`,
    /// `smtp://localhost:2525`); without it each message is written as an `.eml` file into the
    /// data folder's `mail/`.
    #[arg(long, env = "TESSERA_SMTP_URL", global = true, hide_env_values = true)]
    pub smtp_url: Option<Secret>,
    /// The sender of messages.
    #[arg(
        long,
        env = "TESSERA_MAIL_FROM",
        default_value = "Tessera <no-reply@tessera.test>",
        global = true
    )]
    pub mail_from: String,
    /// The platform's public address, for links in messages; default: `http://` and `--addr`.
    #[arg(long, env = "TESSERA_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,
    /// How long before a slot starts its reminder goes, in hours.
    #[arg(long, env = "TESSERA_REMINDER_HOURS", default_value_t = 24, global = true,
          value_parser = clap::value_parser!(u64).range(1..=720))]
    pub reminder_hours: u64,
    /// Delivery attempts of a message before it is dead-lettered (backoff from 30 s, doubling,
    /// at most 1 h apart).
    #[arg(long, env = "TESSERA_MAIL_MAX_ATTEMPTS", default_value_t = 8, global = true,
          value_parser = clap::value_parser!(u32).range(1..=50))]
    pub mail_max_attempts: u32,

    /// Let webhook endpoints point at loopback, private and link-local addresses (local
    /// development only: otherwise a provider could make the platform call internal services).
    #[arg(
        long,
        env = "TESSERA_WEBHOOK_ALLOW_PRIVATE",
        default_value_t = false,
        global = true
    )]
    pub webhook_allow_private: bool,
    /// Let webhook endpoints use `http://` (local development only).
    #[arg(
        long,
        env = "TESSERA_WEBHOOK_ALLOW_HTTP",
        default_value_t = false,
        global = true
    )]
    pub webhook_allow_http: bool,
    /// Hours a webhook endpoint may fail (since its last success) before it is disabled and its
    /// owner told.
    #[arg(long, env = "TESSERA_WEBHOOK_DISABLE_AFTER_HOURS", default_value_t = 24, global = true,
          value_parser = clap::value_parser!(u64).range(1..=720))]
    pub webhook_disable_after_hours: u64,

    /// Niceness (0..=19) of the read side's threads in `tessera up` (projectors, reactors): above
    /// 0, requests win the CPU from them, and under load projections lag instead of commands
    /// waiting.
    #[arg(long, env = "TESSERA_READ_SIDE_NICE", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u8).range(0..=19))]
    pub read_side_nice: u8,
    /// What to log, as a tracing filter (`info`, `tessera_api=debug,sqlx=warn`, …); to stderr.
    #[arg(
        long,
        env = "RUST_LOG",
        default_value = "info,sqlx=warn",
        global = true
    )]
    pub log: String,
    /// How often `tessera up` seals the log's new events, in ms.
    #[arg(long, env = "TESSERA_SEAL_EVERY_MS", default_value_t = 1_000, global = true,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub seal_every_ms: u64,
}

impl Settings {
    /// The settings given on the command line and in the environment, completed from the TOML
    /// file they name (for every setting neither of them gave).
    pub fn with_file(self, matches: &clap::ArgMatches) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the settings file {}", path.display()))?;
        let file: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let mut merged = serde_json::to_value(&self).context("settings")?;
        let fields = merged
            .as_object_mut()
            .context("settings are a JSON object")?;
        for (key, value) in file {
            if key == "config" || !fields.contains_key(&key) {
                let mut known: Vec<&String> = fields.keys().filter(|k| *k != "config").collect();
                known.sort();
                anyhow::bail!(
                    "{}: unknown setting {key:?} (known: {})",
                    path.display(),
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let given = matches!(
                matches.value_source(&key),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            if !given {
                let value = serde_json::to_value(value).context("a TOML value")?;
                fields.insert(key, value);
            }
        }
        let settings: Self = serde_json::from_value(merged)
            .with_context(|| format!("{}: a setting has the wrong type", path.display()))?;
        settings.validate(&path)?;
        Ok(settings)
    }

    /// The bounds the command line enforces, for values that came from a file.
    fn validate(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let checks: [(&str, bool); 14] = [
            (
                "webhook_disable_after_hours",
                (1..=720).contains(&self.webhook_disable_after_hours),
            ),
            ("reminder_hours", (1..=720).contains(&self.reminder_hours)),
            (
                "mail_max_attempts",
                (1..=50).contains(&self.mail_max_attempts),
            ),
            (
                "max_connections",
                (1..=10_000).contains(&self.max_connections),
            ),
            ("hold_ttl_secs", (60..=86_400).contains(&self.hold_ttl_secs)),
            ("dispute_window_secs", self.dispute_window_secs <= 2_592_000),
            ("login_per_minute", self.login_per_minute >= 1),
            ("commands_per_second", self.commands_per_second >= 1),
            (
                "access_ttl_secs",
                (10..=86_400).contains(&self.access_ttl_secs),
            ),
            ("refresh_ttl_secs", self.refresh_ttl_secs >= 60),
            ("read_side_nice", self.read_side_nice <= 19),
            ("seal_every_ms", self.seal_every_ms >= 10),
            (
                "slot_queue_depth",
                (1..=1_000_000).contains(&self.slot_queue_depth),
            ),
            ("slot_batch", (1..=10_000).contains(&self.slot_batch)),
        ];
        for (name, ok) in checks {
            anyhow::ensure!(ok, "{}: {name} is out of range", path.display());
        }
        Ok(())
    }

    /// Where this process's database lives (`database` names it inside the embedded cluster).
    pub fn db_config(&self, database: &str) -> crate::startup::db::DbConfig {
        crate::startup::db::DbConfig {
            database_url: self.database_url.as_ref().map(|s| s.expose().to_owned()),
            data_dir: self.data_dir.clone(),
            database: database.to_owned(),
            max_connections: self.max_connections,
            pg_bin: self.pg_bin.clone(),
            search_path: search_path(),
            master_key: self.master_key.as_ref().map(|s| s.expose().to_owned()),
        }
    }

    /// Where messages go and what they link to.
    pub fn notifications(&self) -> crate::startup::NotificationOptions {
        crate::startup::NotificationOptions {
            smtp_url: self.smtp_url.as_ref().map(|s| s.expose().to_owned()),
            mail_dir: self.mail_dir(),
            from: self.mail_from.clone(),
            public_url: self
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", self.addr)),
            reminder_before: Duration::from_secs(self.reminder_hours * 3600),
            max_attempts: self.mail_max_attempts,
            webhook_disable_after: Duration::from_secs(self.webhook_disable_after_hours * 3600),
        }
    }

    /// Where messages are written without an SMTP server.
    pub fn mail_dir(&self) -> PathBuf {
        self.data_dir.join("mail")
    }

    /// Stripe's credentials, when payments go through Stripe.
    pub fn stripe(&self) -> Option<crate::startup::StripeConfig> {
        let secret_key = self.stripe_secret_key.as_ref()?.expose().to_owned();
        Some(crate::startup::StripeConfig {
            secret_key,
            webhook_secret: self
                .stripe_webhook_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .unwrap_or_default(),
            api_base: self.stripe_api_base.clone(),
        })
    }

    /// The HTTP layer's limits and lifetimes.
    pub fn api_config(&self) -> crate::http::ApiConfig {
        crate::http::ApiConfig {
            login_per_minute: self.login_per_minute,
            commands_per_second: self.commands_per_second,
            read_wait: Duration::from_millis(self.read_wait_ms),
            access_ttl: Duration::from_secs(self.access_ttl_secs),
            refresh_ttl: Duration::from_secs(self.refresh_ttl_secs),
            cache_capacity: self.cache_capacity,
            aggregate_capacity: self.aggregate_capacity,
            hold_ttl: Duration::from_secs(self.hold_ttl_secs),
            slot_queues: tessera_commands::onsale::QueueConfig {
                depth: self.slot_queue_depth as usize,
                max_batch: self.slot_batch as usize,
            },
            dispute_window: Duration::from_secs(self.dispute_window_secs),
            webhook_urls: tessera_notify::webhooks::UrlPolicy {
                allow_http: self.webhook_allow_http,
                allow_private: self.webhook_allow_private,
            },
        }
    }

    /// Where search indexes live.
    pub fn index_root(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// What `tessera up` (`everything`) or `tessera serve` starts in one process.
    pub fn platform_options(&self, everything: bool) -> crate::startup::PlatformOptions {
        crate::startup::PlatformOptions {
            projectors: everything,
            reactors: everything,
            stripe: self.stripe(),
            jwt_secret: self.jwt_secret.as_ref().map(|s| s.expose().to_owned()),
            config: self.api_config(),
            index_root: self.index_root(),
            projector_label: format!("tessera up pid {}", std::process::id()),
            seal_key: self.seal_key.as_ref().map(|s| s.expose().to_owned()),
            seal_every: everything.then(|| Duration::from_millis(self.seal_every_ms)),
            read_side_nice: if everything { self.read_side_nice } else { 0 },
            master_key: self.master_key.as_ref().map(|s| s.expose().to_owned()),
            // `serve` delivers nothing (the read side does) but writes the messages the API
            // itself causes (password resets) to the outbox, with the same sender and links.
            notifications: Some(self.notifications()),
        }
    }

    /// The settings table of the README: flag, environment variable, default, meaning.
    pub fn markdown_table() -> String {
        let command = <Self as clap::Args>::augment_args(clap::Command::new("tessera"));
        let mut out =
            String::from("| flag | environment | default | meaning |\n|---|---|---|---|\n");
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            let env = arg
                .get_env()
                .map(|e| format!("`{}`", e.to_string_lossy()))
                .unwrap_or_default();
            let default = arg
                .get_default_values()
                .iter()
                .map(|v| format!("`{}`", v.to_string_lossy()))
                .collect::<Vec<_>>()
                .join(", ");
            let help = arg
                .get_long_help()
                .or_else(|| arg.get_help())
                .map(|h| h.to_string().replace('\n', " ").replace('|', "\\|"))
                .unwrap_or_default();
            out.push_str(&format!("| `--{long}` | {env} | {default} | {help} |\n"));
        }
        out
    }
}

/// The directories `PATH` names, where the embedded cluster looks for PostgreSQL's programs.
fn search_path() -> Option<OsString> {
    std::env::var_os("PATH")
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches, Parser};

    use super::*;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        settings: Settings,
        #[command(subcommand)]
        command: Option<ProbeCommand>,
    }

    #[derive(Debug, clap::Subcommand)]
    enum ProbeCommand {
        Serve,
    }

    fn load(args: &[&str]) -> anyhow::Result<Settings> {
        let matches = Probe::command().try_get_matches_from(args)?;
        let probe = Probe::from_arg_matches(&matches)?;
        probe.settings.with_file(&matches)
    }

    #[test]
    fn the_readme_lists_every_setting_as_defined_here() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let start = "<!-- settings: generated from api/src/settings.rs -->\n";
        let from = readme
            .find(start)
            .expect("the settings marker in README.md")
            + start.len();
        let to = from
            + readme[from..]
                .find("<!-- /settings -->")
                .expect("the end marker");
        let table = Settings::markdown_table();
        assert!(
            readme[from..to] == table,
            "README.md's settings table is out of date; replace it with:\n{table}"
        );
    }

    #[test]
    fn a_file_fills_what_flags_and_environment_leave_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tessera.toml");
        std::fs::write(
            &file,
            "hold_ttl_secs = 600\nmax_connections = 7\ndata_dir = \"/srv/tessera\"\nstripe_secret_key = \"sk_test_1\"\n",
        )
        .expect("write");
        let path = file.to_str().expect("utf-8");
        let s = load(&["tessera", "--config", path, "--max-connections", "9"]).expect("load");
        assert_eq!(s.hold_ttl_secs, 600, "from the file");
        assert_eq!(s.max_connections, 9, "the flag wins over the file");
        assert_eq!(s.data_dir, PathBuf::from("/srv/tessera"));
        assert_eq!(
            s.stripe().map(|c| c.secret_key).as_deref(),
            Some("sk_test_1")
        );
        assert_eq!(s.commands_per_second, 20, "the default where nobody says");
        assert_eq!(s.api_config().hold_ttl, Duration::from_secs(600));
        assert!(
            !format!("{s:?}").contains("sk_test_1"),
            "secrets are never printed"
        );
    }

    #[test]
    fn a_flag_after_the_subcommand_still_wins_over_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tessera.toml");
        std::fs::write(&file, "max_connections = 7\nhold_ttl_secs = 600\n").expect("write");
        let path = file.to_str().expect("utf-8");
        let s = load(&[
            "tessera",
            "--config",
            path,
            "serve",
            "--max-connections",
            "9",
        ])
        .expect("load");
        assert_eq!(s.max_connections, 9, "the flag after the subcommand wins");
        assert_eq!(s.hold_ttl_secs, 600, "the file fills the rest");
    }

    #[test]
    fn a_file_with_an_unknown_or_out_of_range_setting_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let unknown = dir.path().join("unknown.toml");
        std::fs::write(&unknown, "hold_ttl = 600\n").expect("write");
        let e = load(&["tessera", "--config", unknown.to_str().expect("utf-8")])
            .expect_err("unknown key");
        assert!(
            e.to_string().contains("unknown setting \"hold_ttl\""),
            "{e}"
        );
        let range = dir.path().join("range.toml");
        std::fs::write(&range, "read_side_nice = 40\n").expect("write");
        let e = load(&["tessera", "--config", range.to_str().expect("utf-8")])
            .expect_err("out of range");
        assert!(e.to_string().contains("read_side_nice"), "{e}");
        let typed = dir.path().join("typed.toml");
        std::fs::write(&typed, "max_connections = \"many\"\n").expect("write");
        assert!(load(&["tessera", "--config", typed.to_str().expect("utf-8")]).is_err());
    }
}
