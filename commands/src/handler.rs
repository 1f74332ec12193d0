//! Command handling: load a stream, replay it through the pure domain, decide, append with the
//! expected version; retry a bounded number of times when another writer got there first.
//!
//! Every event a command writes has an id derived from the command id (UUID v5), and as its
//! causation id the event it reacts to (reactors) or else the command id. A retried command therefore cannot append twice: the store refuses
//! different content under the same id and returns the first result for the same content, and a
//! stream that already holds events caused by this command returns that earlier outcome.

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tessera_domain::Aggregate;
use tessera_domain::values::derived_id;
use uuid::Uuid;

use crate::error::CommandError;
use tessera_log::codec::{self, CodecError};
use tessera_log::store::{
    AppendResult, EventMetadata, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent,
    StreamId, StreamWrite, read_stream_after,
};

/// How many times a command is re-decided after losing a race for a stream.
pub const MAX_ATTEMPTS: u32 = 30;

/// Who asks, why, and in the course of what; stamped on every event the command writes.
#[derive(Debug, Clone)]
pub struct CommandContext {
    /// Unique per command; a retry of the same command carries the same id.
    pub command_id: Uuid,
    pub correlation_id: Uuid,
    /// A user id, or `system:<reactor>`.
    pub actor: String,
    /// The reason a person gave (required for admin compensations).
    pub reason: Option<String>,
    /// The event this command reacts to (reactors); otherwise the command itself is the cause.
    pub caused_by_event: Option<Uuid>,
    /// The business time of the command (the clock is read by the caller, never by the domain).
    pub now: DateTime<Utc>,
}

impl CommandContext {
    pub fn new(command_id: Uuid, actor: impl Into<String>, now: DateTime<Utc>) -> Self {
        Self {
            command_id,
            correlation_id: command_id,
            actor: actor.into(),
            reason: None,
            caused_by_event: None,
            now: now.trunc_subsecs(6),
        }
    }

    /// The context of a reactor's command in reaction to `event`. The command id derives from
    /// the event, the reactor and `what`, so a redelivered event re-issues the same command,
    /// which is then a replay.
    pub fn reacting_to(
        reactor: &str,
        what: &str,
        event: &RecordedEvent,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            command_id: derived_id(event.event_id, format!("{reactor}/{what}").as_bytes()),
            correlation_id: event.metadata.correlation_id,
            actor: format!("system:{reactor}"),
            reason: None,
            caused_by_event: Some(event.event_id),
            now: now.trunc_subsecs(6),
        }
    }

    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    fn metadata(&self) -> EventMetadata {
        EventMetadata {
            correlation_id: self.correlation_id,
            causation_id: Some(self.caused_by_event.unwrap_or(self.command_id)),
            actor: self.actor.clone(),
            reason: self.reason.clone(),
        }
    }

    /// The id of the `index`-th event this command writes to `stream`.
    pub fn event_id(&self, stream: &StreamId, index: usize) -> Uuid {
        event_id_for(self.command_id, stream, index)
    }
}

/// The id of the `index`-th event command `command_id` writes to `stream`.
pub fn event_id_for(command_id: Uuid, stream: &StreamId, index: usize) -> Uuid {
    derived_id(command_id, format!("{stream}/{index}").as_bytes())
}

/// A stream replayed into its aggregate's state.
#[derive(Debug)]
pub struct Loaded<A: Aggregate> {
    pub stream: StreamId,
    pub state: A::State,
    /// Number of events in the stream (0: it does not exist).
    pub version: u64,
    /// Events of this stream written by the command being handled (on a retry).
    pub caused_by_command: Vec<RecordedEvent>,
    /// Log position of the stream's last event (`START` when it does not exist).
    pub last_position: Position,
}

impl<A: Aggregate> Loaded<A> {
    pub fn expected(&self) -> ExpectedVersion {
        match self.version {
            0 => ExpectedVersion::NoStream,
            v => ExpectedVersion::Exact(v),
        }
    }
}

/// The stream id of an aggregate instance: `<category>-<id>`.
pub fn stream_of<A: Aggregate>(id: impl std::fmt::Display) -> StreamId {
    StreamId::new(format!("{}-{id}", A::CATEGORY))
        .expect("category and uuid make a valid stream id")
}

/// Reads and replays one aggregate instance.
pub async fn load<A>(
    store: &dyn EventStore,
    stream: StreamId,
    command_id: Uuid,
) -> Result<Loaded<A>, CommandError>
where
    A: Aggregate,
    A::Event: DeserializeOwned,
{
    load_onto(store, Loaded::new_stream(stream), command_id).await
}

/// Brings `start`, the stream's exact state after its first `start.version` events, up to the
/// stream's head by reading only the events after it. `caused_by_command` covers only those.
async fn load_onto<A>(
    store: &dyn EventStore,
    start: Loaded<A>,
    command_id: Uuid,
) -> Result<Loaded<A>, CommandError>
where
    A: Aggregate,
    A::Event: DeserializeOwned,
{
    let Loaded {
        stream,
        mut state,
        version,
        last_position,
        ..
    } = start;
    let events = read_stream_after(store, &stream, version).await?;
    let mut caused_by_command = Vec::new();
    let mut next_own_id = event_id_for(command_id, &stream, 0);
    for recorded in &events {
        let event: A::Event = codec::decode(
            &recorded.event_type,
            recorded.schema_version,
            &recorded.data,
        )
        .map_err(|e| CommandError::Codec(e.to_string()))?;
        state = A::evolve(state, &event);
        // The command's events carry ids derived from it, in order.
        if recorded.event_id == next_own_id {
            caused_by_command.push(recorded.clone());
            next_own_id = event_id_for(command_id, &stream, caused_by_command.len());
        }
    }
    Ok(Loaded {
        stream,
        state,
        version: events.last().map_or(version, |e| e.stream_version),
        caused_by_command,
        last_position: events.last().map_or(last_position, |e| e.position),
    })
}

impl<A: Aggregate> Loaded<A> {
    /// A stream about to be created: nothing in it yet.
    pub fn new_stream(stream: StreamId) -> Self {
        Self {
            stream,
            state: A::State::default(),
            version: 0,
            caused_by_command: Vec::new(),
            last_position: Position::START,
        }
    }

    /// A guard on this stream at the version it was loaded at: an append carrying it commits
    /// only if nobody wrote to the stream since.
    pub fn guard(&self) -> StreamWrite {
        StreamWrite::guard(self.stream.clone(), self.expected())
    }
}

/// Aggregate states this process decided on recently, by stream, so that a hot aggregate (a
/// slot taking holds) is not replayed from the store for every command: the caching repository
/// of Axon, the in-memory aggregate of Commanded.
///
/// An entry may be stale (another process, or another command here, wrote since). It is
/// therefore only used for an **optimistic** attempt whose append is guarded by the cached
/// versions: if the stream moved, the append is refused and the command loads from the store.
/// A cached state never decides anything the store did not confirm.
///
/// It also hands out **turns**: a first-come-first-served lock per stream, which commands on a
/// hot aggregate take around their decide-and-append, so that in one process they queue
/// instead of racing (a lost race is a wasted read, decision and append). A turn is an
/// optimisation only: the append's expected version still decides, across processes and if two
/// turns for one stream ever coexist (an evicted lock).
#[derive(Clone)]
pub struct AggregateCache {
    entries: moka::sync::Cache<StreamId, Arc<dyn Any + Send + Sync>>,
    turns: moka::sync::Cache<StreamId, Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for AggregateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AggregateCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

/// One cached aggregate: its state after `version` events.
struct CachedState<S> {
    state: S,
    version: u64,
    last_position: Position,
}

impl AggregateCache {
    /// A cache of at most `capacity` aggregates.
    pub fn new(capacity: u64) -> Self {
        Self {
            entries: moka::sync::Cache::new(capacity),
            turns: moka::sync::Cache::new(capacity),
        }
    }

    /// Waits for this process's turn on `stream` (first come, first served: tokio's mutex is
    /// fair) and holds it until the guard is dropped.
    pub async fn turn(&self, stream: &StreamId) -> tokio::sync::OwnedMutexGuard<()> {
        self.turns
            .get_with_by_ref(stream, || Arc::new(tokio::sync::Mutex::new(())))
            .lock_owned()
            .await
    }

    /// The cached state of `stream`, if any (possibly stale).
    pub fn get<A>(&self, stream: &StreamId) -> Option<Loaded<A>>
    where
        A: Aggregate,
        A::State: Send + Sync + 'static,
    {
        let entry = self.entries.get(stream)?;
        let cached = entry.downcast_ref::<CachedState<A::State>>()?;
        Some(Loaded {
            stream: stream.clone(),
            state: cached.state.clone(),
            version: cached.version,
            caused_by_command: Vec::new(),
            last_position: cached.last_position,
        })
    }

    /// Remembers a state loaded from the store.
    pub fn put<A>(&self, loaded: &Loaded<A>)
    where
        A: Aggregate,
        A::State: Send + Sync + 'static,
    {
        self.entries.insert(
            loaded.stream.clone(),
            Arc::new(CachedState {
                state: loaded.state.clone(),
                version: loaded.version,
                last_position: loaded.last_position,
            }),
        );
    }

    /// Remembers the state after `events`, which an append just wrote on top of `loaded`.
    pub fn advance<A>(&self, loaded: &Loaded<A>, events: &[A::Event], appended: &AppendResult)
    where
        A: Aggregate,
        A::State: Send + Sync + 'static,
    {
        let Some(written) = appended.streams.iter().find(|s| s.stream == loaded.stream) else {
            return;
        };
        let state = events
            .iter()
            .fold(loaded.state.clone(), |state, e| A::evolve(state, e));
        self.entries.insert(
            loaded.stream.clone(),
            Arc::new(CachedState {
                state,
                version: written.last_version,
                // The append's last position: at or after this stream's last event.
                last_position: appended.last_position,
            }),
        );
    }

    /// Drops what is cached for `stream`.
    pub fn forget(&self, stream: &StreamId) {
        self.entries.invalidate(stream);
    }
}

/// Loads `stream`: from `cache` as it is when `optimistic` and it is there, else caught up
/// with the store ([`load_caught_up`]). A state from the cache carries no `caused_by_command`:
/// only an optimistic attempt may use it, one whose append is guarded by its version.
pub async fn load_via<A>(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    optimistic: bool,
    stream: StreamId,
    command_id: Uuid,
) -> Result<Loaded<A>, CommandError>
where
    A: Aggregate,
    A::Event: DeserializeOwned,
    A::State: Send + Sync + 'static,
{
    if optimistic && let Some(hit) = cache.and_then(|c| c.get::<A>(&stream)) {
        return Ok(hit);
    }
    load_caught_up(store, cache, stream, command_id).await
}

/// Loads `stream` at its head, starting from its state in `cache` when there is one and reading
/// only the events after it (a busy slot's thousands of events are not replayed for every
/// release), then caches the result. Exact, unlike the optimistic use of [`load_via`]: every
/// cached state is the stream's state at its cached version (it came from a load, or from an
/// append guarded by that version), and the store supplies everything after it.
///
/// `caused_by_command` covers only the events read after the cached state, so a caller must
/// recognise a retried command on a stream that it loads whole and the command also writes
/// (the booking's), and then complete it with [`whole_if_retried`].
pub async fn load_caught_up<A>(
    store: &dyn EventStore,
    cache: Option<&AggregateCache>,
    stream: StreamId,
    command_id: Uuid,
) -> Result<Loaded<A>, CommandError>
where
    A: Aggregate,
    A::Event: DeserializeOwned,
    A::State: Send + Sync + 'static,
{
    let start = cache
        .and_then(|c| c.get::<A>(&stream))
        .unwrap_or_else(|| Loaded::new_stream(stream));
    let loaded = load_onto(store, start, command_id).await?;
    if let Some(cache) = cache {
        cache.put(&loaded);
    }
    Ok(loaded)
}

/// A state caught up from a cache knows only the events of a retried command that came after
/// the cached version. When `retried` (another stream the command writes, loaded whole, shows
/// it ran), reads `loaded`'s stream whole, so that the replay answers with everything the
/// command wrote (its last position). Retries are rare; this is their only extra cost.
pub async fn whole_if_retried<A>(
    store: &dyn EventStore,
    loaded: Loaded<A>,
    retried: bool,
    command_id: Uuid,
) -> Result<Loaded<A>, CommandError>
where
    A: Aggregate,
    A::Event: DeserializeOwned,
{
    if retried && loaded.caused_by_command.is_empty() {
        load(store, loaded.stream, command_id).await
    } else {
        Ok(loaded)
    }
}

/// Turns decided events into a write to their stream.
pub fn write_for<A>(
    loaded: &Loaded<A>,
    events: &[A::Event],
    ctx: &CommandContext,
) -> Result<StreamWrite, CommandError>
where
    A: Aggregate,
    A::Event: Serialize,
{
    let mut new = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let encoded =
            codec::encode(event).map_err(|e: CodecError| CommandError::Codec(e.to_string()))?;
        new.push(NewEvent::from_json_text(
            ctx.event_id(&loaded.stream, i),
            encoded.event_type,
            encoded.schema_version,
            encoded.data,
            ctx.metadata(),
            ctx.now,
        )?);
    }
    Ok(StreamWrite::new(
        loaded.stream.clone(),
        loaded.expected(),
        new,
    ))
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executed {
    /// Log position of the command's last event: what a client waits for to read its writes.
    pub position: Position,
    /// Whether this was a retry of a command that had already been applied.
    pub replayed: bool,
}

/// What one attempt at a command decided.
#[derive(Debug)]
pub enum Attempt {
    /// The command had already been applied (a retry): its earlier outcome.
    Replayed(Executed),
    /// Append these writes atomically, each guarded by its expected version.
    Append(Vec<StreamWrite>),
}

/// The outcome of a command that already wrote these events (a retry), if it did.
pub fn replayed(caused: &[&[RecordedEvent]]) -> Option<Executed> {
    caused
        .iter()
        .flat_map(|events| events.iter())
        .map(|e| e.position)
        .max()
        .map(|position| Executed {
            position,
            replayed: true,
        })
}

/// Runs `attempt` (load, decide) and appends what it decided; when another writer changed a
/// stream in between, loads and decides again, at most [`MAX_ATTEMPTS`] times.
pub async fn decide_and_append<F, Fut>(
    store: &dyn EventStore,
    mut attempt: F,
) -> Result<Executed, CommandError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Attempt, CommandError>>,
{
    for _ in 0..MAX_ATTEMPTS {
        match attempt().await? {
            Attempt::Replayed(done) => return Ok(done),
            Attempt::Append(writes) => match store.append(writes).await {
                Ok(result) => {
                    return Ok(Executed {
                        position: result.last_position,
                        replayed: false,
                    });
                }
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(CommandError::Contention {
        attempts: MAX_ATTEMPTS,
    })
}

/// Executes a command against one aggregate instance.
pub async fn execute<A>(
    store: &dyn EventStore,
    stream: StreamId,
    command: &A::Command,
    ctx: &CommandContext,
) -> Result<Executed, CommandError>
where
    A: Aggregate,
    A::Event: Serialize + DeserializeOwned,
    CommandError: From<A::Error>,
{
    decide_and_append(store, || {
        let stream = stream.clone();
        async move {
            let loaded = load::<A>(store, stream, ctx.command_id).await?;
            if let Some(done) = replayed(&[&loaded.caused_by_command]) {
                return Ok(Attempt::Replayed(done));
            }
            let events = A::decide(&loaded.state, command)?;
            if events.is_empty() {
                return Ok(Attempt::Replayed(Executed {
                    position: Position::START,
                    replayed: false,
                }));
            }
            Ok(Attempt::Append(vec![write_for(&loaded, &events, ctx)?]))
        }
    })
    .await
}
