//! Authentication: short-lived access tokens (HS256 JWTs carrying the user's roles) and rotating
//! refresh tokens. A refresh token is used once: using it returns a new one of the same family;
//! using an already-rotated token again (a stolen copy, or a replay) revokes the whole family.
//!
//! The signing secret comes from `TESSERA_JWT_SECRET`, or else is generated once and kept in the
//! database, so every API process of one deployment signs and verifies with the same key.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tessera_domain::user::{Role, User};
use tessera_domain::values::UserId;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;

pub const ISSUER: &str = "tessera";
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
pub const AUDIENCE: &str = "tessera-api";

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// Not valid before (optional; validated when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    pub roles: Vec<Role>,
    /// The session (refresh-token family) the token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
    /// `iat` in milliseconds: tells a token issued just before a password change from one
    /// issued just after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_ms: Option<i64>,
}

impl Claims {
    /// When the token was issued, in milliseconds since the epoch.
    pub fn issued_ms(&self) -> i64 {
        self.iat_ms
            .filter(|ms| ms.div_euclid(1000) == self.iat)
            .unwrap_or(self.iat.saturating_mul(1000))
    }
}

/// Signing and verification keys.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    /// Signs one-click unsubscribe links: HMAC-SHA256 of the token secret and a fixed label,
    /// so it changes with the secret and never reveals it.
    unsubscribe: Vec<u8>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("access_ttl", &self.access_ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    pub fn from_secret(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
            unsubscribe: {
                use aws_lc_rs::hmac;
                let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
                hmac::sign(&key, b"tessera unsubscribe links v1")
                    .as_ref()
                    .to_vec()
            },
        }
    }

    /// The key of the unsubscribe links in optional messages.
    pub fn unsubscribe_key(&self) -> &[u8] {
        &self.unsubscribe
    }

    /// The configured secret, or the deployment's generated one (created on first use).
    pub async fn load(
        pool: &PgPool,
        configured: Option<&str>,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> anyhow::Result<Self> {
        if let Some(secret) = configured {
            anyhow::ensure!(
                secret.len() >= 32,
                "TESSERA_JWT_SECRET must have at least 32 bytes"
            );
            return Ok(Self::from_secret(
                secret.as_bytes(),
                access_ttl,
                refresh_ttl,
            ));
        }
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        sqlx::query(
            "INSERT INTO api_secrets (name, secret) VALUES ('jwt', $1) ON CONFLICT (name) DO NOTHING",
        )
        .bind(fresh.as_slice())
        .execute(pool)
        .await?;
        let secret: Vec<u8> =
            sqlx::query_scalar("SELECT secret FROM api_secrets WHERE name = 'jwt'")
                .fetch_one(pool)
                .await?;
        Ok(Self::from_secret(&secret, access_ttl, refresh_ttl))
    }

    /// A signed access token for `user` in `session` (its refresh-token family).
    pub fn issue(
        &self,
        user: &User,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: user.id.0.to_string(),
            iat: now.timestamp(),
            exp: now.timestamp() + self.access_ttl.as_secs() as i64,
            nbf: None,
            jti: Uuid::new_v4().to_string(),
            roles: user.roles.iter().copied().collect(),
            sid: Some(session),
            iat_ms: Some(now.timestamp_millis()),
        };
        self.sign(&claims)
    }

    /// Signs any claims (tests forge expired or foreign tokens with it).
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies signature, algorithm, expiry, not-before, issuer and audience; refuses a token
    /// issued in the future (beyond the leeway) or living longer than the access-token
    /// lifetime this deployment issues (a token we did not mint, whatever its signature).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| {
                ApiError::Unauthenticated(format!("the access token is not valid: {e}"))
            })?;
        let now = Utc::now().timestamp();
        let leeway = LEEWAY_SECS as i64;
        if claims.iat > now + leeway {
            return Err(ApiError::Unauthenticated(
                "the access token is not valid: it was issued in the future".into(),
            ));
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if lifetime > self.access_ttl.as_secs() as i64 + leeway {
            return Err(ApiError::Unauthenticated(format!(
                "the access token is not valid: it lives {lifetime} s, longer than the {} s this \
                 deployment issues",
                self.access_ttl.as_secs()
            )));
        }
        Ok(claims)
    }
}

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: UserId,
    pub roles: BTreeSet<Role>,
    /// The session (refresh-token family) of the caller's token.
    pub session: Option<Uuid>,
}

impl Caller {
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Refuses unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.has(*r)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs one of the roles {}",
                roles
                    .iter()
                    .map(|r| format!("{r:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    }

    /// The actor recorded on the events this caller's commands write.
    pub fn actor(&self) -> String {
        format!("user:{}", self.user_id.0)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::Unauthenticated("an access token is required".into()))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::Unauthenticated("use `Authorization: Bearer <access token>`".into())
            })?;
        let claims = state.keys.verify(token)?;
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| {
            ApiError::Unauthenticated("the access token has no valid subject".into())
        })?;
        let issued_ms = claims.issued_ms();
        Caller::standing(state, user_id, issued_ms, claims.sid, claims.roles).await
    }
}

impl Caller {
    /// The caller a credential (an access token, a console session) issued at `issued_ms` to
    /// `user_id` stands for now: the credential says who its holder was; the log says who they
    /// are now (existing, not suspended, session not ended by a password change), and the roles
    /// are those `claimed` that the user still holds.
    pub async fn standing(
        state: &AppState,
        user_id: Uuid,
        issued_ms: i64,
        session: Option<Uuid>,
        claimed: impl IntoIterator<Item = Role>,
    ) -> Result<Self, ApiError> {
        let Some(held) = state.principals.current(&*state.store, user_id).await? else {
            return Err(ApiError::Unauthenticated(
                "the account of this access token no longer exists".into(),
            ));
        };
        if held.suspended {
            return Err(ApiError::Unauthenticated(
                "the account of this access token is suspended".into(),
            ));
        }
        if let Some(ended) = held.sessions_ended
            && issued_ms < ended.at.timestamp_millis()
            && (ended.kept.is_none() || session != ended.kept)
        {
            return Err(ApiError::Unauthenticated(
                "this session ended when the account's password changed".into(),
            ));
        }
        Ok(Caller {
            user_id: UserId(user_id),
            roles: claimed
                .into_iter()
                .filter(|r| held.roles.contains(r))
                .collect(),
            session,
        })
    }
}

/// A set of roles a route admits (one of them is enough).
pub trait RoleSet: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Role sets of the API's routes.
pub mod roles {
    use super::{Role, RoleSet};

    macro_rules! role_set {
        ($($(#[$doc:meta])* $name:ident = [$($role:ident),+];)+) => {$(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $name;
            impl RoleSet for $name {
                const ROLES: &'static [Role] = &[$(Role::$role),+];
            }
        )+};
    }

    role_set! {
        /// Customers.
        Customer = [Customer];
        /// Providers.
        Provider = [Provider];
        /// Providers, and admins acting for them.
        ProviderOrAdmin = [Provider, Admin];
        /// Admins.
        Admin = [Admin];
        /// Whoever reads statistics: admins, analysts, auditors.
        Staff = [Admin, Analyst, Auditor];
        /// Analysts and admins (projections).
        AnalystOrAdmin = [Analyst, Admin];
        /// Auditors and admins.
        AuditorOrAdmin = [Auditor, Admin];
    }
}

/// An authenticated caller holding one of `R`'s roles. An extractor, so that the role is checked
/// before anything else about the request (its body, its query) is looked at: a caller without
/// the role learns nothing about what the route would accept.
#[derive(Debug, Clone)]
pub struct Require<R: RoleSet> {
    pub caller: Caller,
    roles: std::marker::PhantomData<R>,
}

impl<R: RoleSet> std::ops::Deref for Require<R> {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.caller
    }
}

impl<R: RoleSet> FromRequestParts<AppState> for Require<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(R::ROLES)?;
        Ok(Self {
            caller,
            roles: std::marker::PhantomData,
        })
    }
}

/// A caller, when the request carries a token.
#[derive(Debug, Clone)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            Ok(Self(Some(Caller::from_request_parts(parts, state).await?)))
        } else {
            Ok(Self(None))
        }
    }
}

fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Issues a refresh token for `user` in `family` (a new family at login).
pub async fn issue_refresh(
    pool: &PgPool,
    user: UserId,
    family: Uuid,
    ttl: Duration,
) -> Result<String, ApiError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("rt_{}", hex::encode(raw));
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(token_hash(&token))
    .bind(family)
    .bind(user.0)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(token)
}

/// A refresh token that was just used.
#[derive(Debug, Clone, Copy)]
pub struct Rotated {
    pub user: UserId,
    pub family: Uuid,
    /// When the used token was issued.
    pub issued_at: DateTime<Utc>,
}

/// Uses a refresh token: returns its user and family, having marked it rotated. A token that was
/// already rotated revokes its family (reuse detection).
pub async fn rotate_refresh(pool: &PgPool, token: &str) -> Result<Rotated, ApiError> {
    let invalid = || ApiError::Unauthenticated("the refresh token is not valid".into());
    let hash = token_hash(token);
    let rotated: Option<(Uuid, Uuid, DateTime<Utc>)> = sqlx::query_as(
        "UPDATE refresh_tokens SET rotated_at = now()
          WHERE token_hash = $1 AND rotated_at IS NULL AND revoked_at IS NULL AND expires_at > now()
          RETURNING user_id, family_id, issued_at",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    if let Some((user, family, issued_at)) = rotated {
        return Ok(Rotated {
            user: UserId(user),
            family,
            issued_at,
        });
    }
    // Not usable: unknown, expired, revoked, or rotated already. The last is a reuse.
    let reused: Option<Uuid> = sqlx::query_scalar(
        "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND rotated_at IS NOT NULL",
    )
    .bind(&hash)
    .fetch_optional(pool)
    .await?;
    if let Some(family) = reused {
        revoke_family(pool, family).await?;
        tracing::warn!(%family, "a rotated refresh token was used again; its family is revoked");
        return Err(ApiError::Unauthenticated(
            "the refresh token was already used; every session of its family is revoked".into(),
        ));
    }
    Err(invalid())
}

/// Revokes every token of a family.
pub async fn revoke_family(pool: &PgPool, family: Uuid) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
    )
    .bind(family)
    .execute(pool)
    .await?;
    Ok(())
}

/// Revokes every session of `user` but `except` (a suspension, a password change).
pub async fn revoke_sessions(
    pool: &PgPool,
    user: UserId,
    except: Option<Uuid>,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now()
          WHERE user_id = $1 AND revoked_at IS NULL AND family_id IS DISTINCT FROM $2",
    )
    .bind(user.0)
    .bind(except)
    .execute(pool)
    .await?;
    Ok(())
}

/// How long a password-reset link works.
pub const RESET_TTL: Duration = Duration::from_secs(3600);
/// At most this many reset links per user and hour; more requests send nothing.
pub const RESETS_PER_HOUR: i64 = 3;

/// A new password-reset token for `user` (only its hash is kept), or `None` when the user
/// asked for [`RESETS_PER_HOUR`] links within the hour already.
pub async fn issue_reset(
    pool: &PgPool,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<Option<String>, ApiError> {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = format!("pr_{}", hex::encode(raw));
    let expires = now + chrono::TimeDelta::from_std(RESET_TTL).unwrap_or_default();
    // Requests for one account take turns (a transaction-scoped advisory lock on the user), so
    // two at once cannot both slip under the limit.
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))")
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
    let inserted = sqlx::query(
        "INSERT INTO password_resets (token_hash, user_id, created_at, expires_at)
         SELECT $1, $2, $3, $4
          WHERE (SELECT count(*) FROM password_resets
                  WHERE user_id = $2 AND created_at > $3 - interval '1 hour') < $5",
    )
    .bind(token_hash(&token))
    .bind(user.0)
    .bind(now)
    .bind(expires)
    .bind(RESETS_PER_HOUR)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok((inserted == 1).then_some(token))
}

/// Uses a password-reset token: its user, once, before it expires. Every other link of the
/// user stops working too.
pub async fn use_reset(
    pool: &PgPool,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Option<UserId>, ApiError> {
    let user: Option<Uuid> = sqlx::query_scalar(
        "UPDATE password_resets SET used_at = $2
          WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2
          RETURNING user_id",
    )
    .bind(token_hash(token))
    .bind(now)
    .fetch_optional(pool)
    .await?;
    if let Some(user) = user {
        sqlx::query(
            "UPDATE password_resets SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user)
        .bind(now)
        .execute(pool)
        .await?;
    }
    Ok(user.map(UserId))
}

/// The family of a refresh token (for logout), if the token is known.
pub async fn family_of(pool: &PgPool, token: &str) -> Result<Option<Uuid>, ApiError> {
    Ok(
        sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(token_hash(token))
            .fetch_optional(pool)
            .await?,
    )
}
