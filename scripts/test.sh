#!/usr/bin/env bash
# Sets up everything the test suite needs in ./.venv on a fresh machine, then runs it:
#   - the package with its compiled extension (pip install -e '.[test]', CCO_REQUIRE_COMPILED=1),
#   - the previous generation of the official SDK (anthropic 0.x) in .venv/sdk-old, loaded by the tests
#     in a subprocess because two versions of one package cannot share a venv.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
CCO_REQUIRE_COMPILED=1 .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
if ! PYTHONPATH=.venv/sdk-old .venv/bin/python -c 'import anthropic, sys; sys.exit(not anthropic.__version__.startswith("0."))' 2>/dev/null; then
  rm -rf .venv/sdk-old
  .venv/bin/pip install -q --disable-pip-version-check --target .venv/sdk-old 'anthropic==0.75.0'
fi
export CCO_OLD_SDK_PATH="$PWD/.venv/sdk-old"
.venv/bin/cco-proxy --version
exec .venv/bin/python -m pytest "$@"
