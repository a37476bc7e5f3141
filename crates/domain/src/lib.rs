//! The functional core of dealstream: the events, commands and rules of leads, opportunities and
//! pipelines (docs/events.md), as pure `decide` and `evolve` functions.
//!
//! This crate deliberately has no async runtime, no database, messaging or HTTP dependency, and no
//! clock or randomness: callers pass the current time and any new ids in commands. The command
//! handler around it lives in the `commands` crate; read `decider` first, then one aggregate.
//!
//! The event types and values also derive `schemars::JsonSchema` (pure code, no I/O): the JSON
//! Schemas of event data under docs/schemas are generated from them by the `schemas` test, and
//! their doc comments are the schemas' descriptions, so they are written for event consumers.

pub mod codec;
pub mod decider;
pub mod lead;
pub mod opportunity;
pub mod pipeline;
pub mod values;

pub use decider::Decider;
