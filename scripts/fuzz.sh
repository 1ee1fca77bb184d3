#!/usr/bin/env bash
# Runs every libFuzzer target (tests/fuzz/fuzz_*.cpp) for SECONDS each, two at a time.
# Usage: scripts/fuzz.sh [SECONDS] [BUILD_DIR] [TARGET ...]
#   SECONDS    per target (default 60)
#   BUILD_DIR  a clang build with -DMB_FUZZ=ON -DMB_SANITIZE=address,undefined (default
#              build/sanitize_build, configured and built here when missing: tests/sanitize_build.sh)
# Each target's corpus grows in BUILD_DIR/fuzz/<target>/corpus, seeded by the target itself
# (MB_FUZZ_WRITE_SEEDS: files made by minibridge's own writers and from $MINIBRIDGE_DATA) and by the
# text files in tests/data; dictionaries: tests/fuzz/json.dict (the JSON readers, safetensors
# headers) and tests/fuzz/text.dict (vocabulary, tokenizer, GLUE, corpus). Findings are written to BUILD_DIR/fuzz/<target>/ as crash-*, oom-*,
# timeout-* or leak-* files; the script fails when a target finds one. Prints one line a target:
# executions, coverage (edges), corpus size, and the result.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build=${2:-build/sanitize_build}
shift $(( $# < 2 ? $# : 2 ))
if [[ ! -d $build/tests/fuzz ]]; then
  bash tests/sanitize_build.sh "$PWD" "$build"
fi
build=$(cd "$build" && pwd)
targets=("$@")
if ((${#targets[@]} == 0)); then
  for f in "$build"/tests/fuzz/fuzz_*; do [[ -x $f ]] && targets+=("$(basename "$f")"); done
fi

run_one() {
  local t=$1 dir=$build/fuzz/$1
  mkdir -p "$dir/corpus" "$dir/seeds"
  MB_FUZZ_WRITE_SEEDS="$dir/seeds" "$build/tests/fuzz/$t" >/dev/null 2>&1
  case $t in
    fuzz_tokenizer|fuzz_corpus) cp tests/data/*.txt "$dir/seeds/" ;;
  esac
  local dict=$PWD/tests/fuzz/json.dict
  case $t in
    fuzz_vocab|fuzz_tokenizer|fuzz_glue|fuzz_corpus) dict=$PWD/tests/fuzz/text.dict ;;
  esac
  # -malloc_limit_mb: a reader that allocates what a hostile header asks for is a finding.
  # -timeout: one input taking longer is a finding (a hang). Leaks are findings (ASan's LSan).
  if (cd "$dir" && ASAN_OPTIONS=detect_leaks=1 OMP_NUM_THREADS=1 MB_NUM_THREADS=1 \
      "$build/tests/fuzz/$t" corpus seeds -dict="$dict" -max_total_time="$seconds" -malloc_limit_mb=512 \
      -rss_limit_mb=2048 -timeout=10 -max_len=65536 -print_final_stats=1 > log.txt 2>&1); then
    result=ok
  else
    result="FOUND $(ls "$dir" | grep -E '^(crash|oom|timeout|leak|slow-unit)-' | head -1)"
  fi
  local execs cov
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log.txt" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$dir/log.txt" | tail -1 | cut -d' ' -f2)
  printf '%-24s %8ss  execs %-9s edges %-6s corpus %-5s %s\n' "$t" "$seconds" "${execs:-?}" "${cov:-?}" \
    "$(ls "$dir/corpus" | wc -l)" "$result"
  [[ $result == ok ]] || { tail -40 "$dir/log.txt"; return 1; }
}

export -f run_one
export build seconds
printf '%s\n' "${targets[@]}" | xargs -P 2 -I{} bash -c 'run_one {}'
