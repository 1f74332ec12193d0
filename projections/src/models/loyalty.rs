//! Loyalty: each user's balance and its parts, badges, the history of every points movement,
//! and a leaderboard. The user is named by the stream (`loyalty-<user id>`).

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::loyalty::LoyaltyEvent;
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use super::{inconsistent, json, keys};
use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows::{self, Rows};

#[derive(Debug, Default)]
pub struct Loyalty;

const NAME: &str = "loyalty";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountRow {
    pub user_id: Uuid,
    pub balance: i64,
    pub awarded: i64,
    pub reversed: i64,
    pub redeemed: i64,
    pub adjusted: i64,
    pub badges: BTreeSet<String>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryRow {
    pub position: i64,
    pub user_id: Uuid,
    /// awarded | reversed | redeemed | adjusted | badge
    pub kind: String,
    pub points: i64,
    pub reason: Option<String>,
    pub booking_id: Option<Uuid>,
    pub badge: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

fn word(e: &Envelope, v: &impl Serialize) -> Result<String, ProjectionError> {
    Ok(json(NAME, e, v)?.as_str().unwrap_or_default().to_owned())
}

#[async_trait]
impl SqlProjection for Loyalty {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        // 2: points history indexed by booking (a booking's points effects).
        2
    }

    fn ddl(&self) -> String {
        r#"
CREATE TABLE loyalty_accounts (
    user_id uuid PRIMARY KEY, balance bigint NOT NULL, awarded bigint NOT NULL,
    reversed bigint NOT NULL, redeemed bigint NOT NULL, adjusted bigint NOT NULL,
    badges jsonb NOT NULL, updated_at timestamptz NOT NULL
);
CREATE INDEX loyalty_leaderboard ON loyalty_accounts (balance DESC, user_id);
CREATE TABLE points_history (
    position bigint PRIMARY KEY, user_id uuid NOT NULL, kind text NOT NULL, points bigint NOT NULL,
    reason text, booking_id uuid, badge text, actor text NOT NULL, at timestamptz NOT NULL
);
CREATE INDEX points_history_user ON points_history (user_id, position DESC);
CREATE INDEX points_history_booking ON points_history (booking_id) WHERE booking_id IS NOT NULL;
CREATE VIEW leaderboard AS
    SELECT rank() OVER (ORDER BY balance DESC) AS rank, user_id, balance, badges
    FROM loyalty_accounts;
"#
        .to_owned()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let loyalty = |e: &Envelope| matches!(e.event, AnyEvent::Loyalty(_));
        let mut users = Vec::new();
        for e in batch.iter().filter(|e| loyalty(e)) {
            users.push(e.stream_uuid().ok_or_else(|| {
                inconsistent(NAME, e, format!("stream {} names no user", e.stream_id))
            })?);
        }
        if users.is_empty() {
            return Ok(());
        }
        let mut accounts: Rows<Uuid, AccountRow> = Rows::default();
        for r in rows::load::<AccountRow>(conn, "loyalty_accounts", "user_id", &keys(users)).await?
        {
            accounts.rows.insert(r.user_id, r);
        }
        let mut history = Vec::new();
        for e in batch {
            let AnyEvent::Loyalty(ev) = &e.event else {
                continue;
            };
            let user = e.stream_uuid().unwrap_or_default();
            if accounts.get(&user).is_none() {
                accounts.put(
                    user,
                    AccountRow {
                        user_id: user,
                        balance: 0,
                        awarded: 0,
                        reversed: 0,
                        redeemed: 0,
                        adjusted: 0,
                        badges: BTreeSet::new(),
                        updated_at: e.effective_at,
                    },
                );
            }
            let mut h = HistoryRow {
                position: e.pos(),
                user_id: user,
                kind: String::new(),
                points: 0,
                reason: e.metadata.reason.clone(),
                booking_id: None,
                badge: None,
                actor: e.metadata.actor.clone(),
                at: e.effective_at,
            };
            let row = accounts.get_mut(&user).expect("inserted above");
            match ev {
                LoyaltyEvent::PointsAwarded {
                    points,
                    reason,
                    booking_id,
                    ..
                } => {
                    row.awarded += points;
                    row.balance += points;
                    h.kind = "awarded".into();
                    h.points = *points;
                    h.reason = Some(word(e, reason)?);
                    h.booking_id = booking_id.map(|b| b.0);
                }
                LoyaltyEvent::PointsReversed { booking_id, points } => {
                    row.reversed += points;
                    row.balance -= points;
                    h.kind = "reversed".into();
                    h.points = -points;
                    h.booking_id = Some(booking_id.0);
                }
                LoyaltyEvent::PointsRedeemed {
                    booking_id, points, ..
                } => {
                    row.redeemed += points;
                    row.balance -= points;
                    h.kind = "redeemed".into();
                    h.points = -points;
                    h.booking_id = Some(booking_id.0);
                }
                LoyaltyEvent::PointsAdjusted { delta } => {
                    row.adjusted += delta;
                    row.balance += delta;
                    h.kind = "adjusted".into();
                    h.points = *delta;
                }
                LoyaltyEvent::BadgeEarned { badge } => {
                    let name = word(e, badge)?;
                    row.badges.insert(name.clone());
                    h.kind = "badge".into();
                    h.badge = Some(name);
                }
            }
            row.updated_at = e.effective_at;
            history.push(h);
        }
        rows::upsert(conn, "loyalty_accounts", &["user_id"], accounts.changed()).await?;
        rows::insert(conn, "points_history", &history).await?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model, with the views it answers with.

/// A user's points balance, its parts and badges, as the API shows them.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoyaltyAccount {
    pub user_id: Uuid,
    pub balance: i64,
    pub awarded: i64,
    pub reversed: i64,
    pub redeemed: i64,
    pub adjusted: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub badges: serde_json::Value,
}

impl LoyaltyAccount {
    /// The account of a user who has no points movement yet.
    pub fn empty(user_id: Uuid) -> Self {
        Self {
            user_id,
            balance: 0,
            awarded: 0,
            reversed: 0,
            redeemed: 0,
            adjusted: 0,
            badges: serde_json::json!([]),
        }
    }
}

/// One points movement, as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PointsEntry {
    pub position: i64,
    /// awarded | reversed | redeemed | adjusted | badge
    pub kind: String,
    pub points: i64,
    pub reason: Option<String>,
    pub booking_id: Option<Uuid>,
    pub badge: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// One place of the leaderboard.
#[derive(Debug, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaderboardEntry {
    pub rank: i64,
    pub user_id: Uuid,
    pub balance: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<String>))]
    pub badges: serde_json::Value,
}

/// A user's account (the empty account when they have no points movement yet).
pub async fn account(pool: &sqlx::PgPool, user_id: Uuid) -> Result<LoyaltyAccount, sqlx::Error> {
    let account: Option<LoyaltyAccount> = sqlx::query_as(
        "SELECT user_id, balance, awarded, reversed, redeemed, adjusted, badges
           FROM read.loyalty_accounts WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    Ok(account.unwrap_or_else(|| LoyaltyAccount::empty(user_id)))
}

/// A user's points movements before position `before` (all when `None`), newest first.
pub async fn history(
    pool: &sqlx::PgPool,
    user_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<PointsEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, kind, points, reason, booking_id, badge, actor, at
           FROM read.points_history
          WHERE user_id = $1 AND position < coalesce($2, 9223372036854775807)
          ORDER BY position DESC LIMIT $3",
    )
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The points a booking awarded (and reversed when it was refunded), in log order.
pub async fn booking_points(
    pool: &sqlx::PgPool,
    booking_id: Uuid,
) -> Result<Vec<PointsEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT position, kind, points, reason, booking_id, badge, actor, at
           FROM read.points_history WHERE booking_id = $1 ORDER BY position",
    )
    .bind(booking_id)
    .fetch_all(pool)
    .await
}

/// The top 100.
pub async fn leaderboard(pool: &sqlx::PgPool) -> Result<Vec<LeaderboardEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rank, user_id, balance, badges FROM read.leaderboard ORDER BY rank, user_id LIMIT 100",
    )
    .fetch_all(pool)
    .await
}
