//! The shape every aggregate has: `decide` turns a command into events (or a typed error)
//! against the current state, `evolve` folds one event into the state. Both are pure.

use std::fmt::Debug;

/// A consistency boundary: one event stream per instance, named `<CATEGORY>-<id>`.
pub trait Aggregate {
    type State: Default + Clone + Debug;
    type Command: Debug;
    type Event: Clone + Debug + PartialEq;
    type Error: std::error::Error + PartialEq;

    /// Stream category (`booking`, `slot`, …).
    const CATEGORY: &'static str;

    /// What happens if `command` is applied to `state`: the new events, or why not.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
    ) -> Result<Vec<Self::Event>, Self::Error>;

    /// The state after `event`. Never fails: events are facts that already happened.
    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// The state after a whole history.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self::State
    where
        Self::Event: 'a,
    {
        events
            .into_iter()
            .fold(Self::State::default(), |state, e| Self::evolve(state, e))
    }
}

/// Given/when/then over an aggregate, for table-driven tests.
pub mod spec {
    use super::Aggregate;

    /// A state reached by replaying a history.
    #[derive(Debug)]
    pub struct Given<A: Aggregate>(pub A::State);

    /// Starts from the state after `history`.
    pub fn given<A: Aggregate>(history: &[A::Event]) -> Given<A> {
        Given(A::replay(history))
    }

    impl<A: Aggregate> Given<A> {
        #[track_caller]
        /// Asserts that `command` produces exactly `expected`; returns the state after them.
        pub fn when_then(&self, command: A::Command, expected: &[A::Event]) -> A::State {
            match A::decide(&self.0, &command) {
                Ok(events) => {
                    assert_eq!(events, expected, "events of {command:?}");
                    events.iter().fold(self.0.clone(), |s, e| A::evolve(s, e))
                }
                Err(e) => panic!("{command:?} was refused: {e:?}"),
            }
        }

        #[track_caller]
        /// Asserts that `command` is refused with `expected`.
        pub fn when_err(&self, command: A::Command, expected: A::Error) {
            match A::decide(&self.0, &command) {
                Ok(events) => {
                    panic!("{command:?} was accepted with {events:?}, expected {expected:?}")
                }
                Err(e) => assert_eq!(e, expected, "error of {command:?}"),
            }
        }
    }
}
