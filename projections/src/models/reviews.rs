//! Reviews and listing ratings (count, sum, average).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::review::ReviewEvent;
use tessera_domain::user::UserEvent;
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows;

#[derive(Debug, Default)]
pub struct Reviews;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReviewRow {
    pub booking_id: Uuid,
    pub listing_id: Uuid,
    pub author_id: Uuid,
    pub rating: i64,
    pub text: String,
    pub written_at: DateTime<Utc>,
}

/// Counters added to the listing's row.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RatingDelta {
    listing_id: Uuid,
    review_count: i64,
    rating_sum: i64,
}

#[async_trait]
impl SqlProjection for Reviews {
    fn name(&self) -> &'static str {
        "reviews"
    }

    fn version(&self) -> u32 {
        // 2: an erased author's review texts are masked.
        2
    }

    fn ddl(&self) -> String {
        r#"
CREATE TABLE reviews (
    booking_id uuid PRIMARY KEY, listing_id uuid NOT NULL, author_id uuid NOT NULL,
    rating bigint NOT NULL, text text NOT NULL, written_at timestamptz NOT NULL
);
CREATE INDEX reviews_listing ON reviews (listing_id, written_at DESC, booking_id);
CREATE TABLE listing_ratings (
    listing_id uuid PRIMARY KEY, review_count bigint NOT NULL, rating_sum bigint NOT NULL,
    rating_avg numeric GENERATED ALWAYS AS (round(rating_sum::numeric / NULLIF(review_count, 0), 2)) STORED
);
"#
        .to_owned()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let mut reviews = Vec::new();
        let mut deltas: std::collections::BTreeMap<Uuid, RatingDelta> = Default::default();
        let mut erased = Vec::new();
        for e in batch {
            if let AnyEvent::User(UserEvent::UserErased { user_id }) = &e.event {
                erased.push(user_id.0);
                continue;
            }
            let AnyEvent::Review(ReviewEvent::ReviewWritten {
                booking_id,
                listing_id,
                author_id,
                rating,
                text,
            }) = &e.event
            else {
                continue;
            };
            reviews.push(ReviewRow {
                booking_id: booking_id.0,
                listing_id: listing_id.0,
                author_id: author_id.0,
                rating: i64::from(*rating),
                text: text.clone(),
                written_at: e.effective_at,
            });
            let d = deltas.entry(listing_id.0).or_insert(RatingDelta {
                listing_id: listing_id.0,
                review_count: 0,
                rating_sum: 0,
            });
            d.review_count += 1;
            d.rating_sum += i64::from(*rating);
        }
        rows::insert(conn, "reviews", &reviews).await?;
        rows::add(conn, "listing_ratings", &["listing_id"], deltas.values()).await?;
        if !erased.is_empty() {
            // GDPR: the texts of an erased author are no longer theirs to show (the ratings stay).
            sqlx::query("UPDATE reviews SET text = $2 WHERE author_id = ANY($1)")
                .bind(&erased)
                .bind(tessera_log::pii::ERASED)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model, with the views it answers with.

/// A review as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReviewView {
    pub booking_id: Uuid,
    pub author_id: Uuid,
    pub rating: i64,
    pub text: String,
    pub written_at: DateTime<Utc>,
}

/// A listing's reviews, newest first.
pub async fn listing_reviews(
    pool: &sqlx::PgPool,
    listing_id: Uuid,
    limit: i64,
) -> Result<Vec<ReviewView>, sqlx::Error> {
    sqlx::query_as(
        "SELECT booking_id, author_id, rating, text, written_at FROM read.reviews
          WHERE listing_id = $1 ORDER BY written_at DESC, booking_id LIMIT $2",
    )
    .bind(listing_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}
