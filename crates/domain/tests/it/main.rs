//! The domain crate's single integration test binary: given/when/then tests of every rule of
//! docs/events.md, the stored event shapes, and property tests for every decider.

mod codec;
mod decoder_fuzz;
mod lead;
mod opportunity;
mod pipeline;
mod properties;
mod schemas;
mod support;
mod values;
