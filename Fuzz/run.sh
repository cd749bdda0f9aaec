#!/usr/bin/env bash
# Runs each named libFuzzer target for FUZZ_SECONDS (default 60) on its corpus
# (Fuzz/corpus/<target>, grown by the run, ignored by git) plus the committed seeds
# (Fuzz/seeds/<target>). Crashing inputs land in Fuzz/crashes/. Prints per target the
# executions, exec/s, coverage (cov) and features (ft) libFuzzer reports; exits 1 if any
# target crashed. Build first: make fuzz-build (make fuzz does both).
set -uo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"
bin="${FUZZ_SCRATCH:-.build-fuzz}/release"
mkdir -p Fuzz/crashes
crashed=()
printf '%-16s %10s %8s %7s %7s %s\n' target runs exec/s cov ft result
for target in "$@"; do
  mkdir -p "Fuzz/corpus/$target" "Fuzz/seeds/$target"
  log="Fuzz/crashes/$target.log"
  SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="detect_leaks=0:${ASAN_OPTIONS:-}" "$bin/$target" -max_total_time="$seconds" -print_final_stats=1 \
    -timeout=10 -rss_limit_mb=4096 -max_len=8192 \
    -artifact_prefix="Fuzz/crashes/$target-" "Fuzz/corpus/$target" "Fuzz/seeds/$target" >"$log" 2>&1
  status=$?
  runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  speed=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
  cov=$(echo "$last" | grep -Eo 'cov: [0-9]+' | grep -Eo '[0-9]+' || echo "?")
  ft=$(echo "$last" | grep -Eo 'ft: [0-9]+' | grep -Eo '[0-9]+' || echo "?")
  if [ "$status" -eq 0 ]; then result=ok; else result="CRASH (exit $status, see $log)"; crashed+=("$target"); fi
  printf '%-16s %10s %8s %7s %7s %s\n' "$target" "$runs" "$speed" "$cov" "$ft" "$result"
done
if [ "${#crashed[@]}" -gt 0 ]; then
  echo "crashed: ${crashed[*]} (inputs: Fuzz/crashes/)"
  exit 1
fi
