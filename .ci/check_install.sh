#!/usr/bin/env bash
# A plain (non-editable) `pip install .` into a fresh venv runs a job from an unrelated folder:
# the built-in policies and the price table ship inside the package. Dependencies come from
# PyPI or pip's cache, as for a user.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check "$repo"
cd "$work"  # nothing of the source tree on sys.path or under the current folder
"$work/venv/bin/moderate" run --provider simulator --policy spam \
    --input "$repo/data/sample/comments.jsonl" --out "$work/out"
"$work/venv/bin/python" - "$work/out/cost_report.json" <<'PY'
import json, pathlib, sys

import pipeline

assert "site-packages" in pipeline.__file__, f"not the installed package: {pipeline.__file__}"
report = json.loads(pathlib.Path(sys.argv[1]).read_text())
pricing = report.get("pricing")
assert isinstance(pricing, dict) and all(v is not None for v in pricing.values()), f"no prices: {pricing!r}"
print(f"installed package ran from {pathlib.Path.cwd()}: pricing {pricing}")
PY
