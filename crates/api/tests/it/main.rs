//! Integration tests of the HTTP API: each test starts the API in-process on port 0 over its own
//! migrated PostgreSQL schema (see `helpers`) and talks to it over HTTP.
//!
//! Set `DATABASE_URL` to reach PostgreSQL (default: the local development database) and
//! `TEST_LOG` to see the service's logs.

mod analytics;
mod auth;
mod concurrency;
mod documented_inputs;
mod errors;
mod helpers;
mod idempotency;
mod leads;
mod node;
mod openapi;
mod opportunities;
mod pipelines;
mod python;
mod queries;
mod time_travel;
mod timeouts;
