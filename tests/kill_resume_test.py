#!/usr/bin/env python3
"""kill -9 anywhere: a training run killed with SIGKILL at random moments always resumes, and ends bit-identical.

    python3 tests/kill_resume_test.py XVLM2VEC REPO_ROOT [--kills 20] [--seed 1] [--mpiexec MPIEXEC --np 2]

An uninterrupted run of configs/tiny-bert.yaml (adapter and merged export) is the reference. Then the same run is
started with --resume again and again, each start killed (SIGKILL, no warning) at the next of `--kills` planned
moments, until one start finishes. The moments cycle through three kinds:
  - time:       a random instant of the run (start-up, a step, a checkpoint, the export, whatever it falls on);
  - checkpoint: the instant a checkpoint's staging folder appears (the write in progress);
  - export:     the instant the adapter's or merged model's staging folder appears.
A kill that comes too late (the start already finished) is planned again in a fresh campaign. Every campaign
must end with an adapter, a merged model and metrics (losses, lr, gradient norm per step) bit-identical to the
reference, and nothing staged left behind. Under --mpiexec the job has --np ranks and one rank, drawn at random,
is killed: the launcher then ends the others, and the job resumes the same way.
Prints one line per kill (when, what was in progress) and a summary: N kills, resumed N times, identical.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

KEEP = ("step", "epoch", "loss", "loss_en", "loss_xx", "lr", "grad_norm")


def args_for(out):
    return ["--quiet", "--set", "train.threads=1", "--set", "data.workers=1", "--set", "train.max_steps=12",
            "--set", "checkpoint.every_steps=2", "--set", "checkpoint.keep=2", "--set", "export.merged=true",
            "--set", "output_dir=" + out]


class Job:
    def __init__(self, opt, out, resume):
        cmd = [opt.bin, "train", "configs/tiny-bert.yaml", *args_for(out)] + (["--resume"] if resume else [])
        if opt.mpiexec:
            cmd = [opt.mpiexec, "-np", str(opt.np), "--oversubscribe"] + cmd
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMP_NUM_THREADS="1")
        self.out, self.opt = out, opt
        self.log = open(os.path.join(os.path.dirname(out), "job.log"), "ab")
        self.p = subprocess.Popen(cmd, cwd=opt.root, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)

    def rank_pids(self):
        """The ranks' pids from their logs (mpirun's children), once every rank has written its first line."""
        pids = []
        for r in range(self.opt.np):
            path = os.path.join(self.out, "logs", f"rank-{r:05d}.log")
            try:
                with open(path) as f:
                    lines = [l for l in f if "(pid " in l]
            except OSError:
                return None
            if not lines:
                return None
            pids.append(int(lines[-1].split("(pid ")[1].split(")")[0]))
        return pids

    def kill(self, rng):
        """SIGKILL: the process itself, or under mpirun one rank (or, before the ranks are up, mpirun)."""
        if not self.opt.mpiexec:
            os.kill(self.p.pid, signal.SIGKILL)
            return "the process"
        pids = self.rank_pids()
        if pids:
            r = rng.randrange(len(pids))
            try:
                os.kill(pids[r], signal.SIGKILL)
            except ProcessLookupError:
                pass
            return f"rank {r}"
        os.killpg(self.p.pid, signal.SIGKILL)
        return "the whole job (before the ranks were up)"

    def wait(self, timeout=120):
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            raise SystemExit(f"FAIL: a start did not end within {timeout} s after the kill (see {self.log.name})")
        # Nothing of the job may outlive it (ranks are in the launcher's session).
        try:
            os.killpg(self.p.pid, 0)
            time.sleep(2)
            os.killpg(self.p.pid, 0)
            raise SystemExit("FAIL: processes of a killed job are still alive 2 s after its launcher ended")
        except ProcessLookupError:
            pass
        self.log.close()
        return rc


def staged(out):
    """What is being written now: 'checkpoint' (a staging folder under checkpoints/), 'export' (the adapter's or
    the merged model's staging folder), or None."""
    try:
        if any(n.startswith(".") and ".tmp." in n for n in os.listdir(os.path.join(out, "checkpoints"))):
            return "checkpoint"
    except OSError:
        pass
    try:
        if any(n.startswith((".adapter.tmp.", ".merged.tmp.")) for n in os.listdir(out)):
            return "export"
    except OSError:
        pass
    return None


def leftovers(out):
    found = []
    for root, dirs, files in os.walk(out):
        found += [os.path.join(root, n) for n in dirs + files if ".tmp." in n]
    return found


def metrics(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(l).items() if k in KEEP} for l in f]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def identical(out, ref):
    problems = []
    for rel in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "merged/model.safetensors"):
        a, b = os.path.join(out, rel), os.path.join(ref, rel)
        if not os.path.exists(a):
            problems.append(f"{rel} missing")
        elif read(a) != read(b):
            problems.append(f"{rel} differs from the uninterrupted run's")
    if os.path.exists(os.path.join(out, "metrics.jsonl")) and metrics(out) != metrics(ref):
        problems.append("metrics.jsonl (losses, lr, gradient norms) differ from the uninterrupted run's")
    left = leftovers(out)
    if left:
        problems.append("staging left behind: " + ", ".join(left))
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("root")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--mpiexec")
    ap.add_argument("--np", type=int, default=1)
    opt = ap.parse_args()
    opt.bin, opt.root = os.path.abspath(opt.bin), os.path.abspath(opt.root)
    rng = random.Random(opt.seed)
    tmp = tempfile.mkdtemp(prefix="xv-kill-")
    try:
        ref_dir = os.path.join(tmp, "ref")
        os.makedirs(ref_dir)
        ref = os.path.join(ref_dir, "out")
        t0 = time.monotonic()
        rc = Job(opt, ref, resume=False).wait()
        span = time.monotonic() - t0
        if rc != 0:
            raise SystemExit(f"FAIL: the uninterrupted run failed (exit {rc}): " + read(ref_dir + "/job.log").decode())
        print(f"uninterrupted run: {span:.1f} s", flush=True)
        kinds = ["time", "checkpoint", "export"]
        plan = [kinds[i % 3] for i in range(opt.kills)]
        done = {k: 0 for k in kinds}
        landed, campaigns, late = 0, 0, 0
        while plan:
            campaigns += 1
            cdir = os.path.join(tmp, f"campaign-{campaigns}")
            os.makedirs(cdir)
            out = os.path.join(cdir, "out")
            starts = 0
            while True:
                starts += 1
                kind = plan[0] if plan else None
                job = Job(opt, out, resume=True)
                t_start = time.monotonic()
                when = t_start + rng.uniform(0.0, span) if kind == "time" else None
                killed, what = None, None
                while job.p.poll() is None and kind:
                    now = time.monotonic()
                    st = staged(out)
                    if (kind == "time" and now >= when) or (kind != "time" and st == kind):
                        what = st or "a step, start-up or a small file"
                        killed = job.kill(rng)
                        break
                    time.sleep(0.0002 if kind != "time" else 0.001)
                rc = job.wait()
                if killed:
                    if rc == 0:
                        # The kill came as the job ended on its own: not a kill; plan it again.
                        late += 1
                        break
                    plan.pop(0)
                    landed += 1
                    done[kind] += 1
                    print(f"kill {landed:2}: {kind:10} at {time.monotonic() - t_start:5.2f} s of start {starts} of "
                          f"campaign {campaigns}, {killed} (exit {rc}) during: {what}", flush=True)
                    continue
                if rc != 0:
                    raise SystemExit(f"FAIL: a resumed start failed (exit {rc}), see {job.log.name}:\n" +
                                     read(job.log.name).decode()[-3000:])
                break  # finished
            if not os.path.exists(os.path.join(out, "adapter")):
                continue  # a late kill left this campaign unfinished: the next campaign starts fresh
            problems = identical(out, ref)
            if problems:
                raise SystemExit(f"FAIL: campaign {campaigns} ({starts} starts): " + "; ".join(problems))
            print(f"campaign {campaigns}: finished after {starts} starts, adapter, merged model and metrics "
                  f"bit-identical to the uninterrupted run", flush=True)
        # The last campaign may have ended on its final kill: finish it.
        if not os.path.exists(os.path.join(out, "adapter")) or staged(out):
            rc = Job(opt, out, resume=True).wait()
            if rc != 0:
                raise SystemExit(f"FAIL: the final resume failed (exit {rc})")
            problems = identical(out, ref)
            if problems:
                raise SystemExit(f"FAIL: campaign {campaigns}: " + "; ".join(problems))
            print(f"campaign {campaigns}: finished, bit-identical to the uninterrupted run", flush=True)
        ranks = f"{opt.np} ranks under mpirun" if opt.mpiexec else "one process"
        print(f"kill -9 ({ranks}): {landed} kills ({done['time']} at random times, {done['checkpoint']} during a "
              f"checkpoint write, {done['export']} during the export), {late} too late and planned again, "
              f"{campaigns} campaigns, every one resumed to a bit-identical result")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
