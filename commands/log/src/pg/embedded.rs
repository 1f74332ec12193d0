//! An embedded PostgreSQL cluster: started from the installed server binaries in a data folder of
//! ours, on a private loopback port with a generated password, and stopped by whoever started it.
//!
//! PostgreSQL refuses to run as root. When we are root, the server runs as an unprivileged OS
//! user (`postgres` when the package created it, otherwise a `tessera-pg` system user that we
//! create), which must be able to reach the data folder.
//!
//! Layout of the folder (default `./.tessera/`):
//! - `credentials.json`: user and password of the cluster (mode 0600);
//! - `pg/data/`: the cluster (owned by the server user); `pg/server.log`: its log;
//! - `.lock`: serialises concurrent starts of the same folder (e.g. parallel test processes).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tokio::process::Command;

/// What can go wrong starting or stopping the embedded cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or under \
         /usr/lib/postgresql/*/bin: install the `postgresql` package (apt-get install -y postgresql) \
         or set DATABASE_URL"
    )]
    BinariesNotFound,
    #[error("cannot {what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "running as root and no unprivileged user for PostgreSQL could be found or created: {0}"
    )]
    NoServerUser(String),
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error(
        "the data folder {0} holds a cluster but no credentials.json; remove the folder to start afresh"
    )]
    MissingCredentials(PathBuf),
    #[error("the embedded PostgreSQL did not accept connections: {0}")]
    NotReady(#[source] sqlx::Error),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io { what, path, source }
}

/// How to start the cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The data folder (created if missing).
    pub root: PathBuf,
    /// `false` trades crash safety for speed (fsync off): only for throwaway test clusters.
    pub durable: bool,
    /// `max_connections` of the server.
    pub max_connections: u32,
    /// Leave the server running when this process stops using it (for a cluster shared by
    /// processes that come and go, like the test harness's).
    pub keep_running: bool,
    /// The folder holding `initdb` and `pg_ctl`; when `None` (or without them), the first
    /// folder of `search_path` that holds both, then the newest under /usr/lib/postgresql.
    pub pg_bin: Option<PathBuf>,
    /// Folders to look for PostgreSQL's programs in (a `PATH`-style list). The caller passes
    /// the process's `PATH`: this crate reads no environment.
    pub search_path: Option<std::ffi::OsString>,
}

impl EmbeddedOptions {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            durable: true,
            max_connections: 100,
            keep_running: false,
            pg_bin: None,
            search_path: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Credentials {
    user: String,
    password: String,
}

/// The unprivileged OS user the server runs as when we are root.
#[derive(Debug, Clone, Copy)]
struct ServerUser {
    uid: u32,
    gid: u32,
}

/// A running embedded cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    server_user: Option<ServerUser>,
    credentials: Credentials,
    port: u16,
    started_here: bool,
    /// A shared lock on `users.lock`, held for as long as this process uses the cluster: the
    /// last process to let go of it (the one that can take it exclusively) stops the server,
    /// whether it started it or found it running (after a crash of the process that started it).
    users: Option<fs::File>,
    /// Keep the server running when this process stops (the test harness's shared cluster).
    keep_running: bool,
}

impl EmbeddedPostgres {
    /// Starts the cluster in `options.root`, initialising it first if needed. When it is already
    /// running (another process started it), it is reused and [`Self::stop`] leaves it running.
    pub async fn start(options: &EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir(options)?;
        let server_user = server_user().await?;
        let root = &options.root;
        fs::create_dir_all(root).map_err(io_err("create the data folder", root))?;
        let root = fs::canonicalize(root).map_err(io_err("resolve the data folder", root))?;

        let lock_path = root.join(".lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("open the lock file", &lock_path))?;
        let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
            .await
            .map_err(|e| EmbeddedError::Io {
                what: "lock the data folder",
                path: lock_path.clone(),
                source: io::Error::other(e),
            })?
            .map_err(io_err("lock the data folder", &lock_path))?;

        let pg_dir = root.join("pg");
        let data_dir = pg_dir.join("data");
        fs::create_dir_all(&pg_dir).map_err(io_err("create the cluster folder", &pg_dir))?;
        fs::set_permissions(&pg_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("restrict the cluster folder", &pg_dir))?;
        if let Some(user) = server_user {
            chown(&pg_dir, user)?;
            make_reachable(&root)?;
        }

        let credentials_path = root.join("credentials.json");
        let initialised = data_dir.join("PG_VERSION").exists();
        let credentials = if initialised {
            let text = fs::read_to_string(&credentials_path)
                .map_err(|_| EmbeddedError::MissingCredentials(root.clone()))?;
            serde_json::from_str(&text)
                .map_err(|_| EmbeddedError::MissingCredentials(root.clone()))?
        } else {
            let credentials = Credentials {
                user: "tessera".into(),
                password: uuid::Uuid::new_v4().simple().to_string(),
            };
            write_private(
                &credentials_path,
                &serde_json::to_string_pretty(&credentials).unwrap_or_default(),
            )?;
            init_cluster(
                &bin_dir,
                &pg_dir,
                &data_dir,
                server_user,
                &credentials,
                options,
            )
            .await?;
            credentials
        };

        // Registered as a user of the cluster before it is started or reused, under the start
        // lock: a process stopping meanwhile sees this one and leaves the server running.
        let users_path = root.join("users.lock");
        let users = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&users_path)
            .map_err(io_err("open the users lock file", &users_path))?;
        users
            .lock_shared()
            .map_err(io_err("lock the users lock file", &users_path))?;

        let mut me = Self {
            bin_dir,
            data_dir,
            server_user,
            credentials,
            port: 0,
            started_here: false,
            users: Some(users),
            keep_running: options.keep_running,
        };
        match me.running_port().await? {
            Some(port) if me.answers(port).await => {
                tracing::info!(port, data = %me.data_dir.display(), "reusing the running embedded PostgreSQL");
                me.port = port;
            }
            found => {
                if let Some(port) = found {
                    tracing::warn!(
                        port,
                        data = %me.data_dir.display(),
                        "postmaster.pid names a server that does not answer (a crash?); starting a new one"
                    );
                    // Its pid now belongs to another process (or to none): the file is stale,
                    // and the server would refuse to start over it.
                    if !me.postmaster_is_ours() {
                        let pid_file = me.data_dir.join("postmaster.pid");
                        fs::remove_file(&pid_file)
                            .map_err(io_err("remove a stale postmaster.pid", &pid_file))?;
                    }
                }
                me.start_server(&pg_dir).await?;
                me.started_here = true;
            }
        }
        drop(lock);
        me.wait_ready().await?;
        Ok(me)
    }

    /// Whether a server of this data folder answers on `port`: the postmaster named in
    /// `postmaster.pid` is alive and is a `postgres` process of this data folder (not a process
    /// that happens to have its old pid), and it accepts connections within a few seconds (it
    /// may still be starting or recovering).
    async fn answers(&self, port: u16) -> bool {
        if !self.postmaster_is_ours() {
            return false;
        }
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username(&self.credentials.user)
            .password(&self.credentials.password)
            .database("postgres");
        for _ in 0..50 {
            if let Ok(conn) = options.connect().await {
                let _ = sqlx::Connection::close(conn).await;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Whether the pid in `postmaster.pid` is a live `postgres` process of this data folder.
    fn postmaster_is_ours(&self) -> bool {
        let pid_file = self.data_dir.join("postmaster.pid");
        let pid: Option<u32> = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()));
        let Some(pid) = pid else { return false };
        let ours = fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_postgres = args
                .first()
                .is_some_and(|a| a.ends_with("postgres") || a.ends_with("postmaster"));
            let data = self.data_dir.to_string_lossy();
            is_postgres && args.iter().any(|a| a.as_str() == data)
        });
        // A thread id is a pid too: the postmaster is a process, its own thread-group leader.
        let leader = fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .is_some_and(|tgid| tgid.trim() == pid.to_string())
        });
        ours && leader
    }

    /// Connection options for one database of the cluster.
    pub fn connect_options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username(&self.credentials.user)
            .password(&self.credentials.password)
            .database(database)
    }

    /// A connection URL for one database of the cluster (for child processes' `DATABASE_URL`).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{database}",
            self.credentials.user, self.credentials.password, self.port
        )
    }

    /// The port the server listens on (loopback only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether this process started the server (and so stops it in [`Self::stop`]).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// Stops the server when this process is the last one using it (whether it started the
    /// server or found it running); leaves it running for the others otherwise, or when the
    /// options asked to keep it running.
    pub async fn stop(mut self) -> Result<(), EmbeddedError> {
        let Some(users) = self.users.take() else {
            return Ok(());
        };
        if self.keep_running {
            return Ok(());
        }
        // Converting the shared lock to an exclusive one succeeds only when nobody else holds it.
        let last = match users.try_lock() {
            Ok(()) => true,
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(e)) => {
                return Err(EmbeddedError::Io {
                    what: "lock the users lock file",
                    path: self.data_dir.clone(),
                    source: e,
                });
            }
        };
        if !last {
            tracing::info!("other processes use the embedded PostgreSQL: leaving it running");
            return Ok(());
        }
        let mut cmd = self.pg_ctl();
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60"]);
        run(cmd, "pg_ctl stop").await?;
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }

    fn pg_ctl(&self) -> Command {
        command(
            &self.bin_dir.join("pg_ctl"),
            self.server_user,
            self.data_dir.parent(),
        )
    }

    /// The port of a server already running on this data folder, if any.
    async fn running_port(&self) -> Result<Option<u16>, EmbeddedError> {
        let mut cmd = self.pg_ctl();
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        let out = cmd
            .output()
            .await
            .map_err(io_err("run pg_ctl status", &self.bin_dir))?;
        if !out.status.success() {
            return Ok(None);
        }
        // postmaster.pid: line 4 is the port.
        let pid_file = self.data_dir.join("postmaster.pid");
        let text =
            fs::read_to_string(&pid_file).map_err(io_err("read postmaster.pid", &pid_file))?;
        Ok(text.lines().nth(3).and_then(|l| l.trim().parse().ok()))
    }

    async fn start_server(&mut self, pg_dir: &Path) -> Result<(), EmbeddedError> {
        let log = pg_dir.join("server.log");
        let mut last_error = None;
        // After a crash of the postmaster its orphaned backends hold the old shared memory for
        // a moment, and a start fails until they are gone: retry, with a pause, a while.
        for attempt in 0..10 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let port = free_port()?;
            let mut cmd = self.pg_ctl();
            cmd.arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "120", "-o"])
                .arg(format!("-p {port}"));
            match run(cmd, "pg_ctl start").await {
                Ok(()) => {
                    tracing::info!(port, data = %self.data_dir.display(), "embedded PostgreSQL started");
                    self.port = port;
                    return Ok(());
                }
                Err(e) => last_error = Some(e),
            }
        }
        let tail = fs::read_to_string(&log)
            .map(|t| t.lines().rev().take(5).collect::<Vec<_>>().join(" | "))
            .unwrap_or_default();
        Err(match last_error {
            Some(EmbeddedError::Command {
                what,
                status,
                output,
            }) => EmbeddedError::Command {
                what,
                status,
                output: format!("{output}; server log: {tail}"),
            },
            Some(other) => other,
            None => EmbeddedError::BinariesNotFound,
        })
    }

    async fn wait_ready(&self) -> Result<(), EmbeddedError> {
        let options = self.connect_options("postgres");
        let mut attempt = 0;
        loop {
            match options.connect().await {
                Ok(conn) => {
                    let _ = sqlx::Connection::close(conn).await;
                    return Ok(());
                }
                Err(e) if attempt >= 50 => return Err(EmbeddedError::NotReady(e)),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn init_cluster(
    bin_dir: &Path,
    pg_dir: &Path,
    data_dir: &Path,
    server_user: Option<ServerUser>,
    credentials: &Credentials,
    options: &EmbeddedOptions,
) -> Result<(), EmbeddedError> {
    if data_dir.exists() {
        // A half-made cluster from an interrupted initdb.
        fs::remove_dir_all(data_dir)
            .map_err(io_err("remove a half-initialised cluster", data_dir))?;
    }
    let pwfile = pg_dir.join("pwfile");
    write_private(&pwfile, &credentials.password)?;
    if let Some(user) = server_user {
        chown(&pwfile, user)?;
    }
    let mut cmd = command(&bin_dir.join("initdb"), server_user, Some(pg_dir));
    cmd.arg("-D")
        .arg(data_dir)
        .arg("-U")
        .arg(&credentials.user)
        .arg(format!("--pwfile={}", pwfile.display()))
        .args([
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        ]);
    if !options.durable {
        cmd.arg("--no-sync");
    }
    let result = run(cmd, "initdb").await;
    let _ = fs::remove_file(&pwfile);
    result?;

    let mut conf = format!(
        "\n# --- written by tessera ---\n\
         listen_addresses = '127.0.0.1'\n\
         unix_socket_directories = ''\n\
         max_connections = {}\n\
         shared_buffers = 256MB\n\
         max_wal_size = 4GB\n\
         idle_in_transaction_session_timeout = '5min'\n",
        options.max_connections
    );
    if !options.durable {
        conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
    }
    let conf_path = data_dir.join("postgresql.conf");
    let mut text =
        fs::read_to_string(&conf_path).map_err(io_err("read postgresql.conf", &conf_path))?;
    text.push_str(&conf);
    fs::write(&conf_path, text).map_err(io_err("write postgresql.conf", &conf_path))?;
    Ok(())
}

/// Locates the directory holding `initdb` and `pg_ctl`.
fn find_bin_dir(options: &EmbeddedOptions) -> Result<PathBuf, EmbeddedError> {
    find_bin_dir_in(
        options.pg_bin.clone(),
        options.search_path.clone(),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_bin_dir_in(
    explicit: Option<PathBuf>,
    path: Option<std::ffi::OsString>,
    packaged: &Path,
) -> Result<PathBuf, EmbeddedError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = explicit
        && has_both(&dir)
    {
        return Ok(dir);
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            if has_both(&dir) {
                // Resolve symlinks so pg_ctl finds its sibling `postgres`.
                let real = fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|d| has_both(d));
                return Ok(real.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir(packaged)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(EmbeddedError::BinariesNotFound)
}

/// `None` when we are not root; otherwise the unprivileged user to run the server as.
async fn server_user() -> Result<Option<ServerUser>, EmbeddedError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let lookup = |name: &str| {
        nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| ServerUser {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            })
    };
    if let Some(user) = lookup("postgres").or_else(|| lookup("tessera-pg")) {
        return Ok(Some(user));
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "tessera-pg",
        ])
        .output()
        .await
        .map_err(|e| EmbeddedError::NoServerUser(format!("useradd: {e}")))?;
    if !out.status.success() && lookup("tessera-pg").is_none() {
        return Err(EmbeddedError::NoServerUser(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ));
    }
    lookup("tessera-pg")
        .map(Some)
        .ok_or_else(|| EmbeddedError::NoServerUser("tessera-pg was not created".into()))
}

fn command(program: &Path, user: Option<ServerUser>, cwd: Option<&Path>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LC_ALL", "C").kill_on_drop(false);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    if let Some(user) = user {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

async fn run(mut cmd: Command, what: &str) -> Result<(), EmbeddedError> {
    let out = cmd.output().await.map_err(|e| EmbeddedError::Command {
        what: what.to_owned(),
        status: "could not run".into(),
        output: e.to_string(),
    })?;
    if out.status.success() {
        return Ok(());
    }
    let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    if output.is_empty() {
        output = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    }
    Err(EmbeddedError::Command {
        what: what.to_owned(),
        status: out.status.to_string(),
        output,
    })
}

fn chown(path: &Path, user: ServerUser) -> Result<(), EmbeddedError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(io_err("hand the cluster folder to the server user", path))
}

/// The server user must be able to traverse every ancestor of the data folder. Directories made
/// private (mode 0700, as `mktemp -d` makes them) get the search bit for others, and only that.
fn make_reachable(root: &Path) -> Result<(), EmbeddedError> {
    for dir in root.ancestors() {
        let meta = fs::metadata(dir).map_err(io_err("inspect a parent folder", dir))?;
        let mode = meta.mode();
        if mode & 0o001 == 0 {
            tracing::warn!(folder = %dir.display(), "adding o+x (search only) so the PostgreSQL server user can reach its data folder");
            fs::set_permissions(dir, fs::Permissions::from_mode((mode & 0o7777) | 0o001))
                .map_err(io_err("open a parent folder for traversal", dir))?;
        }
    }
    Ok(())
}

fn write_private(path: &Path, contents: &str) -> Result<(), EmbeddedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("write a private file", path))?;
    file.write_all(contents.as_bytes())
        .map_err(io_err("write a private file", path))
}

fn free_port() -> Result<u16, EmbeddedError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(io_err("find a free port", Path::new("127.0.0.1")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(io_err("find a free port", Path::new("127.0.0.1")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_name_the_package_to_install() {
        let empty = std::env::temp_dir().join(format!("tessera-nobin-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&empty).expect("temp dir");
        let err = find_bin_dir_in(Some(empty.clone()), Some(empty.clone().into()), &empty)
            .expect_err("nothing to find");
        let message = err.to_string();
        assert!(matches!(err, EmbeddedError::BinariesNotFound));
        assert!(
            message.contains("apt-get install -y postgresql"),
            "{message}"
        );
        assert_eq!(message.lines().count(), 1, "a one-line error");
        fs::remove_dir_all(&empty).expect("cleanup");
    }

    #[test]
    fn packaged_binaries_prefer_the_newest_version() {
        let root = std::env::temp_dir().join(format!("tessera-bins-{}", uuid::Uuid::new_v4()));
        for v in ["9", "15", "13"] {
            let bin = root.join(v).join("bin");
            fs::create_dir_all(&bin).expect("dir");
            fs::write(bin.join("initdb"), "").expect("file");
            fs::write(bin.join("pg_ctl"), "").expect("file");
        }
        let found = find_bin_dir_in(None, None, &root).expect("found");
        assert_eq!(found, root.join("15").join("bin"));
        fs::remove_dir_all(&root).expect("cleanup");
    }
}
