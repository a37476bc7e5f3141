//! Property tests for every decider: random command sequences run the way the command handler runs
//! them (apply what `decide` accepts by evolving its events), and after every step:
//!
//! - `evolve` took every event `decide` emitted (no panic);
//! - the stream's version is the number of events accepted so far;
//! - folding the whole history from scratch gives the state the decider saw (replay is
//!   deterministic), and `decide` gives the same answer twice;
//! - every emitted event survives `codec::encode`, JSON text and `codec::decode`, and its `data`
//!   carries the fields docs/events.md names;
//! - the aggregate's own invariants hold (in each submodule).

mod lead;
mod opportunity;
mod pipeline;

use std::fmt::Debug;

use domain::Decider;
use domain::codec::{CURRENT_SCHEMA_VERSION, decode, encode};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::support::{Decided, spec_fields};

/// One command of a run, with the state before and after it.
pub struct Step<'a, D: Decider> {
    pub before: &'a D::State,
    pub command: &'a D::Command,
    pub decided: &'a Decided<D>,
    pub after: &'a D::State,
    pub history: &'a [D::Event],
}

impl<D: Decider> Step<'_, D> {
    pub fn emitted(&self) -> &[D::Event] {
        self.decided.as_deref().unwrap_or(&[])
    }
}

/// Runs `commands` from an empty stream, checking the common properties and then `check` after
/// every command. Returns the final history.
pub fn run<D>(
    commands: &[D::Command],
    mut check: impl FnMut(&Step<'_, D>) -> Result<(), TestCaseError>,
) -> Result<Vec<D::Event>, TestCaseError>
where
    D: Decider,
    D::State: PartialEq + Debug,
    D::Event: Serialize + DeserializeOwned + PartialEq + Debug,
    D::Error: PartialEq + Debug,
{
    let mut state = D::State::default();
    let mut history: Vec<D::Event> = Vec::new();
    let mut version = 0usize;
    for command in commands {
        let decided = D::decide(command, &state);
        prop_assert_eq!(
            &D::decide(command, &state),
            &decided,
            "decide is deterministic"
        );
        let before = state.clone();
        if let Ok(events) = &decided {
            for event in events {
                assert_round_trip(event)?;
                state = D::evolve(state, event);
            }
            history.extend(events.iter().cloned());
            version += events.len();
        }
        prop_assert_eq!(history.len(), version, "version counts the accepted events");
        prop_assert_eq!(
            &D::fold(&history),
            &state,
            "replaying the history rebuilds the state"
        );
        check(&Step {
            before: &before,
            command,
            decided: &decided,
            after: &state,
            history: &history,
        })?;
    }
    Ok(history)
}

/// Encodes an event, stores its `data` as JSON text, reads it back and decodes it.
pub fn assert_round_trip<E>(event: &E) -> Result<(), TestCaseError>
where
    E: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let (event_type, data) = encode(event);
    prop_assert!(
        data.is_object(),
        "{} data is an object: {}",
        event_type,
        data
    );
    for field in spec_fields(&event_type) {
        prop_assert!(
            data.get(field).is_some(),
            "{} data lacks {}: {}",
            event_type,
            field,
            data
        );
    }
    // The published JSON Schema (docs/schemas) describes every event a decider emits.
    crate::schemas::check_data(&event_type, &data).map_err(TestCaseError::fail)?;
    let stored = serde_json::to_string(&data).expect("data serialises");
    let read: Value = serde_json::from_str(&stored).expect("stored data parses");
    let decoded: E = decode(&event_type, CURRENT_SCHEMA_VERSION, read)
        .map_err(|error| TestCaseError::fail(format!("{event_type}: {error}")))?;
    prop_assert_eq!(&decoded, event);
    Ok(())
}

/// Deciding the same command again after it was accepted appends nothing: for the commands whose
/// effect is a target value (stage, owner, ...) rather than a new fact.
pub fn assert_idempotent<D>(step: &Step<'_, D>) -> Result<(), TestCaseError>
where
    D: Decider,
    D::Command: Debug,
    D::Event: Debug,
    D::Error: Debug,
{
    if step.decided.is_ok() {
        let again = D::decide(step.command, step.after);
        prop_assert!(
            matches!(&again, Ok(events) if events.is_empty()),
            "repeating {:?} gave {:?}",
            step.command,
            again
        );
    }
    Ok(())
}
