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
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, QueryClone,
    RangeQuery, TermQuery,
};
use tantivy::schema::{IndexRecordOption, Value};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, Order, ReloadPolicy, Score, SegmentOrdinal,
    SegmentReader, TantivyDocument, Term,
};
use uuid::Uuid;

use super::{
    Fields, ListingDoc, SearchProjection, day_number, key, query_words, register_tokenizers, stem,
};
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
    /// The generation of the index that answered.
    pub generation: i64,
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
        register_tokenizers(&index);
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let fields = Fields::of(&index.schema())?;
        let opened = std::sync::Arc::new(Opened {
            generation,
            position,
            index,
            reader,
            fields,
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
            ProjectionError::NotReady("the search index has not been built yet".into())
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

/// Most hits a page may ask for.
pub const MAX_LIMIT: usize = 100;
/// How deep paging reaches: `offset` is at most this, so `offset + limit` stays within the
/// first 10,000 hits (deeper pages cost memory and time in proportion; a client that needs more
/// narrows its filters).
pub const MAX_OFFSET: usize = 9_900;

impl SearchQuery {
    /// Refuses a query outside the documented bounds (before any work is done for it).
    pub fn validate(&self) -> Result<(), ProjectionError> {
        validate(self)
    }
}

fn validate(q: &SearchQuery) -> Result<(), ProjectionError> {
    let bad = |m: &str| Err(ProjectionError::Invalid(m.to_owned()));
    if q.limit == 0 || q.limit > MAX_LIMIT {
        return bad("limit must be between 1 and 100");
    }
    if q.offset > MAX_OFFSET {
        return bad("offset must be at most 9900");
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

/// What one query word adds to a listing's score when it matches: coverage first (a listing
/// matching more of the words ranks above one matching fewer, however they match), then
/// exactness (a word found as typed, or as its stem, ranks above one found only with a typo),
/// then BM25 relevance within the fields (title above destination above category above
/// description), which stays far below both steps.
const WORD_MATCHED: f32 = 1_000.0;
const WORD_EXACT: f32 = 200.0;

/// Typo tolerance by word length, as Elasticsearch's `AUTO`: none up to 2 letters, one edit
/// up to 5, two beyond (so `sailng` still finds `sailing`, whose stem is `sail`).
fn edits(word: &str) -> u8 {
    match word.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

fn text_query(f: &Fields, words: &[String]) -> Box<dyn Query> {
    let weighted = [
        (f.title, 3.0),
        (f.destination_text, 2.0),
        (f.category_text, 1.5),
        (f.description, 0.5),
    ];
    let mut per_word: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for word in words {
        let stemmed = stem(word);
        let exact: Vec<(Occur, Box<dyn Query>)> = weighted
            .iter()
            .map(|(field, boost)| {
                let term = TermQuery::new(
                    Term::from_field_text(*field, &stemmed),
                    IndexRecordOption::WithFreqs,
                );
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(term), *boost)) as Box<dyn Query>,
                )
            })
            .collect();
        let exact = BooleanQuery::new(exact);
        let mut any: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, exact.box_clone())];
        let distance = edits(word);
        if distance > 0 {
            // Compared with the stems in the index, from the word as typed and from its stem.
            for target in [word.as_str(), stemmed.as_str()] {
                for (field, _) in &weighted[..3] {
                    any.push((
                        Occur::Should,
                        Box::new(FuzzyTermQuery::new(
                            Term::from_field_text(*field, target),
                            distance,
                            true,
                        )),
                    ));
                }
            }
        }
        let matched = ConstScoreQuery::new(Box::new(BooleanQuery::new(any)), WORD_MATCHED);
        let exactly = ConstScoreQuery::new(exact.box_clone(), WORD_EXACT);
        per_word.push((
            Occur::Should,
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(matched) as Box<dyn Query>),
                (Occur::Should, Box::new(exactly)),
                (Occur::Should, Box::new(exact)),
            ])),
        ));
    }
    Box::new(BooleanQuery::new(per_word))
}

fn build_query(o: &Opened, q: &SearchQuery) -> Box<dyn Query> {
    let f = &o.fields;
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    match q.text.as_deref().map(query_words).filter(|w| !w.is_empty()) {
        Some(words) => must.push((Occur::Must, text_query(f, &words))),
        None => must.push((Occur::Must, Box::new(AllQuery))),
    }
    must.push((
        Occur::Must,
        Box::new(TermQuery::new(
            Term::from_field_u64(f.retired, 0),
            IndexRecordOption::Basic,
        )),
    ));
    // Filters on names ignore case and accents: `rome`, `ROME` and `Rome` are one place.
    // (An index built before the keys existed filters on the exact facet value.)
    for (field, facet, value) in [
        (f.kind_key, f.kind, &q.kind),
        (f.category_key, f.category, &q.category),
        (f.destination_key, f.destination, &q.destination),
        (f.country_key, f.country, &q.country),
    ] {
        let Some(v) = value else { continue };
        let term = match field {
            Some(field) => Term::from_field_text(field, &key(v)),
            None => Term::from_facet(facet, &tantivy::schema::Facet::from_path([v.as_str()])),
        };
        must.push((
            Occur::Must,
            Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
        ));
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
        generation: o.generation,
    })
}

#[cfg(test)]
mod tests {
    use tantivy::schema::{
        FAST, Facet, FacetOptions, INDEXED, STORED, STRING, Schema, TextOptions,
    };
    use tantivy::{Index, TantivyDocument};

    use super::*;

    /// A generation built by search version 1 (other field numbers, no filter keys, the
    /// `en_stem` tokenizer) keeps serving while its rebuild runs: the reader finds its fields
    /// by name and filters on the exact facet values it has.
    #[tokio::test]
    async fn a_generation_built_by_version_1_still_answers() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("search").join("g1");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut b = Schema::builder();
        let text = TextOptions::default().set_indexing_options(
            tantivy::schema::TextFieldIndexing::default()
                .set_tokenizer("en_stem")
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let id = b.add_text_field("listing_id", STRING | STORED);
        let kind = b.add_facet_field("kind", FacetOptions::default());
        let category = b.add_facet_field("category", FacetOptions::default());
        let destination = b.add_facet_field("destination", FacetOptions::default());
        let country = b.add_facet_field("country", FacetOptions::default());
        let title = b.add_text_field("title", text.clone());
        let description = b.add_text_field("description", text.clone());
        let destination_text = b.add_text_field("destination_text", text.clone());
        let category_text = b.add_text_field("category_text", text);
        let price = b.add_u64_field("price", INDEXED | FAST);
        let duration = b.add_u64_field("duration", INDEXED | FAST);
        let rating = b.add_f64_field("rating", FAST);
        let lat = b.add_f64_field("lat", INDEXED | FAST);
        let lon = b.add_f64_field("lon", INDEXED | FAST);
        let _free_day = b.add_u64_field("free_day", INDEXED);
        let retired = b.add_u64_field("retired", INDEXED);
        let state = b.add_text_field("state", STORED);
        let index = Index::create_in_dir(&dir, b.build()).expect("index");
        let listing = ListingDoc {
            listing_id: Uuid::from_u128(1),
            kind: "experience".into(),
            title: "Grand sailing afternoon in Rome".into(),
            description: "On the water".into(),
            category: "water".into(),
            destination: "Rome".into(),
            country: "IT".into(),
            lat: 41.9,
            lon: 12.5,
            duration_minutes: 120,
            price_minor: 5_000,
            currency: "EUR".into(),
            retired: false,
            rating_sum: 0,
            rating_count: 0,
            slots: Default::default(),
        };
        let mut doc = TantivyDocument::new();
        doc.add_text(id, listing.listing_id.to_string());
        doc.add_facet(kind, Facet::from_path(["experience"]));
        doc.add_facet(category, Facet::from_path(["water"]));
        doc.add_facet(destination, Facet::from_path(["Rome"]));
        doc.add_facet(country, Facet::from_path(["IT"]));
        doc.add_text(title, &listing.title);
        doc.add_text(description, &listing.description);
        doc.add_text(destination_text, "Rome IT");
        doc.add_text(category_text, "water");
        doc.add_u64(price, 5_000);
        doc.add_u64(duration, 120);
        doc.add_f64(rating, 0.0);
        doc.add_f64(lat, 41.9);
        doc.add_f64(lon, 12.5);
        doc.add_u64(retired, 0);
        doc.add_text(state, serde_json::to_string(&listing).expect("json"));
        let mut writer = index
            .writer_with_num_threads(1, 15_000_000)
            .expect("writer");
        writer.add_document(doc).expect("add");
        writer.commit().expect("commit");

        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .expect("lazy pool");
        let search = SearchIndex::new(pool, root.path());
        let found = search
            .search_at(
                &SearchQuery {
                    text: Some("sailng".into()),
                    destination: Some("Rome".into()),
                    limit: 10,
                    ..SearchQuery::default()
                },
                Some((1, 1)),
            )
            .await
            .expect("an old generation answers");
        assert_eq!(found.total, 1);
        assert_eq!(found.hits[0].title, listing.title);
    }
}
