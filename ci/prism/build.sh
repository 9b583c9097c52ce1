#!/usr/bin/env bash
# Builds Beam's Prism runner (a Go program) for `--runner=PrismRunner` and
# prints the binary's path on stdout (nothing else goes there):
#
#   TFCASCADE_PRISM="$(ci/prism/build.sh)"; export TFCASCADE_PRISM
#
# (not `export X="$(...)"`: that masks the script's exit status.)
# The version is the apache-beam pin in constraints.txt: Prism and the Python
# SDK of one Beam release. Built with `go install` (Go >= 1.26, as Beam's
# go.mod asks, and the Go module proxy; about a minute) into
# $TFCASCADE_CACHE/prism/<version>/prism (default cache: ~/.cache/tfcascade,
# like ci/flink/), where `tfcascade run --runner=PrismRunner` also finds it by
# itself; a binary already there is reused. Exits non-zero, saying why on stderr, when Prism
# cannot be built: CI must not go on without it.
set -euo pipefail
cd "$(dirname "$0")/../.."

version="$(sed -n 's/^apache-beam==\([^ ;#]*\).*/\1/p' constraints.txt)"
if [[ -z "$version" ]]; then
  echo "ci/prism/build.sh: no apache-beam==VERSION pin in constraints.txt" >&2
  exit 1
fi
dir="${TFCASCADE_CACHE:-$HOME/.cache/tfcascade}/prism/$version"
if [[ -x "$dir/prism" ]]; then
  echo "$dir/prism"
  exit 0
fi
if ! command -v go >/dev/null; then
  echo "ci/prism/build.sh: no \`go\` on PATH (Prism is built with Go >= 1.26:" \
       "https://go.dev/doc/install)" >&2
  exit 1
fi
# Into a temporary GOBIN first: an interrupted build never leaves a binary
# that the next call would take for a finished one.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/prism-build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "ci/prism/build.sh: go install .../go/cmd/prism@v$version" >&2
GOBIN="$tmp" go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$version" >&2
mkdir -p "$dir"
mv "$tmp/prism" "$dir/prism"
echo "$dir/prism"
