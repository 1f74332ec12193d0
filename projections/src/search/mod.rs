//! The search index of packages and experiences (tantivy), kept by its own projection.
//!
//! One document per listing, id stored as a `STRING` field; every change is a delete of that
//! term plus an add of the whole document. The index is its own state store: each document
//! stores the listing's state as JSON (including its slots), and the log position a commit
//! reflects rides in that commit's payload, so the index and its checkpoint move together.
//! Each generation is its own directory under `<root>/search/g<N>`.

mod query;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tantivy::schema::{
    FAST, Facet, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RawTokenizer, RemoveLongFilter, SimpleTokenizer,
    Stemmer, TextAnalyzer,
};
use tantivy::{DocAddress, Index, IndexWriter, TantivyDocument, Term};
use tessera_domain::listing::{ListingDetails, ListingEvent};
use tessera_domain::review::ReviewEvent;
use tessera_domain::slot::SlotEvent;
use tessera_log::codec::AnyEvent;
use tessera_log::store::Position;
use uuid::Uuid;

pub use query::{Facets, SearchHit, SearchIndex, SearchQuery, SearchResults, Sort};

use crate::envelope::Envelope;
use crate::error::ProjectionError;
use crate::models::inconsistent;

const NAME: &str = "search";
const WRITER_MEMORY: usize = 50_000_000;

/// The search projection: where its generations live.
#[derive(Debug)]
pub struct SearchProjection {
    root: PathBuf,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    id: Field,
    kind: Field,
    category: Field,
    destination: Field,
    country: Field,
    /// Folded filter keys (version 2 on); `None` in an index built by version 1, whose
    /// generation keeps serving until its rebuild is swapped in.
    kind_key: Option<Field>,
    category_key: Option<Field>,
    destination_key: Option<Field>,
    country_key: Option<Field>,
    title: Field,
    description: Field,
    destination_text: Field,
    category_text: Field,
    price: Field,
    duration: Field,
    rating: Field,
    lat: Field,
    lon: Field,
    free_day: Field,
    retired: Field,
    state: Field,
}

/// Full text: words, lower-cased, accents folded (`Séville` is `seville`), English stems.
const TEXT_TOKENIZER: &str = "tessera_text";
/// Filter values: the whole value, lower-cased, accents folded (`rome` finds `Rome`).
const KEY_TOKENIZER: &str = "tessera_key";

fn text_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .filter(Stemmer::new(Language::English))
        .build()
}

fn key_analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Words of a query as typed (lower-cased, accents folded, not stemmed): what typo-tolerant
/// matching compares with the index's stems.
pub(crate) fn query_words(text: &str) -> Vec<String> {
    let mut analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build();
    let mut stream = analyzer.token_stream(text);
    let mut words = Vec::new();
    while let Some(token) = stream.next() {
        words.push(token.text.clone());
    }
    words
}

/// A query word's stem, as the index keeps it.
pub(crate) fn stem(word: &str) -> String {
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(word);
    stream
        .next()
        .map_or_else(|| word.to_owned(), |t| t.text.clone())
}

/// A filter value as the index keys it.
pub(crate) fn key(value: &str) -> String {
    let mut analyzer = key_analyzer();
    let mut stream = analyzer.token_stream(value.trim());
    stream.next().map(|t| t.text.clone()).unwrap_or_default()
}

/// Makes the index's tokenizers known to `index` (each open of an index needs them).
pub(crate) fn register_tokenizers(index: &Index) {
    index.tokenizers().register(TEXT_TOKENIZER, text_analyzer());
    index.tokenizers().register(KEY_TOKENIZER, key_analyzer());
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(TEXT_TOKENIZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let key = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(KEY_TOKENIZER)
            .set_index_option(IndexRecordOption::Basic),
    );
    b.add_text_field("listing_id", STRING | STORED);
    b.add_facet_field("kind", FacetOptions::default());
    b.add_facet_field("category", FacetOptions::default());
    b.add_facet_field("destination", FacetOptions::default());
    b.add_facet_field("country", FacetOptions::default());
    b.add_text_field("kind_key", key.clone());
    b.add_text_field("category_key", key.clone());
    b.add_text_field("destination_key", key.clone());
    b.add_text_field("country_key", key);
    b.add_text_field("title", text.clone());
    b.add_text_field("description", text.clone());
    b.add_text_field("destination_text", text.clone());
    b.add_text_field("category_text", text);
    b.add_u64_field("price", INDEXED | FAST);
    b.add_u64_field("duration", INDEXED | FAST);
    b.add_f64_field("rating", FAST);
    b.add_f64_field("lat", INDEXED | FAST);
    b.add_f64_field("lon", INDEXED | FAST);
    b.add_u64_field("free_day", INDEXED);
    b.add_u64_field("retired", INDEXED);
    b.add_text_field("state", STORED);
    let schema = b.build();
    let fields = Fields::of(&schema).expect("the current schema has every field");
    (schema, fields)
}

impl Fields {
    /// The fields of an index, by name: an index built by an earlier version (a generation that
    /// still serves while its rebuild runs) has other field numbers, and lacks the newer fields.
    pub(crate) fn of(schema: &Schema) -> Result<Self, ProjectionError> {
        let field = |name: &str| {
            schema
                .get_field(name)
                .map_err(|_| ProjectionError::Index(format!("the index has no field {name}")))
        };
        Ok(Self {
            id: field("listing_id")?,
            kind: field("kind")?,
            category: field("category")?,
            destination: field("destination")?,
            country: field("country")?,
            kind_key: schema.get_field("kind_key").ok(),
            category_key: schema.get_field("category_key").ok(),
            destination_key: schema.get_field("destination_key").ok(),
            country_key: schema.get_field("country_key").ok(),
            title: field("title")?,
            description: field("description")?,
            destination_text: field("destination_text")?,
            category_text: field("category_text")?,
            price: field("price")?,
            duration: field("duration")?,
            rating: field("rating")?,
            lat: field("lat")?,
            lon: field("lon")?,
            free_day: field("free_day")?,
            retired: field("retired")?,
            state: field("state")?,
        })
    }
}

/// Days since 1970-01-01 (the unit of the `free_day` field).
pub fn day_number(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp().div_euclid(86_400)).unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct SlotDoc {
    day: u64,
    capacity: i64,
    taken: i64,
    cancelled: bool,
}

/// A listing as the index keeps it (stored in the document, so the index is self-contained).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct ListingDoc {
    pub listing_id: Uuid,
    pub kind: String,
    pub title: String,
    pub description: String,
    pub category: String,
    pub destination: String,
    pub country: String,
    pub lat: f64,
    pub lon: f64,
    pub duration_minutes: u32,
    pub price_minor: i64,
    pub currency: String,
    pub retired: bool,
    pub rating_sum: u64,
    pub rating_count: u64,
    slots: BTreeMap<Uuid, SlotDoc>,
}

impl ListingDoc {
    pub fn rating(&self) -> f64 {
        Self::average(self.rating_sum, self.rating_count)
    }

    /// The mean rating (0 without ratings).
    pub(crate) fn average(sum: u64, count: u64) -> f64 {
        if count == 0 {
            0.0
        } else {
            sum as f64 / count as f64
        }
    }

    fn set_details(&mut self, d: &ListingDetails) {
        self.kind = serde_json::to_value(d.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        self.title.clone_from(&d.title);
        self.description.clone_from(&d.description);
        self.category.clone_from(&d.category);
        self.destination.clone_from(&d.destination.name);
        self.country.clone_from(&d.destination.country);
        self.lat = d.destination.lat;
        self.lon = d.destination.lon;
        self.duration_minutes = d.duration_minutes;
    }

    fn document(&self, f: &Fields) -> Result<TantivyDocument, ProjectionError> {
        let mut doc = TantivyDocument::new();
        doc.add_text(f.id, self.listing_id.to_string());
        doc.add_facet(f.kind, Facet::from_path([self.kind.as_str()]));
        doc.add_facet(f.category, Facet::from_path([self.category.as_str()]));
        doc.add_facet(f.destination, Facet::from_path([self.destination.as_str()]));
        doc.add_facet(f.country, Facet::from_path([self.country.as_str()]));
        for (key, value) in [
            (f.kind_key, &self.kind),
            (f.category_key, &self.category),
            (f.destination_key, &self.destination),
            (f.country_key, &self.country),
        ] {
            if let Some(key) = key {
                doc.add_text(key, value);
            }
        }
        doc.add_text(f.title, &self.title);
        doc.add_text(f.description, &self.description);
        doc.add_text(
            f.destination_text,
            format!("{} {}", self.destination, self.country),
        );
        doc.add_text(f.category_text, &self.category);
        doc.add_u64(f.price, u64::try_from(self.price_minor).unwrap_or(0));
        doc.add_u64(f.duration, u64::from(self.duration_minutes));
        doc.add_f64(f.rating, self.rating());
        doc.add_f64(f.lat, self.lat);
        doc.add_f64(f.lon, self.lon);
        let free: BTreeSet<u64> = self
            .slots
            .values()
            .filter(|s| !s.cancelled && s.taken < s.capacity)
            .map(|s| s.day)
            .collect();
        for day in free {
            doc.add_u64(f.free_day, day);
        }
        doc.add_u64(f.retired, u64::from(self.retired));
        doc.add_text(
            f.state,
            serde_json::to_string(self).map_err(|e| ProjectionError::Index(e.to_string()))?,
        );
        Ok(doc)
    }
}

impl SearchProjection {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.join("search"),
        }
    }

    pub fn name(&self) -> &'static str {
        NAME
    }

    /// 2: accent-folding tokenizers and case-insensitive filter keys.
    pub fn version(&self) -> u32 {
        2
    }

    pub fn dir(&self, generation: i64) -> PathBuf {
        self.root.join(format!("g{generation}"))
    }

    /// An empty index for a new generation.
    pub fn create_generation(&self, generation: i64) -> Result<(), ProjectionError> {
        let dir = self.dir(generation);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ProjectionError::Index(format!("{}: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| ProjectionError::Index(format!("{}: {e}", dir.display())))?;
        let index = Index::create_in_dir(&dir, schema().0)?;
        register_tokenizers(&index);
        Ok(())
    }

    pub fn drop_generation(&self, generation: i64) -> Result<(), ProjectionError> {
        let dir = self.dir(generation);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| ProjectionError::Index(format!("{}: {e}", dir.display())))?;
        }
        Ok(())
    }

    /// Opens the generation's writer (tantivy's directory lock makes it the only one) and
    /// loads the listings' state from the last commit.
    pub fn open_writer(&self, generation: i64) -> Result<SearchWriter, ProjectionError> {
        let dir = self.dir(generation);
        if !dir.join("meta.json").exists() {
            self.create_generation(generation)?;
        }
        let index = Index::open_in_dir(&dir)?;
        register_tokenizers(&index);
        let fields = Fields::of(&index.schema())?;
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let mut w = SearchWriter {
            index,
            writer,
            fields,
            docs: HashMap::new(),
            slot_listing: HashMap::new(),
            position: Position(0),
        };
        w.load()?;
        Ok(w)
    }
}

/// The single writer of one generation of the index.
pub struct SearchWriter {
    index: Index,
    writer: IndexWriter,
    fields: Fields,
    docs: HashMap<Uuid, ListingDoc>,
    slot_listing: HashMap<Uuid, Uuid>,
    position: Position,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Payload {
    position: u64,
}

impl SearchWriter {
    /// The log position the last commit reflects.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Reads the committed state back (on open, and after a failed batch).
    fn load(&mut self) -> Result<(), ProjectionError> {
        let meta = self.index.load_metas()?;
        self.position = meta
            .payload
            .as_deref()
            .map(serde_json::from_str::<Payload>)
            .transpose()
            .map_err(|e| ProjectionError::Index(format!("commit payload: {e}")))?
            .map_or(Position(0), |p| Position(p.position));
        self.docs.clear();
        self.slot_listing.clear();
        let reader = self.index.reader()?;
        let searcher = reader.searcher();
        for (ord, segment) in searcher.segment_readers().iter().enumerate() {
            for doc in segment.doc_ids_alive() {
                let d: TantivyDocument =
                    searcher.doc(DocAddress::new(u32::try_from(ord).unwrap_or(0), doc))?;
                let state = d
                    .get_first(self.fields.state)
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| ProjectionError::Index("document without state".into()))?;
                let doc: ListingDoc = serde_json::from_str(state)
                    .map_err(|e| ProjectionError::Index(format!("stored state: {e}")))?;
                for slot in doc.slots.keys() {
                    self.slot_listing.insert(*slot, doc.listing_id);
                }
                self.docs.insert(doc.listing_id, doc);
            }
        }
        Ok(())
    }

    /// Applies `batch` and commits it with its last position as the checkpoint.
    pub fn apply(&mut self, batch: &[Envelope]) -> Result<(), ProjectionError> {
        let Some(last) = batch.last().map(|e| e.position) else {
            return Ok(());
        };
        let result = self.stage(batch).and_then(|()| self.commit(last));
        if result.is_err() {
            // Nothing of the batch may survive: drop the staged operations and the in-memory
            // changes, and continue from the last commit.
            self.writer.rollback()?;
            self.load()?;
        }
        result
    }

    fn stage(&mut self, batch: &[Envelope]) -> Result<(), ProjectionError> {
        let mut dirty = BTreeSet::new();
        for e in batch {
            if let Some(id) = self.apply_event(e)? {
                dirty.insert(id);
            }
        }
        for id in dirty {
            let doc = self
                .docs
                .get(&id)
                .expect("dirty listings exist")
                .document(&self.fields)?;
            self.writer
                .delete_term(Term::from_field_text(self.fields.id, &id.to_string()));
            self.writer.add_document(doc)?;
        }
        Ok(())
    }

    fn commit(&mut self, last: Position) -> Result<(), ProjectionError> {
        let payload = serde_json::to_string(&Payload { position: last.0 })
            .map_err(|e| ProjectionError::Index(e.to_string()))?;
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.position = last;
        Ok(())
    }

    /// The listing an event changed, if any.
    fn apply_event(&mut self, e: &Envelope) -> Result<Option<Uuid>, ProjectionError> {
        match &e.event {
            AnyEvent::Listing(ev) => {
                let id = match ev {
                    ListingEvent::ListingPublished {
                        listing_id,
                        details,
                        base_price,
                        ..
                    } => {
                        let mut doc = ListingDoc {
                            listing_id: listing_id.0,
                            kind: String::new(),
                            title: String::new(),
                            description: String::new(),
                            category: String::new(),
                            destination: String::new(),
                            country: String::new(),
                            lat: 0.0,
                            lon: 0.0,
                            duration_minutes: 0,
                            price_minor: base_price.minor,
                            currency: base_price.currency.to_string(),
                            retired: false,
                            rating_sum: 0,
                            rating_count: 0,
                            slots: BTreeMap::new(),
                        };
                        doc.set_details(details);
                        self.docs.insert(listing_id.0, doc);
                        return Ok(Some(listing_id.0));
                    }
                    ListingEvent::ListingUpdated { listing_id, .. }
                    | ListingEvent::ListingRepriced { listing_id, .. }
                    | ListingEvent::CancellationPolicyChanged { listing_id, .. }
                    | ListingEvent::ListingRetired { listing_id, .. }
                    | ListingEvent::TicketScanningSet { listing_id, .. } => listing_id.0,
                };
                let doc = self.doc_mut(e, id)?;
                match ev {
                    ListingEvent::ListingUpdated { details, .. } => doc.set_details(details),
                    ListingEvent::ListingRepriced { base_price, .. } => {
                        doc.price_minor = base_price.minor;
                        doc.currency = base_price.currency.to_string();
                    }
                    ListingEvent::ListingRetired { .. } => doc.retired = true,
                    ListingEvent::CancellationPolicyChanged { .. }
                    | ListingEvent::TicketScanningSet { .. } => return Ok(None),
                    ListingEvent::ListingPublished { .. } => {}
                }
                Ok(Some(id))
            }
            AnyEvent::Slot(ev) => {
                if let SlotEvent::SlotScheduled {
                    slot_id,
                    listing_id,
                    starts_at,
                    capacity,
                    ..
                } = ev
                {
                    let doc = self.doc_mut(e, listing_id.0)?;
                    doc.slots.insert(
                        slot_id.0,
                        SlotDoc {
                            day: day_number(*starts_at),
                            capacity: i64::from(*capacity),
                            taken: 0,
                            cancelled: false,
                        },
                    );
                    self.slot_listing.insert(slot_id.0, listing_id.0);
                    return Ok(Some(listing_id.0));
                }
                let slot_id = match ev {
                    SlotEvent::SlotScheduled { slot_id, .. }
                    | SlotEvent::SlotCapacityChanged { slot_id, .. }
                    | SlotEvent::SlotRepriced { slot_id, .. }
                    | SlotEvent::SeatsHeld { slot_id, .. }
                    | SlotEvent::SeatsConfirmed { slot_id, .. }
                    | SlotEvent::SeatsReleased { slot_id, .. }
                    | SlotEvent::SlotCancelled { slot_id, .. } => slot_id.0,
                };
                let Some(listing_id) = self.slot_listing.get(&slot_id).copied() else {
                    return Err(inconsistent(
                        NAME,
                        e,
                        format!("slot {slot_id} was never scheduled"),
                    ));
                };
                let doc = self.doc_mut(e, listing_id)?;
                let Some(slot) = doc.slots.get_mut(&slot_id) else {
                    return Err(inconsistent(
                        NAME,
                        e,
                        format!("slot {slot_id} is not in its listing"),
                    ));
                };
                match ev {
                    SlotEvent::SlotCapacityChanged { capacity, .. } => {
                        slot.capacity = i64::from(*capacity)
                    }
                    SlotEvent::SeatsHeld { seats, .. } => slot.taken += i64::from(*seats),
                    SlotEvent::SeatsReleased { seats, .. } => slot.taken -= i64::from(*seats),
                    SlotEvent::SlotCancelled { .. } => slot.cancelled = true,
                    SlotEvent::SeatsConfirmed { .. }
                    | SlotEvent::SlotScheduled { .. }
                    | SlotEvent::SlotRepriced { .. } => {}
                }
                // The counts are part of the stored state, so the document is rewritten.
                Ok(Some(listing_id))
            }
            AnyEvent::Review(ReviewEvent::ReviewWritten {
                listing_id, rating, ..
            }) => {
                let doc = self.doc_mut(e, listing_id.0)?;
                doc.rating_sum += u64::from(*rating);
                doc.rating_count += 1;
                Ok(Some(listing_id.0))
            }
            _ => Ok(None),
        }
    }

    fn doc_mut(&mut self, e: &Envelope, id: Uuid) -> Result<&mut ListingDoc, ProjectionError> {
        self.docs
            .get_mut(&id)
            .ok_or_else(|| inconsistent(NAME, e, format!("listing {id} was never published")))
    }
}

impl std::fmt::Debug for SearchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchWriter")
            .field("position", &self.position)
            .field("listings", &self.docs.len())
            .finish_non_exhaustive()
    }
}
