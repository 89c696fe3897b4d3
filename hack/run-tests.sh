#!/usr/bin/env bash
# `make test`: lint, unit tests, then the local stack's integration tests and Molecule scenarios.
# Starts the local stack if it is down and stops it afterwards (by PID); leaves it up if it was up.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STACK=(env PYTHONPATH=hack .venv/bin/python -m mlstack_local)
export PATH="$PWD/.venv/bin:$PATH"

started_here=false
if ! "${STACK[@]}" status >/dev/null 2>&1; then
  started_here=true
fi
finish() {
  local code=$?
  if $started_here; then
    echo "== stopping the local stack this run started"
    "${STACK[@]}" down
  fi
  exit "$code"
}
trap finish EXIT

step() { echo; echo "== $* ($(date +%H:%M:%S))"; }

step "lint: yamllint, ruff, ansible-lint (production profile)"
make --no-print-directory lint
step "unit tests"
pytest -q tests/unit
step "local stack"
"${STACK[@]}" up
step "the collection as users install it: built tarball, installed outside the checkout"
installed="$PWD/.local/installed"
hack/install-collection.sh "$installed"
# Playbooks by collection name from the installed copy; only the local stack's inventory is the checkout's.
repo="$PWD"
as_user() { (cd "$installed" && MLSTACK_ANSIBLE_CONFIG="$installed/ansible.cfg" "$repo/hack/with-stack-env" ansible-playbook -i "$repo/inventory/local" "$@"); }
as_user mlstack.mlflow.site --list-tasks >/dev/null
step "deploy on the local stack from the installed collection (mlstack.mlflow.site --tags mlflow)"
as_user mlstack.mlflow.site --tags mlflow
"${STACK[@]}" endpoint
step "re-run: must change nothing"
as_user mlstack.mlflow.site --tags mlflow | tee .local/rerun.log
grep -Eq 'localhost +: ok=[0-9]+ +changed=0 ' .local/rerun.log || { echo "FAILED: the re-run changed something"; exit 1; }
step "18_test: verify the deployment as a user would"
as_user mlstack.mlflow.18_test
step "integration tests on the local stack"
hack/with-stack-env pytest -q --durations=25 tests/integration
step "Molecule scenarios on the local stack"
hack/with-stack-env molecule test --all
