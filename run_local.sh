#!/usr/bin/env bash
# One command on a fresh machine: venv, pinned install, demo data, demo job.
#   ./run_local.sh                     # 200k demo records
#   RECORDS=20000 ./run_local.sh       # a smaller demo (also SHARDS=8, SEED=0)
#   SHIFT=0.3 ./run_local.sh           # the demo's data washed out (0..1; docs/report.md)
# Extra arguments go to `tfcascade run` (e.g. --direct_num_workers=2).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
RECORDS=${RECORDS:-200000}
SHARDS=${SHARDS:-8}
SEED=${SEED:-0}
SHIFT=${SHIFT:-0}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/tfcascade" ] || ! "$VENV/bin/python" -c "import sklearn, pyspark, matplotlib" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet --upgrade pip
  # tensorflow-cpu (pinned before) and tensorflow share one folder: swap once.
  if "$VENV/bin/pip" show -q tensorflow-cpu 2>/dev/null; then
    "$VENV/bin/pip" uninstall --quiet -y tensorflow-cpu
  fi
  # spark: the Spark engine and its tests (pyspark ships Spark; needs Java 17).
  "$VENV/bin/pip" install --quiet -c constraints.txt -e ".[demo,test,spark]"
fi
# The demo rebuilds only what demo/demo.json says differs (records, shards, seed,
# shift, the demo's version), replacing the old demo whole once the new one is complete.
"$VENV/bin/tfcascade" demo --out demo --records "$RECORDS" --shards "$SHARDS" --seed "$SEED" \
  --shift "$SHIFT"
# No runner flag: tfcascade's default, the DirectRunner on every core (in-process
# for a small demo); it says which. Extra arguments go to `tfcascade run`.
"$VENV/bin/tfcascade" run --config configs/local.yaml --overwrite "$@"
"$VENV/bin/tfcascade" inspect out/predictions
# One HTML page about the run (docs/report.md); it prints where it wrote it.
"$VENV/bin/tfcascade" report out/predictions
