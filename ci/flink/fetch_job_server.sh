#!/usr/bin/env bash
# Fetch Beam's Flink job-server jar (the Java half of FlinkRunner / the job
# service for PortableRunner) into a local cache and print its path.
#
# Usage: ci/flink/fetch_job_server.sh
# Env:
#   TFCASCADE_CACHE       cache root (default: $HOME/.cache/tfcascade)
#   BEAM_VERSION          Beam version, must match the Python SDK (default 2.77.0)
#   FLINK_MINOR           Flink minor the job server targets (default 1.20)
#
# Only the jar path goes to stdout, so callers can do JAR=$(fetch_job_server.sh).
set -euo pipefail

CACHE="${TFCASCADE_CACHE:-$HOME/.cache/tfcascade}"
BEAM_VERSION="${BEAM_VERSION:-2.77.0}"
FLINK_MINOR="${FLINK_MINOR:-1.20}"
ARTIFACT="beam-runners-flink-${FLINK_MINOR}-job-server"
JAR="$CACHE/jars/${ARTIFACT}-${BEAM_VERSION}.jar"

# Idempotent: a present, non-empty jar is reused (the download is ~180 MB).
if [[ -s "$JAR" ]]; then
  echo "$JAR"
  exit 0
fi

command -v mvn >/dev/null || { echo "fetch_job_server: mvn not found" >&2; exit 2; }
mkdir -p "$CACHE/jars"

# dependency:copy writes the artifact straight to outputDirectory; -B -q keeps
# the CI log readable. Progress/log goes to stderr so stdout stays the path.
# Download to a temp dir first and rename, so an interrupted run never leaves a
# truncated jar that the -s check above would accept.
TMP="$(mktemp -d "$CACHE/jars/.fetch.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
COORD="org.apache.beam:${ARTIFACT}:${BEAM_VERSION}:jar"
if ! mvn -B -q dependency:copy -Dartifact="$COORD" -DoutputDirectory="$TMP" \
    -Dmdep.useBaseVersion=true >&2; then
  # Keep the last line short and plain: it is what a caller shows. Maven
  # remembers a "not found" for a day (-U retries).
  # (mvn's log may end without a newline: start ours on a fresh line)
  printf '\n' >&2
  echo "fetch_job_server: mvn could not resolve $COORD from the configured Maven repositories" >&2
  exit 3
fi
mv "$TMP/${ARTIFACT}-${BEAM_VERSION}.jar" "$JAR"
echo "$JAR"
