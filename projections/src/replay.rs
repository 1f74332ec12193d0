//! "What did the read model say at time T?" for auditors: the bookings projection's own `apply`
//! is replayed over one booking's events up to a moment, into a throwaway schema inside a
//! transaction that is rolled back. Nothing is read from (or left in) the live read models.

use sqlx::{AssertSqlSafe, PgPool};
use tessera_log::store::RecordedEvent;
use uuid::Uuid;

use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::models::bookings::Bookings;

/// The booking's row and timeline as the bookings projection would have shown them after
/// exactly `events` (the booking's own and its payments' events, in log order). `None` when the
/// booking did not exist yet.
pub async fn booking_read_model(
    pool: &PgPool,
    booking_id: Uuid,
    events: Vec<RecordedEvent>,
) -> Result<Option<serde_json::Value>, ProjectionError> {
    let projection = Bookings;
    let batch = events
        .into_iter()
        .map(|e| Envelope::decode(e, projection.name()))
        .collect::<Result<Vec<_>, _>>()?;
    let schema = format!("audit_replay_{}", Uuid::new_v4().simple());
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut *tx)
        .await?;
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(&schema)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(AssertSqlSafe(projection.ddl()))
        .execute(&mut *tx)
        .await?;
    projection.apply(&mut tx, &batch).await?;
    let view: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT json_build_object(
                    'booking', row_to_json(b),
                    'timeline', (SELECT coalesce(json_agg(row_to_json(t) ORDER BY t.position), '[]')
                                   FROM booking_timeline t WHERE t.booking_id = b.booking_id))
           FROM bookings b WHERE b.booking_id = $1",
    )
    .bind(booking_id)
    .fetch_optional(&mut *tx)
    .await?;
    // Rolled back: the schema and everything in it disappear.
    tx.rollback().await?;
    Ok(view)
}
