#!/usr/bin/env bash
# cld-train from 1 to 2 MPI ranks on this machine (issue 16): images/s of the
# same run (same model, same global batch, same data) in four layouts,
# interleaved round by round so that a change in the machine's load hits all
# of them alike; the median round per layout.
#
#   bench/mpi_scaling.sh            (BUILD_DIR=build ROUNDS=3 STEPS=10 BATCH=32)
#
# Layouts (PoCL runs one worker thread per compute unit, all cores by default;
# POCL_CPU_MAX_CU_COUNT, and POCL_MAX_PTHREAD_COUNT for older PoCL, cap it):
#   1p-all    1 process, PoCL on every core (what a plain cld-train does)
#   1p-core   1 process pinned to core 0, one PoCL thread
#   2r-core   mpirun -np 2 --bind-to core: one core and one PoCL thread per rank
#   2r-all    mpirun -np 2 --bind-to none, PoCL default: 2 threads per rank on 2 cores
# Scaling efficiency: 2r-core / (2 x 1p-core) (per-core work, the textbook
# number) and 2r-core / 1p-all (against one process using the whole machine).
# The rate is over steps 3..STEPS from the JSON progress lines (compilation
# and first-touch excluded). Run at nice 5 like the other benches.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-10}
BATCH=${BATCH:-32}
BUCKET=${BUCKET:-4}
BIN=$PWD/$BUILD/cld-train
[ -x "$BIN" ] || { echo "no $BIN: build first" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "mpirun not found (openmpi-bin)" >&2; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export CLD_CACHE_DIR=${CLD_CACHE_DIR:-$PWD/$BUILD/test-cache}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'EOF'
import os, random, struct, sys
random.seed(7)
d = sys.argv[1]
n, s = 512, 16
with open(os.path.join(d, "train-images-idx3-ubyte"), "wb") as f:
    f.write(bytes([0, 0, 8, 3]) + struct.pack(">III", n, s, s))
    f.write(bytes(random.randrange(256) for _ in range(n * s * s)))
with open(os.path.join(d, "train-labels-idx1-ubyte"), "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", n))
    f.write(bytes(random.randrange(10) for _ in range(n)))
EOF
# a small UNet (16x16, base 16, two levels, no attention: ~0.2M parameters)
ARGS="--data $tmp/train-images-idx3-ubyte --base 16 --mult 1,2 --res-blocks 1 --attn none --groups 8
      --batch $BATCH --steps $STEPS --warmup 2 --val-every 0 --grid-every 0 --ckpt-every 1000000
      --log-every 1 --progress json --allreduce-bucket $BUCKET"

rate() { # JSON progress lines on stdin -> images/s over steps 3..STEPS
    python3 -c '
import json, sys
rows = {}
for l in sys.stdin:
    l = l.strip()
    if l.startswith("{\"step\""):
        j = json.loads(l); rows[j["step"]] = j["elapsed"]
b, n = int(sys.argv[1]), int(sys.argv[2])
print("%.2f" % ((n - 3) * b / (rows[n] - rows[3])) if 3 in rows and n in rows else "nan")' "$BATCH" "$STEPS"
}

run() { # layout -> images/s
    local out=$tmp/out-$1 err=$tmp/err-$1
    rm -rf "$tmp/run"
    case $1 in
    1p-all) nice -n 5 "$BIN" $ARGS --out "$tmp/run" >"$out" 2>"$err" ;;
    1p-core) POCL_CPU_MAX_CU_COUNT=1 POCL_MAX_PTHREAD_COUNT=1 nice -n 5 taskset -c 0 "$BIN" $ARGS \
        --out "$tmp/run" >"$out" 2>"$err" ;;
    2r-core) nice -n 5 mpirun --oversubscribe -np 2 --bind-to core --map-by core \
        -x POCL_CPU_MAX_CU_COUNT=1 -x POCL_MAX_PTHREAD_COUNT=1 -x CLD_CACHE_DIR \
        "$BIN" $ARGS --out "$tmp/run" >"$out" 2>"$err" ;;
    2r-all) nice -n 5 mpirun --oversubscribe -np 2 --bind-to none -x CLD_CACHE_DIR \
        "$BIN" $ARGS --out "$tmp/run" >"$out" 2>"$err" ;;
    esac
    rate <"$out"
    grep -h "all-reduce\|per step" "$err" | sed "s/^/    [$1] /" >&2 || true
}

LAYOUTS=(1p-all 1p-core 2r-core 2r-all)
declare -A R
echo "cld-train 1 -> 2 ranks: global batch $BATCH, steps 3..$STEPS, $(nproc) cores, $(uptime | sed 's/.*load/load/')"
for ((r = 1; r <= ROUNDS; r++)); do
    line="round $r:"
    for l in "${LAYOUTS[@]}"; do
        v=$(run "$l")
        R[$l]="${R[$l]:-} $v"
        line="$line $l $v img/s;"
    done
    echo "$line $(uptime | sed 's/.*load/load/')"
done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A M
for l in "${LAYOUTS[@]}"; do M[$l]=$(echo "${R[$l]}" | med); done
echo "median img/s: 1p-all ${M[1p-all]}, 1p-core ${M[1p-core]}, 2r-core ${M[2r-core]}, 2r-all ${M[2r-all]}"
python3 -c "
a, c, r2, r2a = map(float, '${M[1p-all]} ${M[1p-core]} ${M[2r-core]} ${M[2r-all]}'.split())
print('efficiency 1 -> 2 ranks, per core: 2r-core / (2 x 1p-core) = %.2f' % (r2 / (2 * c)))
print('speedup over one process on both cores: 2r-core / 1p-all = %.2f, 2r-all / 1p-all = %.2f' % (r2 / a, r2a / a))"
