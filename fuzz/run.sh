#!/usr/bin/env bash
# Builds every libFuzzer target in fuzz/ with clang and runs each for a
# bounded time (seconds, default 30) from its seed corpus. A crash fails CI
# and leaves the reproducer in build-fuzz/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
out=build-fuzz
mkdir -p "$out"
CXX=${FUZZ_CXX:-clang++}
for src in fuzz/*_fuzz.cc; do
  name=$(basename "$src" .cc)
  case "$name" in
    wire_fuzz) deps="cpp/wire.cc" ;;
    json_extract_fuzz) deps="cpp/json_extract.cc" ;;
    config_fuzz) deps="cpp/config.cc" ;;
    http_fuzz) deps="cpp/http_parse.cc" ;;
    ws_frame_fuzz) deps="cpp/ws_frame.cc" ;;
    *) echo "fuzz/run.sh: no sources listed for $name" >&2; exit 1 ;;
  esac
  $CXX -g -O1 -std=c++17 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Iinclude -Icpp $deps "$src" -o "$out/$name"
  corpus="fuzz/corpus/${name%_fuzz}"
  [ -d "$corpus" ] || { echo "fuzz/run.sh: seed corpus $corpus is missing" >&2; exit 1; }
  work="$out/corpus-${name%_fuzz}"
  mkdir -p "$work"
  echo "-- $name for ${secs}s"
  (cd "$out" && ./"$name" -max_total_time="$secs" -print_final_stats=0 "$(basename "$work")" ../"$corpus" 2>&1 | tail -3)
done
