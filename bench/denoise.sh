#!/bin/bash
# Photo denoisers side by side on dev-mcmaster (PSNR, seconds per megapixel):
# noisy input, OpenCV NLM, CBM3D (PyPI bm3d, a baseline, never a dependency)
# and cld-denoise. The Python side runs in its own virtualenv bench/.venv-denoise.
#   bench/denoise.sh [--images N] [--sigmas 15,25,50] [--model FILE] [--skip-bm3d]
set -euo pipefail
cd "$(dirname "$0")/.."
PHOTOS=${PHOTOS:-../shared/data/photos/dev-mcmaster}
VENV=bench/.venv-denoise
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q bm3d opencv-python-headless numpy pillow
fi
[ -x build/cld-denoise ] || { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && cmake --build build -j --target cld-denoise; }
exec "$VENV/bin/python" bench/denoise_bench.py --photos "$PHOTOS" --app build/cld-denoise "$@"
