#!/usr/bin/env python3
"""A before/after crop of one photo: clean | noisy | OpenCV NLM | CBM3D |
cld-denoise, each panel upscaled 2x (nearest) and labelled with its PSNR on
the crop. Noise as in denoise_bench.py (8-bit, clipped and rounded, fixed
seed). The photos may not enter the repository (their README), so the
picture goes where --out says, outside the work tree by default.
    bench/.venv-denoise/bin/python bench/denoise_crop.py --photo P.png \
        --sigma 25 --box X,Y,W,H [--app build/cld-denoise] [--out /tmp/crop.png]
CBM3D runs on the crop plus a 32-pixel context margin (the whole photo takes
minutes); NLM and cld-denoise run on the whole photo."""
import argparse, os, subprocess, sys, tempfile
import numpy as np
from PIL import Image, ImageDraw

ap = argparse.ArgumentParser()
ap.add_argument('--photo', required=True)
ap.add_argument('--sigma', type=int, default=25)
ap.add_argument('--box', required=True, help='X,Y,W,H of the crop')
ap.add_argument('--app', default='build/cld-denoise')
ap.add_argument('--model', default=None)
ap.add_argument('--out', default='/tmp/cld-denoise-crop.png')
ap.add_argument('--seed', type=int, default=7)
a = ap.parse_args()

x, y, w, h = (int(v) for v in a.box.split(','))
clean = np.asarray(Image.open(a.photo).convert('RGB'))
H, W = clean.shape[:2]
if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > W or y + h > H:
    sys.exit('--box %s lies outside the %dx%d photo' % (a.box, W, H))
rng = np.random.default_rng(a.seed)
noisy = np.clip(np.round(clean + rng.normal(0, a.sigma, clean.shape)), 0, 255).astype(np.uint8)

def psnr(p, q):
    return 10 * np.log10(255.0 ** 2 / np.mean((p.astype(np.float64) - q.astype(np.float64)) ** 2))

def crop(img):
    return img[y:y + h, x:x + w]

import cv2
nlm = cv2.fastNlMeansDenoisingColored(noisy, None, 0.75 * a.sigma, 0.75 * a.sigma, 7, 21)
import bm3d
m = 32
x0, y0, x1, y1 = max(0, x - m), max(0, y - m), min(W, x + w + m), min(H, y + h + m)
cb = np.clip(np.round(bm3d.bm3d_rgb(noisy[y0:y1, x0:x1] / 255.0, a.sigma / 255.0) * 255), 0, 255).astype(np.uint8)
cbm3d = np.zeros_like(noisy)
cbm3d[y0:y1, x0:x1] = cb

tmp = tempfile.mkdtemp(prefix='cld-denoise-crop-')
src, dst = os.path.join(tmp, 'noisy.png'), os.path.join(tmp, 'out.png')
Image.fromarray(noisy).save(src)
cmd = [a.app, src, '-o', dst, '--sigma', str(a.sigma), '--progress', 'none']
if a.model: cmd += ['--model', a.model]
r = subprocess.run(cmd, capture_output=True, text=True)
if r.returncode: sys.exit('cld-denoise failed: ' + r.stderr)
ours = np.asarray(Image.open(dst).convert('RGB'))

panels = [('clean', clean), ('noisy', noisy), ('NLM', nlm), ('CBM3D', cbm3d), ('cld-denoise', ours)]
pad, label = 4, 14
sheet = Image.new('RGB', (len(panels) * (2 * w + pad) - pad, 2 * h + label), 'white')
draw = ImageDraw.Draw(sheet)
for i, (name, img) in enumerate(panels):
    c = crop(img)
    text = name if name == 'clean' else '%s %.2f dB' % (name, psnr(crop(clean), c))
    print('%-12s crop PSNR %s' % (name, '-' if name == 'clean' else '%.2f dB' % psnr(crop(clean), c)))
    px = i * (2 * w + pad)
    sheet.paste(Image.fromarray(c).resize((2 * w, 2 * h), Image.NEAREST), (px, label))
    draw.text((px + 2, 1), text, fill='black')
sheet.save(a.out)
print('wrote %s (%s, sigma %d, box %s, whole-photo PSNR: noisy %.2f, NLM %.2f, cld-denoise %.2f)' %
      (a.out, os.path.basename(a.photo), a.sigma, a.box, psnr(clean, noisy), psnr(clean, nlm), psnr(clean, ours)))
