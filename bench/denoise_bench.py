#!/usr/bin/env python3
"""PSNR and seconds per megapixel of photo denoisers on dev-mcmaster, with the
judging protocol of ../shared/data/photos/README.md: clean 8-bit photo plus
Gaussian noise of sd sigma (0..255), clipped and rounded to 8 bits (fixed seed),
PSNR against the clean photo. Rows: the noisy input, OpenCV non-local means,
CBM3D (the PyPI bm3d package) and cld-denoise with --sigma given and with its
own estimate. Run through bench/denoise.sh, which makes the virtualenv."""
import argparse, glob, os, subprocess, sys, tempfile, time
import numpy as np
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument('--photos', required=True)
ap.add_argument('--app', required=True)
ap.add_argument('--model', default=None)
ap.add_argument('--images', type=int, default=0, help='first N photos (0: all)')
ap.add_argument('--sigmas', default='15,25,50')
ap.add_argument('--skip-bm3d', action='store_true')
a = ap.parse_args()

files = sorted(glob.glob(os.path.join(a.photos, '*.png')), key=lambda f: int(os.path.basename(f)[:-4]) if os.path.basename(f)[:-4].isdigit() else 0)
if a.images: files = files[:a.images]
clean = [np.asarray(Image.open(f).convert('RGB')) for f in files]
mp = sum(c.shape[0] * c.shape[1] for c in clean) / 1e6

def psnr(x, y):
    return 10 * np.log10(255.0 ** 2 / np.mean((x.astype(np.float64) - y.astype(np.float64)) ** 2))

def row(name, outs, secs, s):
    p = np.mean([psnr(c, o) for c, o in zip(clean, outs)])
    res[(name, s)] = (p, secs / mp if secs is not None else None)
    print('  sigma %d, %s: %.2f dB%s' % (s, name, p, '' if secs is None else ', %.1f s/MP' % (secs / mp)), file=sys.stderr, flush=True)

res = {}
sigmas = [int(s) for s in a.sigmas.split(',')]
tmp = tempfile.mkdtemp(prefix='cld-denoise-bench-')
for s in sigmas:
    rng = np.random.default_rng(1000 + s)
    noisy = [np.clip(np.round(c + rng.normal(0, s, c.shape)), 0, 255).astype(np.uint8) for c in clean]
    nd = os.path.join(tmp, 'noisy%d' % s); os.makedirs(nd)
    for f, n in zip(files, noisy): Image.fromarray(n).save(os.path.join(nd, os.path.basename(f)))
    row('noisy input', noisy, None, s)
    import cv2
    t = time.time()
    outs = [cv2.fastNlMeansDenoisingColored(n, None, 0.75 * s, 0.75 * s, 7, 21) for n in noisy]
    row('OpenCV NLM (h = 0.75 sigma)', outs, time.time() - t, s)
    if not a.skip_bm3d:
        import bm3d
        # CBM3D takes minutes per photo and never changes: its outputs are kept
        # in bench/.denoise-cache/ (per photo, sigma and bm3d version), the
        # time of the run that made them beside them
        name = 'CBM3D (bm3d %s)' % getattr(bm3d, '__version__', '')
        cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), '.denoise-cache')
        os.makedirs(cache, exist_ok=True)
        outs, secs = [], 0.0
        for f, n in zip(files, noisy):
            key = os.path.join(cache, 'cbm3d-%s-s%d-%s' % (getattr(bm3d, '__version__', ''), s, os.path.basename(f)))
            if os.path.exists(key + '.png') and os.path.exists(key + '.time'):
                outs.append(np.asarray(Image.open(key + '.png')))
                secs += float(open(key + '.time').read())
                continue
            t = time.time()
            o = np.clip(np.round(bm3d.bm3d_rgb(n / 255.0, s / 255.0) * 255), 0, 255).astype(np.uint8)
            dt = time.time() - t
            Image.fromarray(o).save(key + '.png')
            open(key + '.time', 'w').write('%.3f' % dt)
            outs.append(o)
            secs += dt
        row(name, outs, secs, s)
    for mode in ('given', 'estimated'):
        od = os.path.join(tmp, 'out%d%s' % (s, mode))
        cmd = [a.app, nd, '-o', od, '--progress', 'none']
        if a.model: cmd += ['--model', a.model]
        if mode == 'given': cmd += ['--sigma', str(s)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode: sys.exit('cld-denoise failed: ' + r.stderr)
        secs = None
        for line in r.stderr.splitlines():
            if 'megapixels in' in line: secs = float(line.split('megapixels in ')[1].split(' s')[0])
            if mode == 'estimated' and 'estimated noise sd' in line: print('  sigma %d: %s' % (s, line.split(': ', 1)[1]), file=sys.stderr)
        outs = [np.asarray(Image.open(os.path.join(od, os.path.basename(f)))) for f in files]
        row('cld-denoise, --sigma given' if mode == 'given' else 'cld-denoise, sigma estimated', outs, secs, s)

names = []
for (n, s) in res:
    if n not in names: names.append(n)
print('%d photos of %s (%.2f MP), PSNR in dB / seconds per megapixel' % (len(files), a.photos, mp))
print('| method | ' + ' | '.join('sigma %d' % s for s in sigmas) + ' |')
print('|---|' + '---|' * len(sigmas))
for n in names:
    cells = []
    for s in sigmas:
        p, t = res.get((n, s), (None, None))
        cells.append('' if p is None else '%.2f' % p + ('' if t is None else ' / %.1f s' % t))
    print('| %s | %s |' % (n, ' | '.join(cells)))
