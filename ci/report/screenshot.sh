#!/usr/bin/env bash
# Regenerates docs/report.png: the report of the README's demo
# (RECORDS=20000 ./run_local.sh, then `tfcascade report out/predictions`),
# built in a scratch folder, shot in headless Chromium
# (ci/report/install_chromium.sh). Usage: ci/report/screenshot.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
tfcascade=${TFCASCADE_BIN:-$repo/.venv/bin/tfcascade}
work=${1:-$(mktemp -d)}
mkdir -p "$work"
cd "$work"
"$tfcascade" demo --out demo --records 20000 --shards 8
"$tfcascade" run --config demo/config.yaml --set output.path=out/predictions --overwrite \
  --runner=DirectRunner
"$tfcascade" report out/predictions --out report.html
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,${HEIGHT:-2000} \
  --screenshot="$repo/docs/report.png" "file://$work/report.html"
echo "docs/report.png from $work/report.html"
