#!/usr/bin/env python3
"""The house rules of docs/design.md, checked on the source tree:

1. Arrows point down only: a file of a room includes headers of its own room or of rooms below it
   (core -> kernels, tokenizer, image -> models, data, parallel -> models/kd -> train, eval -> launch).
2. No file points at a file the repository does not have: every path of a source, script or document named
   in the code and the docs (core/tensor.h, docs/config.md, scripts/run.sh, ...) exists.
3. No model, KD or trainer file touches a tensor's elements: they call ops (kernels/ops.h), so the same code
   runs on every backend. The raw accessors (data<T>(), raw(), to_vector(), set()) appear in models/,
   models/kd/ and train/ only in the files that read or write a file format, listed in FORMAT_FILES.

Usage: house_test.py SOURCE_DIR. Prints every violation and exits 1 when there is any.
"""
import os
import re
import sys

LEVEL = {
    "core": 0,
    "kernels": 1, "tokenizer": 1, "image": 1,
    "models": 2, "data": 2, "parallel": 2,
    "models/kd": 3,
    "train": 4, "eval": 4,
    "launch": 5,
}
ROOMS = sorted(LEVEL, key=len, reverse=True)  # models/kd before models
NO_ELEMENTS = ("models/", "train/")  # rooms (models/kd included) that only call ops
FORMAT_FILES = {
    "models/init.cpp": "writes a new checkpoint's random weights (safetensors)",
    "train/teacher_cache.cpp": "reads and checks the teacher cache (.npy)",
}
ELEMENT_ACCESS = re.compile(r"(?:\bdata<\w+>\(|\braw\(\)|\bto_vector\(\)|\bto_i32_vector\(\)|(?:\.|->)set\()")
SOURCE_EXT = (".h", ".cpp", ".cu", ".cuh")
TEXT_EXT = SOURCE_EXT + (".md", ".sh", ".py", ".txt", ".yaml", ".sbatch")
# Paths the tree may name although they are not in it: outputs, the build folder, user files in examples.
NOT_IN_TREE = re.compile(r"^(build|build-asan|runs|out|tmp)/|/(step-N|rank-NNNNN)|^models/all-MiniLM-L6-v2/")


def room_of(path):
    for r in ROOMS:
        if path == r or path.startswith(r + "/"):
            # kernels/cpu, kernels/cuda belong to kernels
            return r
    return None


def tracked_files(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not d.startswith("build")]
        for f in filenames:
            out.append(os.path.relpath(os.path.join(dirpath, f), root))
    return sorted(out)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    files = tracked_files(root)
    problems = []
    include = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
    for f in files:
        if not f.endswith(SOURCE_EXT):
            continue
        src = room_of(f)
        if src is None:
            continue
        text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
        for inc in include.findall(text):
            dst = room_of(inc)
            if dst is None or dst == src:
                continue
            if LEVEL[dst] >= LEVEL[src]:
                problems.append(f"{f}: includes {inc}: {src} (level {LEVEL[src]}) may not include {dst} "
                                f"(level {LEVEL[dst]})")
    for f in files:
        if not f.endswith(SOURCE_EXT) or not f.startswith(NO_ELEMENTS) or f in FORMAT_FILES:
            continue
        text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
        for m in ELEMENT_ACCESS.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{f}:{line}: touches tensor elements ({m.group(0)}...): call an op (kernels/ops.h)")
    # Paths named in the tree's text: room/.../name.ext and docs/..., scripts/..., configs/..., tools/...
    tops = "|".join(sorted({r.split("/")[0] for r in LEVEL} | {"docs", "scripts", "configs", "tools", "tests",
                                                                 "benchmarks"}))
    named = re.compile(r"(?<![\w./-])((?:" + tops + r")/[\w./-]*\w\.(?:h|cpp|cu|cuh|md|sh|py|yaml|sbatch|json))(?![\w])")
    have = set(files)
    for f in files:
        if not f.endswith(TEXT_EXT) or f.startswith("tests/fixtures/"):
            continue
        text = open(os.path.join(root, f), encoding="utf-8", errors="replace").read()
        for m in named.finditer(text):
            p = m.group(1)
            if NOT_IN_TREE.search(p) or p in have:
                continue
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{f}:{line}: names {p}, which the repository does not have")
        for m in re.finditer(r"(?<![\w/.-])DESIGN" + r"\.md", text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{f}:{line}: names the design card outside the repository; the design is docs/design.md")
    for p in problems:
        print(p)
    print(f"house: {len(files)} files, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
