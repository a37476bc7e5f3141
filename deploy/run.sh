#!/usr/bin/env bash
# The main job: make sure PostgreSQL and NATS are up, build dealstream, load the
# sample history, then serve the API (and every other service) on DEALSTREAM_HTTP_ADDR.
#
#   bash deploy/run.sh
#
# Configuration is read from the environment; see README.md for the variables.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash deploy/services.sh

echo "run: building dealstream (release)" >&2
cargo build --release -p dealstream

binary="${CARGO_TARGET_DIR:-target}/release/dealstream"

echo "run: loading the sample history" >&2
"$binary" demo

echo "run: serving on ${DEALSTREAM_HTTP_ADDR:-127.0.0.1:8080} (stop with Ctrl-C or SIGTERM)" >&2
exec "$binary" run
