//! Test harness: a fresh PostgreSQL database for every test.
//!
//! With `TEST_DATABASE_URL` set (a role allowed to create databases) that server is used;
//! otherwise one throwaway embedded cluster (fsync off) is started under
//! `target/tessera-test-pg/` and shared by every test process of the run (and reused by the next
//! run). Migrations are applied once into a template database named after their checksums; each
//! test gets `CREATE DATABASE … TEMPLATE …`, which is a file copy and fast, and drops it when
//! done. Databases left behind by killed test processes are swept on the next run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions, Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

use crate::pg::embedded::{EmbeddedOptions, EmbeddedPostgres};
use crate::pg::{MIGRATOR, connect, migrate};

struct Server {
    admin: PgConnectOptions,
    /// The server's URL up to (without) the database name.
    base_url: String,
    template: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where the shared test cluster lives unless `TESSERA_TEST_PG_DIR` says otherwise.
pub fn test_cluster_dir() -> PathBuf {
    std::env::var_os("TESSERA_TEST_PG_DIR").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../target/tessera-test-pg"
            ))
        },
        PathBuf::from,
    )
}

async fn server() -> &'static Server {
    SERVER
        .get_or_init(|| async {
            let (admin, base_url) = match std::env::var("TEST_DATABASE_URL") {
                Ok(url) => {
                    let admin = url
                        .parse::<PgConnectOptions>()
                        .expect("TEST_DATABASE_URL is not a valid PostgreSQL URL");
                    let authority = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                    let host = authority.split(['/', '?']).next().unwrap_or(authority);
                    let scheme = url.split_once("://").map_or("postgres", |(s, _)| s);
                    (admin, format!("{scheme}://{host}/"))
                }
                Err(_) => {
                    let mut options = EmbeddedOptions::new(test_cluster_dir());
                    options.pg_bin = std::env::var_os("TESSERA_PG_BIN").map(PathBuf::from);
                    options.search_path = std::env::var_os("PATH");
                    options.durable = false;
                    options.max_connections = 500;
                    options.keep_running = true;
                    let pg = EmbeddedPostgres::start(&options)
                        .await
                        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
                    // The cluster outlives this process on purpose: later test processes reuse it.
                    (pg.connect_options("postgres"), pg.url(""))
                }
            };
            let template = prepare_template(&admin).await;
            Server {
                admin,
                base_url,
                template,
            }
        })
        .await
}

/// Creates the template database for the current migrations (once per cluster) and sweeps
/// databases of test processes that no longer exist.
async fn prepare_template(admin: &PgConnectOptions) -> String {
    let mut digest = Sha256::new();
    for m in MIGRATOR.iter() {
        digest.update(m.version.to_be_bytes());
        digest.update(&*m.checksum);
    }
    let name = format!("tessera_tmpl_{}", &hex::encode(digest.finalize())[..16]);
    let mut conn = admin.connect().await.expect("connect to the test server");
    // Serialise template creation and sweeping across concurrent test processes.
    conn.execute("SELECT pg_advisory_lock(727274)")
        .await
        .expect("advisory lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
    if !exists {
        let building = format!("{name}_building");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"
        )))
        .await
        .expect("drop a half-built template");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{building}\""
        )))
        .await
        .expect("create the template database");
        let pool = connect(admin.clone().database(&building), 2)
            .await
            .expect("connect to the template database");
        migrate(&pool).await.expect("migrate the template database");
        pool.close().await;
        conn.execute(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE \"{building}\" RENAME TO \"{name}\""
        )))
        .await
        .expect("publish the template database");
    }
    sweep_orphans(&mut conn).await;
    conn.execute("SELECT pg_advisory_unlock(727274)")
        .await
        .expect("advisory unlock");
    let _ = conn.close().await;
    name
}

/// Drops test databases whose process is gone (named `t_<pid>_…`).
async fn sweep_orphans(conn: &mut PgConnection) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let Some(pid) = name.split('_').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if PathBuf::from(format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = conn
            .execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await;
    }
}

/// A fresh, migrated database that is dropped when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    pub pool: PgPool,
    name: String,
    admin: PgConnectOptions,
    base_url: String,
}

impl TestDatabase {
    pub async fn new() -> Self {
        let server = server().await;
        let name = format!(
            "t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut conn = server
            .admin
            .connect()
            .await
            .expect("connect to the test server");
        conn.execute(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{}\"",
            server.template
        )))
        .await
        .expect("create the test database");
        let _ = conn.close().await;
        let options = server.admin.clone().database(&name);
        let pool = connect(options.clone(), 20)
            .await
            .expect("connect to the test database");
        Self {
            pool,
            name,
            admin: server.admin.clone(),
            base_url: server.base_url.clone(),
        }
    }

    /// Connection options of this database (for tests that need their own connections).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.admin.clone().database(&self.name)
    }

    /// A URL of this database, for child processes (`DATABASE_URL`).
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url, self.name)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = self.admin.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of its own.
        // The pool is not closed from there (its sockets belong to the test's runtime): dropping
        // the database WITH (FORCE) ends its connections.
        let dropper = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = admin.connect().await {
                    let _ = conn
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .await;
                    let _ = conn.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
