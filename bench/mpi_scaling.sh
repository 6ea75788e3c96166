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
#   2r-poll   2r-core with --mca mpi_yield_when_idle 0: a rank waiting in the
#             all-reduce busy-polls (Open MPI's default; cld-train sets 1
#             unless told otherwise, since commit "yield when idle")
# Scaling efficiency: 2r-core / (2 x 1p-core) (per-core work, the textbook
# number) and 2r-core / 1p-all (against one process using the whole machine).
# The rate is over steps 3..STEPS from the JSON progress lines (compilation
# and first-touch excluded). CPU time per image (all processes, user + sys,
# from /usr/bin/time) is the difference between a STEPS run and a SHORT run,
# so start-up cancels: on a shared machine it is steadier than wall time and
# shows what data parallelism costs in work (MPI's busy-polling included).
# Run at nice 5 like the other benches.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD_DIR:-build}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-10}
BATCH=${BATCH:-32}
BUCKET=${BUCKET:-4}
SHORT=${SHORT:-4}
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

launch() { # layout steps out err: run it, CPU seconds (user + sys) into $tmp/cpu
    local steps=$2
    rm -rf "$tmp/run"
    local T=(/usr/bin/time -o "$tmp/cpu" -f "%U %S")
    local M=(mpirun --oversubscribe -np 2 -x CLD_CACHE_DIR)
    case $1 in
    1p-all) nice -n 5 "${T[@]}" "$BIN" $ARGS --steps "$steps" --out "$tmp/run" >"$3" 2>"$4" ;;
    1p-core) POCL_CPU_MAX_CU_COUNT=1 POCL_MAX_PTHREAD_COUNT=1 nice -n 5 "${T[@]}" taskset -c 0 "$BIN" $ARGS \
        --steps "$steps" --out "$tmp/run" >"$3" 2>"$4" ;;
    2r-core) nice -n 5 "${T[@]}" "${M[@]}" --bind-to core --map-by core -x POCL_CPU_MAX_CU_COUNT=1 \
        -x POCL_MAX_PTHREAD_COUNT=1 "$BIN" $ARGS --steps "$steps" --out "$tmp/run" >"$3" 2>"$4" ;;
    2r-all) nice -n 5 "${T[@]}" "${M[@]}" --bind-to none "$BIN" $ARGS --steps "$steps" --out "$tmp/run" \
        >"$3" 2>"$4" ;;
    2r-poll) nice -n 5 "${T[@]}" "${M[@]}" --bind-to core --map-by core --mca mpi_yield_when_idle 0 \
        -x POCL_CPU_MAX_CU_COUNT=1 -x POCL_MAX_PTHREAD_COUNT=1 "$BIN" $ARGS --steps "$steps" \
        --out "$tmp/run" >"$3" 2>"$4" ;;
    esac
}

run() { # layout -> "images/s cpu_ms_per_image"
    local out=$tmp/out-$1 err=$tmp/err-$1
    launch "$1" "$SHORT" /dev/null /dev/null
    local c0
    c0=$(awk '{print $1 + $2}' "$tmp/cpu")
    launch "$1" "$STEPS" "$out" "$err"
    local c1
    c1=$(awk '{print $1 + $2}' "$tmp/cpu")
    echo "$(rate <"$out") $(awk -v a="$c0" -v b="$c1" -v n=$((STEPS - SHORT)) -v bs="$BATCH" \
        'BEGIN {printf "%.2f", 1000 * (b - a) / (n * bs)}')"
    grep -h "all-reduce\|per step" "$err" | sed "s/^/    [$1] /" >&2 || true
}

LAYOUTS=(1p-all 1p-core 2r-core 2r-all 2r-poll)
declare -A R C
echo "cld-train 1 -> 2 ranks: global batch $BATCH, steps 3..$STEPS, $(nproc) cores, $(uptime | sed 's/.*load/load/')"
for ((r = 1; r <= ROUNDS; r++)); do
    line="round $r:"
    for l in "${LAYOUTS[@]}"; do
        read -r v c < <(run "$l")
        R[$l]="${R[$l]:-} $v"
        C[$l]="${C[$l]:-} $c"
        line="$line $l $v img/s $c cpu-ms/img;"
    done
    echo "$line $(uptime | sed 's/.*load/load/')"
done
med() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A M MC
for l in "${LAYOUTS[@]}"; do
    M[$l]=$(echo "${R[$l]}" | med)
    MC[$l]=$(echo "${C[$l]}" | med)
    echo "median $l: ${M[$l]} img/s, ${MC[$l]} CPU ms per image"
done
python3 -c "
a, c, r2, r2a, r2p = map(float, '${M[1p-all]} ${M[1p-core]} ${M[2r-core]} ${M[2r-all]} ${M[2r-poll]}'.split())
ca, cc, cr2, cr2a, cr2p = map(float, '${MC[1p-all]} ${MC[1p-core]} ${MC[2r-core]} ${MC[2r-all]} ${MC[2r-poll]}'.split())
print('efficiency 1 -> 2 ranks, per core: 2r-core / (2 x 1p-core) = %.2f (2r-poll: %.2f)' % (r2 / (2 * c), r2p / (2 * c)))
print('speedup over one process on both cores: 2r-core / 1p-all = %.2f, 2r-all %.2f, 2r-poll %.2f' % (r2 / a, r2a / a, r2p / a))
print('CPU work per image against 1p-core: 1p-all %.2f, 2r-core %.2f, 2r-all %.2f, 2r-poll %.2f' % (ca / cc, cr2 / cc, cr2a / cc, cr2p / cc))"
