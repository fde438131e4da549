#!/usr/bin/env bash
# Release artefacts: the platform's binary stripped, its debug info in a file beside it
# (linked by `.gnu_debuglink`, so gdb, perf and addr2line find it when it sits in the
# same directory or under /usr/lib/debug), and SHA-256 sums of both. Prints the build
# time and the sizes.
#   scripts/release.sh [--out DIR]        (default: dist/)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=dist
while [ $# -gt 0 ]; do
  case "$1" in
    --out)
      [ -n "${2:-}" ] || { echo "--out needs a directory" >&2; exit 2; }
      out="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in objcopy sha256sum; do
  command -v "$tool" >/dev/null || { echo "release.sh needs $tool (binutils, coreutils)" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
target="${CARGO_TARGET_DIR:-target}"
started=$(date +%s)
cargo build --release --locked -q -p somagent-cli
built=$(( $(date +%s) - started ))
name="somagent-${version}-$(uname -m)-linux"
dir="$out/$name"
rm -rf "$dir" && mkdir -p "$dir"
cp "$target/release/somagent" "$dir/somagent"
# The debug info goes to its own file first; then the binary keeps only what it runs
# with, plus a link (name and CRC) to that file.
objcopy --only-keep-debug --compress-debug-sections=zlib "$dir/somagent" "$dir/somagent.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$dir/somagent.debug" "$dir/somagent"
(cd "$dir" && sha256sum somagent somagent.debug > SHA256SUMS)
size() { du -m "$1" | cut -f1; }
echo "built in ${built}s (cargo build --release; 0s means it was up to date)"
echo "$dir/somagent        $(size "$dir/somagent") MB (stripped)"
echo "$dir/somagent.debug  $(size "$dir/somagent.debug") MB (debug info, compressed)"
echo "unstripped           $(size "$target/release/somagent") MB"
