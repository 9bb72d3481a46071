#!/usr/bin/env bash
# The fuzzing campaign: every reader of hostile input (kvant::fuzz::Target)
# under structured mutation of the real fixtures, for a fixed budget per
# target. Prints one line per target: executions, unique crashes, hangs and
# the worst peak heap per input byte; exits 1 if anything crashed or hung.
#
#   scripts/fuzz.sh --ci                 # each target 15 s (scripts/test.sh)
#   scripts/fuzz.sh --seconds 600        # the long run, by hand
#   scripts/fuzz.sh --seconds 60 --jobs 2 pickle zip   # some targets, 2 at a time
#
# Findings stay under $KVANT_FUZZ_OUT (default target/fuzz/<target>/{crashes,
# hangs}); replay one with target/debug/kvant-fuzz TARGET --replay FILE and
# turn it into a plain regression test (tests/fuzz_regressions.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
timeout=10
jobs=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --ci) seconds=15 ;;
    --seconds) seconds="$2"; shift ;;
    --timeout) timeout="$2"; shift ;;
    --jobs) jobs="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done

fixtures="${KVANT_FIXTURES:-$(cd .. && pwd)/shared/fixtures}"
out="${KVANT_FUZZ_OUT:-target/fuzz}"
[ -d "$fixtures" ] || { echo "fixtures not found at $fixtures (set KVANT_FIXTURES)" >&2; exit 2; }

cargo build --quiet --features fuzz --bin kvant-fuzz
runner=target/debug/kvant-fuzz
if [ ${#targets[@]} -eq 0 ]; then
  # The target list is the runner's own.
  read -r -a targets < <("$runner" 2>&1 | sed -n 's/^targets: //p')
fi

mkdir -p "$out"
run_one() {
  "$runner" "$1" --seconds "$seconds" --timeout "$timeout" \
    --fixtures "$fixtures" --out "$out" --seed "${KVANT_FUZZ_SEED:-$RANDOM}" \
    2> >(grep -E '^(CRASH|HANG)' >&2 || true)
}
export -f run_one
export runner seconds timeout fixtures out

status=0
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}' \
  | tee "$out/summary.txt" || status=1
exit $status
