#!/usr/bin/env bash
# Run test binaries on Oclgrind, a simulated GPU-type OpenCL 1.2 device (32 KiB
# local memory, work-group limit 1024) that checks every kernel's memory
# accesses, data races and barrier divergence. Oclgrind reports to stderr
# and does not fail the program, so this script fails a test whose output
# holds an Oclgrind error.
#
#   tools/oclgrind_tests.sh BUILD_DIR [ctest -R regex]   (default: the op tests)
#
# Known limits (measured): CLBlast corrupts the heap under Oclgrind (a plain
# 64x64x64 CLBlastSgemm aborts), so our own GEMM runs (CLD_GEMM=own).
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [regex]}
regex=${2:-'test_ops_|test_gemm|test_noise|test_vlb'}
lib=$(ls /usr/lib/oclgrind/liboclgrind-rt-icd.so /usr/lib/*/oclgrind/liboclgrind-rt-icd.so 2>/dev/null | head -1 || true)
if [ -z "$lib" ]; then
    echo "oclgrind_tests: Oclgrind not installed (Debian package 'oclgrind')" >&2
    exit 2
fi
vendors=$(mktemp -d)
trap 'rm -rf "$vendors"' EXIT
echo "$lib" > "$vendors/oclgrind.icd"
mapfile -t tests < <(ctest --test-dir "$build" -N -R "$regex" | awk '/Test +#/ { print $3 }')
rc=0
for t in "${tests[@]}"; do
    exe=$(find "$build/test" -type f -name "$t" | head -1)
    log="$vendors/$t.log"
    start=$(date +%s)
    s=0
    OCL_ICD_VENDORS=$vendors CLD_DEVICE=oclgrind CLD_GEMM=own OCLGRIND_DATA_RACES=1 \
        OCLGRIND_UNINITIALIZED=0 CLD_CACHE_DIR="$vendors/cache" CK_DEFAULT_TIMEOUT=1200 \
        "$exe" > "$log" 2>&1 || s=$?
    errs=$(grep -cE "^(Invalid (read|write)|Read-write data race|Write-write data race|Work-group divergence|Work-item finished without|Uninitialized|OCLGRIND_|Oclgrind -)" "$log" || true)
    checks=$(grep -E "^[0-9]+%: Checks" "$log" || true)
    printf '%-22s %4ss  exit %d  oclgrind errors %s  %s\n' "$t" $(( $(date +%s) - start )) "$s" "$errs" "$checks"
    if [ "$s" -ne 0 ] || [ "$errs" -ne 0 ]; then
        rc=1
        grep -m 20 -B2 -A8 -E "^(Invalid|Read-write|Write-write|Work-group|Work-item)" "$log" || tail -20 "$log"
    fi
done
exit $rc
