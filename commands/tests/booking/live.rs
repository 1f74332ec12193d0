//! The live reactor loop (`ReactorRunner::run`): it handles what is ready in order and moves its
//! checkpoint once per chunk, to the last event handled, even when a later one failed; after a
//! failure it resumes from there. Nothing is skipped, and nothing it checkpointed is handled again.
//! It stops when told to, or when nobody is left to tell it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tessera_commands::reactor::{ManualClock, Reactor, ReactorRunner};
use tessera_log::codec::AnyEvent;
use tessera_log::store::{Position, RecordedEvent};

use super::*;

/// Records what it handled; fails every attempt at one position until its failures run out.
#[derive(Debug)]
struct Flaky {
    fail_at: u64,
    failures_left: Mutex<u32>,
    handled: Mutex<Vec<u64>>,
}

#[async_trait]
impl Reactor for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    async fn react(
        &self,
        event: &RecordedEvent,
        _: &AnyEvent,
        _: DateTime<Utc>,
    ) -> Result<(), CommandError> {
        if event.position.0 == self.fail_at {
            let mut left = self.failures_left.lock().expect("not poisoned");
            if *left > 0 {
                *left -= 1;
                return Err(CommandError::Codec("induced failure".into()));
            }
        }
        self.handled
            .lock()
            .expect("not poisoned")
            .push(event.position.0);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_reactor_checkpoints_what_it_handled_before_a_failure_and_resumes_there() {
    let w = world(10).await;
    for _ in 0..4 {
        place_booking(
            &*w.store,
            &BookingConfig::default(),
            &request(&w, 1),
            &ctx("user:c", t(1, 9)),
        )
        .await
        .expect("place");
    }
    let log: Vec<u64> = w
        .store
        .read_all(Position(0), 1_000)
        .await
        .expect("read")
        .iter()
        .map(|e| e.position.0)
        .collect();
    let head = *log.last().expect("events");
    // Every attempt at one event in the middle fails (five attempts), so the first pass gives up
    // there and the loop restarts from its checkpoint.
    let fail_at = log[log.len() / 2];
    let flaky = Arc::new(Flaky {
        fail_at,
        failures_left: Mutex::new(5),
        handled: Mutex::new(Vec::new()),
    });
    let runner = ReactorRunner {
        store: Arc::clone(&w.store),
        pool: w._db.pool.clone(),
        clock: Arc::new(ManualClock::new(t(1, 9))),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn({
        let (runner, reactor) = (runner.clone(), Arc::clone(&flaky) as Arc<dyn Reactor>);
        async move { runner.run(reactor, stopped).await }
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = runner.checkpoint("flaky").await.expect("checkpoint") == Position(head);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reactor did not reach the head; handled {:?}",
            flaky.handled.lock().expect("not poisoned")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nobody left to say stop (the sender dropped) stops it too, rather than leaving it to spin.
    drop(stop);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the reactor stops when its stop signal's sender is dropped")
        .expect("reactor task");

    assert_eq!(
        *flaky.failures_left.lock().expect("not poisoned"),
        0,
        "the failing event was attempted until its failures ran out"
    );
    assert_eq!(
        *flaky.handled.lock().expect("not poisoned"),
        log,
        "every event handled once, in log order: none skipped, none handled again after the restart"
    );
}
