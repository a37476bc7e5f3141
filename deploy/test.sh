#!/usr/bin/env bash
# Runs the whole test suite against real PostgreSQL and NATS, starting them if needed.
#
#   bash deploy/test.sh [extra cargo test arguments, e.g. -p domain or -- --nocapture]
#
# Without -p it tests the whole workspace. Exits with cargo's status, so a failing test
# fails the script. Set TEST_LOG=1 to see the tests' logs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash deploy/services.sh

# `--workspace` would override a `-p NAME` given by the caller, so it is only added when
# the caller did not pick packages.
scope=(--workspace)
for argument in "$@"; do
    [[ "$argument" == -- ]] && break
    if [[ "$argument" == -p* || "$argument" == --package* ]]; then
        scope=()
        break
    fi
done

exec cargo test "${scope[@]}" --all-targets "$@"
