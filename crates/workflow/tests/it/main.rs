//! Integration tests of the workflow service against real PostgreSQL and NATS JetStream, with a
//! manual clock. Every test has its own schema, stream and subject prefix, so they run in
//! parallel. Set DATABASE_URL and NATS_URL to point them at other servers; TEST_LOG=1 shows logs.

mod config_file;
mod config_fuzz;
mod consumer;
mod horizon;
mod routing;
mod rules;
mod startup;
mod support;
mod timers;
