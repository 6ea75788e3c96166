#!/usr/bin/env python3
"""Checkpoints under kill -9 and a full disk (README: Hardening).

    tools/checkpoint_faults.py [--build build] [--trials 100] [--seed 1]

1. A reference run of a tiny model (cld-train, 8 steps, a checkpoint every
   step, all kept) gives the expected bytes of every state file and, step
   by step, of model.safetensors (resume is byte-exact, test_train).
2. Each trial starts from the reference's step-2 checkpoint, resumes
   (--resume) and is killed with SIGKILL at a random moment while a
   checkpoint is written: a random one of the checkpoints at steps 3..6,
   at a random delay after its first temporary file appears (inotify), up
   to the longest time a whole checkpoint (state file, then model file)
   took in a calibration run. Then:
   every state-*.safetensors equals the reference's state of its step, the
   newest is the resume point, model.safetensors equals the reference's
   model of that step or the one before (the model is written second), and
   a resume from what is left ends with the reference's final bytes.
3. A full disk: the step-2 checkpoint on a tmpfs too small for the next
   one (mount -t tmpfs; without mount rights: RLIMIT_FSIZE, reported as
   such). cld-train must exit 1 naming the error, with the step-2 files
   byte-identical and no temporary file left; cld-sample writing a PNG to
   a full disk likewise.

Exit status 0 when every check held. Bounded: each program run has a
timeout; about 2-3 s per trial on an idle machine.
"""
import argparse
import ctypes
import os
import select
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

TINY = ("--base 8 --mult 1,2 --res-blocks 1 --attn 4 --groups 4 --T 100 --batch 4 --warmup 2 "
        "--val-n 8 --grid-every 0 --progress none --val-every 0 --ckpt-every 1").split()
STEPS = 8


def write_idx(path, ndim, n, seed):
    rnd = random.Random(seed)
    hdr = bytes([0, 0, 8, ndim]) + struct.pack(">I", n) + (struct.pack(">II", 8, 8) if ndim == 3 else b"")
    body = bytes(rnd.randrange(256 if ndim == 3 else 3) for _ in range(n * (64 if ndim == 3 else 1)))
    with open(path, "wb") as f:
        f.write(hdr + body)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def run(cmd, cwd, timeout=300, preexec=None):
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                       preexec_fn=preexec)
    return p.returncode, p.stderr.decode(errors="replace")


def states(d):
    """step -> path of every complete state file in d."""
    out = {}
    for name in os.listdir(d):
        if name.startswith("state-") and name.endswith(".safetensors"):
            out[int(name[6:-12])] = os.path.join(d, name)
    return out


def temps(d):
    return sorted(n for n in os.listdir(d) if ".tmp" in n)


class Watch:
    """inotify on a folder: the names created (IN_CREATE) and renamed into it (IN_MOVED_TO), as they
    happen; polling the folder misses checkpoints that take a millisecond or two."""
    IN_CREATE, IN_MOVED_TO = 0x100, 0x80

    def __init__(self, d):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or self.libc.inotify_add_watch(self.fd, d.encode(), self.IN_CREATE | self.IN_MOVED_TO) < 0:
            sys.exit("checkpoint_faults: inotify unavailable")
        self.buf = b""

    def events(self, timeout):
        """[(mask, name)] within timeout seconds (possibly none)."""
        r, _, _ = select.select([self.fd], [], [], timeout)
        out = []
        if r:
            try:
                self.buf += os.read(self.fd, 65536)
            except BlockingIOError:
                pass
            while len(self.buf) >= 16:
                wd, mask, cookie, n = struct.unpack("iIII", self.buf[:16])
                out.append((mask, self.buf[16:16 + n].rstrip(b"\0").decode()))
                self.buf = self.buf[16 + n:]
        return out

    def close(self):
        os.close(self.fd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep-dir", action="store_true", help="keep the scratch folder")
    a = ap.parse_args()
    train = os.path.abspath(os.path.join(a.build, "cld-train"))
    sample = os.path.abspath(os.path.join(a.build, "cld-sample"))
    for b in (train, sample):
        if not os.access(b, os.X_OK):
            sys.exit(f"checkpoint_faults: no {b}: build first")
    rnd = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix="cld-ckpt-faults-")
    failures = []

    def check(ok, what):
        if not ok:
            failures.append(what)
            print("  FAIL:", what, flush=True)
        return ok

    data = os.path.join(work, "data")
    os.mkdir(data)
    write_idx(os.path.join(data, "train-images-idx3-ubyte"), 3, 24, 1)
    write_idx(os.path.join(data, "train-labels-idx1-ubyte"), 1, 24, 2)
    write_idx(os.path.join(data, "t10k-images-idx3-ubyte"), 3, 8, 3)
    write_idx(os.path.join(data, "t10k-labels-idx1-ubyte"), 1, 8, 4)
    img = os.path.join(data, "train-images-idx3-ubyte")

    # 1. reference: step by step, so that model.safetensors of every step is known
    t0 = time.time()
    ref = os.path.join(work, "ref")
    ref_model, ref_state = {}, {}
    start = os.path.join(work, "start")  # the step-2 checkpoint every trial resumes from
    os.mkdir(start)
    for step in range(1, STEPS + 1):
        if step == 1:
            cmd = [train, "--data", img, *TINY, "--steps", str(STEPS), "--out", ref,
                   "--stop-after", "1"]
        else:
            cmd = [train, "--data", img, "--out", ref, "--resume", "--progress", "none", "--stop-after", "1"]
        rc, err = run(cmd, work)
        if rc != 0:
            sys.exit(f"checkpoint_faults: reference run failed at step {step}: {err}")
        ref_model[step] = read(os.path.join(ref, "model.safetensors"))
        ref_state[step] = read(os.path.join(ref, f"state-{step:09d}.safetensors"))
        if step == 2:
            for name in ("state-000000002.safetensors", "log.csv", "model.safetensors"):
                shutil.copy(os.path.join(ref, name), start)
    print(f"reference: {STEPS} steps, state {len(ref_state[2])} bytes, model {len(ref_model[2])} bytes, "
          f"{time.time() - t0:.1f} s", flush=True)

    def fresh(name):
        d = os.path.join(work, name)
        shutil.copytree(start, d)
        return d

    def resume_cmd(d):
        # the checkpoint interval is a flag of this run, not of the checkpoint
        return [train, "--data", img, "--out", d, "--resume", "--progress", "none", "--ckpt-every", "1"]

    # how long one checkpoint takes: its state file's creation to its model file's rename
    d = fresh("calibrate")
    w = Watch(d)
    p = subprocess.Popen(resume_cmd(d), cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spans, began = [], None
    while p.poll() is None:
        for mask, name in w.events(0.05):
            now = time.monotonic()
            if mask & Watch.IN_CREATE and name.startswith("state-") and name.endswith(".tmp"):
                began = now
            elif mask & Watch.IN_MOVED_TO and name == "model.safetensors" and began is not None:
                spans.append(now - began)
                began = None
    w.close()
    check(p.returncode == 0 and len(spans) == STEPS - 2, f"calibration: exit {p.returncode}, {len(spans)} checkpoints")
    window = max(spans) if spans else 0.05
    print(f"calibration: {len(spans)} checkpoints, {1000 * min(spans or [0]):.1f} to {1000 * max(spans or [0]):.1f} ms "
          f"each; kill window {1000 * window:.1f} ms after a checkpoint's first file appears", flush=True)
    shutil.rmtree(d)

    # 2. kill -9 while a checkpoint is written
    t0 = time.time()
    mid_file = between = after_all = 0
    for trial in range(1, a.trials + 1):
        d = fresh(f"trial-{trial}")
        target = rnd.randint(1, 4)  # the checkpoint of step 2 + target
        delay = rnd.uniform(0, window)
        w = Watch(d)
        p = subprocess.Popen(resume_cmd(d), cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seen, killed = 0, False
        deadline = time.monotonic() + 120
        while not killed and p.poll() is None and time.monotonic() < deadline:
            for mask, name in w.events(0.05):
                if mask & Watch.IN_CREATE and name.startswith("state-") and name.endswith(".tmp"):
                    seen += 1
                    if seen == target:
                        t = time.monotonic() + delay
                        while time.monotonic() < t:
                            pass
                        p.send_signal(signal.SIGKILL)
                        killed = True
                        break
        w.close()
        if p.poll() is None and not killed:
            p.kill()
        p.wait()
        if not killed:
            check(False, f"trial {trial}: the run ended before checkpoint {2 + target} (exit {p.returncode})")
            continue
        left = temps(d)
        st = states(d)
        newest = max(st) if st else 0
        model = read(os.path.join(d, "model.safetensors"))
        if left:
            mid_file += 1
        elif model != ref_model.get(newest):
            between += 1
        else:
            after_all += 1
        ok = check(newest >= 2, f"trial {trial}: no state left")
        for k, path in st.items():
            ok &= check(read(path) == ref_state.get(k), f"trial {trial}: state {k} differs from the reference")
        ok &= check(model in (ref_model.get(newest), ref_model.get(newest - 1)),
                    f"trial {trial}: model.safetensors is neither step {newest}'s nor step {newest - 1}'s")
        rc, err = run(resume_cmd(d), work, timeout=300)
        ok &= check(rc == 0 and "resumed from" in err, f"trial {trial}: resume failed (exit {rc}): {err[-400:]}")
        if rc == 0:
            ok &= check(read(os.path.join(d, f"state-{STEPS:09d}.safetensors")) == ref_state[STEPS] and
                        read(os.path.join(d, "model.safetensors")) == ref_model[STEPS],
                        f"trial {trial}: the resumed run's final files differ from the reference")
        print(f"trial {trial}: SIGKILL {1000 * delay:.1f} ms into checkpoint {2 + target}; left: "
              f"{','.join(left) or 'no temporary file'}; newest state {newest}, model of step "
              f"{newest if model == ref_model.get(newest) else newest - 1}; resumed to the reference's "
              f"bytes: {'ok' if ok else 'FAILED'}", flush=True)
        shutil.rmtree(d)
    print(f"kill -9: {a.trials} trials in {time.time() - t0:.0f} s: {mid_file} inside a file's write (a "
          f"temporary file left), {between} after the state file and before the model file, {after_all} "
          f"after the whole checkpoint; failures: {len(failures)}", flush=True)

    # 3. a full disk
    full = os.path.join(work, "full")
    os.mkdir(full)
    need = len(ref_state[2]) + len(ref_model[2]) + 8192  # the step-2 files and a little
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={need + len(ref_state[2]) // 2}", "tmpfs", full],
                             stderr=subprocess.DEVNULL).returncode == 0
    try:
        for name in os.listdir(start):
            shutil.copy(os.path.join(start, name), full)
        before = {n: read(os.path.join(full, n)) for n in os.listdir(full)}
        if mounted:
            how, preexec = f"tmpfs of {need + len(ref_state[2]) // 2} bytes", None
        else:  # writes past the limit fail with EFBIG once SIGXFSZ is ignored
            limit = len(ref_state[2]) // 2
            how = f"RLIMIT_FSIZE {limit} bytes (mount refused)"

            def preexec():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        rc, err = run(resume_cmd(full), work, preexec=preexec)
        msg = [l for l in err.splitlines() if "No space left" in l or "File too large" in l]
        check(rc == 1, f"full disk: cld-train exit {rc}, expected 1: {err[-400:]}")
        check(msg,
              f"full disk: no ENOSPC/EFBIG message: {err[-400:]}")
        for n, b in before.items():
            if n == "log.csv":  # appended to, by design
                continue
            check(read(os.path.join(full, n)) == b, f"full disk: {n} changed")
        check(not temps(full), f"full disk: temporary files left: {temps(full)}")
        print(f"full disk ({how}): cld-train exit {rc}: {msg[-1] if msg else err[-200:]}", flush=True)
        # cld-sample into the full disk: fill it to the last byte first
        if mounted:
            try:
                with open(os.path.join(full, "filler"), "wb") as f:
                    while True:
                        f.write(b"\0" * 4096)
                        f.flush()
            except OSError:
                pass
        out = os.path.join(full, "s.png")
        rc, err = run([sample, "--model", os.path.join(ref, "model.safetensors"), "--n", "1", "--steps", "2",
                       "--out", out, "--progress", "none"], work, preexec=preexec)
        check(rc != 0 and not os.path.exists(out), f"full disk: cld-sample exit {rc}: {err[-300:]}")
        check(not temps(full), f"full disk: cld-sample left temporary files: {temps(full)}")
        last = [l for l in err.splitlines() if "cld-sample:" in l]
        print(f"full disk ({how}): cld-sample exit {rc}: {last[-1] if last else err[-200:]}", flush=True)
    finally:
        if mounted:
            subprocess.run(["umount", full])
    if a.keep_dir:
        print("scratch folder:", work)
    else:
        shutil.rmtree(work)
    print("checkpoint_faults:", "ok" if not failures else f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
