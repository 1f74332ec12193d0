//! Users for admins: who is registered, their roles, whether their address is confirmed, and
//! whether they are suspended or erased. No personal data is kept in plain text: an address is
//! found through its **blind index**, the keyed hash of the address
//! ([`tessera_log::pii::blind_index`], key in `api_secrets`), and a name through the blind
//! indexes of its words, so a copy of this table cannot be matched against a list of addresses
//! or names without the key. Names are shown by the API from the log (decrypted per person).
//! An erased person's row keeps only their id and roles (indexes dropped), as a rebuild
//! reproduces it: the events' personal fields read as placeholders once the key is shredded.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tessera_domain::user::UserEvent;
use tessera_log::codec::AnyEvent;
use uuid::Uuid;

use super::inconsistent;
use crate::SqlProjection;
use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::rows::{self, Rows};

const NAME: &str = "users";

#[derive(Debug, Default)]
pub struct Users;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRow {
    pub user_id: Uuid,
    /// Hex of the address's keyed hash; `None` once erased.
    pub email_index: Option<String>,
    pub email_verified: bool,
    /// Hex of the keyed hash of each word of the display name (lower case).
    pub name_index: Vec<String>,
    pub roles: Vec<String>,
    pub suspended: bool,
    pub suspended_reason: Option<String>,
    pub erased: bool,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

fn user_of(e: &Envelope) -> Option<Uuid> {
    let AnyEvent::User(u) = &e.event else {
        return None;
    };
    Some(match u {
        UserEvent::UserRegistered { user_id, .. }
        | UserEvent::UserProfileUpdated { user_id, .. }
        | UserEvent::RoleGranted { user_id, .. }
        | UserEvent::RoleRevoked { user_id, .. }
        | UserEvent::UserErased { user_id }
        | UserEvent::UserSuspended { user_id, .. }
        | UserEvent::UserUnsuspended { user_id }
        | UserEvent::EmailVerified { user_id }
        | UserEvent::EmailChanged { user_id, .. } => user_id.0,
        _ => return None,
    })
}

fn role_name(role: &tessera_domain::user::Role) -> String {
    serde_json::to_value(role)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[async_trait]
impl SqlProjection for Users {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> u32 {
        1
    }

    fn ddl(&self) -> String {
        r#"
CREATE TABLE users (
    user_id uuid PRIMARY KEY, email_index text, email_verified boolean NOT NULL,
    name_index text[] NOT NULL, roles jsonb NOT NULL,
    suspended boolean NOT NULL, suspended_reason text, erased boolean NOT NULL,
    registered_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, version bigint NOT NULL
);
CREATE UNIQUE INDEX users_email_index ON users (email_index);
CREATE INDEX users_registered ON users (registered_at DESC, user_id);
CREATE INDEX users_name_index ON users USING gin (name_index);
"#
        .to_owned()
    }

    async fn apply(
        &self,
        conn: &mut PgConnection,
        batch: &[Envelope],
    ) -> Result<(), ProjectionError> {
        let touched: Vec<Uuid> = batch.iter().filter_map(user_of).collect();
        if touched.is_empty() {
            return Ok(());
        }
        let key = tessera_log::pii::blind_index_key(&mut *conn).await?;
        let mut users: Rows<Uuid, UserRow> = Rows::default();
        for r in rows::load::<UserRow>(conn, "users", "user_id", &super::keys(touched)).await? {
            users.rows.insert(r.user_id, r);
        }
        for e in batch {
            let Some(id) = user_of(e) else { continue };
            let AnyEvent::User(u) = &e.event else {
                continue;
            };
            if let UserEvent::UserRegistered {
                email,
                display_name,
                email_verified,
                ..
            } = u
            {
                // An erased person's address reads as a placeholder on a rebuild: no index.
                let erased = display_name == tessera_log::pii::ERASED;
                users.put(
                    id,
                    UserRow {
                        user_id: id,
                        email_index: (!erased)
                            .then(|| hex(&tessera_log::pii::blind_index(&key, email.as_str()))),
                        email_verified: *email_verified,
                        name_index: if erased {
                            Vec::new()
                        } else {
                            name_index(&key, display_name)
                        },
                        roles: Vec::new(),
                        suspended: false,
                        suspended_reason: None,
                        erased: false,
                        registered_at: e.effective_at,
                        updated_at: e.effective_at,
                        version: e.pos(),
                    },
                );
            }
            let Some(row) = users.get_mut(&id) else {
                return Err(inconsistent(
                    NAME,
                    e,
                    format!("user {id} was never registered"),
                ));
            };
            match u {
                UserEvent::UserProfileUpdated { display_name, .. } if !row.erased => {
                    row.name_index = name_index(&key, display_name);
                }
                UserEvent::RoleGranted { role, .. } => {
                    let role = role_name(role);
                    if !row.roles.contains(&role) {
                        row.roles.push(role);
                        row.roles.sort();
                    }
                }
                UserEvent::RoleRevoked { role, .. } => {
                    let role = role_name(role);
                    row.roles.retain(|r| *r != role);
                }
                UserEvent::UserSuspended { reason, .. } => {
                    row.suspended = true;
                    row.suspended_reason = Some(reason.clone());
                }
                UserEvent::UserUnsuspended { .. } => {
                    row.suspended = false;
                    row.suspended_reason = None;
                }
                UserEvent::EmailVerified { .. } => row.email_verified = true,
                UserEvent::EmailChanged { email, .. } => {
                    row.email_verified = false;
                    if !row.erased {
                        row.email_index =
                            Some(hex(&tessera_log::pii::blind_index(&key, email.as_str())));
                    }
                }
                UserEvent::UserErased { .. } => {
                    row.erased = true;
                    row.email_index = None;
                    row.name_index.clear();
                }
                _ => {}
            }
            row.updated_at = e.effective_at;
            row.version = e.pos();
        }
        rows::upsert(conn, "users", &["user_id"], users.changed()).await?;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The words of a name, lower case, without punctuation around them.
fn words(name: &str) -> impl Iterator<Item = String> + '_ {
    name.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
}

/// The blind indexes of a name's words (under their own purpose, apart from addresses').
fn name_index(key: &[u8], name: &str) -> Vec<String> {
    let mut index: Vec<String> = words(name)
        .map(|w| {
            hex(&tessera_log::pii::blind_index(
                key,
                &format!("name-word:{w}"),
            ))
        })
        .collect();
    index.sort();
    index.dedup();
    index
}

// ---------------------------------------------------------------------------------------------
// Queries: what the API reads from this read model, with the views it answers with.

/// A user as admins see them.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    pub user_id: Uuid,
    /// Whether the account's address is confirmed.
    pub email_verified: bool,
    pub roles: serde_json::Value,
    pub suspended: bool,
    pub suspended_reason: Option<String>,
    pub erased: bool,
    pub registered_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Which users to list.
#[derive(Debug, Clone, Default)]
pub struct UserFilter {
    /// An exact e-mail address (matched through its blind index).
    pub email: Option<String>,
    /// Whole words of the display name, any case (all of them must be in it).
    pub name: Option<String>,
    pub role: Option<String>,
    pub suspended: Option<bool>,
    pub include_erased: bool,
    pub limit: i64,
    pub offset: i64,
}

/// Users matching `filter`, newest first.
pub async fn search(
    pool: &sqlx::PgPool,
    filter: &UserFilter,
) -> Result<Vec<UserView>, sqlx::Error> {
    let key = index_key(pool).await?;
    let index = filter
        .email
        .as_ref()
        .map(|email| hex(&tessera_log::pii::blind_index(&key, email)));
    let names = filter.name.as_ref().map(|n| name_index(&key, n));
    sqlx::query_as(
        "SELECT user_id, email_verified, roles, suspended, suspended_reason, erased, registered_at,
                updated_at
           FROM read.users
          WHERE ($1::text IS NULL OR email_index = $1)
            AND ($2::text[] IS NULL OR name_index @> $2)
            AND ($3::text IS NULL OR roles ? $3)
            AND ($4::boolean IS NULL OR suspended = $4)
            AND ($5 OR NOT erased)
          ORDER BY registered_at DESC, user_id LIMIT $6 OFFSET $7",
    )
    .bind(index)
    .bind(names)
    .bind(&filter.role)
    .bind(filter.suspended)
    .bind(filter.include_erased)
    .bind(filter.limit)
    .bind(filter.offset)
    .fetch_all(pool)
    .await
}

/// The user registered with `email`, if any (not erased), through the blind index.
pub async fn find_by_email(pool: &sqlx::PgPool, email: &str) -> Result<Option<Uuid>, sqlx::Error> {
    let index = hex(&tessera_log::pii::blind_index(
        &index_key(pool).await?,
        email,
    ));
    sqlx::query_scalar("SELECT user_id FROM read.users WHERE email_index = $1")
        .bind(index)
        .fetch_optional(pool)
        .await
}

async fn index_key(pool: &sqlx::PgPool) -> Result<Vec<u8>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    tessera_log::pii::blind_index_key(&mut conn)
        .await
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))
}
