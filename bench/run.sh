#!/usr/bin/env bash
# cld-bench against PyTorch, in one go, with the same thread count.
#
#   bench/run.sh [--quick] [--only GROUPS] [--threads N] [--device SPEC] [--rounds R]
#
# Creates bench/.venv with PyTorch from PyPI on first use (a few GB: PyPI's
# Linux wheels carry the CUDA libraries; there is no CPU-only wheel there),
# builds cld-bench and cld-sample (its cold-start rows run the default
# cld-sample command) in build-bench/, runs cld-bench (PoCL threads:
# POCL_CPU_MAX_CU_COUNT) and bench/torch_reference.py (torch.set_num_threads)
# one after the other, and prints the table of ours, PyTorch and ours/PyTorch.
# With --rounds R both run R times, alternating, and each engine's row shows
# its best round (other processes on the machine only ever slow a run down).
# The load average before and after each run is printed with the table.
# When CUDA is available to PyTorch, a PyTorch CUDA column is added.
# The JSON files are kept in $BENCH_OUT (default: a new /tmp directory).
# The train group (in the default set, or --only train) runs cld-train itself
# on the Fashion-MNIST files ($CLD_FMNIST, default
# /usr/share/datasets/fashion-mnist) with the shipped model's settings for
# --train-steps steps (default 12, --quick 6) and reports its images/s over
# steps 3.. (data loading, EMA, logging included) next to a PyTorch loop doing
# the same per step and the UNet step alone on both sides; then cld-train on
# the CIFAR-10 UNet (batch 32, synthetic 32x32 RGB images), ours only.
# $BENCH_PYTHON: a Python with torch to use instead of bench/.venv.
# A benchmark, not a test: CI does not run it.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
threads=$(nproc)
args=()
device=""
rounds=1
train_steps=""
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) args+=(--quick); quick=1 ;;
        --only) args+=(--only "$2"); only=$2; shift ;;
        --only=*) args+=("$1"); only=${1#--only=} ;;
        --train-steps) train_steps=$2; shift ;;
        --threads) threads=$2; shift ;;
        --device) device=$2; shift ;;
        --rounds) rounds=$2; shift ;;
        -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

venv=$root/bench/.venv
py=$venv/bin/python
if [ -n "${BENCH_PYTHON:-}" ]; then
    # used as given: a symlink to a virtualenv's python would lose that
    # virtualenv's site-packages (Python finds pyvenv.cfg next to argv[0])
    py=$BENCH_PYTHON
    "$py" -c 'import torch' || { echo "run.sh: BENCH_PYTHON=$py has no torch" >&2; exit 1; }
elif ! "$py" -c 'import torch' 2>/dev/null; then
    echo "== creating $venv and installing torch from PyPI" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet torch numpy
fi
echo "== building cld-bench" >&2
cmake -S "$root" -B "$root/build-bench" -DCMAKE_BUILD_TYPE=Release -DCLD_BUILD_TESTS=OFF >/dev/null
cmake --build "$root/build-bench" --target cld-bench cld-sample cld-train -j "$(nproc)" >/dev/null

out=${BENCH_OUT:-$(mktemp -d /tmp/cld-bench-run-XXXXXX)}
mkdir -p "$out"
export POCL_CPU_MAX_CU_COUNT=$threads
export OMP_NUM_THREADS=$threads

dev_args=()
[ -n "$device" ] && dev_args=(--device "$device")
want_train=0
case ",${only}," in ,,|*,train,*) want_train=1 ;; esac
[ -z "$train_steps" ] && train_steps=$([ -n "${quick:-}" ] && echo 6 || echo 12)
fmnist=${CLD_FMNIST:-/usr/share/datasets/fashion-mnist}

# cld-train for $train_steps steps; its images/s over steps 3.. from the JSON
# progress lines (one a step) as a row appended to the JSON file $1.
train_rows() {
    local json=$1 d
    d=$(mktemp -d /tmp/cld-bench-train-XXXXXX)
    "$root/build-bench/cld-train" "${dev_args[@]}" --data "$fmnist/train-images-idx3-ubyte.gz" \
        --labels "$fmnist/train-labels-idx1-ubyte.gz" --val-data "$fmnist/t10k-images-idx3-ubyte.gz" \
        --val-labels "$fmnist/t10k-labels-idx1-ubyte.gz" --out "$d/fmnist" \
        --preset small --batch 64 --lr 5e-4 --warmup 500 --ema 0.9995 --clip 1 --seed 1 --schedule cosine \
        --pred v --min-snr 5 --cfg-drop 0.1 --steps "$train_steps" --val-every 0 --grid-every 0 \
        --ckpt-every 1000000 --log-every 1 --progress json >"$d/fmnist.jsonl" 2>"$d/fmnist.log" \
        || { echo "cld-train (fmnist) failed: $(tail -1 "$d/fmnist.log")" >&2; }
    # CIFAR-10 UNet on 64 random 32x32 RGB images (PPM), batch 32
    mkdir -p "$d/rgb"
    "$py" - "$d/rgb" <<'PY'
import os, random, sys
random.seed(0)
for i in range(64):
    with open(os.path.join(sys.argv[1], f"{i:03d}.ppm"), "wb") as f:
        f.write(b"P6 32 32 255\n" + bytes(random.randrange(256) for _ in range(32 * 32 * 3)))
PY
    "$root/build-bench/cld-train" "${dev_args[@]}" --data "$d/rgb" --crop 32 --channels 3 --out "$d/cifar" \
        --preset cifar10 --batch 32 --steps "$train_steps" --val-every 0 --grid-every 0 --ckpt-every 1000000 \
        --log-every 1 --progress json >"$d/cifar.jsonl" 2>"$d/cifar.log" \
        || { echo "cld-train (cifar10) failed: $(tail -1 "$d/cifar.log")" >&2; }
    "$py" - "$json" "$d" <<'PY'
import json, sys
path, d = sys.argv[1], sys.argv[2]
doc = json.load(open(path))
def rate(name, batch):
    lines = [json.loads(l) for l in open(f"{d}/{name}.jsonl") if l.startswith('{"step"')]
    if len(lines) < 3:
        return None, "cld-train did not run 3 steps"
    a, b = lines[1], lines[-1]  # after step 2 .. the last step
    return batch * (b["step"] - a["step"]) / (b["elapsed"] - a["elapsed"]), \
        f"cld-train itself, steps {a['step'] + 1}..{b['step']} (data loading, EMA, CSV and JSON log each step)"
v, note = rate("fmnist", 64)
doc["rows"].append(dict(key="train_s_app", label="training, shipped config (s) batch 64: cld-train vs a torch loop",
                        unit="img/s", value=v, higher_is_better=True, note=note))
v, note = rate("cifar", 32)
doc["rows"].append(dict(key="train_b_app", label="training, cifar10 UNet batch 32 (synthetic data): cld-train",
                        unit="img/s", value=v, higher_is_better=True, note=note))
json.dump(doc, open(path, "w"), indent=1)
PY
    rm -rf "$d"
}
load() { cut -d' ' -f1-3 /proc/loadavg; }
: >"$out/load.txt"
for ((r = 1; r <= rounds; r++)); do
    echo "== round $r/$rounds: cld-bench (${threads} PoCL threads) -> $out/ours.$r.json" >&2
    echo "round $r cld-bench: load before $(load)" >>"$out/load.txt"
    "$root/build-bench/cld-bench" --json "${dev_args[@]}" "${args[@]}" >"$out/ours.$r.json" \
        || echo "cld-bench: some rows failed (n/a)" >&2
    if [ "$want_train" = 1 ]; then
        echo "== round $r/$rounds: cld-train, $train_steps steps of the shipped config and of cifar10" >&2
        train_rows "$out/ours.$r.json"
    fi
    echo "round $r torch CPU: load before $(load)" >>"$out/load.txt"
    echo "== round $r/$rounds: torch_reference.py (CPU, ${threads} threads) -> $out/torch.$r.json" >&2
    "$py" "$root/bench/torch_reference.py" --json --device cpu --threads "$threads" \
        --data "$fmnist" --train-steps "$train_steps" "${args[@]}" >"$out/torch.$r.json"
    echo "round $r end: load $(load)" >>"$out/load.txt"
done
if "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "== torch_reference.py (CUDA) -> $out/torch_cuda.1.json" >&2
    "$py" "$root/bench/torch_reference.py" --json --device cuda --data "$fmnist" \
        --train-steps "$train_steps" "${args[@]}" \
        >"$out/torch_cuda.1.json"
fi

"$py" - "$out" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]

def best_of(prefix):
    """Rows of all rounds merged: the best value of each row."""
    runs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, prefix + ".*.json")))]
    if not runs:
        return None
    merged = dict(meta=runs[0]["meta"], rows=[], rounds=len(runs))
    for row in runs[0]["rows"]:
        vals = [r["value"] for run in runs for r in run["rows"]
                if r["key"] == row["key"] and r["value"] is not None]
        best = (max if row["higher_is_better"] else min)(vals) if vals else None
        merged["rows"].append(dict(row, value=best))
    return merged

ours, ref, cuda = best_of("ours"), best_of("torch"), best_of("torch_cuda")
by_key = lambda d: {r["key"]: r for r in d["rows"]} if d else {}
rk, ck = by_key(ref), by_key(cuda)
fmt = lambda v: "n/a" if v is None else (f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}")
print(f"ours:    {ours['meta']['device']}")
print(f"pytorch: {ref['meta']['version']} on {ref['meta']['device']}")
if cuda:
    print(f"pytorch: {cuda['meta']['version']} on {cuda['meta']['device']}")
if ours["rounds"] > 1:
    print(f"best of {ours['rounds']} rounds per engine")
print("load average (1, 5, 15 min):")
print("".join("  " + l for l in open(os.path.join(out, "load.txt"))))
head = "| row | unit | ours | PyTorch CPU | ours/PyTorch |" + (" PyTorch CUDA |" if cuda else "")
print(head)
print("|" + "---|" * (head.count("|") - 1))
keys = [r["key"] for r in ours["rows"]] + [k for k in rk if k not in {r["key"] for r in ours["rows"]}]
ok = by_key(ours)
for k in keys:
    o, t = ok.get(k), rk.get(k)
    r0 = o or t
    ov = o["value"] if o else None
    tv = t["value"] if t else None
    ratio = "n/a" if ov is None or not tv else f"{ov / tv:.2f}"
    unit = r0["unit"] + ("" if r0["higher_is_better"] else ", lower is better")
    line = f"| {r0['label']} | {unit} | {fmt(ov)} | {fmt(tv)} | {ratio} |"
    if cuda:
        c = ck.get(k)
        line += f" {fmt(c['value'] if c else None)} |"
    print(line)
for name, d in (("ours", ok), ("PyTorch", rk)):
    step, unet = d.get("train_s_app"), d.get("unet_s_train")
    if step and unet and step["value"] and unet["value"]:
        print(f"\n{name}: share of a training step (s) spent outside the UNet step (forward, backward, AdamW): "
              f"{100 * (1 - step['value'] / unet['value']):.0f}%")
notes = [(r["key"], r["note"]) for r in ours["rows"] if r["note"]]
if notes:
    print("\nnotes (ours):")
    for k, n in notes:
        print(f"- {k}: {n}")
EOF
echo "(JSON in $out)" >&2
