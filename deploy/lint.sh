#!/usr/bin/env bash
# Checks the operators' files in deploy/ offline, with the tools deploy/test.sh installs into
# target/python-tools: yamllint for every YAML file, kubernetes-validate (schemas shipped in the
# package) for the Kubernetes manifests, check-jsonschema's bundled Compose schema for
# compose.yaml, the hardening and restart options every systemd unit must keep, and the ConfigMap's copy
# of the rules file against deploy/dealstream.toml.
#
#   bash deploy/lint.sh [python-tools directory]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$(cd "$root" && realpath "${1:-target/python-tools}")/bin"
cd "$root/deploy"

"$tools/yamllint" --strict -c .yamllint.yaml compose.yaml kubernetes/
"$tools/kubernetes-validate" --quiet --strict -k 1.30.0 kubernetes/*.yaml
"$tools/check-jsonschema" --builtin-schema vendor.compose-spec compose.yaml

python3 - <<'PY'
import sys
manifest = open("kubernetes/config.yaml").read()
rules = open("dealstream.toml").read()
block = manifest.split("dealstream.toml: |\n", 1)[1].split("\n---", 1)[0]
copy = "".join(line[4:] if line.strip() else "\n" for line in block.splitlines(True))
if copy.rstrip("\n") != rules.rstrip("\n"):
    sys.exit("lint: kubernetes/config.yaml's dealstream.toml differs from deploy/dealstream.toml")
PY

for unit in systemd/*.service; do
    for key in NoNewPrivileges=yes ProtectSystem=strict Restart=always EnvironmentFile=; do
        grep -q "^$key" "$unit" || { echo "lint: $unit lacks $key" >&2; exit 1; }
    done
done
echo "lint: deploy/ is clean"
