#!/usr/bin/env bash
# On a machine with a GPU and its OpenCL driver: build cldiffusion
# (build-gpu/), find the GPU, run the op, GEMM, noise, VLB, planner and UNet
# tests on it, then bench/run.sh on it.
#
#   bench/gpu.sh [--device SPEC] [--tests-only] [run.sh arguments ...]
#
#   --device SPEC  which GPU (index or name part, as cld-devices); default:
#                  the first device whose type is GPU
#   --tests-only   stop after the tests (no PyTorch venv, no benchmark)
#
# Fails fast and clearly, never hangs, when there is no GPU: the device list
# is taken under a timeout (a broken driver can block in clGetPlatformIDs),
# and no GPU among the devices (or none at all) exits with status 2 and says
# what was found. Each test has ctest's timeout (900 s). Environment:
# CLD_GPU_BUILD (build folder, default build-gpu), JOBS (build jobs, nproc).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${CLD_GPU_BUILD:-$root/build-gpu}
spec=""
tests_only=0
rest=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) spec=${2:?--device needs a value}; shift ;;
        --device=*) spec=${1#--device=} ;;
        --tests-only) tests_only=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) rest+=("$1") ;;
    esac
    shift
done

say() { echo "gpu.sh: $*" >&2; }

# 1. the device list first (a small target), so that a machine without a GPU
#    fails before the long build
mkdir -p "$build"
say "configuring $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release > "$build/gpu-sh-configure.log" 2>&1 ||
    { tail -20 "$build/gpu-sh-configure.log" >&2; say "cmake configure failed (log $build/gpu-sh-configure.log)"; exit 1; }
cmake --build "$build" -j"${JOBS:-$(nproc)}" --target cld-devices > "$build/gpu-sh-devices.log" 2>&1 ||
    { tail -20 "$build/gpu-sh-devices.log" >&2; say "building cld-devices failed"; exit 1; }
set +e
list=$(timeout 60 "$build/cld-devices" --json 2>&1)
rc=$?
set -e
if [ $rc -eq 124 ]; then
    say "listing OpenCL devices hung for 60 s (a driver blocking in clGetPlatformIDs?): no GPU to test"
    exit 2
fi
if [ $rc -ne 0 ]; then
    printf '%s\n' "$list" >&2
    say "no OpenCL device could be listed (cld-devices exit $rc): no GPU to test"
    exit 2
fi
# index of the GPU: --device's if given (it must be a GPU), else the first GPU
pick=$(printf '%s\n' "$list" | python3 -c '
import json, sys
d = json.load(sys.stdin)
devs = d["devices"]
want = sys.argv[1]
if want:
    sel = [x for x in devs if want.isdigit() and x["index"] == int(want)
           or not want.isdigit() and want.lower() in (x["platform"] + " / " + x["name"]).lower()]
    sel = [x for x in sel if x["type"] == "gpu"]
else:
    sel = [x for x in devs if x["type"] == "gpu"]
if sel:
    print(sel[0]["index"], sel[0]["platform"] + " / " + sel[0]["name"], sep="\t")
else:
    print("none\t" + "; ".join("%d: %s / %s (%s)" % (x["index"], x["platform"], x["name"], x["type"]) for x in devs))
' "$spec")
idx=${pick%%$'\t'*}
what=${pick#*$'\t'}
if [ "$idx" = none ]; then
    say "no GPU device${spec:+ matching '$spec'} among the OpenCL devices: $what"
    say "(install the GPU's OpenCL driver; 'cld-devices' lists what cldiffusion sees)"
    exit 2
fi
say "GPU: device $idx, $what"

# 2. the whole build, then the tests on the GPU
cmake --build "$build" -j"${JOBS:-$(nproc)}" > "$build/gpu-sh-build.log" 2>&1 ||
    { tail -30 "$build/gpu-sh-build.log" >&2; say "build failed (log $build/gpu-sh-build.log)"; exit 1; }
CLD_DEVICE=$idx "$build/cld-devices" --verbose --device "$idx"
say "op tests on the GPU"
CLD_DEVICE=$idx ctest --test-dir "$build" --output-on-failure \
    -R 'test_ops_|test_gemm|test_noise|test_vlb|test_planner|test_unet|layers'
[ $tests_only -eq 1 ] && exit 0

# 3. the benchmark against PyTorch (CUDA column if PyTorch sees the GPU)
say "bench/run.sh on the GPU"
exec "$root/bench/run.sh" --device "$idx" "${rest[@]}"
