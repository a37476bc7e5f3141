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

# The browser test (tests/browser) drives Debian's chromium through its chromedriver.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "test: chromium is missing; run: sudo apt-get install -y chromium chromium-driver" >&2
        exit 1
    fi
    echo "test: installing chromium and chromium-driver" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver fonts-dejavu-core </dev/null >/dev/null
fi

# The API's tests drive a running node with two Python tools from PyPI: schemathesis fuzzes it
# from its OpenAPI document, and openapi-python-client generates a client that a flow runs
# through. They live in a venv under target/ (see crates/api/tests/it/python.rs); pip runs only
# when the pinned versions are not there yet, so a rerun costs nothing.
python_tools="target/python-tools"
# yamllint, kubernetes-validate (with the Kubernetes schemas inside) and check-jsonschema (with
# the Compose schema inside) check deploy/ offline (deploy/lint.sh).
python_pins=(schemathesis==4.32.5 openapi-python-client==0.29.1 yamllint==1.38.0
    kubernetes-validate==1.37.0 check-jsonschema==0.39.0)
if [[ "$(cat "$python_tools/pins" 2>/dev/null)" != "${python_pins[*]}" ]]; then
    echo "test: installing ${python_pins[*]} into $python_tools" >&2
    rm -rf "$python_tools"
    python3 -m venv "$python_tools"
    "$python_tools/bin/pip" install --quiet --disable-pip-version-check "${python_pins[@]}"
    echo "${python_pins[*]}" >"$python_tools/pins"
fi

bash deploy/lint.sh "$python_tools"

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

# The system tests under tests/ (the chaos suite) run the services as processes of the debug
# `dealstream` binary. `cargo test` builds binaries only for their own package's integration
# tests, so on a fresh target directory the binary would be missing: build it first.
if [[ ${#scope[@]} -gt 0 ]]; then
    cargo build -p dealstream
fi

exec cargo test "${scope[@]}" --all-targets "$@"
