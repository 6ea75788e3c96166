#!/usr/bin/env python3
"""Plot a cld-train log.csv (loss, validation loss raw and EMA) into a small PNG.

    python3 bench/plot_training.py RUN/log.csv OUT.png [title]

Needs matplotlib (any virtualenv); used only to make README figures."""
import csv, math, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

rows = list(csv.DictReader(open(sys.argv[1])))
title = sys.argv[3] if len(sys.argv) > 3 else sys.argv[1]
def series(key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key, "")
        if v not in ("", "nan") and math.isfinite(float(v)):
            xs.append(int(r["step"])); ys.append(float(v))
    return xs, ys
fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=100)
for key, label, style in [("loss", "training loss (smoothed)", "-"), ("val_loss", "validation loss", "o-"),
                          ("val_loss_ema", "validation loss, EMA weights", "s-")]:
    xs, ys = series(key)
    if xs:
        ax.plot(xs, ys, style, label=label, markersize=3, linewidth=1)
ax.set_xlabel("step"); ax.set_ylabel("loss"); ax.set_yscale("log"); ax.set_title(title, fontsize=9)
ax.grid(True, which="both", alpha=0.3); ax.legend(fontsize=8)
fig.tight_layout(); fig.savefig(sys.argv[2])
