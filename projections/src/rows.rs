//! Set-based reads and writes of read-model rows, shared by every PostgreSQL projection.
//!
//! A batch of events is applied in memory to the rows it touches, loaded in one query, and the
//! result is written back in one statement per table: rows travel as one JSON array that
//! PostgreSQL turns into typed rows (`json_populate_recordset`). Row structs name their fields
//! after the table's columns. That keeps a batch of thousands of events at a handful of round
//! trips, which is what makes rebuilds fast.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

/// Rows of one table keyed by id, with the keys that changed (in the order they changed) and
/// the rows removed.
#[derive(Debug)]
pub struct Rows<K, R> {
    pub rows: HashMap<K, R>,
    dirty: Vec<K>,
    seen: HashSet<K>,
    removed: HashMap<K, R>,
}

impl<K, R> Default for Rows<K, R> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            dirty: Vec::new(),
            seen: HashSet::new(),
            removed: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone, R> Rows<K, R> {
    pub fn get(&self, key: &K) -> Option<&R> {
        self.rows.get(key)
    }

    fn touch(&mut self, key: &K) {
        if self.seen.insert(key.clone()) {
            self.dirty.push(key.clone());
        }
    }

    /// The row, marked as changed.
    pub fn get_mut(&mut self, key: &K) -> Option<&mut R> {
        if !self.rows.contains_key(key) {
            return None;
        }
        self.touch(key);
        self.rows.get_mut(key)
    }

    /// Inserts or replaces a row, marked as changed.
    pub fn put(&mut self, key: K, row: R) -> &mut R {
        self.touch(&key);
        self.removed.remove(&key);
        self.rows.entry(key).insert_entry(row).into_mut()
    }

    /// Removes a row: [`Rows::removed`] yields it (for [`delete`]) unless it is put back.
    pub fn remove(&mut self, key: &K) -> Option<&R> {
        let row = self.rows.remove(key)?;
        Some(self.removed.entry(key.clone()).insert_entry(row).into_mut())
    }

    /// The rows present that changed (for [`upsert`]).
    pub fn changed(&self) -> impl Iterator<Item = &R> {
        self.dirty.iter().filter_map(|k| self.rows.get(k))
    }

    /// The rows removed and not put back (for [`delete`]).
    pub fn removed(&self) -> impl Iterator<Item = &R> {
        self.removed.values()
    }
}

/// Loads the rows of `table` whose `key` column is in `keys`.
pub async fn load<R: DeserializeOwned>(
    conn: &mut PgConnection,
    table: &str,
    key: &str,
    keys: &[Uuid],
) -> sqlx::Result<Vec<R>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // JSON text straight into the row struct: no intermediate `Value` tree on either side.
    let sql = format!("SELECT row_to_json(t)::text FROM {table} t WHERE {key} = ANY($1)");
    let docs: Vec<String> = sqlx::query_scalar(AssertSqlSafe(sql))
        .bind(keys)
        .fetch_all(&mut *conn)
        .await?;
    docs.iter()
        .map(|d| serde_json::from_str(d).map_err(|e| sqlx::Error::Decode(Box::new(e))))
        .collect()
}

/// Writes rows, replacing existing ones with the same `conflict` key.
pub async fn upsert<'a, R: Serialize + 'a>(
    conn: &mut PgConnection,
    table: &str,
    conflict: &[&str],
    rows: impl IntoIterator<Item = &'a R>,
) -> sqlx::Result<()> {
    write(conn, table, conflict, Merge::Replace, rows).await
}

/// Adds the numeric columns of `rows` to existing rows with the same key (counters).
pub async fn add<'a, R: Serialize + 'a>(
    conn: &mut PgConnection,
    table: &str,
    conflict: &[&str],
    rows: impl IntoIterator<Item = &'a R>,
) -> sqlx::Result<()> {
    write(conn, table, conflict, Merge::Add, rows).await
}

/// Appends rows (history tables); a duplicate key is an error, never silently merged.
pub async fn insert<'a, R: Serialize + 'a>(
    conn: &mut PgConnection,
    table: &str,
    rows: impl IntoIterator<Item = &'a R>,
) -> sqlx::Result<()> {
    write(conn, table, &[], Merge::None, rows).await
}

/// Deletes the rows of `table` whose `key` columns equal those of one of `rows`.
pub async fn delete<'a, R: Serialize + 'a>(
    conn: &mut PgConnection,
    table: &str,
    key: &[&str],
    rows: impl IntoIterator<Item = &'a R>,
) -> sqlx::Result<()> {
    let rows: Vec<&R> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(());
    }
    let text = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let matches: Vec<String> = key.iter().map(|c| format!("t.{c} = d.{c}")).collect();
    let sql = format!(
        "DELETE FROM {table} t USING json_populate_recordset(NULL::{table}, $1::json) d WHERE {}",
        matches.join(" AND ")
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(text)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Merge {
    None,
    Replace,
    Add,
}

async fn write<'a, R: Serialize + 'a>(
    conn: &mut PgConnection,
    table: &str,
    conflict: &[&str],
    merge: Merge,
    rows: impl IntoIterator<Item = &'a R>,
) -> sqlx::Result<()> {
    let rows: Vec<&R> = rows.into_iter().collect();
    let Some(first) = rows.first() else {
        return Ok(());
    };
    // The column names come from the first row; the rows go as one JSON text, serialised once.
    let serde_json::Value::Object(first) =
        serde_json::to_value(first).map_err(|e| sqlx::Error::Encode(Box::new(e)))?
    else {
        return Ok(());
    };
    let text = serde_json::to_string(&rows).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let columns: Vec<&str> = first.keys().map(String::as_str).collect();
    let list = columns.join(", ");
    let on_conflict = match merge {
        Merge::None => String::new(),
        Merge::Replace | Merge::Add => {
            let set: Vec<String> = columns
                .iter()
                .filter(|c| !conflict.contains(c))
                .map(|c| match merge {
                    Merge::Add => format!("{c} = {table}.{c} + EXCLUDED.{c}"),
                    _ => format!("{c} = EXCLUDED.{c}"),
                })
                .collect();
            if set.is_empty() {
                format!(" ON CONFLICT ({}) DO NOTHING", conflict.join(", "))
            } else {
                format!(
                    " ON CONFLICT ({}) DO UPDATE SET {}",
                    conflict.join(", "),
                    set.join(", ")
                )
            }
        }
    };
    let sql = format!(
        "INSERT INTO {table} ({list}) SELECT {list} FROM json_populate_recordset(NULL::{table}, $1::json){on_conflict}"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(text)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
