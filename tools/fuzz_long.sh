#!/bin/bash
# The long fuzzing campaign (issue: hardening): every libFuzzer harness for
# RUNS executions (default 10^7) with ASan + UBSan, -fno-sanitize-recover,
# from the committed seed corpus plus a scratch corpus under $WORK.
# A crash, leak or timeout stops that harness and leaves its input in
# $WORK/<name>/; the exec counts go to $WORK/summary.txt.
#   tools/fuzz_long.sh [build-fuzz] [harness...]
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build-fuzz}
shift || true
HARNESSES=${*:-safetensors config idx image}
RUNS=${RUNS:-10000000}
WORK=${WORK:-/tmp/cld-fuzz}
mkdir -p "$WORK"
if [ ! -x "$BUILD/test/fuzz/fuzz_safetensors" ]; then
    CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLD_FUZZ=ON -DCLD_BUILD_TESTS=OFF >/dev/null
fi
cmake --build "$BUILD" -j "$(nproc)" >/dev/null || exit 1
rc=0
for h in $HARNESSES; do
    mkdir -p "$WORK/$h/corpus"
    start=$(date +%s)
    (cd "$WORK/$h" && "$OLDPWD/$BUILD/test/fuzz/fuzz_$h" -runs="$RUNS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "$WORK/$h/corpus" "$OLDPWD/test/fuzz/corpus/$h") >"$WORK/$h.log" 2>&1
    r=$?
    runs=$(grep -o 'number_of_executed_units: [0-9]*' "$WORK/$h.log" | awk '{print $2}')
    line="$(date -u +%FT%TZ) fuzz_$h exit $r runs ${runs:-?} seconds $(($(date +%s) - start))"
    echo "$line" | tee -a "$WORK/summary.txt"
    [ "$r" = 0 ] || { rc=1; grep -m3 -E 'ERROR|SUMMARY' "$WORK/$h.log"; }
done
exit $rc
