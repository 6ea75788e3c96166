#!/usr/bin/env bash
# Run test binaries on Mesa's rusticl (llvmpipe: a CPU device, OpenCL 3.0,
# 32 KiB local memory, no fp64), in bounded time: each test runs under
# `timeout` and is reported PASS, FAIL or TIMEOUT, so a test too slow there
# (test_unet took > 18 min on 2 cores) costs at most the limit.
#
#   tools/rusticl_tests.sh BUILD_DIR [ctest -R regex] (default: the op tests)
#
# Environment: RUSTICL_TEST_TIMEOUT seconds per test (default 300);
# anything else is passed through (e.g. CLD_FORCE_GPU_PATH=1 runs the GPU
# launch choices there). Only rusticl's ICD is loaded (OCL_ICD_VENDORS).
# Exit status 0 if every test passed, 1 if any failed or timed out, 2 if
# rusticl is not installed or lists no device.
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR [regex]}
regex=${2:-'test_ops_|test_gemm|test_noise|test_vlb'}
limit=${RUSTICL_TEST_TIMEOUT:-300}
icd=$(ls /etc/OpenCL/vendors/rusticl.icd 2>/dev/null || true)
if [ -z "$icd" ]; then
    echo "rusticl_tests: rusticl not installed (Debian package 'mesa-opencl-icd')" >&2
    exit 2
fi
vendors=$(mktemp -d)
trap 'rm -rf "$vendors"' EXIT
cp "$icd" "$vendors/"
export OCL_ICD_VENDORS=$vendors RUSTICL_ENABLE=${RUSTICL_ENABLE:-llvmpipe}
if ! timeout 60 "$build/cld-devices" > "$vendors/devices.txt" 2>&1; then
    cat "$vendors/devices.txt" >&2
    echo "rusticl_tests: rusticl lists no device (RUSTICL_ENABLE=$RUSTICL_ENABLE)" >&2
    exit 2
fi
grep -m1 "selected by" "$vendors/devices.txt" || true
mapfile -t tests < <(ctest --test-dir "$build" -N -R "$regex" | awk '/Test +#/ { print $3 }')
rc=0
for t in "${tests[@]}"; do
    exe=$(find "$build/test" -type f -name "$t" | head -1)
    [ -n "$exe" ] || continue
    log="$vendors/$t.log"
    start=$(date +%s)
    s=0
    CLD_CACHE_DIR="$vendors/cache" CK_DEFAULT_TIMEOUT=$limit timeout "$limit" "$exe" > "$log" 2>&1 || s=$?
    checks=$(grep -E "^[0-9]+%: Checks" "$log" || true)
    case $s in
        0) verdict=PASS ;;
        124) verdict=TIMEOUT ;;
        *) verdict=FAIL ;;
    esac
    printf '%-22s %4ss  %-7s %s\n' "$t" $(( $(date +%s) - start )) "$verdict" "$checks"
    if [ "$s" -ne 0 ]; then
        rc=1
        [ "$s" -eq 124 ] || grep -m 10 -E ":[EF]:" "$log" || tail -10 "$log"
    fi
done
exit $rc
