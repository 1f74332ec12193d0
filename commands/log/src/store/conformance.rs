//! The event store conformance suite: one set of behaviours that every adapter must show.
//! [`crate::store_conformance_suite!`] expands to one test per case for a given store factory
//! (see `commands/tests/store/main.rs`).

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::{
    EventMetadata, EventStore, ExpectedVersion, GENESIS_HASH, NewEvent, Position, RecordedEvent,
    StoreError, StreamId, StreamRead, StreamWrite, read_whole_stream,
};

/// A store under test and whatever must live as long as it (a test database, say).
#[derive(Debug)]
pub struct StoreFixture {
    pub store: Arc<dyn EventStore>,
    pub guard: Box<dyn Any + Send>,
}

/// Generous bound for waits on a condition: a failure, not a hang, if it is never met.
const DEADLINE: Duration = Duration::from_secs(300);

/// A unique stream id for this test run.
pub fn stream(prefix: &str) -> StreamId {
    StreamId::new(format!("{prefix}-{}", Uuid::new_v4().simple())).expect("valid stream id")
}

/// A test event with a random id and a small payload.
pub fn event(event_type: &str, n: u64) -> NewEvent {
    NewEvent::new(
        Uuid::new_v4(),
        event_type,
        1,
        &json!({ "n": n, "note": "conformance" }),
        EventMetadata::new(Uuid::new_v4(), "user:conformance").with_reason("testing"),
        Utc.with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
            .single()
            .expect("valid date"),
    )
    .expect("valid event")
}

fn events(n: u64) -> Vec<NewEvent> {
    (1..=n).map(|i| event("Tested", i)).collect()
}

async fn append_one(
    store: &dyn EventStore,
    stream: &StreamId,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
) -> Result<super::AppendResult, StoreError> {
    store
        .append(vec![StreamWrite::new(stream.clone(), expected, events)])
        .await
}

/// Appended events read back with the same content, consecutive versions and growing positions.
pub async fn append_and_read_back(store: Arc<dyn EventStore>) {
    let s = stream("roundtrip");
    let written = events(3);
    let result = append_one(&*store, &s, ExpectedVersion::NoStream, written.clone())
        .await
        .expect("append");
    assert_eq!(result.streams[0].first_version, 1);
    assert_eq!(result.streams[0].last_version, 3);
    assert!(result.first_position <= result.last_position);

    let read = read_whole_stream(&*store, &s).await.expect("read");
    assert_eq!(read.len(), 3);
    for (i, (stored, new)) in read.iter().zip(&written).enumerate() {
        assert!(
            stored.same_content_as(&s, new),
            "event {i} differs: {stored:?}"
        );
        assert_eq!(stored.stream_version, i as u64 + 1);
        assert_eq!(
            stored.decode::<serde_json::Value>().expect("decode")["n"],
            i as u64 + 1
        );
    }
    assert_eq!(read[0].position, result.first_position);
    assert_eq!(read[2].position, result.last_position);
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert!(store.head().await.expect("head") >= result.last_position);
}

/// Expected-version checks name the stream, what was expected and what was found.
pub async fn expected_version_checks(store: Arc<dyn EventStore>) {
    let s = stream("versions");
    append_one(&*store, &s, ExpectedVersion::Exact(0), events(2))
        .await
        .expect("Exact(0) on a new stream");

    let err = append_one(&*store, &s, ExpectedVersion::NoStream, events(1))
        .await
        .expect_err("NoStream on an existing stream");
    match err {
        StoreError::WrongExpectedVersion {
            stream,
            expected,
            actual,
        } => {
            assert_eq!(stream, s);
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual.0, 2);
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    let err = append_one(&*store, &s, ExpectedVersion::Exact(1), events(1))
        .await
        .expect_err("stale Exact");
    assert!(
        matches!(err, StoreError::WrongExpectedVersion { expected: ExpectedVersion::Exact(1), actual, .. } if actual.0 == 2),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("expected version 1, actual version 2"),
        "{err}"
    );

    let missing = stream("versions-missing");
    let err = append_one(&*store, &missing, ExpectedVersion::Exact(3), events(1))
        .await
        .expect_err("Exact on a missing stream");
    assert!(matches!(err, StoreError::WrongExpectedVersion { actual, .. } if actual.0 == 0));

    append_one(&*store, &s, ExpectedVersion::Exact(2), events(1))
        .await
        .expect("Exact(current)");
    append_one(&*store, &s, ExpectedVersion::Any, events(1))
        .await
        .expect("Any");
    assert_eq!(read_whole_stream(&*store, &s).await.expect("read").len(), 4);
    assert!(
        read_whole_stream(&*store, &missing)
            .await
            .expect("read")
            .is_empty()
    );
}

/// Of N appenders racing at the same expected version, exactly one wins.
pub async fn concurrent_appenders_exactly_one_wins(store: Arc<dyn EventStore>) {
    const N: usize = 16;
    let s = stream("race");
    append_one(&*store, &s, ExpectedVersion::NoStream, events(1))
        .await
        .expect("first event");
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|_| {
            let (store, s, barrier) = (Arc::clone(&store), s.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                append_one(&*store, &s, ExpectedVersion::Exact(1), events(2)).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(r) => {
                wins += 1;
                assert_eq!(
                    (r.streams[0].first_version, r.streams[0].last_version),
                    (2, 3)
                );
            }
            Err(StoreError::WrongExpectedVersion { actual, .. }) => assert_eq!(actual.0, 3),
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(wins, 1, "exactly one appender must win");
    let read = read_whole_stream(&*store, &s).await.expect("read");
    assert_eq!(
        read.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

/// An append to several streams is all or nothing.
pub async fn multi_stream_append_is_atomic(store: Arc<dyn EventStore>) {
    let (a, b) = (stream("atomic-a"), stream("atomic-b"));
    let both = |ea: ExpectedVersion, eb: ExpectedVersion| {
        vec![
            StreamWrite::new(a.clone(), ea, events(2)),
            StreamWrite::new(b.clone(), eb, events(1)),
        ]
    };
    if !store.capabilities().atomic_multi_stream {
        let err = store
            .append(both(ExpectedVersion::NoStream, ExpectedVersion::NoStream))
            .await
            .expect_err("multi-stream append must be refused");
        assert!(matches!(err, StoreError::Unsupported { .. }), "{err:?}");
        assert!(
            read_whole_stream(&*store, &a)
                .await
                .expect("read")
                .is_empty()
        );
        return;
    }
    let ok = store
        .append(both(ExpectedVersion::NoStream, ExpectedVersion::NoStream))
        .await
        .expect("atomic append");
    assert_eq!(ok.streams.len(), 2);
    assert_eq!(
        ok.last_position.0 - ok.first_position.0,
        2,
        "one contiguous run of positions"
    );

    let head_before = store.head().await.expect("head");
    // Stream a is at version 2 (ok), stream b is at version 1 (expected 5: conflict).
    let err = store
        .append(both(ExpectedVersion::Exact(2), ExpectedVersion::Exact(5)))
        .await
        .expect_err("conflict on b");
    assert!(
        matches!(&err, StoreError::WrongExpectedVersion { stream, actual, .. } if *stream == b && actual.0 == 1),
        "{err:?}"
    );
    assert_eq!(
        read_whole_stream(&*store, &a).await.expect("read").len(),
        2,
        "nothing of a written"
    );
    assert_eq!(
        read_whole_stream(&*store, &b).await.expect("read").len(),
        1,
        "nothing of b written"
    );
    assert_eq!(
        store.head().await.expect("head"),
        head_before,
        "the log did not move"
    );
}

/// A guard (a write without events) makes the append depend on a stream it does not write.
pub async fn guards_check_streams_they_do_not_write(store: Arc<dyn EventStore>) {
    let (w, g, missing) = (
        stream("guard-w"),
        stream("guard-g"),
        stream("guard-missing"),
    );
    append_one(&*store, &g, ExpectedVersion::NoStream, events(1))
        .await
        .expect("the guarded stream");
    let guarded = |version: ExpectedVersion, guard: ExpectedVersion| {
        vec![
            StreamWrite::new(w.clone(), version, events(1)),
            StreamWrite::guard(g.clone(), guard),
        ]
    };
    if !store.capabilities().atomic_multi_stream {
        let err = store
            .append(guarded(
                ExpectedVersion::NoStream,
                ExpectedVersion::Exact(1),
            ))
            .await
            .expect_err("a guard makes a multi-stream append");
        assert!(matches!(err, StoreError::Unsupported { .. }), "{err:?}");
        return;
    }
    let ok = store
        .append(guarded(
            ExpectedVersion::NoStream,
            ExpectedVersion::Exact(1),
        ))
        .await
        .expect("the guard holds");
    assert_eq!(ok.streams.len(), 1, "only written streams are reported");
    assert_eq!(ok.streams[0].stream, w);
    assert_eq!(ok.first_position, ok.last_position);

    // The guarded stream moves; a decision based on its old version must not commit.
    append_one(&*store, &g, ExpectedVersion::Exact(1), events(1))
        .await
        .expect("the guarded stream moves");
    let head = store.head().await.expect("head");
    let err = store
        .append(guarded(
            ExpectedVersion::Exact(1),
            ExpectedVersion::Exact(1),
        ))
        .await
        .expect_err("a stale guard");
    assert!(
        matches!(&err, StoreError::WrongExpectedVersion { stream, actual, .. } if *stream == g && actual.0 == 2),
        "{err:?}"
    );
    assert!(err.is_conflict());
    assert_eq!(store.head().await.expect("head"), head, "nothing written");
    assert_eq!(read_whole_stream(&*store, &w).await.expect("read").len(), 1);
    assert_eq!(read_whole_stream(&*store, &g).await.expect("read").len(), 2);

    // Guards on a stream that does not exist.
    store
        .append(vec![
            StreamWrite::new(w.clone(), ExpectedVersion::Exact(1), events(1)),
            StreamWrite::guard(missing.clone(), ExpectedVersion::NoStream),
        ])
        .await
        .expect("a missing stream is at no stream");
    let err = store
        .append(vec![
            StreamWrite::new(w.clone(), ExpectedVersion::Exact(2), events(1)),
            StreamWrite::guard(missing.clone(), ExpectedVersion::Exact(3)),
        ])
        .await
        .expect_err("a missing stream is not at version 3");
    assert!(
        matches!(&err, StoreError::WrongExpectedVersion { stream, actual, .. } if *stream == missing && actual.0 == 0),
        "{err:?}"
    );
    assert!(
        read_whole_stream(&*store, &missing)
            .await
            .expect("read")
            .is_empty(),
        "a guard never creates its stream"
    );
}

/// Re-appending stored events is a no-op returning the first result; changed content is refused.
pub async fn idempotent_reappend(store: Arc<dyn EventStore>) {
    let s = stream("idem");
    let batch = events(3);
    let first = append_one(&*store, &s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first append");
    let head = store.head().await.expect("head");
    // The retry carries the same (now stale) expected version: idempotency wins over the check.
    let again = append_one(&*store, &s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("idempotent re-append");
    assert_eq!(again, first);
    assert_eq!(store.head().await.expect("head"), head, "nothing written");
    assert_eq!(read_whole_stream(&*store, &s).await.expect("read").len(), 3);

    if !store.capabilities().log_wide_event_ids {
        return;
    }
    let mut changed = batch.clone();
    changed[1] = NewEvent::new(
        changed[1].event_id,
        "Tested",
        1,
        &json!({ "n": 999 }),
        changed[1].metadata.clone(),
        changed[1].effective_at,
    )
    .expect("event");
    let err = append_one(&*store, &s, ExpectedVersion::Any, changed)
        .await
        .expect_err("same id, other content");
    assert!(
        matches!(err, StoreError::EventIdConflict { event_id } if event_id == batch[1].event_id)
    );

    let other = stream("idem-other");
    let err = append_one(
        &*store,
        &other,
        ExpectedVersion::Any,
        vec![batch[0].clone()],
    )
    .await
    .expect_err("same id, other stream");
    assert!(matches!(err, StoreError::EventIdConflict { .. }), "{err:?}");

    let mut partial = vec![batch[2].clone()];
    partial.push(event("Tested", 4));
    let err = append_one(&*store, &s, ExpectedVersion::Any, partial)
        .await
        .expect_err("partial overlap");
    assert!(matches!(err, StoreError::EventIdConflict { .. }), "{err:?}");
    assert_eq!(read_whole_stream(&*store, &s).await.expect("read").len(), 3);
    assert_eq!(store.head().await.expect("head"), head);
}

/// Every event's hash follows from its predecessor's and its own stored bytes.
pub async fn hash_chain_is_continuous(store: Arc<dyn EventStore>) {
    let s = stream("chain");
    for (i, n) in [1u64, 3, 2].into_iter().enumerate() {
        let expected = if i == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Any
        };
        append_one(&*store, &s, expected, events(n))
            .await
            .expect("append");
    }
    // Interleave another stream; it must not disturb this chain.
    append_one(
        &*store,
        &stream("chain-other"),
        ExpectedVersion::Any,
        events(2),
    )
    .await
    .expect("append");
    append_one(&*store, &s, ExpectedVersion::Any, events(1))
        .await
        .expect("append");
    let read = read_whole_stream(&*store, &s).await.expect("read");
    assert_eq!(read.len(), 7);
    let mut previous = GENESIS_HASH;
    for e in &read {
        assert!(
            e.chain_holds(&previous),
            "chain broken at version {}",
            e.stream_version
        );
        previous = e.hash;
    }
    let distinct: HashSet<_> = read.iter().map(|e| e.hash).collect();
    assert_eq!(distinct.len(), read.len());
    // A changed byte breaks the chain.
    let mut tampered = read[3].clone();
    tampered.data = tampered.data.replace("conformance", "conformancf");
    assert!(!tampered.chain_holds(&read[2].hash));
}

/// Streams read forward from a version and backward from the end or a version.
pub async fn stream_reads_both_directions(store: Arc<dyn EventStore>) {
    let s = stream("dirs");
    append_one(&*store, &s, ExpectedVersion::NoStream, events(10))
        .await
        .expect("append");
    let versions = |v: Vec<RecordedEvent>| v.iter().map(|e| e.stream_version).collect::<Vec<_>>();
    let read = |r, n| {
        let (store, s) = (Arc::clone(&store), s.clone());
        async move { versions(store.read_stream(&s, r, n).await.expect("read")) }
    };
    assert_eq!(
        read(StreamRead::Forward { from: 1 }, 100).await,
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(read(StreamRead::Forward { from: 4 }, 3).await, [4, 5, 6]);
    assert_eq!(read(StreamRead::Forward { from: 9 }, 5).await, [9, 10]);
    assert!(read(StreamRead::Forward { from: 11 }, 5).await.is_empty());
    assert_eq!(
        read(StreamRead::Backward { from: None }, 3).await,
        [10, 9, 8]
    );
    assert_eq!(
        read(StreamRead::Backward { from: Some(5) }, 10).await,
        [5, 4, 3, 2, 1]
    );
    assert_eq!(
        read(StreamRead::Backward { from: Some(50) }, 2).await,
        [10, 9]
    );
    let missing = stream("dirs-missing");
    assert!(
        store
            .read_stream(&missing, StreamRead::Backward { from: None }, 5)
            .await
            .expect("read")
            .is_empty()
    );
}

/// The global log reads in pages after a cursor, in position order.
pub async fn global_log_reads_after_cursor(store: Arc<dyn EventStore>) {
    let start = store.head().await.expect("head");
    let (a, b) = (stream("log-a"), stream("log-b"));
    for i in 0..5 {
        append_one(
            &*store,
            if i % 2 == 0 { &a } else { &b },
            ExpectedVersion::Any,
            events(2),
        )
        .await
        .expect("append");
    }
    let mut cursor = start;
    let mut seen = Vec::new();
    loop {
        let page = store.read_all(cursor, 3).await.expect("read_all");
        let Some(last) = page.last() else { break };
        cursor = last.position;
        seen.extend(page);
    }
    let ours: Vec<_> = seen
        .iter()
        .filter(|e| e.stream_id == a || e.stream_id == b)
        .collect();
    assert_eq!(ours.len(), 10);
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    assert!(seen.iter().all(|e| e.position > start));
    assert_eq!(store.head().await.expect("head"), cursor);
    let streamed: Vec<RecordedEvent> = store
        .stream_all(start, usize::MAX)
        .map(|e| e.expect("stream_all"))
        .collect()
        .await;
    assert_eq!(streamed, seen, "stream_all reads what paged read_all reads");
    let limited = store.stream_all(start, 4).count().await;
    assert_eq!(limited, 4);
    if store.capabilities().dense_positions {
        for w in seen.windows(2) {
            assert_eq!(w[1].position.0, w[0].position.0 + 1, "positions are dense");
        }
    }
}

/// Malformed appends are refused with a clear error and write nothing.
pub async fn invalid_appends_are_rejected(store: Arc<dyn EventStore>) {
    let s = stream("invalid");
    let head = store.head().await.expect("head");
    let e = event("Tested", 1);
    let cases: Vec<Vec<StreamWrite>> = vec![
        vec![],
        vec![StreamWrite::new(s.clone(), ExpectedVersion::Any, vec![])],
        // Guards alone write nothing.
        vec![StreamWrite::guard(s.clone(), ExpectedVersion::NoStream)],
        vec![
            StreamWrite::new(stream("invalid-b"), ExpectedVersion::Any, events(1)),
            StreamWrite::guard(s.clone(), ExpectedVersion::Any),
        ],
        vec![
            StreamWrite::new(s.clone(), ExpectedVersion::Any, events(1)),
            StreamWrite::new(s.clone(), ExpectedVersion::Any, events(1)),
        ],
        vec![StreamWrite::new(
            s.clone(),
            ExpectedVersion::Any,
            vec![e.clone(), e],
        )],
    ];
    for writes in cases {
        let err = store.append(writes).await.expect_err("invalid append");
        assert!(matches!(err, StoreError::InvalidAppend { .. }), "{err:?}");
    }
    // Text no store keeps (U+0000) is refused with a typed error, in data and in metadata;
    // an escaped backslash followed by the letters `u0000` is ordinary text and is kept.
    let at = Utc
        .with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("valid date");
    let meta = || EventMetadata::new(Uuid::new_v4(), "user:conformance");
    let nul_data = NewEvent::new(
        Uuid::new_v4(),
        "Tested",
        1,
        &json!({ "note": "a\u{0}b" }),
        meta(),
        at,
    )
    .expect("serialisable");
    let nul_reason = NewEvent::new(
        Uuid::new_v4(),
        "Tested",
        1,
        &json!({ "n": 1 }),
        meta().with_reason("why\u{0}"),
        at,
    )
    .expect("serialisable");
    for (e, what) in [(nul_data, "data"), (nul_reason, "reason")] {
        let err = store
            .append(vec![StreamWrite::new(
                s.clone(),
                ExpectedVersion::Any,
                vec![e],
            )])
            .await
            .expect_err("unstorable text");
        assert!(
            matches!(err, StoreError::UnstorableText { what: w, .. } if w == what),
            "{err:?}"
        );
    }
    let literal = NewEvent::new(
        Uuid::new_v4(),
        "Tested",
        1,
        &json!({ "note": "\\u0000 is six characters" }),
        meta(),
        at,
    )
    .expect("serialisable");
    let kept = store
        .append(vec![StreamWrite::new(
            stream("invalid-literal"),
            ExpectedVersion::Any,
            vec![literal],
        )])
        .await
        .expect("an escaped backslash is ordinary text");
    assert!(kept.last_position > head);
    assert!(matches!(
        StreamId::new(""),
        Err(StoreError::InvalidStreamId { .. })
    ));
    assert!(matches!(
        StreamId::new("has space"),
        Err(StoreError::InvalidStreamId { .. })
    ));
    assert!(matches!(
        StreamId::new("$system"),
        Err(StoreError::InvalidStreamId { .. })
    ));
    assert!(
        NewEvent::from_json_text(
            Uuid::new_v4(),
            "T",
            1,
            "{not json".into(),
            event("T", 1).metadata,
            Utc::now()
        )
        .is_err()
    );
    // Nothing but the ordinary-text event was written.
    assert_eq!(store.head().await.expect("head"), kept.last_position);
}

/// A subscription delivers what is there, then what comes later.
pub async fn subscription_catches_up_then_goes_live(store: Arc<dyn EventStore>) {
    let s = stream("live");
    append_one(&*store, &s, ExpectedVersion::NoStream, events(5))
        .await
        .expect("append");
    let start = store.head().await.expect("head");
    let mut sub = store.subscribe_all(Position(start.0.saturating_sub(5)));
    let mut got = Vec::new();
    while got.len() < 5 {
        let e = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("deadline")
            .expect("open")
            .expect("event");
        if e.stream_id == s {
            got.push(e.stream_version);
        }
    }
    let writer = {
        let (store, s) = (Arc::clone(&store), s.clone());
        tokio::spawn(async move {
            for _ in 0..3 {
                append_one(&*store, &s, ExpectedVersion::Any, events(1))
                    .await
                    .expect("append");
            }
        })
    };
    while got.len() < 8 {
        let e = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .expect("deadline")
            .expect("open")
            .expect("event");
        if e.stream_id == s {
            got.push(e.stream_version);
        }
    }
    writer.await.expect("writer");
    assert_eq!(got, (1..=8).collect::<Vec<_>>());
}

/// The concurrency proof: 8 writers append 5,000 events each into many streams (own streams with
/// exact versions, shared streams with `Any`, batches of 1 to 5 events) while subscribers follow
/// live. Every event is seen exactly once, in an order where every stream's versions ascend by
/// one, and a reader restarted from a saved cursor continues without gaps or duplicates.
pub async fn concurrency_proof(store: Arc<dyn EventStore>) {
    concurrency_proof_across(vec![Arc::clone(&store)], store).await;
}

/// [`concurrency_proof`] with the writers spread over several store instances (as separate
/// processes would be) and the subscribers on another one.
pub async fn concurrency_proof_across(
    writer_stores: Vec<Arc<dyn EventStore>>,
    store: Arc<dyn EventStore>,
) {
    const WRITERS: usize = 8;
    const PER_WRITER: usize = 5_000;
    const OWN_STREAMS: usize = 40;
    const SHARED_STREAMS: usize = 16;
    const TOTAL: usize = WRITERS * PER_WRITER;

    let run = Uuid::new_v4().simple().to_string();
    let start = store.head().await.expect("head");
    let is_ours = {
        let prefix = format!("proof{run}");
        move |e: &RecordedEvent| e.stream_id.as_str().starts_with(&prefix)
    };

    // Subscriber A reads everything live; subscriber B stops part-way, saves its cursor and a
    // fresh subscription resumes from it, both while the writers are still writing.
    let sub_a = {
        let (store, is_ours) = (Arc::clone(&store), is_ours.clone());
        tokio::spawn(async move {
            let mut sub = store.subscribe_all(start);
            let mut seen = Vec::with_capacity(TOTAL);
            while seen.len() < TOTAL {
                let e = tokio::time::timeout(DEADLINE, sub.next())
                    .await
                    .expect("subscriber A waited past the deadline")
                    .expect("subscription ended")
                    .expect("subscription error");
                if is_ours(&e) {
                    seen.push(e);
                }
            }
            seen
        })
    };
    let sub_b = {
        let (store, is_ours) = (Arc::clone(&store), is_ours.clone());
        tokio::spawn(async move {
            let mut seen = Vec::with_capacity(TOTAL);
            let mut cursor = start;
            for stop_after in [TOTAL / 7, TOTAL / 3, TOTAL] {
                let mut sub = store.subscribe_all(cursor);
                while seen.len() < stop_after {
                    let e: RecordedEvent = tokio::time::timeout(DEADLINE, sub.next())
                        .await
                        .expect("subscriber B waited past the deadline")
                        .expect("subscription ended")
                        .expect("subscription error");
                    cursor = e.position;
                    if is_ours(&e) {
                        seen.push(e);
                    }
                }
                // Dropping the subscription here is the restart; `cursor` is what was saved.
            }
            seen
        })
    };

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, run) = (
                Arc::clone(&writer_stores[w % writer_stores.len()]),
                run.clone(),
            );
            tokio::spawn(async move {
                let own: Vec<StreamId> = (0..OWN_STREAMS)
                    .map(|k| StreamId::new(format!("proof{run}-w{w}-s{k}")).expect("id"))
                    .collect();
                let shared: Vec<StreamId> = (0..SHARED_STREAMS)
                    .map(|k| StreamId::new(format!("proof{run}-shared-{k}")).expect("id"))
                    .collect();
                let mut versions = vec![0u64; OWN_STREAMS];
                let mut ids = Vec::with_capacity(PER_WRITER);
                let mut written = 0usize;
                let mut i = 0usize;
                while written < PER_WRITER {
                    let n = (1 + (i * 7 + w) % 5).min(PER_WRITER - written);
                    let batch: Vec<NewEvent> = (0..n)
                        .map(|j| event("Proved", (written + j) as u64))
                        .collect();
                    ids.extend(batch.iter().map(|e| e.event_id));
                    let write = if i % 4 == 3 {
                        StreamWrite::new(
                            shared[(i + w) % SHARED_STREAMS].clone(),
                            ExpectedVersion::Any,
                            batch,
                        )
                    } else {
                        let k = (i * 13 + w) % OWN_STREAMS;
                        let expected = match versions[k] {
                            0 => ExpectedVersion::NoStream,
                            v => ExpectedVersion::Exact(v),
                        };
                        versions[k] += n as u64;
                        StreamWrite::new(own[k].clone(), expected, batch)
                    };
                    store.append(vec![write]).await.expect("append");
                    written += n;
                    i += 1;
                }
                ids
            })
        })
        .collect();

    let mut appended = HashSet::with_capacity(TOTAL);
    for w in writers {
        appended.extend(w.await.expect("writer"));
    }
    assert_eq!(appended.len(), TOTAL);
    let seen_a = sub_a.await.expect("subscriber A");
    let seen_b = sub_b.await.expect("subscriber B");

    // Exactly once.
    let ids_a: HashSet<Uuid> = seen_a.iter().map(|e| e.event_id).collect();
    assert_eq!(ids_a.len(), TOTAL, "subscriber A saw a duplicate");
    assert_eq!(ids_a, appended, "subscriber A missed events");
    // In log order, with each stream's versions ascending by one.
    assert!(seen_a.windows(2).all(|w| w[0].position < w[1].position));
    let mut next_version: HashMap<&StreamId, u64> = HashMap::new();
    for e in &seen_a {
        let expected = next_version.entry(&e.stream_id).or_insert(1);
        assert_eq!(
            e.stream_version, *expected,
            "stream {} out of order",
            e.stream_id
        );
        *expected += 1;
    }
    if store.capabilities().dense_positions {
        let first = seen_a[0].position.0;
        assert_eq!(
            seen_a[TOTAL - 1].position.0 - first,
            (TOTAL - 1) as u64,
            "positions are dense"
        );
    }
    // The restarted reader saw the same sequence, without gaps or duplicates.
    let order_a: Vec<Uuid> = seen_a.iter().map(|e| e.event_id).collect();
    let order_b: Vec<Uuid> = seen_b.iter().map(|e| e.event_id).collect();
    assert_eq!(order_b, order_a, "the resumed reader diverged");
    // Any saved cursor resumes exactly after itself (checked by paging the log).
    for &cut in &[0, 1, TOTAL / 2, TOTAL - 1] {
        let mut cursor = seen_a[cut].position;
        let mut rest = Vec::new();
        loop {
            let page = store.read_all(cursor, 1_000).await.expect("read_all");
            let Some(last) = page.last() else { break };
            cursor = last.position;
            rest.extend(page.into_iter().filter(|e| is_ours(e)).map(|e| e.event_id));
        }
        assert_eq!(
            rest,
            order_a[cut + 1..],
            "resume after index {cut} diverged"
        );
    }
}

/// Expands to one `#[tokio::test]` per conformance case. `$make` is an async fn returning
/// `Option<StoreFixture>`; `None` means the adapter is unavailable here and the factory has
/// already printed a visible `skipped:` line.
#[macro_export]
macro_rules! store_conformance_suite {
    ($make:path) => {
        $crate::store_conformance_suite!(@cases $make;
            append_and_read_back,
            expected_version_checks,
            concurrent_appenders_exactly_one_wins,
            multi_stream_append_is_atomic,
            guards_check_streams_they_do_not_write,
            idempotent_reappend,
            hash_chain_is_continuous,
            stream_reads_both_directions,
            global_log_reads_after_cursor,
            invalid_appends_are_rejected,
            subscription_catches_up_then_goes_live,
            concurrency_proof
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(fixture) = $make().await else { return };
                $crate::store::conformance::$case(::std::sync::Arc::clone(&fixture.store)).await;
                drop(fixture);
            }
        )*
    };
}
