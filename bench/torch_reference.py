#!/usr/bin/env python3
"""PyTorch reference for cld-bench: the same rows, the same two UNets.

Builds the DDPM UNet (Ho et al. 2020) in plain torch.nn modules, mirroring
cldiffusion's cld_unet_build, asserts the parameter counts of the two
standard workloads, and measures:

  - matrix products (torch.mm / torch.bmm) at the shapes the UNet's GEMMs use,
  - conv2d 3x3 forward and backward GFLOPS,
  - UNet forward and training step (MSE + AdamW) images/s,
  - time to sample 64 images of workload (a) in 20 DDIM steps,
  - start-up: import torch + build model (a) + first forward (batch 1),
  - peak memory (CUDA: max_memory_allocated; CPU: peak RSS growth of a
    child process that does one step, an approximation).

Rows are keyed like cld-bench's, so bench/run.sh can print ratios.
Usage: torch_reference.py [--threads N] [--device cpu|cuda] [--quick] [--json]
This is a benchmark, not a test.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

T_START = time.perf_counter()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

T_IMPORTED = time.perf_counter()

# ------------------------------------------------------------------ workloads
# (a) Fashion-MNIST size and (b) the CIFAR-10 DDPM UNet. Keep in sync with
# cld_unet_config_preset("fashion-mnist") / ("cifar10") and apps/cld-bench.c.
WORKLOADS = {
    "a": dict(name="fashion-mnist", in_ch=1, size=28, ch=64, mult=(1, 2, 2), nres=2,
              attn=(7,), groups=32, dropout=0.1, batch=64, params=6_469_889),
    "b": dict(name="cifar10", in_ch=3, size=32, ch=128, mult=(1, 2, 2, 2), nres=2,
              attn=(16,), groups=32, dropout=0.1, batch=16, params=35_746_307),
    # (s) the shipped Fashion-MNIST model: cld-train --preset small, 10 classes (train group)
    "s": dict(name="shipped fashion-mnist", in_ch=1, size=28, ch=32, mult=(1, 2, 2), nres=2,
              attn=(7,), groups=16, dropout=0.0, classes=10, batch=64, params=1_624_577),
}

# GEMM rows: (key, label, batch, M, N, K). C (M,N) = A (M,K) B (K,N), row-major.
# The conv op lowers a 3x3 conv to W (Co, Ci*9) x col (Ci*9, B*Ho*Wo).
GEMMS = [
    ("gemm_a_conv64", "GEMM conv 64->64 @28x28, 32 img (64x25088x576)", 1, 64, 25088, 576),
    ("gemm_b_conv128", "GEMM conv 128->128 @32x32, 16 img (128x16384x1152)", 1, 128, 16384, 1152),
    ("gemm_b_conv256", "GEMM conv 256->256 @8x8, 16 img (256x1024x2304)", 1, 256, 1024, 2304),
    ("gemm_b_attn", "GEMM attn QK^T @16x16 C256, batch 16 (256x256x256)", 16, 256, 256, 256),
    ("gemm_1024", "GEMM square 1024^3", 1, 1024, 1024, 1024),
]
# conv rows: (key, label, N, C, H, W, Co)
CONVS = [
    ("conv_a", "conv3x3 64->64 @28x28, batch 64", 64, 64, 28, 28, 64),
    ("conv_b", "conv3x3 128->128 @32x32, batch 16", 16, 128, 32, 32, 128),
]
SAMPLE_N, SAMPLE_STEPS = 64, 20


# ---------------------------------------------------------------------- model
def timestep_embedding(t, dim):
    """[sin(t f_i), cos(t f_i)], f_i = exp(-ln(10000) i / (h-1)), h = dim/2 (DDPM)."""
    half = dim // 2
    f = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32)
                  / (half - 1))
    a = t.float()[:, None] * f[None, :]
    return torch.cat([torch.sin(a), torch.cos(a)], dim=1)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, temb, groups, dropout):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, residual."""

    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.q = nn.Conv2d(c, c, 1)
        self.k = nn.Conv2d(c, c, 1)
        self.v = nn.Conv2d(c, c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x):
        n, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(n, c, hh * ww)
        k = self.k(h).reshape(n, c, hh * ww)
        v = self.v(h).reshape(n, c, hh * ww)
        w = torch.bmm(q.transpose(1, 2), k) * (c ** -0.5)  # (N, P, P)
        w = torch.softmax(w, dim=2)
        o = torch.bmm(v, w.transpose(1, 2))                 # (N, C, P)
        return x + self.proj_out(o.reshape(n, c, hh, ww))


class UNet(nn.Module):
    def __init__(self, in_ch, size, ch, mult, nres, attn, groups, dropout, classes=0, **_):
        super().__init__()
        self.ch = ch
        temb = 4 * ch
        self.temb0 = nn.Linear(ch, temb)
        self.temb1 = nn.Linear(temb, temb)
        # class table with a last row for the null class (classifier-free guidance)
        self.class_emb = nn.Embedding(classes + 1, temb) if classes else None
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [ch]
        cur, res = ch, size
        for i, m in enumerate(mult):
            for _ in range(nres):
                blk = nn.ModuleList([ResBlock(cur, ch * m, temb, groups, dropout)])
                cur = ch * m
                if res in attn:
                    blk.append(AttnBlock(cur, groups))
                self.down.append(blk)
                skips.append(cur)
            if i != len(mult) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(cur, cur, 3, stride=2, padding=1)]))
                skips.append(cur)
                res //= 2
        self.mid = nn.ModuleList([ResBlock(cur, cur, temb, groups, dropout), AttnBlock(cur, groups),
                                  ResBlock(cur, cur, temb, groups, dropout)])
        self.up = nn.ModuleList()
        for i, m in reversed(list(enumerate(mult))):
            for _ in range(nres + 1):
                blk = nn.ModuleList([ResBlock(cur + skips.pop(), ch * m, temb, groups, dropout)])
                cur = ch * m
                if res in attn:
                    blk.append(AttnBlock(cur, groups))
                self.up.append(blk)
            if i != 0:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(cur, cur, 3, padding=1)]))
                res *= 2
        self.norm_out = nn.GroupNorm(groups, cur, eps=1e-6)
        self.conv_out = nn.Conv2d(cur, in_ch, 3, padding=1)

    def forward(self, x, t, labels=None):
        temb = self.temb1(F.silu(self.temb0(timestep_embedding(t, self.ch))))
        if self.class_emb is not None:
            temb = temb + self.class_emb(labels)
        h = self.conv_in(x)
        hs = [h]
        for blk in self.down:
            if isinstance(blk[0], ResBlock):
                h = blk[0](h, temb)
                if len(blk) > 1:
                    h = blk[1](h)
            else:
                h = blk[0](h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, temb)), temb)
        for blk in self.up:
            if isinstance(blk[0], ResBlock):
                h = blk[0](torch.cat([h, hs.pop()], dim=1), temb)
                if len(blk) > 1:
                    h = blk[1](h)
            else:
                h = blk[1](blk[0](h))
        return self.conv_out(F.silu(self.norm_out(h)))


def build(wl, device):
    model = UNet(**wl).to(device)
    n = sum(p.numel() for p in model.parameters())
    assert n == wl["params"], f"{wl['name']}: {n} parameters, expected {wl['params']}"
    return model


# ------------------------------------------------------------------- timing
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn, device, iters, warmup=1):
    """Median wall seconds of fn() over iters runs after warm-up runs."""
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def row(key, label, unit, value, higher_is_better=True, note=""):
    return dict(key=key, label=label, unit=unit,
                value=None if value is None else float(value),
                higher_is_better=higher_is_better, note=note)


def bench_gemm(device, iters):
    out = []
    for key, label, b, m, n, k in GEMMS:
        a = torch.randn(b, m, k, device=device)
        bb = torch.randn(b, k, n, device=device)
        if b == 1:
            a2, b2 = a[0], bb[0]
            fn = lambda: torch.mm(a2, b2)  # noqa: E731
        else:
            fn = lambda: torch.bmm(a, bb)  # noqa: E731
        reps = max(1, int(2e9 / (2.0 * b * m * n * k)))  # ~2 GFLOP per timed sample
        s = timeit(lambda: [fn() for _ in range(reps)], device, iters) / reps
        out.append(row(key, label, "GFLOPS", 2.0 * b * m * n * k / s / 1e9))
    return out


def bench_conv(device, iters):
    out = []
    for key, label, n, c, h, w, co in CONVS:
        conv = nn.Conv2d(c, co, 3, padding=1).to(device)
        x = torch.randn(n, c, h, w, device=device, requires_grad=True)
        dy = torch.randn(n, co, h, w, device=device)
        flops = 2.0 * n * co * h * w * c * 9
        with torch.no_grad():
            tf = timeit(lambda: conv(x), device, iters)

        def fb():
            x.grad = None
            conv.zero_grad(set_to_none=True)
            conv(x).backward(dy)

        tfb = timeit(fb, device, iters)
        out.append(row(key + "_fwd", label + " forward", "GFLOPS", flops / tf / 1e9))
        # backward = input gradient + weight gradient: 2x the forward's FLOPs
        out.append(row(key + "_bwd", label + " backward", "GFLOPS",
                       2 * flops / max(tfb - tf, 1e-9) / 1e9,
                       note="time(fwd+bwd) - time(fwd)"))
    return out


def unet_rows(tag, wl, device, iters):
    torch.manual_seed(0)
    model = build(wl, device)
    b, s, c = wl["batch"], wl["size"], wl["in_ch"]
    x = torch.randn(b, c, s, s, device=device)
    t = torch.randint(0, 1000, (b,), device=device).float()
    noise = torch.randn_like(x)
    labels = torch.randint(0, wl["classes"] + 1, (b,), device=device) if wl.get("classes") else None
    model.eval()
    with torch.no_grad():
        tf = timeit(lambda: model(x, t, labels), device, iters)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.0)

    def step():
        opt.zero_grad(set_to_none=False)
        loss = F.mse_loss(model(x, t, labels), noise)
        loss.backward()
        opt.step()

    ts = timeit(step, device, iters)
    desc = f"({tag}) {wl['name']} batch {b}"
    return [row(f"unet_{tag}_fwd", f"UNet forward {desc}", "img/s", b / tf),
            row(f"unet_{tag}_train", f"UNet train step (AdamW) {desc}", "img/s", b / ts)]


def ddim_sample(model, n, steps, wl, device, T=1000):
    """Deterministic DDIM (eta = 0) on the linear DDPM beta schedule."""
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    ts = torch.linspace(T - 1, 0, steps).round().long().tolist()
    x = torch.randn(n, wl["in_ch"], wl["size"], wl["size"], device=device)
    with torch.no_grad():
        for i, t in enumerate(ts):
            a_t = float(abar[t])
            a_prev = float(abar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            eps = model(x, torch.full((n,), float(t), device=device))
            x0 = ((x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)).clamp(-1, 1)
            x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    return x


def bench_sample(device, iters):
    wl = WORKLOADS["a"]
    torch.manual_seed(0)
    model = build(wl, device).eval()
    s = timeit(lambda: ddim_sample(model, SAMPLE_N, SAMPLE_STEPS, wl, device), device,
               iters, warmup=0)
    return [row("sample_a", f"sample {SAMPLE_N} images of (a), {SAMPLE_STEPS} DDIM steps", "s",
                s, higher_is_better=False)]


# ------------------------------------------------------------ memory probes
def proc_status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    raise KeyError(field)


def mem_probe(tag, mode, device):
    """Child process: bytes of peak memory growth for one step of workload tag."""
    wl = WORKLOADS[tag]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        # ru_maxrss survives exec (it would start at the parent's peak): use
        # VmHWM, reset to the current RSS ("5" > clear_refs) before the model.
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = proc_status_bytes("VmRSS")
    model = build(wl, device)
    b = wl["batch"]
    x = torch.randn(b, wl["in_ch"], wl["size"], wl["size"], device=device)
    t = torch.zeros(b, device=device)
    if mode == "fwd":
        with torch.no_grad():
            model.eval()(x, t)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=2e-4)
        for _ in range(2):
            opt.zero_grad(set_to_none=False)
            F.mse_loss(model(x, t), x).backward()
            opt.step()
    sync(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = proc_status_bytes("VmHWM") - base
    print(peak)


def bench_mem(device, threads):
    out = []
    for tag in ("a", "b"):
        wl = WORKLOADS[tag]
        for mode, what in (("fwd", "forward"), ("train", "training")):
            cmd = [sys.executable, os.path.abspath(__file__), "--mem-probe", f"{tag}:{mode}",
                   "--device", device.type, "--threads", str(threads)]
            try:
                res = subprocess.run(cmd, capture_output=True, text=True, check=True)
                mib = int(res.stdout.strip().splitlines()[-1]) / 2**20
            except (subprocess.CalledProcessError, ValueError, IndexError) as e:
                print(f"mem probe {tag}:{mode} failed: {e}", file=sys.stderr)
                mib = None
            note = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
                    else "peak RSS growth: params, grads, AdamW state, activations, allocator")
            out.append(row(f"mem_{tag}_{mode}",
                           f"peak memory, {what} ({tag}) batch {wl['batch']}", "MiB", mib,
                           higher_is_better=False, note=note))
    return out


# ------------------------------------------------------------ training loop
def read_idx(path):
    """IDX file (gzipped or not) as a uint8 tensor."""
    import gzip
    import numpy as np
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(nd)]
    return torch.from_numpy(np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims).copy())


def train_app_rows(data_dir, steps, device):
    """What cld-train does per step, in PyTorch, on the real Fashion-MNIST
    files: a shuffled batch of 64 from the uint8 images, t uniform, class
    dropout 0.1 (null class 10), v-prediction target on the cosine schedule,
    Min-SNR-5 weights, MSE, backward, global-norm clipping at 1, AdamW
    (lr 5e-4 after a 500-step warmup), EMA 0.9995 of all weights, and the
    loss read back every step (as cld-train's NaN check and log do).
    images/s over steps 3..steps (the first two warm up)."""
    wl = WORKLOADS["s"]
    torch.manual_seed(1)
    x_all = read_idx(os.path.join(data_dir, "train-images-idx3-ubyte.gz"))[:, None].to(device)
    y_all = read_idx(os.path.join(data_dir, "train-labels-idx1-ubyte.gz")).long().to(device)
    model = build(wl, device).train()
    ema = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    T, B, n = 1000, wl["batch"], x_all.shape[0]
    s_ = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((s_ + 0.008) / 1.008 * math.pi / 2) ** 2
    ab = (f[1:] / f[0]).clamp(min=1e-12)
    betas = (1 - ab / torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])).clamp(max=0.999)
    ab = torch.cumprod(1 - betas, 0).float().to(device)
    perm, pos = torch.randperm(n, device=device), 0
    params = list(model.parameters())
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        if pos + B > n:
            perm, pos = torch.randperm(n, device=device), 0
        idx = perm[pos:pos + B]
        pos += B
        x0 = x_all[idx].float() / 127.5 - 1
        labels = torch.where(torch.rand(B, device=device) < 0.1, torch.full_like(y_all[idx], 10), y_all[idx])
        t = torch.randint(0, T, (B,), device=device)
        a = ab[t].sqrt()[:, None, None, None]
        sg = (1 - ab[t]).sqrt()[:, None, None, None]
        noise = torch.randn_like(x0)
        xt = a * x0 + sg * noise
        target = a * noise - sg * x0
        snr = ab[t] / (1 - ab[t])
        w = torch.minimum(snr, torch.full_like(snr, 5.0)) / (snr + 1)
        lr = 5e-4 * min(1.0, (step + 1) / 500)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=False)
        pred = model(xt, t.float(), labels)
        loss = (w * ((pred - target) ** 2).mean(dim=(1, 2, 3))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(0.9995, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        loss_v = loss.item()
        assert math.isfinite(loss_v)
        sync(device)
        times.append(time.perf_counter() - t0)
    rate = B * (steps - 2) / sum(times[2:])
    note = (f"whole training step (data, noise, loss weights, clip, AdamW, EMA, loss read back), "
            f"steps 3..{steps}")
    return [row("train_s_app", f"training, shipped config (s) batch {B}: cld-train vs a torch loop", "img/s",
                rate, note=note)]


# -------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ap.add_argument("--only", default="", help="comma list of groups: gemm,conv,unet,sample,mem,start")
    ap.add_argument("--mem-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist",
                    help="Fashion-MNIST IDX files for the train group")
    ap.add_argument("--train-steps", type=int, default=0, help="train group: steps (default 12, quick 6)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.mem_probe:
        tag, mode = args.mem_probe.split(":")
        mem_probe(tag, mode, device)
        return

    # start-up: import + build (a) + first forward at batch 1, from process start
    wl = WORKLOADS["a"]
    m = build(wl, device).eval()
    with torch.no_grad():
        m(torch.randn(1, 1, 28, 28, device=device), torch.zeros(1, device=device))
    sync(device)
    t_first = time.perf_counter() - T_START
    del m

    iters = 1 if args.quick else 3
    groups = set(filter(None, args.only.split(","))) or {"gemm", "conv", "unet", "sample",
                                                        "mem", "start", "train"}
    rows = []
    if "gemm" in groups:
        rows += bench_gemm(device, 3 if args.quick else 7)
    if "conv" in groups:
        rows += bench_conv(device, 2 if args.quick else 5)
    if "unet" in groups:
        for tag in ("a", "b"):
            rows += unet_rows(tag, WORKLOADS[tag], device, iters)
    if "sample" in groups:
        rows += bench_sample(device, 1)
    if "train" in groups:
        rows += unet_rows("s", WORKLOADS["s"], device, iters)
        rows += train_app_rows(args.data, args.train_steps or (6 if args.quick else 12), device)
    if "start" in groups:
        note = (f"no kernel compilation: import torch {T_IMPORTED - T_START:.2f} s + build + "
                "first forward (a) batch 1, in this process")
        rows.append(row("start_cold", "cold start to first forward (a) batch 1", "s", t_first,
                        False, note))
        rows.append(row("start_warm", "warm start to first forward (a) batch 1", "s", t_first,
                        False, note))
    if "mem" in groups:
        rows += bench_mem(device, args.threads)

    dev = (torch.cuda.get_device_name(0) if device.type == "cuda"
           else f"CPU, {torch.get_num_threads()} threads")
    meta = dict(engine="pytorch", version=torch.__version__, device=dev, threads=args.threads,
                quick=args.quick)
    if args.json:
        print(json.dumps(dict(meta=meta, rows=rows), indent=1))
    else:
        print(f"pytorch {torch.__version__} on {dev}")
        for r in rows:
            v = "n/a" if r["value"] is None else f"{r['value']:.3f}"
            print(f"{r['label']:<58} {v:>12} {r['unit']}")


if __name__ == "__main__":
    main()
