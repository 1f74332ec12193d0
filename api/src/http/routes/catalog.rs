//! The catalog: search (tantivy), listing details and live slot availability (read models);
//! providers' commands on their own listings and slots.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use tessera_commands::catalog::{self as commands, Acting, ListingChange};
use tessera_domain::listing::{Destination, ItineraryDay, ListingDetails, ListingKind};
use tessera_domain::policy::{CancellationPolicy, RefundTier};
use tessera_domain::user::Role;
use tessera_domain::values::{Currency, ListingId, Money, SlotId, derived_id};
pub use tessera_projections::models::catalog::{self, ListingView, SlotView};
pub use tessera_projections::models::reviews::{self, ReviewView};
pub use tessera_projections::models::stats::{self, Earnings};
use tessera_projections::search::{SearchQuery, Sort};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{CommandResult, IdempotencyKey, answered, context, once};
use crate::http::auth::Caller;
use crate::http::auth::Require;
use crate::http::auth::roles::{Provider, ProviderOrAdmin};
use crate::http::error::{ApiError, FieldError, Problem};
use crate::http::positions::{MinPosition, MinPositionHeader, reads};
use crate::http::{ApiJson, ApiPath, ApiQuery, AppState};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search))
        .routes(routes!(listing))
        .routes(routes!(listing_slots))
        .routes(routes!(listing_reviews))
        .routes(routes!(my_listings, publish))
        .routes(routes!(update_listing))
        .routes(routes!(retire_listing))
        .routes(routes!(schedule_slot))
        .routes(routes!(cancel_slot))
        .routes(routes!(my_earnings))
}

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }])
}

// ---------------------------------------------------------------------------------------------
// Search

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Full text over title, description, destination and category (stemmed, typo tolerant).
    pub q: Option<String>,
    /// `package` or `experience`.
    pub kind: Option<String>,
    pub category: Option<String>,
    pub destination: Option<String>,
    pub country: Option<String>,
    /// Lowest price per seat, in minor units.
    #[param(minimum = 0)]
    pub min_price: Option<u64>,
    #[param(minimum = 0)]
    pub max_price: Option<u64>,
    /// Shortest duration in minutes.
    #[param(minimum = 0)]
    pub min_duration: Option<u64>,
    #[param(minimum = 0)]
    pub max_duration: Option<u64>,
    /// Only listings with free seats on a day from `available_from` to `available_to`.
    pub available_from: Option<NaiveDate>,
    pub available_to: Option<NaiveDate>,
    /// Within `radius_km` of (`lat`, `lng`): give `lat` and `lng` together (422 otherwise).
    #[param(minimum = -90, maximum = 90)]
    pub lat: Option<f64>,
    /// See `lat`.
    #[param(minimum = -180, maximum = 180)]
    pub lng: Option<f64>,
    /// Radius around (`lat`, `lng`), above 0 and at most 20,000 km; default 50 km. Ignored
    /// without `lat` and `lng`.
    #[param(exclusive_minimum = 0, maximum = 20000)]
    pub radius_km: Option<f64>,
    /// relevance | price_asc | price_desc | rating
    pub sort: Option<String>,
    /// Hits to skip, at most 9,900 (so `offset + limit` stays within the first 10,000 hits).
    #[param(minimum = 0, maximum = 9900)]
    pub offset: Option<usize>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
    /// Wait until the index reflects this log position.
    #[param(minimum = 0)]
    pub min_position: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Hit {
    pub listing_id: Uuid,
    pub kind: String,
    pub title: String,
    pub category: String,
    pub destination: String,
    pub country: String,
    pub price_minor: i64,
    pub currency: String,
    pub duration_minutes: u32,
    pub rating: f64,
    pub review_count: u64,
    pub lat: f64,
    pub lng: f64,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchFacets {
    pub kind: Vec<FacetCount>,
    pub category: Vec<FacetCount>,
    pub destination: Vec<FacetCount>,
    pub country: Vec<FacetCount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchPage {
    pub total: usize,
    pub hits: Vec<Hit>,
    pub facets: SearchFacets,
    /// The log position the index reflected.
    pub position: i64,
    /// The index generation that answered (it changes when a rebuild is swapped in).
    pub generation: i64,
}

fn to_query(p: &SearchParams) -> Result<SearchQuery, ApiError> {
    let sort = match p.sort.as_deref() {
        None | Some("relevance") => Sort::Relevance,
        Some("price_asc") => Sort::PriceAsc,
        Some("price_desc") => Sort::PriceDesc,
        Some("rating") => Sort::Rating,
        Some(other) => {
            return Err(invalid(
                "sort",
                format!("unknown sort {other:?}: relevance, price_asc, price_desc or rating"),
            ));
        }
    };
    let near = match (p.lat, p.lng) {
        (Some(lat), Some(lng)) => Some((lat, lng)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("lng", "lat and lng go together")),
        (None, Some(_)) => return Err(invalid("lat", "lat and lng go together")),
    };
    let radius_km = near.map(|_| p.radius_km.unwrap_or(DEFAULT_RADIUS_KM));
    let query = SearchQuery {
        text: p.q.clone(),
        kind: p.kind.clone(),
        category: p.category.clone(),
        destination: p.destination.clone(),
        country: p.country.clone(),
        min_price_minor: p.min_price,
        max_price_minor: p.max_price,
        min_duration_minutes: p.min_duration,
        max_duration_minutes: p.max_duration,
        available_from: p.available_from,
        available_to: p.available_to,
        near,
        radius_km,
        sort,
        offset: p.offset.unwrap_or(0),
        limit: p.limit.unwrap_or(20),
    };
    query.validate()?;
    Ok(query)
}

/// The radius of a geographic search that names none.
const DEFAULT_RADIUS_KM: f64 = 50.0;

fn facets(v: &[(String, u64)]) -> Vec<FacetCount> {
    v.iter()
        .map(|(value, count)| FacetCount {
            value: value.clone(),
            count: *count,
        })
        .collect()
}

/// Search packages and experiences, with facet counts.
#[utoipa::path(get, path = "/listings", tag = "catalog", params(MinPositionHeader, SearchParams),
    responses(
        (status = 200, description = "Matching listings", body = SearchPage),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn search(
    State(state): State<AppState>,
    min: MinPosition,
    ApiQuery(params): ApiQuery<SearchParams>,
) -> Result<axum::Json<Arc<serde_json::Value>>, ApiError> {
    let query = to_query(&params)?;
    state.read_after(reads::SEARCH, min).await?;
    let key = format!(
        "search:{}",
        serde_json::to_string(&query).map_err(|e| ApiError::Internal(e.to_string()))?
    );
    let version = state.positions.version(reads::SEARCH);
    if let Some((at, body)) = state.cache.get(&key).await
        && at == version
    {
        return Ok(axum::Json(body));
    }
    let known = state
        .positions
        .at("search")
        .map(|at| (at.generation, at.position));
    let r = state.search.search_at(&query, known).await?;
    let page = SearchPage {
        total: r.total,
        hits: r
            .hits
            .into_iter()
            .map(|h| Hit {
                listing_id: h.listing_id,
                kind: h.kind,
                title: h.title,
                category: h.category,
                destination: h.destination,
                country: h.country,
                price_minor: h.price_minor,
                currency: h.currency,
                duration_minutes: h.duration_minutes,
                rating: h.rating,
                review_count: h.review_count,
                lat: h.lat,
                lng: h.lon,
                score: h.score,
            })
            .collect(),
        facets: SearchFacets {
            kind: facets(&r.facets.kind),
            category: facets(&r.facets.category),
            destination: facets(&r.facets.destination),
            country: facets(&r.facets.country),
        },
        position: r.position as i64,
        generation: r.generation,
    };
    let body =
        Arc::new(serde_json::to_value(&page).map_err(|e| ApiError::Internal(e.to_string()))?);
    // Cached under the index generation and position it was answered at: any progress or
    // swap makes it a miss.
    if state.positions.at("search")
        == Some(crate::http::positions::At {
            generation: page.generation,
            position: page.position,
        })
        && state.positions.version(reads::SEARCH) == version
    {
        state.cache.insert(key, (version, body.clone())).await;
    }
    Ok(axum::Json(body))
}

// ---------------------------------------------------------------------------------------------
// Listing details, slots, reviews

/// One listing with its next available date, lowest price and rating.
#[utoipa::path(get, path = "/listings/{listing_id}", tag = "catalog",
    params(MinPositionHeader, ("listing_id" = Uuid, Path, description = "The listing")),
    responses(
        (status = 200, description = "The listing", body = ListingView),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn listing(
    State(state): State<AppState>,
    min: MinPosition,
    ApiPath(listing_id): ApiPath<Uuid>,
) -> Result<axum::Json<Arc<serde_json::Value>>, ApiError> {
    let projections = ["catalog", "reviews"];
    state.read_after(&projections, min).await?;
    let key = format!("listing:{listing_id}");
    let version = state.positions.version(&projections);
    if let Some((at, body)) = state.cache.get(&key).await
        && at == version
    {
        return Ok(axum::Json(body));
    }
    let view = catalog::listing(&state.pool, listing_id).await?;
    let view = view.ok_or_else(|| ApiError::NotFound {
        what: "listing",
        id: listing_id.to_string(),
    })?;
    let body =
        Arc::new(serde_json::to_value(&view).map_err(|e| ApiError::Internal(e.to_string()))?);
    state.cache.insert(key, (version, body.clone())).await;
    Ok(axum::Json(body))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotRange {
    /// Slots starting from this time (default: now).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Include cancelled and full slots.
    #[serde(default)]
    pub all: bool,
}

/// A listing's upcoming slots with live availability (capacity, held, confirmed, remaining).
#[utoipa::path(get, path = "/listings/{listing_id}/slots", tag = "catalog",
    params(MinPositionHeader, ("listing_id" = Uuid, Path, description = "The listing"), SlotRange),
    responses(
        (status = 200, description = "Slots, earliest first", body = Vec<SlotView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn listing_slots(
    State(state): State<AppState>,
    min: MinPosition,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiQuery(range): ApiQuery<SlotRange>,
) -> Result<axum::Json<Vec<SlotView>>, ApiError> {
    state.read_after(reads::CATALOG, min).await?;
    let filter = catalog::SlotFilter {
        from: range.from,
        to: range.to,
        all: range.all,
    };
    let rows = catalog::listing_slots(&state.pool, listing_id, filter).await?;
    if rows.is_empty() && !catalog::listing_exists(&state.pool, listing_id).await? {
        return Err(ApiError::NotFound {
            what: "listing",
            id: listing_id.to_string(),
        });
    }
    Ok(axum::Json(rows))
}

/// A listing's reviews, newest first.
#[utoipa::path(get, path = "/listings/{listing_id}/reviews", tag = "catalog",
    params(MinPositionHeader, ("listing_id" = Uuid, Path, description = "The listing"), super::account::Page),
    responses(
        (status = 200, description = "Reviews", body = Vec<ReviewView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn listing_reviews(
    State(state): State<AppState>,
    min: MinPosition,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiQuery(page): ApiQuery<super::account::Page>,
) -> Result<axum::Json<Vec<ReviewView>>, ApiError> {
    state.read_after(reads::REVIEWS, min).await?;
    let limit = super::account::page_limit(&page)?;
    let rows = reviews::listing_reviews(&state.pool, listing_id, limit).await?;
    Ok(axum::Json(rows))
}

// ---------------------------------------------------------------------------------------------
// Providers

fn acting(caller: &Caller) -> Result<Acting, ApiError> {
    caller.require(&[Role::Provider, Role::Admin])?;
    Ok(if caller.has(Role::Admin) {
        Acting::Admin
    } else {
        Acting::Provider(caller.user_id)
    })
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceInput {
    pub name: String,
    pub country: String,
    pub lat: f64,
    pub lng: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DayInput {
    pub day: u16,
    pub title: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierInput {
    pub min_hours_before: u32,
    pub refund_percent: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ListingInput {
    /// `package` or `experience`.
    pub kind: String,
    pub title: String,
    pub description: String,
    pub destination: PlaceInput,
    pub category: String,
    pub duration_minutes: u32,
    #[serde(default)]
    pub includes: Vec<String>,
    /// Packages only: days numbered 1, 2, 3, …
    #[serde(default)]
    pub itinerary: Vec<DayInput>,
    /// Base price per seat in minor units (cents), 0 to 1,000,000,000.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub price_minor: i64,
    /// ISO 4217, e.g. `EUR`.
    pub currency: String,
    /// Refund tiers, most hours first; default: 100 % ≥ 7 days, 50 % ≥ 48 h, else 0 %.
    #[serde(default)]
    pub policy: Option<Vec<TierInput>>,
    /// The tax rate included in the price, in basis points (1900: 19 %); default 0. Each
    /// booking snapshots it when placed; its receipt states it.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 5000)]
    pub tax_rate_bp: u32,
}

fn details(i: &ListingInput) -> Result<ListingDetails, ApiError> {
    let kind = match i.kind.as_str() {
        "package" => ListingKind::Package,
        "experience" => ListingKind::Experience,
        other => {
            return Err(invalid(
                "kind",
                format!("unknown kind {other:?}: package or experience"),
            ));
        }
    };
    Ok(ListingDetails {
        kind,
        title: i.title.clone(),
        description: i.description.clone(),
        destination: Destination {
            name: i.destination.name.clone(),
            country: i.destination.country.clone(),
            lat: i.destination.lat,
            lon: i.destination.lng,
        },
        category: i.category.clone(),
        duration_minutes: i.duration_minutes,
        tax_rate_bp: i.tax_rate_bp,
        includes: i.includes.clone(),
        itinerary: i
            .itinerary
            .iter()
            .map(|d| ItineraryDay {
                day: d.day,
                title: d.title.clone(),
                description: d.description.clone(),
            })
            .collect(),
    })
}

fn money(minor: i64, currency: &str, field: &str) -> Result<Money, ApiError> {
    let currency = Currency::new(currency).map_err(|e| invalid("currency", e.to_string()))?;
    Money::price(minor, currency).map_err(|e| invalid(field, e.to_string()))
}

fn policy(tiers: &Option<Vec<TierInput>>) -> Result<CancellationPolicy, ApiError> {
    match tiers {
        None => Ok(CancellationPolicy::standard()),
        Some(t) => CancellationPolicy::new(
            t.iter()
                .map(|t| RefundTier {
                    min_hours_before: t.min_hours_before,
                    refund_percent: t.refund_percent,
                })
                .collect(),
        )
        .map_err(|e| invalid("policy", e.to_string())),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Published {
    pub listing_id: Uuid,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// Publish a listing (providers; admins on a provider's behalf are not supported here).
#[utoipa::path(post, path = "/provider/listings", tag = "provider", security(("bearer" = [])),
    request_body = ListingInput,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key publish once")),
    responses(
        (status = 201, description = "Published", body = Published),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn publish(
    State(state): State<AppState>,
    caller: Require<Provider>,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<ListingInput>,
) -> Result<Response, ApiError> {
    once(
        &state,
        &caller,
        "listing.publish",
        key,
        &input,
        async |ctx| {
            let (details, price, policy) = (
                details(&input)?,
                money(input.price_minor, &input.currency, "price_minor")?,
                policy(&input.policy)?,
            );
            let (id, executed) = commands::publish_listing(
                &*state.store,
                caller.user_id,
                details,
                price,
                policy,
                &ctx,
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                executed.position.0 as i64,
                Published {
                    listing_id: id.0,
                    result: CommandResult::from(&executed),
                },
            ))
        },
    )
    .await
}

/// My listings (providers).
#[utoipa::path(get, path = "/provider/listings", tag = "provider", params(MinPositionHeader), security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's listings", body = Vec<ListingView>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_listings(
    State(state): State<AppState>,
    caller: Require<Provider>,
    min: MinPosition,
) -> Result<axum::Json<Vec<ListingView>>, ApiError> {
    state.read_after(reads::CATALOG, min).await?;
    let rows = catalog::provider_listings(&state.pool, caller.user_id.0).await?;
    Ok(axum::Json(rows))
}

/// Replace a listing's details, price and policy (its owner, or an admin).
#[utoipa::path(put, path = "/provider/listings/{listing_id}", tag = "provider", security(("bearer" = [])),
    request_body = ListingInput,
    params(("listing_id" = Uuid, Path, description = "The listing")),
    responses(
        (status = 200, description = "Changed", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_listing(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<ListingInput>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller)?;
    let request = (listing_id, &input);
    once(
        &state,
        &caller,
        "listing.update",
        key,
        &request,
        async |ctx| {
            let changes = [
                ListingChange::Update(details(&input)?),
                ListingChange::Reprice(money(input.price_minor, &input.currency, "price_minor")?),
                ListingChange::ChangePolicy(policy(&input.policy)?),
            ];
            let mut last = None;
            for (i, change) in changes.into_iter().enumerate() {
                let id = derived_id(ctx.command_id, format!("step-{i}").as_bytes());
                let ctx = context(&state, &caller, id);
                last = Some(
                    commands::change_listing(
                        &*state.store,
                        acting,
                        ListingId(listing_id),
                        change,
                        &ctx,
                    )
                    .await?,
                );
            }
            let executed = last.ok_or_else(|| ApiError::Internal("no change ran".into()))?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

/// Retire a listing: it leaves search; existing bookings stand.
#[utoipa::path(post, path = "/provider/listings/{listing_id}/retire", tag = "provider", security(("bearer" = [])),
    request_body = Reason,
    params(("listing_id" = Uuid, Path, description = "The listing")),
    responses(
        (status = 200, description = "Retired", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn retire_listing(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Reason>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller)?;
    if body.reason.trim().is_empty() {
        return Err(invalid("reason", "a reason is required"));
    }
    let request = (listing_id, &body);
    once(
        &state,
        &caller,
        "listing.retire",
        key,
        &request,
        async |ctx| {
            let ctx = ctx.with_reason(body.reason.clone());
            let executed = commands::change_listing(
                &*state.store,
                acting,
                ListingId(listing_id),
                ListingChange::Retire(body.reason.clone()),
                &ctx,
            )
            .await?;
            Ok(answered(StatusCode::OK, &executed))
        },
    )
    .await
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotInput {
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// 1 to 10,000 seats.
    #[schema(minimum = 1, maximum = 10_000)]
    pub capacity: u32,
    /// Price per seat in the listing's currency, 0 to 1,000,000,000 minor units; default: the
    /// listing's base price.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub price_minor: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Scheduled {
    pub slot_id: Uuid,
    #[serde(flatten)]
    pub result: CommandResult,
}

/// Schedule a slot of a listing.
#[utoipa::path(post, path = "/provider/listings/{listing_id}/slots", tag = "provider", security(("bearer" = [])),
    request_body = SlotInput,
    params(("listing_id" = Uuid, Path, description = "The listing"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key schedule once")),
    responses(
        (status = 201, description = "Scheduled", body = Scheduled),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn schedule_slot(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(listing_id): ApiPath<Uuid>,
    ApiJson(input): ApiJson<SlotInput>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller)?;
    let request = (listing_id, &input);
    once(
        &state,
        &caller,
        "slot.schedule",
        key,
        &request,
        async |ctx| {
            let price = match input.price_minor {
                Some(minor) if minor < 0 => {
                    return Err(invalid("price_minor", "must not be negative"));
                }
                Some(minor) => {
                    let currency = catalog::listing_currency(&state.pool, listing_id).await?;
                    currency
                        .map(|c| money(minor, &c, "price_minor"))
                        .transpose()?
                }
                None => None,
            };
            let (id, executed) = commands::schedule_slot(
                &*state.store,
                acting,
                ListingId(listing_id),
                input.starts_at,
                input.ends_at,
                input.capacity,
                price,
                &ctx,
            )
            .await?;
            Ok((
                StatusCode::CREATED,
                executed.position.0 as i64,
                Scheduled {
                    slot_id: id.0,
                    result: CommandResult::from(&executed),
                },
            ))
        },
    )
    .await
}

/// Cancel a slot: its bookings are cancelled and refunded in full.
#[utoipa::path(post, path = "/provider/slots/{slot_id}/cancel", tag = "provider", security(("bearer" = [])),
    request_body = Reason,
    params(("slot_id" = Uuid, Path, description = "The slot")),
    responses(
        (status = 200, description = "Cancelled", body = CommandResult),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel_slot(
    State(state): State<AppState>,
    caller: Require<ProviderOrAdmin>,
    key: IdempotencyKey,
    ApiPath(slot_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<Reason>,
) -> Result<Response, ApiError> {
    let acting = acting(&caller)?;
    let request = (slot_id, &body);
    once(&state, &caller, "slot.cancel", key, &request, async |ctx| {
        let ctx = ctx.with_reason(body.reason.clone());
        let executed =
            commands::cancel_slot(&*state.store, acting, SlotId(slot_id), &body.reason, &ctx)
                .await?;
        Ok(answered(StatusCode::OK, &executed))
    })
    .await
}

/// My earnings per currency, after refunds and the platform's commission.
#[utoipa::path(get, path = "/provider/earnings", tag = "provider", params(MinPositionHeader), security(("bearer" = [])),
    responses(
        (status = 200, description = "Earnings", body = Vec<Earnings>),
        (status = "4XX", description = "Refused", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_earnings(
    State(state): State<AppState>,
    caller: Require<Provider>,
    min: MinPosition,
) -> Result<axum::Json<Vec<Earnings>>, ApiError> {
    state.read_after(reads::STATS, min).await?;
    let rows = stats::provider_earnings(&state.pool, caller.user_id.0).await?;
    Ok(axum::Json(rows))
}
