//! Coalesced statements: requests that arrive while one statement is in flight go out together
//! as the next one.
//!
//! This is the group-commit writer's batching (see `store/postgres.rs`) for any set-based
//! statement: no timer and no batching window, so a request that finds the coalescer idle goes
//! out at once, and under load each statement carries whatever queued behind the previous one.
//! Crates that batch on a time window (`batchy`, `batched`, `scuffle-batching`) add that window
//! to every request's latency; this never waits for company.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::StoreError;

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

/// How many requests may wait for a coalescer before callers wait to queue (backpressure).
const QUEUE: usize = 4096;

/// A task that runs one statement per batch of queued requests and answers each request.
/// Cloning shares the task; it ends when the last clone is dropped.
#[derive(Debug)]
pub struct Coalescer<Req, Resp> {
    requests: mpsc::Sender<(Req, Reply<Resp>)>,
}

impl<Req, Resp> Clone for Coalescer<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            requests: self.requests.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Coalescer<Req, Resp> {
    /// Starts the tasks on the current runtime: up to `in_flight` statements run at once, each
    /// with what queued up to then. `run` gets at most `max` requests in arrival order and
    /// answers each of them, in the same order; a failure is every request's answer.
    ///
    /// More than one in flight keeps one slow statement (its backend descheduled on a busy
    /// machine) from holding up every request behind it; under saturation every runner is busy
    /// and the queue still goes out in batches.
    pub fn start<F, Fut>(max: usize, in_flight: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Resp>, StoreError>> + Send,
    {
        let (requests, queue) = mpsc::channel::<(Req, Reply<Resp>)>(QUEUE);
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let run = Arc::new(run);
        for _ in 0..in_flight.max(1) {
            let (queue, run) = (Arc::clone(&queue), Arc::clone(&run));
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(max);
                loop {
                    // One runner waits on the queue at a time; it takes what is there.
                    if queue.lock().await.recv_many(&mut batch, max).await == 0 {
                        return;
                    }
                    let (requests, replies): (Vec<Req>, Vec<Reply<Resp>>) = batch.drain(..).unzip();
                    answer(replies, run(requests).await);
                }
            });
        }
        Self { requests }
    }

    /// Queues `request` and waits for its answer.
    pub async fn call(&self, request: Req) -> Result<Resp, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send((request, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Answers each request of a batch with its answer, or all of them with the batch's failure.
fn answer<Resp>(replies: Vec<Reply<Resp>>, answers: Result<Vec<Resp>, StoreError>) {
    match answers {
        Ok(answers) if answers.len() == replies.len() => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(answers) => {
            let error = format!("{} answers to {} requests", answers.len(), replies.len());
            for reply in replies {
                let _ = reply.send(Err(StoreError::Backend(error.clone())));
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(shared(&error)));
            }
        }
    }
}

/// One failure, answered to every request of its batch (`StoreError` is not `Clone`).
fn shared(error: &StoreError) -> StoreError {
    match error {
        StoreError::Database(e) => StoreError::Database(sqlx::Error::Protocol(e.to_string())),
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::sync::Notify;

    use super::Coalescer;
    use crate::store::StoreError;

    const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

    /// Waits until `condition` holds, letting the other tasks run; fails past the deadline.
    async fn until(mut condition: impl FnMut() -> bool) {
        tokio::time::timeout(DEADLINE, async {
            while !condition() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("condition within the deadline");
    }

    #[tokio::test]
    async fn requests_queued_behind_a_statement_go_out_together_and_each_gets_its_answer() {
        let gate = Arc::new(Notify::new());
        let batches = Arc::new(AtomicUsize::new(0));
        let coalescer = Coalescer::start(64, 1, {
            let (gate, batches) = (Arc::clone(&gate), Arc::clone(&batches));
            move |requests: Vec<u32>| {
                let (gate, batches) = (Arc::clone(&gate), Arc::clone(&batches));
                async move {
                    // The first batch waits until everything else has queued behind it.
                    if batches.fetch_add(1, Ordering::SeqCst) == 0 {
                        gate.notified().await;
                    }
                    Ok(requests.into_iter().map(|r| r * 10).collect())
                }
            }
        });
        let first = tokio::spawn({
            let c = coalescer.clone();
            async move { c.call(1).await }
        });
        // The first batch is in flight.
        until(|| batches.load(Ordering::SeqCst) > 0).await;
        let rest: Vec<_> = (2..=20)
            .map(|r| {
                let c = coalescer.clone();
                tokio::spawn(async move { c.call(r).await })
            })
            .collect();
        // Every other request has reached the queue before the first statement finishes.
        until(|| coalescer.requests.capacity() <= super::QUEUE - 19).await;
        gate.notify_one();
        assert_eq!(first.await.expect("task").expect("answer"), 10);
        for (r, task) in (2..=20).zip(rest) {
            assert_eq!(task.await.expect("task").expect("answer"), r * 10);
        }
        assert_eq!(
            batches.load(Ordering::SeqCst),
            2,
            "one statement for the queue"
        );
    }

    #[tokio::test]
    async fn a_stalled_statement_does_not_hold_up_the_next_one_when_two_may_run() {
        let gate = Arc::new(Notify::new());
        let coalescer = Coalescer::start(8, 2, {
            let gate = Arc::clone(&gate);
            move |requests: Vec<u32>| {
                let gate = Arc::clone(&gate);
                async move {
                    if requests.contains(&0) {
                        gate.notified().await;
                    }
                    Ok(requests)
                }
            }
        });
        let stalled = tokio::spawn({
            let c = coalescer.clone();
            async move { c.call(0).await }
        });
        // Answered while the first statement is still stalled.
        let answer = tokio::time::timeout(DEADLINE, coalescer.call(7)).await;
        assert_eq!(answer.expect("not held up").expect("answer"), 7);
        assert!(!stalled.is_finished());
        gate.notify_one();
        assert_eq!(stalled.await.expect("task").expect("answer"), 0);
    }

    #[tokio::test]
    async fn a_failed_statement_is_every_request_s_answer_and_the_next_batch_runs() {
        let coalescer = Coalescer::start(8, 1, |requests: Vec<u32>| async move {
            if requests.contains(&0) {
                Err(StoreError::Backend("refused".into()))
            } else {
                Ok(requests)
            }
        });
        assert!(matches!(
            coalescer.call(0).await,
            Err(StoreError::Backend(m)) if m.contains("refused")
        ));
        assert_eq!(coalescer.call(7).await.expect("answer"), 7);
    }

    #[tokio::test]
    async fn a_short_answer_is_an_error_not_a_hang() {
        let coalescer = Coalescer::start(8, 1, |_: Vec<u32>| async move { Ok(Vec::<u32>::new()) });
        assert!(matches!(
            coalescer.call(1).await,
            Err(StoreError::Backend(_))
        ));
    }
}
