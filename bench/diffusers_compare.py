#!/usr/bin/env python3
"""Published diffusers configurations with random weights: diffusers on
PyTorch CPU against cldiffusion (bench/lab_diffusers.c) on the same inputs.

    /tmp/venv-diffusers/bin/python bench/diffusers_compare.py cifar10 DIR [--threads 2]
    /tmp/venv-diffusers/bin/python bench/diffusers_compare.py celebahq DIR --steps 0

Writes DIR (a save_pretrained folder: config.json, weights, scheduler_config.json)
and DIR/ref.safetensors: x, t, out (one forward pass at batch 1) and, with
--steps N > 0, ddim_xT / ddim_x0 of an N-step DDIM run (eta 0) from the
folder's scheduler config (with --f64 also ddim_x0_f64, the same run in
float64, to see how far float32 arithmetic itself is from exact). Prints diffusers' seconds per forward pass and per
DDIM step (median of --iters after a warm-up). Not a test.

The two configurations are google/ddpm-cifar10-32's and
google/ddpm-celebahq-256's config.json and scheduler_config.json (written
out here: this machine cannot reach the hub), weights random as in
test/fixtures/make_diffusers_fixtures.py.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test", "fixtures"))
from make_diffusers_fixtures import randomise  # noqa: E402  (the same random weights as the fixtures)

COMMON = dict(act_fn="silu", attention_head_dim=None, center_input_sample=False, downsample_padding=0,
              flip_sin_to_cos=False, freq_shift=1, in_channels=3, out_channels=3, layers_per_block=2,
              mid_block_scale_factor=1, norm_eps=1e-6, norm_num_groups=32, time_embedding_type="positional")
CONFIGS = {
    "cifar10": dict(COMMON, sample_size=32, block_out_channels=(128, 256, 256, 256),
                    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                    up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")),
    "celebahq": dict(COMMON, sample_size=256, block_out_channels=(128, 128, 256, 256, 512, 512),
                     down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                       "DownBlock2D"),
                     up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D",
                                     "UpBlock2D")),
}
SCHED = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
             variance_type="fixed_large", clip_sample=True)


def timed(fn, iters):
    """Median seconds of iters calls after a warm-up; iters 0: one call, timed."""
    if iters == 0:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    fn()  # warm-up
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config", choices=sorted(CONFIGS))
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--f64", action="store_true", help="also run the DDIM steps in float64 (ddim_x0_f64)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(7)
    model = UNet2DModel(**CONFIGS[a.config])
    randomise(model, gen)
    model.eval()
    model.save_pretrained(a.dir, safe_serialization=True)
    DDPMScheduler(**SCHED).save_pretrained(a.dir)
    n_params = sum(p.numel() for p in model.parameters())
    S = model.config.sample_size
    ref = {}
    with torch.no_grad():
        x = torch.randn((1, 3, S, S), generator=gen)
        t = torch.tensor([500])
        res = {}
        fwd = timed(lambda: res.update(out=model(x, t).sample), a.iters)
        ref.update(x=x, t=t.float(), out=res["out"])
        line = f"diffusers {a.config}: {n_params} parameters, torch {torch.__version__} CPU, {a.threads} threads: " \
               f"forward (batch 1) {fwd:.3f} s"
        if a.steps > 0:
            ddim = DDIMScheduler.from_config(DDPMScheduler(**SCHED).config)
            ddim.set_timesteps(a.steps)
            xt = torch.randn((1, 3, S, S), generator=gen)
            ref["ddim_xT"] = xt.clone()
            t0 = time.perf_counter()
            for ts in ddim.timesteps:
                xt = ddim.step(model(xt, ts).sample, ts, xt, eta=0.0).prev_sample
            per_step = (time.perf_counter() - t0) / a.steps
            ref["ddim_x0"] = xt
            line += f", DDIM step {per_step:.3f} s ({a.steps} steps)"
            if a.f64:  # the same run in float64: how far float32 itself is from it
                m64 = model.double()
                ddim.set_timesteps(a.steps)
                x64 = ref["ddim_xT"].double()
                for ts in ddim.timesteps:
                    x64 = ddim.step(m64(x64, ts).sample, ts, x64, eta=0.0).prev_sample
                ref["ddim_x0_f64"] = x64
                err = float((xt.double() - x64).abs().max() / x64.abs().max())
                line += f"; diffusers float32 vs float64 DDIM result: relative error {err:.2e}"
    save_file({k: v.float().contiguous() for k, v in ref.items()}, os.path.join(a.dir, "ref.safetensors"))
    print(line)


if __name__ == "__main__":
    main()
