//! Integration tests of the projector against real PostgreSQL and NATS JetStream. Each test has
//! its own schema (testkit) and its own JetStream stream and subject prefix, deleted at the end.
//! Events reach JetStream through `support::Publisher`, a small stand-in for the relay that
//! publishes envelopes with the relay's subjects and headers.

mod bad_events;
mod crash;
mod database_errors;
mod delivery;
mod equivalence;
mod forecast;
mod index_names;
mod read_your_writes;
mod rebuild_swap;
mod rebuild_under_load;
mod redelivery;
mod support;
mod time_travel;
