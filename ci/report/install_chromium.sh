#!/usr/bin/env bash
# Debian's `chromium`, for tests/test_report.py's check of the run report in a
# real headless browser. Idempotent: does nothing when chromium is installed.
# Run by .ci/run (which also sets TFCASCADE_REQUIRE_CHROMIUM=1, so a missing
# browser fails the tests instead of skipping them). Needs root or sudo.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium
command -v chromium >/dev/null
