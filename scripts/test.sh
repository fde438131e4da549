#!/usr/bin/env bash
# Every check CI runs, in the order a change usually breaks them: formatting, lints,
# the deployment files, then all tests, with the real servers the contract suites need
# (PostgreSQL, Redis, Kafka, MinIO) installed and started by scripts/ci-services.sh.
#
#   scripts/test.sh              # everything
#   SOMAGENT_SKIP_SERVERS=1 scripts/test.sh   # embedded backends only (not allowed with CI=true)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${SOMAGENT_CACHE:-$HOME/.cache/somagent}"
started=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }

if [ "${CI:-}" = "true" ] && [ -n "${SOMAGENT_SKIP_SERVERS:-}" ]; then
  echo "CI=true: the real-server suites must run; unset SOMAGENT_SKIP_SERVERS" >&2
  exit 1
fi

step "real servers and chart tools"
if [ -z "${SOMAGENT_SKIP_SERVERS:-}" ]; then
  bash scripts/ci-services.sh all
else
  bash scripts/ci-services.sh tools
fi
# shellcheck disable=SC1091
source "$CACHE/ci-env.sh"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "deployment files"
bash scripts/check-deploy.sh

step "build"
# The binaries the tests start, built with the tests' features: a plain
# `cargo build --bins` resolves features without the dev-dependencies, so the tests
# would then compile a second copy of much of the dependency graph.
cargo build --workspace --bins --tests --quiet

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run, summed over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
[ "$status" -eq 0 ] || { echo "some tests failed" >&2; exit "$status"; }

step "all checks passed"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
