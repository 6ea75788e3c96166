#!/usr/bin/env python3
"""Judge a class-conditional Fashion-MNIST model the way its issue says it is
judged: a classifier trained on the real training set says whether each
sample is the requested class, and a Frechet distance in that classifier's
feature space compares samples with the test set (next to the same distance
between the real training and test sets, the floor to aim at).

    python3 bench/eval_fmnist.py SAMPLES_DIR [--n-real 10000]

SAMPLES_DIR holds cld-sample's folder output (one PNG per sample, its name
carrying the class: `cld-sample --n 1000 --out DIR/`). Needs torch, numpy,
Pillow (any virtualenv; bench/run.sh makes one with torch). Our own
classifier (a small CNN, ~92% test accuracy after 3 epochs), so the numbers
are a development reading, not the independent judges'."""
import argparse, glob, gzip, os, re, sys, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

D = "/usr/share/datasets/fashion-mnist"
NAMES = ["T-shirt_top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle_boot"]
torch.manual_seed(0)
torch.set_num_threads(2)

def idx(name):
    with gzip.open(os.path.join(D, name)) as f:
        b = f.read()
    if name.find("images") >= 0:
        return np.frombuffer(b, np.uint8, offset=16).reshape(-1, 28, 28).astype(np.float32) / 255.0
    return np.frombuffer(b, np.uint8, offset=8).astype(np.int64)

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1); self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.c3 = nn.Conv2d(64, 128, 3, padding=1); self.fc = nn.Linear(128 * 3 * 3, 256); self.out = nn.Linear(256, 10)
        self.bn1, self.bn2, self.bn3 = nn.BatchNorm2d(32), nn.BatchNorm2d(64), nn.BatchNorm2d(128)
    def features(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.c2(x))), 2)
        x = F.max_pool2d(F.relu(self.bn3(self.c3(x))), 2)
        return F.relu(self.fc(x.flatten(1)))
    def forward(self, x):
        return self.out(F.dropout(self.features(x), 0.3, self.training))

def batches(x, bs=500):
    for i in range(0, len(x), bs):
        yield torch.from_numpy(x[i:i + bs, None] * 2 - 1)

def feats_logits(net, x):
    net.eval()
    fs, ls = [], []
    with torch.no_grad():
        for b in batches(x):
            f = net.features(b); fs.append(f.numpy().astype(np.float64)); ls.append(net.out(f).numpy())
    return np.concatenate(fs), np.concatenate(ls)

def frechet(a, b):
    ma, mb = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # sqrt of ca cb through the symmetric form sqrt(sqrt(ca) cb sqrt(ca))
    w, v = np.linalg.eigh(ca); sa = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    w2 = np.linalg.eigvalsh(sa @ cb @ sa)
    return float(((ma - mb) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.clip(w2, 0, None)).sum())

ap = argparse.ArgumentParser()
ap.add_argument("samples")
ap.add_argument("--n-real", type=int, default=10000)
ap.add_argument("--epochs", type=int, default=3)
a = ap.parse_args()
xtr, ytr, xte, yte = idx("train-images-idx3-ubyte.gz"), idx("train-labels-idx1-ubyte.gz"), \
    idx("t10k-images-idx3-ubyte.gz"), idx("t10k-labels-idx1-ubyte.gz")
cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".fmnist_classifier.pt")
net = Net()
if os.path.exists(cache):
    net.load_state_dict(torch.load(cache))
else:
    t0 = time.time()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for ep in range(a.epochs):
        net.train()
        perm = np.random.default_rng(ep).permutation(len(xtr))
        for i in range(0, len(xtr), 128):
            j = perm[i:i + 128]
            loss = F.cross_entropy(net(torch.from_numpy(xtr[j, None] * 2 - 1)), torch.from_numpy(ytr[j]))
            opt.zero_grad(); loss.backward(); opt.step()
    torch.save(net.state_dict(), cache)
    print("classifier trained in %.0f s" % (time.time() - t0), file=sys.stderr)
fte, lte = feats_logits(net, xte)
print("classifier test accuracy: %.2f%%" % (100 * (lte.argmax(1) == yte).mean()))
files = sorted(glob.glob(os.path.join(a.samples, "*.png")))
if not files:
    sys.exit("no PNGs in %s" % a.samples)
xs, ys = [], []
for fn in files:
    # cld-sample's names: sample-INDEX-CLASSNAME-seedSEED.png
    m = re.match(r"sample-\d+-(.+)-seed\d+\.png$", os.path.basename(fn))
    if not m or m.group(1) not in NAMES:
        sys.exit("cannot read the class from the name %s" % fn)
    ys.append(NAMES.index(m.group(1)))
    xs.append(np.asarray(Image.open(fn).convert("L"), np.float32) / 255.0)
xs, ys = np.stack(xs), np.array(ys)
fs, ls = feats_logits(net, xs)
acc = (ls.argmax(1) == ys).mean()
per = [(ls.argmax(1)[ys == k] == k).mean() * 100 for k in range(10)]
ftr, _ = feats_logits(net, xtr[:a.n_real])
print("samples: %d; classified as the requested class: %.2f%%" % (len(ys), 100 * acc))
print("per class: " + " ".join("%d:%.0f" % (k, p) for k, p in enumerate(per)))
print("Frechet distance (classifier features), samples vs test set: %.3f" % frechet(fs, fte))
print("Frechet distance, %d real training images vs test set (floor): %.3f" % (a.n_real, frechet(ftr, fte)))
k = min(len(xs), a.n_real)
print("Frechet distance, %d real training images vs test set (same count as samples): %.3f"
      % (k, frechet(ftr[:k], fte)))
