//! The registry of projections in PostgreSQL: which generation is active, who holds the lease,
//! where each generation is in the log, and the swap that makes a rebuilt generation live.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use tessera_log::store::Position;

use crate::Projection;
use crate::error::ProjectionError;

/// One generation of a projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub name: String,
    pub generation: i64,
    pub code_version: i32,
    pub position: i64,
    pub state: String,
}

/// The schema of a PostgreSQL projection's generation.
pub fn schema_name(name: &str, generation: i64) -> String {
    format!("proj_{name}_g{generation}")
}

pub async fn ensure_registered(pool: &PgPool, name: &str) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO projections (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn generation(
    conn: &mut PgConnection,
    name: &str,
    generation: i64,
) -> sqlx::Result<Option<Generation>> {
    let row = sqlx::query(
        "SELECT name, generation, code_version, position, state FROM projection_generations
         WHERE name = $1 AND generation = $2",
    )
    .bind(name)
    .bind(generation)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| Generation {
        name: r.get(0),
        generation: r.get(1),
        code_version: r.get(2),
        position: r.get(3),
        state: r.get(4),
    }))
}

pub async fn active(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<Generation>> {
    let g: Option<Option<i64>> =
        sqlx::query_scalar("SELECT active_generation FROM projections WHERE name = $1")
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    match g.flatten() {
        Some(g) => generation(conn, name, g).await,
        None => Ok(None),
    }
}

/// Creates the next generation of `p` (empty storage, position 0) in state `building`.
pub async fn create_generation(
    pool: &PgPool,
    p: &Projection,
) -> Result<Generation, ProjectionError> {
    Ok(create_generation_deferring(pool, p, false).await?.0)
}

/// Splits a projection's DDL into what must exist while events are applied (tables, keys,
/// unique indexes, views) and its secondary indexes, which a bulk build creates afterwards:
/// one sort per index instead of one B-tree insertion per row.
pub fn split_ddl(ddl: &str) -> (String, Vec<String>) {
    let mut now = String::new();
    let mut later = Vec::new();
    for statement in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        if statement.starts_with("CREATE INDEX") {
            later.push(statement.to_owned());
        } else {
            now.push_str(statement);
            now.push_str(";\n");
        }
    }
    (now, later)
}

/// [`create_generation`], optionally leaving the secondary indexes out; returns them to be run
/// (with [`create_indexes`]) once the generation is built.
pub async fn create_generation_deferring(
    pool: &PgPool,
    p: &Projection,
    defer_indexes: bool,
) -> Result<(Generation, Vec<String>), ProjectionError> {
    let name = p.name();
    ensure_registered(pool, name).await?;
    let mut tx = pool.begin().await?;
    // Serialise generation numbering per projection.
    sqlx::query("SELECT 1 FROM projections WHERE name = $1 FOR UPDATE")
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let next: i64 = sqlx::query_scalar(
        "SELECT coalesce(max(generation), 0) + 1 FROM projection_generations WHERE name = $1",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await?;
    let mut deferred = Vec::new();
    if let Projection::Sql(sql) = p {
        let schema = schema_name(name, next);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT set_config('search_path', $1, true)")
            .bind(format!("{schema}, public"))
            .execute(&mut *tx)
            .await?;
        let (ddl, indexes) = if defer_indexes {
            split_ddl(&sql.ddl())
        } else {
            (sql.ddl(), Vec::new())
        };
        deferred = indexes;
        sqlx::raw_sql(AssertSqlSafe(ddl)).execute(&mut *tx).await?;
        sqlx::query("SELECT set_config('search_path', 'public', true)")
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO projection_generations (name, generation, code_version, state)
         VALUES ($1, $2, $3, 'building')",
    )
    .bind(name)
    .bind(next)
    .bind(i32::try_from(p.version()).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    if let Projection::Search(s) = p {
        s.create_generation(next)?;
    }
    Ok((
        Generation {
            name: name.to_owned(),
            generation: next,
            code_version: i32::try_from(p.version()).unwrap_or(i32::MAX),
            position: 0,
            state: "building".into(),
        },
        deferred,
    ))
}

/// Runs deferred index statements in a generation's schema.
pub async fn create_indexes(
    pool: &PgPool,
    name: &str,
    generation: i64,
    indexes: &[String],
) -> Result<(), ProjectionError> {
    if indexes.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(format!("{}, public", schema_name(name, generation)))
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(indexes.join(";\n")))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Makes `new` the active generation, inside the caller's transaction (which must hold the
/// projection's registry row lock): re-points the `read` views and retires the old generation.
/// Returns the retired generation number, whose storage the caller drops after committing.
pub async fn activate(
    tx: &mut PgConnection,
    p: &Projection,
    new: i64,
) -> Result<Option<i64>, ProjectionError> {
    let name = p.name();
    let old: Option<i64> =
        sqlx::query_scalar("SELECT active_generation FROM projections WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
    if let Projection::Sql(_) = p {
        let mut relations = Vec::new();
        for g in old.iter().chain(std::iter::once(&new)) {
            let rels: Vec<String> = sqlx::query_scalar(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'v') ORDER BY c.relname",
            )
            .bind(schema_name(name, *g))
            .fetch_all(&mut *tx)
            .await?;
            relations.push(rels);
        }
        let mut sql = String::new();
        for rel in relations.iter().flatten() {
            sql.push_str(&format!("DROP VIEW IF EXISTS read.{rel};\n"));
        }
        let schema = schema_name(name, new);
        for rel in relations.last().into_iter().flatten() {
            sql.push_str(&format!(
                "CREATE VIEW read.{rel} AS SELECT * FROM {schema}.{rel};\n"
            ));
        }
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    sqlx::query(
        "UPDATE projection_generations SET state = 'retired', finished_at = now()
         WHERE name = $1 AND state = 'active'",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE projection_generations SET state = 'active', finished_at = now()
         WHERE name = $1 AND generation = $2",
    )
    .bind(name)
    .bind(new)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE projections SET active_generation = $2, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(new)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(PROGRESS_CHANNEL)
        .bind(progress_payload(name, None))
        .execute(&mut *tx)
        .await?;
    Ok(old.filter(|o| *o != new))
}

/// The PostgreSQL notification channel on which a projection announces that it moved (a batch
/// committed, a generation was activated); see [`progress_payload`] for the payload.
pub const PROGRESS_CHANNEL: &str = "tessera_projection_progress";

/// A progress notification's payload: `<name> <position>` when a live batch of the active
/// generation committed (notifications arrive in commit order, so it is the projection's
/// position then), only `<name>` when the active generation changed (its position may be
/// lower: read it).
pub fn progress_payload(name: &str, position: Option<Position>) -> String {
    match position {
        Some(p) => format!("{name} {}", p.0),
        None => name.to_owned(),
    }
}

/// A progress notification's projection and, if it carries one, its new position.
pub fn parse_progress(payload: &str) -> (&str, Option<i64>) {
    match payload.split_once(' ') {
        Some((name, position)) => (name, position.parse().ok()),
        None => (payload, None),
    }
}

/// Every projection's active generation and its position (what readers of `read.*` see), as
/// (name, generation, position).
pub async fn positions(pool: &PgPool) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "SELECT p.name, g.generation, g.position FROM projections p
           JOIN projection_generations g ON g.name = p.name AND g.generation = p.active_generation",
    )
    .fetch_all(pool)
    .await
}

/// Drops the storage of a generation that is no longer active (or a failed rebuild's).
pub async fn drop_generation(
    pool: &PgPool,
    p: &Projection,
    generation: i64,
) -> Result<(), ProjectionError> {
    match p {
        Projection::Sql(_) => {
            let schema = schema_name(p.name(), generation);
            sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(pool)
            .await?;
        }
        Projection::Search(s) => s.drop_generation(generation)?,
    }
    sqlx::query("DELETE FROM projection_generations WHERE name = $1 AND generation = $2 AND state <> 'active'")
        .bind(p.name())
        .bind(generation)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drops every generation of `p` left `building` by a process that is gone. The caller holds
/// the projection's rebuild lease on `lock` (so no live rebuild is building one).
pub async fn drop_unfinished(
    pool: &PgPool,
    lock: &mut PgConnection,
    p: &Projection,
) -> Result<(), ProjectionError> {
    let unfinished: Vec<i64> = sqlx::query_scalar(
        "SELECT generation FROM projection_generations WHERE name = $1 AND state = 'building'",
    )
    .bind(p.name())
    .fetch_all(&mut *lock)
    .await?;
    for g in unfinished {
        tracing::info!(
            projection = p.name(),
            generation = g,
            "dropping a generation a stopped process left unfinished"
        );
        drop_generation(pool, p, g).await?;
    }
    Ok(())
}

/// Records that a projection stopped on an error.
pub async fn record_failure(pool: &PgPool, name: &str, e: &ProjectionError) -> sqlx::Result<()> {
    let (position, event_type) = match e {
        ProjectionError::Event {
            position,
            event_type,
            ..
        } => (
            Some(i64::try_from(position.0).unwrap_or(i64::MAX)),
            Some(event_type.clone()),
        ),
        _ => (None, None),
    };
    sqlx::query(
        "UPDATE projections SET state = 'failed', error = $2, error_position = $3,
                error_event_type = $4, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(e.to_string())
    .bind(position)
    .bind(event_type)
    .execute(pool)
    .await?;
    Ok(())
}

/// What `tessera projections status` and the analyst API show.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// live | rebuilding | failed | stopped
    pub state: String,
    pub generation: Option<i64>,
    pub code_version: Option<i32>,
    pub position: i64,
    pub head: i64,
    pub lag_events: i64,
    /// Age of the oldest event not yet applied (0 when caught up).
    pub lag_seconds: f64,
    pub owner: Option<String>,
    pub error: Option<String>,
    pub error_position: Option<i64>,
    pub error_event_type: Option<String>,
    /// A generation being rebuilt, with its position.
    pub rebuilding: Option<(i64, i64)>,
    pub updated_at: DateTime<Utc>,
}

/// Every registered projection's state, position and lag.
pub async fn status(pool: &PgPool) -> sqlx::Result<Vec<ProjectionStatus>> {
    let rows = sqlx::query(
        "WITH leases AS MATERIALIZED (
             -- Read once: the lock table is scanned by a function, not an index.
             SELECT classid::int8 AS high, objid::int8 AS low FROM pg_locks
              WHERE locktype = 'advisory' AND granted AND objsubid = 1
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         )
         SELECT p.name, p.state, p.active_generation, g.code_version, coalesce(g.position, 0),
                h.position, p.owner_label, p.error, p.error_position, p.error_event_type,
                b.generation, b.position, p.updated_at,
                extract(epoch FROM now() - e.recorded_at)::float8,
                EXISTS (
                    SELECT 1 FROM leases l, LATERAL (
                        SELECT hashtext('tessera.projection.' || p.name)::int8 AS k
                    ) lease
                    WHERE l.high = (lease.k >> 32) & 4294967295 AND l.low = lease.k & 4294967295
                ) AS leased,
                EXISTS (
                    SELECT 1 FROM leases l, LATERAL (
                        SELECT hashtext('tessera.rebuild.' || p.name)::int8 AS k
                    ) lease
                    WHERE l.high = (lease.k >> 32) & 4294967295 AND l.low = lease.k & 4294967295
                ) AS rebuild_leased
         FROM projections p
         CROSS JOIN log_head h
         LEFT JOIN projection_generations g ON g.name = p.name AND g.generation = p.active_generation
         LEFT JOIN LATERAL (
             SELECT generation, position FROM projection_generations
             WHERE name = p.name AND state = 'building' ORDER BY generation DESC LIMIT 1
         ) b ON true
         LEFT JOIN events e ON e.position = coalesce(g.position, 0) + 1
         ORDER BY p.name",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let position: i64 = r.get(4);
            let head: i64 = r.get(5);
            let rebuilding: Option<i64> = r.get(10);
            // The registry row says who took the lease last; the lease itself (a session
            // advisory lock, gone with its connection) says whether anyone holds it now. A
            // process that exited, gracefully or not, holds nothing.
            let leased: bool = r.get(14);
            let state: String = r.get(1);
            let state = if state == "live" && !leased {
                "stopped".to_owned()
            } else {
                state
            };
            // A generation left `building` by a process that is gone is not being built: it
            // resumes when a projector (first build) or a rebuild (later ones) starts again.
            let building_now = leased || r.get::<bool, _>(15);
            // No active generation yet: its first one is being built, nothing is served.
            let generation: Option<i64> = r.get(2);
            ProjectionStatus {
                name: r.get(0),
                state: match (rebuilding.is_some() || generation.is_none(), state.as_str()) {
                    (true, "failed") | (false, _) => state,
                    (true, _) if building_now => "rebuilding".into(),
                    (true, _) => "stopped".into(),
                },
                generation,
                code_version: r.get(3),
                position,
                head,
                lag_events: (head - position).max(0),
                lag_seconds: if head > position {
                    r.get::<Option<f64>, _>(13).unwrap_or(0.0).max(0.0)
                } else {
                    0.0
                },
                owner: if leased { r.get(6) } else { None },
                error: r.get(7),
                error_position: r.get(8),
                error_event_type: r.get(9),
                rebuilding: rebuilding.map(|g| (g, r.get::<Option<i64>, _>(11).unwrap_or(0))),
                updated_at: r.get(12),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::{Position, parse_progress, progress_payload, split_ddl};

    #[test]
    fn secondary_indexes_are_split_out_of_the_ddl() {
        let ddl = "CREATE TABLE a (id uuid PRIMARY KEY, b uuid NOT NULL);
CREATE INDEX a_b ON a (b);
CREATE UNIQUE INDEX a_u ON a (b, id);
CREATE VIEW v AS SELECT * FROM a;";
        let (now, later) = split_ddl(ddl);
        assert_eq!(later, vec!["CREATE INDEX a_b ON a (b)".to_owned()]);
        assert!(now.contains("CREATE TABLE a") && now.contains("CREATE UNIQUE INDEX a_u"));
        assert!(now.contains("CREATE VIEW v") && !now.contains("a_b"));
    }

    #[test]
    fn a_progress_payload_names_the_projection_and_a_live_batch_its_position() {
        let live = progress_payload("bookings", Some(Position(4_711)));
        assert_eq!(parse_progress(&live), ("bookings", Some(4_711)));
        // A generation swap says only which projection moved: its position must be read.
        let swap = progress_payload("search", None);
        assert_eq!(parse_progress(&swap), ("search", None));
        // So does anything unexpected, such as an older process's bare name.
        assert_eq!(parse_progress("stats 12x"), ("stats", None));
    }
}
