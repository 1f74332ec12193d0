//! GDPR crypto-shredding. Personal data in events (e-mail addresses, names, review texts) is
//! stored encrypted with a per-person data key (AES-256-GCM); data keys live in `pii_keys`,
//! wrapped by a master key from configuration. Erasing a person destroys their key: every copy
//! of their data in the log (and in backups of it) becomes unreadable, while the log itself,
//! its hash chains and seals (computed over the stored ciphertext) stay intact.
//!
//! [`PiiStore`] wraps any [`EventStore`]: appends encrypt the personal fields of the event types
//! in [`PII_FIELDS`]; reads decrypt them, or show placeholders once the key is gone. Everything
//! above the store (handlers, reactors, projectors) sees plaintext or placeholders, never
//! ciphertext. The nonce is derived from the key, the event id, the field and the plaintext
//! (synthetic IV), so a retried append encrypts to the same bytes and stays idempotent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::store::{
    AppendResult, Capabilities, EventStore, EventSubscription, NewEvent, Position, RecordedEvent,
    StoreError, StreamId, StreamRead, StreamWrite,
};

/// Event types with personal data: the field naming the person, and the fields to encrypt.
pub const PII_FIELDS: &[(&str, &str, &[&str])] = &[
    // The password hash too: an erased person's hash must not outlive their key.
    (
        "UserRegistered",
        "user_id",
        &["email", "display_name", "password_hash"],
    ),
    ("UserProfileUpdated", "user_id", &["display_name"]),
    ("PhoneNumberSet", "user_id", &["phone"]),
    ("PasswordChanged", "user_id", &["password_hash"]),
    ("EmailChanged", "user_id", &["email"]),
    ("ReviewWritten", "author_id", &["text"]),
];

const PREFIX: &str = "pii:v1:";
/// What an erased person's name or text reads as.
pub const ERASED: &str = "[erased]";
const MASTER_SECRET: &str = "pii_master_key";

fn backend(what: &str) -> StoreError {
    StoreError::Backend(format!("personal data vault: {what}"))
}

/// An erased person's e-mail reads as this (still a syntactically valid address).
pub fn erased_email(subject: Uuid) -> String {
    format!(
        "erased-{}@erased.invalid",
        &subject.simple().to_string()[..12]
    )
}

fn aead(key: &[u8; 32]) -> LessSafeKey {
    // A 32-byte key is always accepted by AES-256-GCM.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 256-bit key"))
}

/// Holds the master key and reads, creates and destroys data keys.
pub struct Vault {
    pool: PgPool,
    master: LessSafeKey,
    /// Deterministic data keys for generated fixtures (same seed, same log); `None` in
    /// production, where keys come from the operating system's generator.
    seeded: Option<Mutex<StdRng>>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").finish_non_exhaustive()
    }
}

impl Vault {
    /// The configured master key (64 hex characters, `TESSERA_MASTER_KEY`), or else one
    /// generated once for this database. A master key kept in the database it protects is for
    /// demos: production configures it (and keeps it in a secrets manager).
    pub async fn load(pool: PgPool, configured: Option<&str>) -> Result<Arc<Self>, StoreError> {
        let master = match configured {
            Some(hex_key) => {
                hex::decode(hex_key.trim()).map_err(|_| backend("TESSERA_MASTER_KEY is not hex"))?
            }
            None => {
                let mut fresh = [0u8; 32];
                rand::rng().fill_bytes(&mut fresh);
                sqlx::query(
                    "INSERT INTO api_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                )
                .bind(MASTER_SECRET)
                .bind(fresh.as_slice())
                .execute(&pool)
                .await?;
                sqlx::query_scalar("SELECT secret FROM api_secrets WHERE name = $1")
                    .bind(MASTER_SECRET)
                    .fetch_one(&pool)
                    .await?
            }
        };
        let master: [u8; 32] = master
            .try_into()
            .map_err(|_| backend("the master key must have 32 bytes"))?;
        Ok(Arc::new(Self {
            pool,
            master: aead(&master),
            seeded: None,
        }))
    }

    /// Data keys drawn from a seeded generator (fixtures only: keys stay per person and are
    /// destroyed on erasure, but whoever knows the seed can recreate them).
    pub fn seeded(mut self: Arc<Self>, seed: u64) -> Arc<Self> {
        if let Some(v) = Arc::get_mut(&mut self) {
            v.seeded = Some(Mutex::new(StdRng::seed_from_u64(
                seed ^ 0x5049_495f_4b45_5953,
            )));
        }
        self
    }

    fn fresh_key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        match &self.seeded {
            Some(rng) => rng
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .fill_bytes(&mut key),
            None => rand::rng().fill_bytes(&mut key),
        }
        key
    }

    fn wrap(&self, subject: Uuid, key: &[u8; 32]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = key.to_vec();
        // Sealing into a Vec cannot fail for AES-GCM.
        self.master
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(subject.as_bytes()),
                &mut buf,
            )
            .expect("AES-GCM seals");
        [nonce.as_slice(), &buf].concat()
    }

    fn unwrap(&self, subject: Uuid, wrapped: &[u8]) -> Option<[u8; 32]> {
        if wrapped.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let mut buf = sealed.to_vec();
        let plain = self
            .master
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(subject.as_bytes()),
                &mut buf,
            )
            .ok()?;
        plain.try_into().ok()
    }

    /// The subject's key for new data: created on first use; `None` once they were erased.
    async fn key_for_writing(&self, subject: Uuid) -> Result<Option<[u8; 32]>, StoreError> {
        let existing: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT wrapped_key FROM pii_keys WHERE subject_id = $1")
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
        let wrapped = match existing {
            Some((None,)) => return Ok(None),
            Some((Some(w),)) => w,
            None => {
                let key = self.fresh_key();
                sqlx::query(
                    "INSERT INTO pii_keys (subject_id, wrapped_key) VALUES ($1, $2) \
                     ON CONFLICT (subject_id) DO NOTHING",
                )
                .bind(subject)
                .bind(self.wrap(subject, &key))
                .execute(&self.pool)
                .await?;
                let (stored,): (Option<Vec<u8>>,) =
                    sqlx::query_as("SELECT wrapped_key FROM pii_keys WHERE subject_id = $1")
                        .bind(subject)
                        .fetch_one(&self.pool)
                        .await?;
                match stored {
                    Some(w) => w,
                    None => return Ok(None),
                }
            }
        };
        self.unwrap(subject, &wrapped)
            .map(Some)
            .ok_or_else(|| backend("a data key does not unwrap with this master key"))
    }

    /// The readable keys of `subjects` (erased or unknown subjects are absent).
    async fn keys_for_reading(
        &self,
        subjects: &[Uuid],
    ) -> Result<HashMap<Uuid, [u8; 32]>, StoreError> {
        if subjects.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT subject_id, wrapped_key FROM pii_keys \
              WHERE subject_id = ANY($1) AND wrapped_key IS NOT NULL",
        )
        .bind(subjects)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(s, w)| self.unwrap(s, &w).map(|k| (s, k)))
            .collect())
    }

    /// Encrypts `plain` with `subject`'s data key for storage outside the log (the outbox's
    /// addresses and messages): random nonce, AES-256-GCM, the subject and `purpose` as
    /// associated data. `None` once the subject was erased: nothing new is written for them.
    pub async fn seal_for(
        &self,
        subject: Uuid,
        purpose: &str,
        plain: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(key) = self.key_for_writing(subject).await? else {
            return Ok(None);
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let mut buf = plain.to_vec();
        aead(&key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from([subject.as_bytes().as_slice(), purpose.as_bytes()].concat()),
                &mut buf,
            )
            .map_err(|_| backend("AES-GCM refused to seal"))?;
        Ok(Some([nonce.as_slice(), &buf].concat()))
    }

    /// Decrypts what [`Self::seal_for`] sealed; `None` once the subject was erased (their key
    /// is gone) or when the bytes are not what was sealed.
    pub async fn open_for(
        &self,
        subject: Uuid,
        purpose: &str,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let keys = self.keys_for_reading(&[subject]).await?;
        let Some(key) = keys.get(&subject) else {
            return Ok(None);
        };
        if sealed.len() < NONCE_LEN {
            return Ok(None);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut buf = body.to_vec();
        let Ok(nonce) = Nonce::try_assume_unique_for_key(nonce) else {
            return Ok(None);
        };
        Ok(aead(key)
            .open_in_place(
                nonce,
                Aad::from([subject.as_bytes().as_slice(), purpose.as_bytes()].concat()),
                &mut buf,
            )
            .ok()
            .map(|plain| plain.to_vec()))
    }

    /// Destroys the subject's data key (crypto-shredding). Returns whether a key was destroyed.
    pub async fn shred(&self, subject: Uuid, actor: &str) -> Result<bool, StoreError> {
        let result = sqlx::query(
            "INSERT INTO pii_keys (subject_id, wrapped_key, erased_at, erased_by) \
             VALUES ($1, NULL, now(), $2) \
             ON CONFLICT (subject_id) DO UPDATE SET wrapped_key = NULL, \
                 erased_at = coalesce(pii_keys.erased_at, now()), \
                 erased_by = coalesce(pii_keys.erased_by, $2) \
             WHERE pii_keys.wrapped_key IS NOT NULL",
        )
        .bind(subject)
        .bind(actor)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() > 0)
    }
}

fn spec(event_type: &str) -> Option<(&'static str, &'static [&'static str])> {
    PII_FIELDS
        .iter()
        .find(|(t, _, _)| *t == event_type)
        .map(|(_, s, f)| (*s, *f))
}

fn subject_of(data: &Map<String, Value>, field: &str) -> Option<Uuid> {
    data.get(field)?.as_str()?.parse().ok()
}

fn nonce(key: &[u8; 32], event_id: Uuid, field: &str, plain: &str) -> [u8; NONCE_LEN] {
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        &[
            event_id.as_bytes().as_slice(),
            field.as_bytes(),
            &[0],
            plain.as_bytes(),
        ]
        .concat(),
    );
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
    n
}

fn aad(subject: Uuid, field: &str) -> Vec<u8> {
    [subject.as_bytes().as_slice(), field.as_bytes()].concat()
}

fn encrypt(key: &[u8; 32], subject: Uuid, event_id: Uuid, field: &str, plain: &str) -> String {
    let n = nonce(key, event_id, field, plain);
    let mut buf = plain.as_bytes().to_vec();
    aead(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(n),
            Aad::from(aad(subject, field)),
            &mut buf,
        )
        .expect("AES-GCM seals");
    format!("{PREFIX}{}{}", hex::encode(n), hex::encode(buf))
}

fn decrypt(key: &[u8; 32], subject: Uuid, field: &str, stored: &str) -> Option<String> {
    let bytes = hex::decode(stored.strip_prefix(PREFIX)?).ok()?;
    if bytes.len() < NONCE_LEN {
        return None;
    }
    let (n, sealed) = bytes.split_at(NONCE_LEN);
    let mut buf = sealed.to_vec();
    let plain = aead(key)
        .open_in_place(
            Nonce::try_assume_unique_for_key(n).ok()?,
            Aad::from(aad(subject, field)),
            &mut buf,
        )
        .ok()?;
    String::from_utf8(plain.to_vec()).ok()
}

fn placeholder(field: &str, subject: Uuid) -> String {
    if field == "email" {
        erased_email(subject)
    } else {
        ERASED.to_owned()
    }
}

/// An event store that encrypts personal data on the way in and decrypts it on the way out.
#[derive(Debug, Clone)]
pub struct PiiStore {
    inner: Arc<dyn EventStore>,
    vault: Arc<Vault>,
}

impl PiiStore {
    pub fn new(inner: Arc<dyn EventStore>, vault: Arc<Vault>) -> Self {
        Self { inner, vault }
    }

    pub fn vault(&self) -> &Arc<Vault> {
        &self.vault
    }

    async fn seal_event(&self, event: NewEvent) -> Result<NewEvent, StoreError> {
        let Some((subject_field, fields)) = spec(&event.event_type) else {
            return Ok(event);
        };
        let Ok(Value::Object(mut data)) = serde_json::from_str::<Value>(event.data()) else {
            return Ok(event);
        };
        let Some(subject) = subject_of(&data, subject_field) else {
            return Ok(event);
        };
        let key = self.vault.key_for_writing(subject).await?;
        for field in fields {
            if let Some(Value::String(plain)) = data.get(*field) {
                let sealed = match &key {
                    Some(k) => encrypt(k, subject, event.event_id, field, plain),
                    // Never store personal data of someone already erased.
                    None => placeholder(field, subject),
                };
                data.insert((*field).to_owned(), Value::String(sealed));
            }
        }
        let text = serde_json::to_string(&data).map_err(|e| backend(&e.to_string()))?;
        NewEvent::from_json_text(
            event.event_id,
            event.event_type,
            event.schema_version,
            text,
            event.metadata,
            event.effective_at,
        )
    }

    async fn open_events(
        &self,
        events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.vault.open(events).await
    }
}

impl Vault {
    /// Replaces the encrypted fields of `events` by their plaintext, or by placeholders for
    /// erased people. (The stored bytes, which the hashes cover, are not changed.)
    pub async fn open(
        &self,
        mut events: Vec<RecordedEvent>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let subjects: Vec<Uuid> = events
            .iter()
            .filter_map(|e| {
                let (field, _) = spec(&e.event_type)?;
                let data: Map<String, Value> = serde_json::from_str(&e.data).ok()?;
                subject_of(&data, field)
            })
            .collect();
        if subjects.is_empty() {
            return Ok(events);
        }
        let keys = self.keys_for_reading(&subjects).await?;
        for e in &mut events {
            open_with(e, &keys);
        }
        Ok(events)
    }
}

/// Replaces the encrypted fields of `e` by their plaintext, or placeholders without a key.
fn open_with(e: &mut RecordedEvent, keys: &HashMap<Uuid, [u8; 32]>) {
    open_data(&e.event_type, &mut e.data, keys);
}

impl Vault {
    /// The payloads of `(event type, stored JSON)` pairs as they read today: `Some` with the
    /// personal fields decrypted (or placeholders once the person was erased) for event types
    /// with personal data, `None` for the others.
    pub async fn readable_payloads(
        &self,
        items: &[(&str, &str)],
    ) -> Result<Vec<Option<String>>, StoreError> {
        let subjects: Vec<Uuid> = items
            .iter()
            .filter_map(|(t, d)| {
                let (field, _) = spec(t)?;
                let data: Map<String, Value> = serde_json::from_str(d).ok()?;
                subject_of(&data, field)
            })
            .collect();
        let keys = self.keys_for_reading(&subjects).await?;
        Ok(items
            .iter()
            .map(|(t, d)| {
                spec(t)?;
                let mut data = (*d).to_owned();
                open_data(t, &mut data, &keys);
                Some(data)
            })
            .collect())
    }
}

fn open_data(event_type: &str, text: &mut String, keys: &HashMap<Uuid, [u8; 32]>) {
    let Some((subject_field, fields)) = spec(event_type) else {
        return;
    };
    let Ok(Value::Object(mut data)) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(subject) = subject_of(&data, subject_field) else {
        return;
    };
    for field in fields {
        if let Some(Value::String(stored)) = data.get(*field)
            && stored.starts_with(PREFIX)
        {
            let plain = keys
                .get(&subject)
                .and_then(|k| decrypt(k, subject, field, stored))
                .unwrap_or_else(|| placeholder(field, subject));
            data.insert((*field).to_owned(), Value::String(plain));
        }
    }
    if let Ok(opened) = serde_json::to_string(&data) {
        *text = opened;
    }
}

#[async_trait]
impl EventStore for PiiStore {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn append(&self, writes: Vec<StreamWrite>) -> Result<AppendResult, StoreError> {
        let mut sealed = Vec::with_capacity(writes.len());
        for w in writes {
            let mut events = Vec::with_capacity(w.events.len());
            for e in w.events {
                events.push(self.seal_event(e).await?);
            }
            sealed.push(StreamWrite::new(w.stream, w.expected, events));
        }
        self.inner.append(sealed).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        read: StreamRead,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_stream(stream, read, limit).await?;
        self.open_events(events).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let events = self.inner.read_all(after, limit).await?;
        self.open_events(events).await
    }

    fn stream_all(&self, after: Position, limit: usize) -> EventSubscription {
        opened(self.clone(), self.inner.stream_all(after, limit))
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }

    fn subscribe_all(&self, after: Position) -> EventSubscription {
        opened(self.clone(), self.inner.subscribe_all(after))
    }
}

/// Decrypts a stream of events as it flows: whatever is ready (up to 512 events) is opened
/// together, so a page costs at most one key read; nothing waits for a chunk to fill.
fn opened(store: PiiStore, events: EventSubscription) -> EventSubscription {
    events
        .ready_chunks(512)
        .then(move |chunk| {
            let store = store.clone();
            async move {
                let mut events = Vec::with_capacity(chunk.len());
                let mut failure = None;
                for e in chunk {
                    match e {
                        Ok(e) if failure.is_none() => events.push(e),
                        Ok(_) => {}
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
                let mut out: Vec<Result<RecordedEvent, StoreError>> =
                    match store.open_events(events).await {
                        Ok(opened) => opened.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e)],
                    };
                out.extend(failure.map(Err));
                futures::stream::iter(out)
            }
        })
        .flatten()
        .boxed()
}

/// The name of the blind-index key in `api_secrets`.
const BLIND_INDEX_KEY: &str = "email_blind_index";

/// The key of the e-mail blind index (generated on first use, like the JWT secret): read
/// models find a person by address through [`blind_index`] without holding the address.
pub async fn blind_index_key(conn: &mut sqlx::PgConnection) -> Result<Vec<u8>, StoreError> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    sqlx::query(
        "INSERT INTO api_secrets (name, secret) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(BLIND_INDEX_KEY)
    .bind(fresh.as_slice())
    .execute(&mut *conn)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT secret FROM api_secrets WHERE name = $1")
            .bind(BLIND_INDEX_KEY)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// The keyed hash (HMAC-SHA-256) of an e-mail address, trimmed and lower-cased: equal for
/// equal addresses, and without the key no dictionary of addresses can be matched against it.
pub fn blind_index(key: &[u8], email: &str) -> Vec<u8> {
    hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, key),
        email.trim().to_lowercase().as_bytes(),
    )
    .as_ref()
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_bind_to_their_subject_and_field() {
        let key = [7u8; 32];
        let (subject, event) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let sealed = encrypt(&key, subject, event, "email", "ada@example.com");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("ada"));
        assert_eq!(
            decrypt(&key, subject, "email", &sealed).as_deref(),
            Some("ada@example.com")
        );
        // Same input, same bytes (idempotent re-appends); another event, other bytes.
        assert_eq!(
            sealed,
            encrypt(&key, subject, event, "email", "ada@example.com")
        );
        assert_ne!(
            sealed,
            encrypt(
                &key,
                subject,
                Uuid::from_u128(3),
                "email",
                "ada@example.com"
            )
        );
        // Moved to another person or field, or opened with another key: refused.
        assert_eq!(decrypt(&key, Uuid::from_u128(9), "email", &sealed), None);
        assert_eq!(decrypt(&key, subject, "display_name", &sealed), None);
        assert_eq!(decrypt(&[8u8; 32], subject, "email", &sealed), None);
    }
}
