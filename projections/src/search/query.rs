//! Searching the index: full text with stemming and typo tolerance, filters, facet counts,
//! a geo radius, sorting and pagination. Readers follow the active generation named in the
//! registry and reload when the projection has committed past what they have seen.

use std::ops::Bound;
use std::sync::Mutex;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tantivy::collector::{Collector, Count, FacetCollector, SegmentCollector, TopDocs};
use tantivy::columnar::Column;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
};
use tantivy::schema::{Facet, IndexRecordOption, Value};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, Order, ReloadPolicy, Score, SegmentOrdinal,
    SegmentReader, TantivyDocument, Term,
};
use uuid::Uuid;

use super::{Fields, ListingDoc, SearchProjection, day_number, schema};
use crate::error::ProjectionError;

/// How results are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sort {
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    Rating,
}

/// A search request; every filter is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchQuery {
    pub text: Option<String>,
    /// `package` or `experience`.
    pub kind: Option<String>,
    pub category: Option<String>,
    /// A destination (city) name.
    pub destination: Option<String>,
    pub country: Option<String>,
    pub min_price_minor: Option<u64>,
    pub max_price_minor: Option<u64>,
    pub min_duration_minutes: Option<u64>,
    pub max_duration_minutes: Option<u64>,
    /// Only listings with a slot with free seats on a day in this range (inclusive).
    pub available_from: Option<NaiveDate>,
    pub available_to: Option<NaiveDate>,
    /// Within `radius_km` of this point.
    pub near: Option<(f64, f64)>,
    pub radius_km: Option<f64>,
    pub sort: Sort,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchHit {
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
    pub lon: f64,
    /// Relevance score (0 when not sorted by relevance).
    pub score: f32,
}

/// The part of a stored [`ListingDoc`] a hit shows: reading a hit skips over the listing's
/// description and slots instead of building them.
#[derive(Deserialize)]
struct HitDoc {
    listing_id: Uuid,
    kind: String,
    title: String,
    category: String,
    destination: String,
    country: String,
    lat: f64,
    lon: f64,
    duration_minutes: u32,
    price_minor: i64,
    currency: String,
    rating_sum: u64,
    rating_count: u64,
}

impl HitDoc {
    fn rating(&self) -> f64 {
        ListingDoc::average(self.rating_sum, self.rating_count)
    }
}

/// Counts of matching listings per facet value.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Facets {
    pub kind: Vec<(String, u64)>,
    pub category: Vec<(String, u64)>,
    pub destination: Vec<(String, u64)>,
    pub country: Vec<(String, u64)>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SearchResults {
    pub total: usize,
    pub hits: Vec<SearchHit>,
    pub facets: Facets,
    /// The log position the index reflected when it answered.
    pub position: u64,
}

const EARTH_RADIUS_KM: f64 = 6_371.0;

fn haversine_km((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
}

struct Opened {
    generation: i64,
    position: i64,
    index: Index,
    reader: IndexReader,
    fields: Fields,
}

/// A reader of the active search generation, for the API process.
pub struct SearchIndex {
    pool: PgPool,
    projection: SearchProjection,
    opened: Mutex<Option<std::sync::Arc<Opened>>>,
}

impl std::fmt::Debug for SearchIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchIndex")
            .field("projection", &self.projection)
            .finish_non_exhaustive()
    }
}

impl SearchIndex {
    pub fn new(pool: PgPool, index_root: &std::path::Path) -> Self {
        Self {
            pool,
            projection: SearchProjection::new(index_root),
            opened: Mutex::new(None),
        }
    }

    /// The active generation's reader, reopened after a rebuild swap and reloaded when the
    /// projection committed since the last look. `known` is the active (generation, position)
    /// if the caller follows them; without it they are read from the database.
    async fn current(
        &self,
        known: Option<(i64, i64)>,
    ) -> Result<std::sync::Arc<Opened>, ProjectionError> {
        let opened = self.opened.lock().expect("not poisoned").clone();
        let (generation, position) = match (known, &opened) {
            (Some(at), Some(o)) if at <= (o.generation, o.position) => return Ok(o.clone()),
            (Some(at), _) => at,
            (None, _) => self.active().await?,
        };
        if let Some(o) = opened {
            if o.generation == generation && o.position == position {
                return Ok(o.clone());
            }
            if o.generation == generation {
                o.reader.reload()?;
                let fresh = std::sync::Arc::new(Opened {
                    generation,
                    position,
                    index: o.index.clone(),
                    reader: o.reader.clone(),
                    fields: o.fields,
                });
                *self.opened.lock().expect("not poisoned") = Some(fresh.clone());
                return Ok(fresh);
            }
        }
        let dir = self.projection.dir(generation);
        let index = tokio::task::spawn_blocking(move || Index::open_in_dir(dir))
            .await
            .map_err(|e| ProjectionError::Index(e.to_string()))??;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let opened = std::sync::Arc::new(Opened {
            generation,
            position,
            index,
            reader,
            fields: schema().1,
        });
        *self.opened.lock().expect("not poisoned") = Some(opened.clone());
        Ok(opened)
    }

    /// The active generation and its position, from the database.
    async fn active(&self) -> Result<(i64, i64), ProjectionError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT g.generation, g.position FROM projections p
             JOIN projection_generations g ON g.name = p.name AND g.generation = p.active_generation
             WHERE p.name = 'search'",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| {
            ProjectionError::Invalid("the search index has not been built yet".into())
        })
    }

    pub async fn search(&self, q: &SearchQuery) -> Result<SearchResults, ProjectionError> {
        self.search_at(q, None).await
    }

    /// [`SearchIndex::search`] for a caller that follows the search projection's active
    /// (generation, position): it answers from the open reader, without asking the database,
    /// unless that is older.
    pub async fn search_at(
        &self,
        q: &SearchQuery,
        known: Option<(i64, i64)>,
    ) -> Result<SearchResults, ProjectionError> {
        let opened = self.current(known).await?;
        let q = q.clone();
        tokio::task::spawn_blocking(move || run(&opened, &q))
            .await
            .map_err(|e| ProjectionError::Index(e.to_string()))?
    }
}

fn validate(q: &SearchQuery) -> Result<(), ProjectionError> {
    let bad = |m: &str| Err(ProjectionError::Invalid(m.to_owned()));
    if q.limit == 0 || q.limit > 100 {
        return bad("limit must be between 1 and 100");
    }
    if let (Some(a), Some(b)) = (q.min_price_minor, q.max_price_minor)
        && a > b
    {
        return bad("min_price is above max_price");
    }
    if let (Some(a), Some(b)) = (q.available_from, q.available_to)
        && a > b
    {
        return bad("available_from is after available_to");
    }
    match (q.near, q.radius_km) {
        (Some((lat, lon)), Some(r)) => {
            if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                return bad("near must be a latitude in [-90, 90] and a longitude in [-180, 180]");
            }
            if !(r > 0.0 && r <= 20_000.0) {
                return bad("radius_km must be above 0 and at most 20000");
            }
        }
        (None, None) => {}
        _ => return bad("near and radius_km go together"),
    }
    Ok(())
}

fn u64_range(
    field: tantivy::schema::Field,
    lo: Option<u64>,
    hi: Option<u64>,
) -> Option<Box<dyn Query>> {
    if lo.is_none() && hi.is_none() {
        return None;
    }
    let lo = lo.map_or(Bound::Unbounded, |v| {
        Bound::Included(Term::from_field_u64(field, v))
    });
    let hi = hi.map_or(Bound::Unbounded, |v| {
        Bound::Included(Term::from_field_u64(field, v))
    });
    Some(Box::new(RangeQuery::new(lo, hi)))
}

fn facet_term(field: tantivy::schema::Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_facet(field, &Facet::from_path([value])),
        IndexRecordOption::Basic,
    ))
}

fn build_query(o: &Opened, q: &SearchQuery) -> Box<dyn Query> {
    let f = &o.fields;
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    match q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => {
            let fields = vec![f.title, f.destination_text, f.category_text, f.description];
            let mut exact = QueryParser::for_index(&o.index, fields.clone());
            let mut fuzzy = QueryParser::for_index(
                &o.index,
                vec![f.title, f.destination_text, f.category_text],
            );
            for p in [&mut exact, &mut fuzzy] {
                p.set_field_boost(f.title, 3.0);
                p.set_field_boost(f.destination_text, 2.0);
                p.set_field_boost(f.category_text, 1.5);
            }
            for field in [f.title, f.destination_text, f.category_text] {
                fuzzy.set_field_fuzzy(field, false, 1, true);
            }
            // Listings matching every word (as typed, stemmed) rank above those matching some
            // words or only with typos.
            exact.set_conjunction_by_default();
            // Free text is never a syntax error: the lenient parser keeps what it understands.
            let (exact, _) = exact.parse_query_lenient(text);
            let (fuzzy, _) = fuzzy.parse_query_lenient(text);
            // Exact (stemmed) matches rank above typo-tolerant ones.
            must.push((
                Occur::Must,
                Box::new(BooleanQuery::new(vec![
                    (
                        Occur::Should,
                        Box::new(BoostQuery::new(exact, 4.0)) as Box<dyn Query>,
                    ),
                    (Occur::Should, fuzzy),
                ])),
            ));
        }
        None => must.push((Occur::Must, Box::new(AllQuery))),
    }
    must.push((
        Occur::Must,
        Box::new(TermQuery::new(
            Term::from_field_u64(f.retired, 0),
            IndexRecordOption::Basic,
        )),
    ));
    if let Some(k) = &q.kind {
        must.push((Occur::Must, facet_term(f.kind, k)));
    }
    if let Some(c) = &q.category {
        must.push((Occur::Must, facet_term(f.category, c)));
    }
    if let Some(d) = &q.destination {
        must.push((Occur::Must, facet_term(f.destination, d)));
    }
    if let Some(c) = &q.country {
        must.push((Occur::Must, facet_term(f.country, c)));
    }
    if let Some(r) = u64_range(f.price, q.min_price_minor, q.max_price_minor) {
        must.push((Occur::Must, r));
    }
    if let Some(r) = u64_range(f.duration, q.min_duration_minutes, q.max_duration_minutes) {
        must.push((Occur::Must, r));
    }
    let day = |d: NaiveDate| day_number(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    if let Some(r) = u64_range(
        f.free_day,
        q.available_from.map(day),
        q.available_to.map(day),
    ) {
        must.push((Occur::Must, r));
    }
    if let (Some((lat, lon)), Some(km)) = (q.near, q.radius_km) {
        // A bounding box narrows the candidates in the index; the exact distance is checked
        // by the collector. (Boxes crossing the antimeridian are not split.)
        let dlat = (km / EARTH_RADIUS_KM).to_degrees();
        let dlon = (km / (EARTH_RADIUS_KM * lat.to_radians().cos().max(1e-6))).to_degrees();
        let f64_range = |field, lo: f64, hi: f64| -> Box<dyn Query> {
            Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_f64(field, lo)),
                Bound::Included(Term::from_field_f64(field, hi)),
            ))
        };
        must.push((Occur::Must, f64_range(f.lat, lat - dlat, lat + dlat)));
        must.push((Occur::Must, f64_range(f.lon, lon - dlon, lon + dlon)));
    }
    Box::new(BooleanQuery::new(must))
}

/// Keeps only documents within `km` of `center` (fast fields `lat`, `lon`).
struct Within<C> {
    inner: C,
    center: Option<((f64, f64), f64)>,
}

struct WithinSegment<S> {
    inner: S,
    center: Option<((f64, f64), f64)>,
    lat: Column<f64>,
    lon: Column<f64>,
}

impl<C: Collector> Collector for Within<C> {
    type Fruit = C::Fruit;
    type Child = WithinSegment<C::Child>;

    fn for_segment(
        &self,
        ord: SegmentOrdinal,
        segment: &SegmentReader,
    ) -> tantivy::Result<Self::Child> {
        Ok(WithinSegment {
            inner: self.inner.for_segment(ord, segment)?,
            center: self.center,
            lat: segment.fast_fields().f64("lat")?,
            lon: segment.fast_fields().f64("lon")?,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(
        &self,
        fruits: Vec<<Self::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<Self::Fruit> {
        self.inner.merge_fruits(fruits)
    }
}

impl<S: SegmentCollector> SegmentCollector for WithinSegment<S> {
    type Fruit = S::Fruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        if let Some((center, km)) = self.center {
            let (Some(lat), Some(lon)) = (self.lat.first(doc), self.lon.first(doc)) else {
                return;
            };
            if haversine_km(center, (lat, lon)) > km {
                return;
            }
        }
        self.inner.collect(doc, score);
    }

    fn harvest(self) -> Self::Fruit {
        self.inner.harvest()
    }
}

fn facet_counts(fc: &tantivy::collector::FacetCounts, root: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = fc
        .get(root)
        .map(|(facet, n)| {
            (
                facet
                    .to_path()
                    .last()
                    .map(|s| (*s).to_owned())
                    .unwrap_or_default(),
                n,
            )
        })
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v
}

fn run(o: &Opened, q: &SearchQuery) -> Result<SearchResults, ProjectionError> {
    validate(q)?;
    let query = build_query(o, q);
    let searcher = o.reader.searcher();
    let center = q.near.zip(q.radius_km);
    let mut facets = FacetCollector::for_field("kind");
    facets.add_facet("/");
    let mut categories = FacetCollector::for_field("category");
    categories.add_facet("/");
    let mut destinations = FacetCollector::for_field("destination");
    destinations.add_facet("/");
    let mut countries = FacetCollector::for_field("country");
    countries.add_facet("/");
    let top = TopDocs::with_limit(q.limit).and_offset(q.offset);
    let counts = (Count, (facets, categories, destinations, countries));
    let ((total, (kinds, cats, dests, ctrs)), hits): (_, Vec<(f32, DocAddress)>) = match q.sort {
        Sort::Relevance => searcher.search(
            &query,
            &Within {
                inner: (counts, top.order_by_score()),
                center,
            },
        )?,
        Sort::PriceAsc | Sort::PriceDesc => {
            let order = if q.sort == Sort::PriceAsc {
                Order::Asc
            } else {
                Order::Desc
            };
            let (c, h) = searcher.search(
                &query,
                &Within {
                    inner: (counts, top.order_by_fast_field::<u64>("price", order)),
                    center,
                },
            )?;
            (c, h.into_iter().map(|(_, a)| (0.0, a)).collect())
        }
        Sort::Rating => {
            let (c, h) = searcher.search(
                &query,
                &Within {
                    inner: (
                        counts,
                        top.order_by_fast_field::<f64>("rating", Order::Desc),
                    ),
                    center,
                },
            )?;
            (c, h.into_iter().map(|(_, a)| (0.0, a)).collect())
        }
    };
    let mut out = Vec::with_capacity(hits.len());
    for (score, addr) in hits {
        let d: TantivyDocument = searcher.doc(addr)?;
        let state = d
            .get_first(o.fields.state)
            .and_then(|v| v.as_str())
            .ok_or_else(|| ProjectionError::Index("document without state".into()))?;
        let l: HitDoc =
            serde_json::from_str(state).map_err(|e| ProjectionError::Index(e.to_string()))?;
        out.push(SearchHit {
            listing_id: l.listing_id,
            rating: l.rating(),
            review_count: l.rating_count,
            kind: l.kind,
            title: l.title,
            category: l.category,
            destination: l.destination,
            country: l.country,
            price_minor: l.price_minor,
            currency: l.currency,
            duration_minutes: l.duration_minutes,
            lat: l.lat,
            lon: l.lon,
            score,
        });
    }
    Ok(SearchResults {
        total,
        hits: out,
        facets: Facets {
            kind: facet_counts(&kinds, "/"),
            category: facet_counts(&cats, "/"),
            destination: facet_counts(&dests, "/"),
            country: facet_counts(&ctrs, "/"),
        },
        position: u64::try_from(o.position).unwrap_or(0),
    })
}
