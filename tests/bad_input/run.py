#!/usr/bin/env python3
"""The bad-input catalog: damaged and hostile input to every command, each case checked the same way.

    python3 tests/bad_input/run.py XVLM2VEC FIXTURES [-k SUBSTRING] [--list]

Every case runs the command with its input and asserts
  - a non-zero exit that is not a signal (no crash), within the time limit (no hang),
  - no "internal error", and a message holding every expected piece (the file, the line, the field),
  - no partial output: the paths the case names are absent afterwards, no staging or temporary file is left
    in the case's folder, and the inputs the case names are unchanged (same bytes, same kind of file).
A few cases are input that must be accepted with a word (a damaged newest checkpoint under --resume): those
assert exit 0 and the message. The cases themselves are in cases.py; docs/reliability.md counts them.
"""
import hashlib
import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cases as catalog  # noqa: E402

TIMEOUT_S = 60


def fingerprint(path):
    """What must not change about an input: its kind and, for a regular file, its bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return ("absent",)
    if stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            return ("file", hashlib.sha256(f.read()).hexdigest())
    if stat.S_ISDIR(st.st_mode):
        return ("dir", tuple(sorted(os.listdir(path))))
    return ("special", stat.S_IFMT(st.st_mode))


def leftovers(folder):
    """Staging folders and temporary files a writer would leave behind when interrupted or failing."""
    found = []
    for root, dirs, files in os.walk(folder):
        for n in dirs + files:
            if ".tmp." in n or n.endswith(".tmp"):
                found.append(os.path.join(root, n))
    return found


def run_case(case, ctx):
    d = tempfile.mkdtemp(prefix="case-", dir=ctx.work)
    env = catalog.Env(ctx, d)
    try:
        if case.setup:
            case.setup(env)
    except catalog.Skip as s:
        shutil.rmtree(d, ignore_errors=True)
        return "skip", str(s)
    if case.ulimit_v_kb and os.environ.get("XV_SANITIZED"):
        shutil.rmtree(d, ignore_errors=True)
        return "skip", "AddressSanitizer reserves terabytes of address space: no ulimit -v case under it"
    argv = [ctx.bin] + [env.expand(a) for a in case.argv]
    watched = {env.expand(p): None for p in case.unchanged}
    for p in watched:
        watched[p] = fingerprint(p)
    before = set(leftovers(d))
    t0 = time.monotonic()
    try:
        limit = None
        if case.ulimit_v_kb or case.ulimit_f_kb:
            def limit():
                if case.ulimit_v_kb:
                    resource.setrlimit(resource.RLIMIT_AS, (case.ulimit_v_kb * 1024, case.ulimit_v_kb * 1024))
                if case.ulimit_f_kb:
                    resource.setrlimit(resource.RLIMIT_FSIZE, (case.ulimit_f_kb * 1024, case.ulimit_f_kb * 1024))
        p = subprocess.run(argv, cwd=d, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S,
                           preexec_fn=limit)
        rc, out = p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        rc, out = None, ((e.stdout or b"") + (e.stderr or b"")).decode("utf-8", "replace")
    secs = time.monotonic() - t0
    problems = []
    if rc is None:
        problems.append(f"no exit within {TIMEOUT_S} s (a hang)")
    elif rc < 0:
        problems.append(f"killed by signal {-rc} (a crash)")
    elif case.accept and rc != 0:
        problems.append(f"exit {rc}, expected 0 (this input is to be accepted)")
    elif not case.accept and rc == 0:
        problems.append("exit 0: the bad input was accepted")
    elif rc >= 128:
        problems.append(f"exit {rc} (a signal's code)")
    if "internal error" in out:
        problems.append("an internal error instead of a message about the input")
    for piece in case.expect:
        piece = env.expand(piece)
        if piece not in out:
            problems.append(f"the message lacks {piece!r}")
    for path in case.absent:
        path = env.expand(path)
        if os.path.lexists(path):
            problems.append(f"{path} was left behind")
    left = [x for x in leftovers(d) if x not in before]
    if left:
        problems.append("temporary files left: " + ", ".join(left))
    for path, fp in watched.items():
        if fingerprint(path) != fp:
            problems.append(f"the input {path} was changed")
    if case.after:
        msg = case.after(env)
        if msg:
            problems.append(msg)
    try:
        env.cleanup()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if problems:
        first = out.strip().splitlines()[-8:]
        return "fail", "; ".join(problems) + "\n      command: " + " ".join(argv) + "\n      output: " + \
            "\n              ".join(first)
    return "ok", f"{secs:.1f} s: " + (out.strip().splitlines() or [""])[-1][:160]


class Ctx:
    pass


def main():
    args = sys.argv[1:]
    listing = "--list" in args
    args = [a for a in args if a != "--list"]
    pick = None
    if "-k" in args:
        i = args.index("-k")
        pick = args[i + 1]
        del args[i:i + 2]
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    ctx = Ctx()
    ctx.bin = os.path.abspath(args[0])
    ctx.fixtures = os.path.abspath(args[1])
    ctx.work = tempfile.mkdtemp(prefix="xv-bad-input-")
    cases = catalog.cases()
    names = [f"{c.group}/{c.name}" for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        print("duplicate case names: " + ", ".join(sorted(dup)), file=sys.stderr)
        return 2
    if listing:
        for c in cases:
            print(f"{c.group:10} {c.name}")
        print(f"{len(cases)} cases")
        return 0
    if pick:
        cases = [c for c in cases if pick in f"{c.group}/{c.name}"]
    try:
        catalog.prepare(ctx)
        results = {"ok": 0, "fail": 0, "skip": 0}
        groups = {}
        for c in cases:
            status, detail = run_case(c, ctx)
            results[status] += 1
            g = groups.setdefault(c.group, [0, 0, 0])
            g[["ok", "fail", "skip"].index(status)] += 1
            print(f"{status.upper():4} {c.group}/{c.name}: {detail}", flush=True)
        print("\nper group (ok / fail / skip):")
        for g, (ok, bad, sk) in groups.items():
            print(f"  {g:12} {ok:3} / {bad} / {sk}")
        print(f"bad input: {len(cases)} cases, {results['ok']} ok, {results['fail']} failed, "
              f"{results['skip']} skipped")
        return 1 if results["fail"] else 0
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
