"""The cases of the bad-input catalog (run.py runs and checks them).

A case: a group (the format or command it attacks), a name, the argv after the program (placeholders: {d} the
case's own folder, {w} the shared work folder, {fx} the test fixtures), the pieces the message must hold, the
paths that must not exist afterwards, the inputs that must be unchanged, and a setup that writes the damaged
input into {d}. Expected pieces name the file, line and field a user would need; they are written from what a
correct message must say, not copied from the program's output.
"""
import json
import os
import shutil
import struct
import subprocess
import zlib


class Skip(Exception):
    pass


class Case:
    def __init__(self, group, name, argv, expect=(), absent=(), unchanged=(), setup=None, accept=False,
                 after=None, ulimit_v_kb=None, ulimit_f_kb=None):
        self.group, self.name, self.argv = group, name, list(argv)
        self.expect, self.absent, self.unchanged = list(expect), list(absent), list(unchanged)
        self.setup, self.accept, self.after = setup, accept, after
        self.ulimit_v_kb = ulimit_v_kb  # the address-space limit the command runs under (ulimit -v), if any
        self.ulimit_f_kb = ulimit_f_kb  # the file-size limit (ulimit -f), if any


class Env:
    """A case's folder and helpers to damage copies of the shared inputs in it."""

    def __init__(self, ctx, d):
        self.ctx, self.d, self.mounts = ctx, d, []

    def expand(self, s):
        return s.replace("{d}", self.d).replace("{w}", self.ctx.work).replace("{fx}", self.ctx.fixtures)

    def p(self, name):
        return os.path.join(self.d, name)

    def write(self, name, data):
        path = self.p(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        return path

    def read(self, name):
        with open(self.p(name), "rb") as f:
            return f.read()

    def copy(self, src, name):
        src = self.expand(src)
        dst = self.p(name)
        if os.path.isdir(src):
            shutil.copytree(src, dst)
        else:
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(src, dst)
        return dst

    def fifo(self, name):
        os.mkfifo(self.p(name))

    def link(self, target, name):
        os.symlink(target, self.p(name))

    def mkdir(self, name):
        os.makedirs(self.p(name), exist_ok=True)

    def tmpfs(self, name, size, read_only=False):
        """A tiny file system (for "disk full", or read-only: unwritable even for root); skipped where mounting
        is not allowed."""
        path = self.p(name)
        os.makedirs(path)
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True)
        if r.returncode != 0:
            raise Skip("cannot mount a tmpfs here (not root?): " + r.stderr.decode().strip())
        self.mounts.append(path)
        return path

    def cleanup(self):
        for m in self.mounts:
            subprocess.run(["umount", m], capture_output=True)


# ---------------------------------------------------------------------------------------------------------
# Shared inputs, made once per run of the catalog.

TINY_YAML = """model: {model}
data:
  train: {pairs}
output_dir: unused
seed: 42
trainable: lora
lora: {{r: 4, alpha: 16, dropout: 0.1, targets: [query, key, value, dense]}}
train: {{epochs: 5, batch_size: 2, grad_accum: 2, lr: 1.0e-3, schedule: cosine, warmup_steps: 2}}
checkpoint: {{every_steps: 5, keep: 2}}
export: {{adapter: true, merged: false}}
"""


def prepare(ctx):
    w, fx = ctx.work, ctx.fixtures
    shutil.copytree(os.path.join(fx, "models/tiny_bert"), os.path.join(w, "model"))
    shutil.copy(os.path.join(fx, "train/pairs_tiny.jsonl"), os.path.join(w, "pairs.jsonl"))
    with open(os.path.join(w, "tiny.yaml"), "w") as f:
        f.write(TINY_YAML.format(model=os.path.join(w, "model"), pairs=os.path.join(w, "pairs.jsonl")))
    # A corpus (tsv builder) and an interrupted run with checkpoints step-5 and step-10 of 20 steps.
    pairs = [json.loads(l) for l in open(os.path.join(w, "pairs.jsonl"))]
    with open(os.path.join(w, "pairs.it.tsv"), "w") as f:
        for p in pairs:
            f.write(f"{p['text_en']}\t{p['text_xx']}\n")
    def xv(*args):
        r = subprocess.run([ctx.bin, *args], capture_output=True, cwd=w)
        if r.returncode != 0:
            raise RuntimeError(f"preparing the catalog: {' '.join(args)} failed:\n{r.stderr.decode()}")
    xv("corpus", "build", "--from", "tsv", "--input", "pairs.it.tsv", "--lang", "it", "--out", "corpus.h5",
       "--quiet")
    xv("train", "tiny.yaml", "--quiet", "--stop-after", "12", "--set", "output_dir=" + os.path.join(w, "run"))
    shutil.copytree(os.path.join(fx, "eval/tiny_benchmark"), os.path.join(w, "bench"))


# ---------------------------------------------------------------------------------------------------------
# Format helpers.

def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width, height, idat=None, color_type=2):
    raw = idat if idat is not None else zlib.compress(b"\0" * (1 + 3 * max(1, min(width, 4))))
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)) +
            png_chunk(b"IDAT", raw) + png_chunk(b"IEND", b""))


def safetensors_parts(env, name="model/model.safetensors"):
    b = env.read(name)
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def safetensors_bytes(header, data):
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def edit_header(fn):
    def setup(env):
        env.copy("{w}/model", "model")
        h, data = safetensors_parts(env)
        fn(h)
        env.write("model/model.safetensors", safetensors_bytes(h, data))
    return setup


def drop_first_tensor(env):
    """The model without its first tensor (header entry and bytes: a well-formed file that lacks one)."""
    env.copy("{w}/model", "model")
    h, data = safetensors_parts(env)
    name = first_tensor(h)
    s, e = h.pop(name)["data_offsets"]
    for k, v in h.items():
        if k != "__metadata__" and v["data_offsets"][0] >= e:
            v["data_offsets"] = [v["data_offsets"][0] - (e - s), v["data_offsets"][1] - (e - s)]
    env.write("model/model.safetensors", safetensors_bytes(h, data[:s] + data[e:]))


def first_tensor(h):
    return next(k for k in h if k != "__metadata__")


def edit_json(name, fn):
    """Rewrites the JSON file `name` (already in the case's folder) through `fn`."""
    def setup(env):
        j = json.loads(env.read(name))
        fn(j)
        env.write(name, json.dumps(j))
    return setup


def chain(*fns):
    def setup(env):
        for f in fns:
            f(env)
    return setup


EMBED = ["embed", "--quiet", "--text", "hello", "--out", "{d}/e.npy"]
TRAIN = ["train", "{w}/tiny.yaml", "--quiet", "--set", "output_dir={d}/out"]
RESUME = ["train", "{w}/tiny.yaml", "--quiet", "--resume", "--set", "output_dir={d}/run"]


def model_case(name, setup, expect):
    """A damaged model folder given to embed (the inference path) and to train (the training path)."""
    return [
        Case("model", name + " (embed)", ["embed", "--quiet", "--model", "{d}/model", "--text", "hello", "--out",
                                            "{d}/e.npy"], expect, absent=["{d}/e.npy"], setup=setup),
        Case("model", name + " (train)", TRAIN + ["--set", "model={d}/model"], expect, absent=["{d}/out"],
             setup=setup),
    ]


def config_case(name, yaml_text, expect, extra=()):
    return Case("config", name, ["train", "{d}/c.yaml", "--quiet", *extra], expect, absent=["{d}/out"],
                setup=lambda env: env.write("c.yaml", env.expand(yaml_text)))


BASE_YAML = "model: {w}/model\ndata:\n  train: {w}/pairs.jsonl\noutput_dir: {d}/out\n"


def set_case(name, setting, expect):
    return Case("config", name, TRAIN + ["--set", setting], expect, absent=["{d}/out"])


def pairs_case(name, text, expect):
    return Case("pairs", name, TRAIN + ["--set", "data.train={d}/p.jsonl"], expect, absent=["{d}/out"],
                setup=lambda env: env.write("p.jsonl", text))


def bench_case(name, fn, expect):
    def setup(env):
        env.copy("{w}/bench", "bench")
        fn(env)
    return Case("benchmark", name, ["eval", "run", "--quiet", "--model", "{w}/model", "--benchmark", "{d}/bench",
                                    "--out", "{d}/report"], expect, absent=["{d}/report"], setup=setup)


def bench_line(task_file, fn):
    """Rewrites the first query line of a task file."""
    def edit(env):
        lines = env.read("bench/" + task_file).decode().splitlines()
        j = json.loads(lines[0])
        fn(j)
        lines[0] = json.dumps(j)
        env.write("bench/" + task_file, "\n".join(lines) + "\n")
    return edit


def manifest(fn):
    def edit(env):
        j = json.loads(env.read("bench/benchmark.json"))
        fn(j)
        env.write("bench/benchmark.json", json.dumps(j))
    return edit


def image_case(name, setup, expect):
    return Case("image", name, ["embed", "--quiet", "--model", "{fx}/models/tiny_phi3v", "--image", "{d}/img",
                                "--out", "{d}/e.npy"], expect, absent=["{d}/e.npy"], setup=setup)


def ckpt(fn):
    def setup(env):
        env.copy("{w}/run", "run")
        fn(env)
    return setup


def edit_state(step_dir, fn):
    def f(env):
        path = f"run/checkpoints/{step_dir}/state.json"
        j = json.loads(env.read(path))
        fn(j)
        env.write(path, json.dumps(j))
    return f


def remove(name):
    def f(env):
        p = env.p(name)
        shutil.rmtree(p) if os.path.isdir(p) else os.remove(p)
    return f


def flip_corpus_text(env, name):
    """Changes one byte of the first English text inside the corpus `name` with h5py (the texts are compressed:
    no plain bytes to edit), leaving the root 'fingerprint' attribute as it was."""
    py = os.environ.get("XV_H5PY_PYTHON", "")
    if not py or not os.path.exists(py):
        raise Skip("no h5py (XV_H5PY_PYTHON: the prepare_h5py test makes it)")
    code = ("import h5py, sys\n"
            "with h5py.File(sys.argv[1], 'r+') as f:\n"
            "    d = f['/text/en/bytes']\n"
            "    d[0] = d[0] ^ 0x20\n")
    subprocess.run([py, "-c", code, env.p(name)], check=True, capture_output=True)


def final_adapter(env):
    path = env.p("run/adapter/adapter_model.safetensors")
    return None if os.path.exists(path) else "the resumed run did not finish (no adapter)"


# ---------------------------------------------------------------------------------------------------------

def cases():
    c = []
    # ---- The command line ----
    c += [
        Case("cli", "unknown subcommand", ["frobnicate"], ["frobnicate"]),
        Case("cli", "embed without --out", ["embed", "--model", "{w}/model", "--text", "x"], ["--out"]),
        Case("cli", "embed batch size 0", EMBED + ["--model", "{w}/model", "--batch-size", "0"],
             ["--batch-size", "must be a number >= 1", "'0'"],
             absent=["{d}/e.npy"]),
        Case("cli", "embed batch size text", EMBED + ["--model", "{w}/model", "--batch-size", "many"],
             ["--batch-size", "many"], absent=["{d}/e.npy"]),
        Case("cli", "embed missing model", EMBED + ["--model", "{d}/nope"], ["{d}/nope", "does not exist"],
             absent=["{d}/e.npy"]),
        Case("cli", "embed model is a file", EMBED + ["--model", "{w}/pairs.jsonl"],
             ["{w}/pairs.jsonl", "is a regular file, a folder was expected"], absent=["{d}/e.npy"]),
        Case("cli", "embed nothing to embed", ["embed", "--quiet", "--model", "{w}/model", "--out", "{d}/e.npy"],
             ["--text"], absent=["{d}/e.npy"]),
        Case("cli", "embed --input and --text", EMBED + ["--model", "{w}/model", "--input", "{w}/pairs.jsonl"],
             ["--input"], absent=["{d}/e.npy"]),
        Case("cli", "init-model unknown arch", ["init-model", "--arch", "gpt9", "--preset", "tiny", "--out",
                                                  "{d}/m"], ["--arch", "gpt9"], absent=["{d}/m"]),
        Case("cli", "init-model 0 layers", ["init-model", "--arch", "bert", "--preset", "tiny", "--layers", "0",
                                              "--out", "{d}/m"], ["--layers"], absent=["{d}/m"]),
        Case("cli", "init-model preset of the other arch", ["init-model", "--arch", "bert", "--preset", "phi35v",
                                                              "--out", "{d}/m"], ["phi35v"], absent=["{d}/m"]),
        Case("cli", "export without an output", ["export", "--checkpoint", "{w}/run"], ["--adapter"]),
        Case("cli", "export of a missing checkpoint", ["export", "--checkpoint", "{d}/nope", "--adapter", "{d}/a"],
             ["{d}/nope", "does not exist"], absent=["{d}/a"]),
        Case("cli", "export of a folder that is no run", ["export", "--checkpoint", "{w}/model", "--adapter",
                                                            "{d}/a"], ["{w}/model", "state.json"], absent=["{d}/a"]),
        Case("cli", "eval without benchmark", ["eval", "run", "--model", "{w}/model", "--out", "{d}/r"],
             ["--benchmark"], absent=["{d}/r"]),
        Case("cli", "make-text-benchmark 1 candidate", ["eval", "make-text-benchmark", "--corpus", "{w}/corpus.h5",
                                                          "--out", "{d}/b", "--candidates", "1"], ["--candidates"],
             absent=["{d}/b"]),
        Case("cli", "make-text-benchmark unknown language", ["eval", "make-text-benchmark", "--quiet", "--corpus",
                                                               "{w}/corpus.h5", "--out", "{d}/b", "--langs", "xx"],
             ["xx"], absent=["{d}/b"]),
        Case("cli", "corpus build unknown source", ["corpus", "build", "--from", "pdf", "--out", "{d}/c.h5"],
             ["--from", "pdf"], absent=["{d}/c.h5"]),
        Case("cli", "corpus build tsv without --lang", ["corpus", "build", "--from", "tsv", "--input",
                                                          "{w}/pairs.it.tsv", "--out", "{d}/c.h5"], ["--lang"],
             absent=["{d}/c.h5"]),
        Case("cli", "corpus build ddtp without the English index",
             ["corpus", "build", "--from", "ddtp", "--input", "{d}/Translation-it", "--out", "{d}/c.h5"],
             ["no English descriptions", "Translation-en", "{d}/Translation-it"], absent=["{d}/c.h5"],
             setup=lambda env: env.write("Translation-it", "Package: p\nDescription-md5: ab\n"
                                                           "Description-it: uno strumento utile\n")),
        Case("cli", "corpus build ddtp from a file that is no index",
             ["corpus", "build", "--from", "ddtp", "--input", "{d}/notes.txt", "--out", "{d}/c.h5"],
             ["{d}/notes.txt", "no description", "Description-md5"], absent=["{d}/c.h5"],
             setup=lambda env: env.write("notes.txt", "hello\nworld\n")),
        Case("cli", "corpus build ddtp with --lang",
             ["corpus", "build", "--from", "ddtp", "--input", "{d}/notes.txt", "--lang", "it", "--out", "{d}/c.h5"],
             ["--lang", "not used with --from ddtp"], absent=["{d}/c.h5"],
             setup=lambda env: env.write("notes.txt", "hello\n")),
        Case("cli", "corpus split fraction 2", ["corpus", "split", "{w}/corpus.h5", "--train", "{d}/t.h5",
                                                  "--heldout", "{d}/h.h5", "--heldout-fraction", "2"],
             ["--heldout-fraction"], absent=["{d}/t.h5", "{d}/h.h5"]),
        Case("cli", "threads negative", ["--threads", "-1", "embed", "--model", "{w}/model", "--text", "x",
                                         "--out", "{d}/e.npy"], ["--threads"], absent=["{d}/e.npy"]),
    ]
    # ---- Config files and --set ----
    c += [
        config_case("not YAML", "model: [unclosed\n", ["{d}/c.yaml:", "not valid YAML"]),
        config_case("a list, not a mapping", "- model\n- data\n", ["{d}/c.yaml", "must be a mapping"]),
        config_case("unknown key with suggestion", BASE_YAML + "train:\n  lerning_rate: 1\n",
                    ["{d}/c.yaml:6", "lerning_rate", "train.lr"]),
        config_case("HF name", BASE_YAML + "num_train_epochs: 3\n", ["{d}/c.yaml:5", "num_train_epochs",
                                                                     "train.epochs"]),
        config_case("key twice", BASE_YAML + "seed: 1\nseed: 2\n", ["{d}/c.yaml", "seed"]),
        config_case("section not a mapping", BASE_YAML + "lora: 8\n", ["{d}/c.yaml:5", "'lora' is a section"]),
        config_case("missing model", "data:\n  train: {w}/pairs.jsonl\noutput_dir: {d}/out\n",
                    ["{d}/c.yaml", "'model'"]),
        config_case("missing data.train", "model: {w}/model\noutput_dir: {d}/out\n", ["{d}/c.yaml", "data.train"]),
        config_case("missing output_dir", "model: {w}/model\ndata:\n  train: {w}/pairs.jsonl\n",
                    ["{d}/c.yaml", "output_dir"]),
        config_case("integer as text", BASE_YAML + "train:\n  batch_size: two\n",
                    ["{d}/c.yaml:6", "train.batch_size", "an integer", "two"]),
        config_case("number not finite", BASE_YAML + "train:\n  lr: .nan\n", ["{d}/c.yaml:6", "train.lr",
                                                                              "finite"]),
        config_case("boolean as text", BASE_YAML + "train:\n  checkpointing: sometimes\n",
                    ["{d}/c.yaml:6", "train.checkpointing", "boolean"]),
        config_case("list as scalar", BASE_YAML + "lora:\n  targets: query\n", ["{d}/c.yaml:6", "lora.targets",
                                                                                 "a list"]),
        config_case("betas of three", BASE_YAML + "train:\n  betas: [0.9, 0.99, 0.999]\n",
                    ["{d}/c.yaml:6", "train.betas", "two numbers"]),
        config_case("model mapping with unknown key", "model: {path: {w}/model, dtype: bf16}\ndata:\n  train: "
                    "{w}/pairs.jsonl\noutput_dir: {d}/out\n", ["{d}/c.yaml:1", "model.dtype"]),
        config_case("empty file", "", ["{d}/c.yaml", "'model'"]),
        set_case("batch size 0", "train.batch_size=0", ["--set train.batch_size=0", "train.batch_size", ">= 1",
                                                         "found 0"]),
        set_case("lr negative", "train.lr=-1e-3", ["train.lr", "> 0"]),
        set_case("dropout 1", "lora.dropout=1", ["lora.dropout", "[0, 1)"]),
        set_case("rank 0", "lora.r=0", ["lora.r", ">= 1"]),
        set_case("epochs 0", "train.epochs=0", ["train.epochs", ">= 1"]),
        set_case("unknown schedule", "train.schedule=step", ["train.schedule", "cosine, linear or constant"]),
        set_case("unknown strategy", "parallel.strategy=zero3", ["parallel.strategy", "hybrid"]),
        set_case("unknown weight dtype", "model.weight_dtype=fp8", ["model.weight_dtype", "f32 or bf16"]),
        set_case("targets empty list", "lora.targets=[]", ["lora.targets", "non-empty list"]),
        set_case("targets empty name", "lora.targets=[query, '']", ["lora.targets", "non-empty module names"]),
        set_case("targets not in the model", "lora.targets=[nonexistent_proj]", ["nonexistent_proj"]),
        set_case("keep 0", "checkpoint.keep=0", ["checkpoint.keep", ">= 1"]),
        set_case("negative workers", "data.workers=-2", ["data.workers", ">= 0"]),
        Case("config", "full training in bf16", TRAIN + ["--set", "trainable=full", "--set",
                                                        "model.weight_dtype=bf16"], ["model.weight_dtype", "full"],
             absent=["{d}/out"]),
        Case("config", "--set without =", TRAIN + ["--set", "train.lr"], ["--set train.lr", "key=value"],
             absent=["{d}/out"]),
        Case("config", "--set a section", TRAIN + ["--set", "train=3"], ["'train' is a section"],
             absent=["{d}/out"]),
        Case("config", "--set unknown key", TRAIN + ["--set", "train.lrr=1"], ["train.lrr", "train.lr"],
             absent=["{d}/out"]),
        Case("config", "--set value not YAML", TRAIN + ["--set", "lora.targets=[a"], ["--set lora.targets=[a"],
             absent=["{d}/out"]),
        Case("config", "config is a folder", ["train", "{d}", "--quiet"], ["{d}", "is a folder"]),
        Case("config", "config missing", ["train", "{d}/none.yaml", "--quiet"], ["{d}/none.yaml",
                                                                                  "does not exist"]),
        Case("config", "config is the zero device", ["train", "/dev/zero", "--quiet"],
             ["/dev/zero", "character device"]),
        Case("config", "config is a FIFO", ["train", "{d}/fifo.yaml", "--quiet"], ["{d}/fifo.yaml", "FIFO"],
             setup=lambda env: env.fifo("fifo.yaml")),
        Case("config", "config links to the zero device", ["train", "{d}/z.yaml", "--quiet"],
             ["{d}/z.yaml", "character device"], setup=lambda env: env.link("/dev/zero", "z.yaml")),
        Case("config", "config of 2 GiB", ["train", "{d}/huge.yaml", "--quiet"], ["{d}/huge.yaml", "bytes"],
             setup=lambda env: os.truncate(env.write("huge.yaml", ""), 2 << 30)),
        Case("config", "output_dir through a file", TRAIN[:-1] + ["output_dir={w}/pairs.jsonl/out"],
             ["output_dir", "{w}/pairs.jsonl"], unchanged=["{w}/pairs.jsonl"]),
        Case("config", "output_dir is a file", TRAIN[:-1] + ["output_dir={d}/f"], ["output_dir", "{d}/f"],
             unchanged=["{d}/f"], setup=lambda env: env.write("f", "keep me")),
    ]
    # ---- Model folders ----
    c += model_case("config.json not JSON", lambda env: (env.copy("{w}/model", "model"),
                                                          env.write("model/config.json", "{ nope")),
                    ["{d}/model/config.json"])
    c += model_case("config.json missing", chain(lambda env: env.copy("{w}/model", "model"),
                                                 remove("model/config.json")),
                    ["{d}/model/config.json", "does not exist"])
    c += model_case("unknown model_type", chain(lambda env: env.copy("{w}/model", "model"),
                          edit_json("model/config.json", lambda j: j.update(model_type="mamba"))),
                    ["{d}/model/config.json", "mamba"])
    c += model_case("hidden size a string", chain(lambda env: env.copy("{w}/model", "model"),
                                                  edit_json("model/config.json",
                                                            lambda j: j.update(hidden_size="64"))),
                    ["{d}/model/config.json", "hidden_size"])
    c += model_case("weights truncated", chain(lambda env: env.copy("{w}/model", "model"),
                                               lambda env: env.write("model/model.safetensors",
                                                                     env.read("model/model.safetensors")[:5000])),
                    ["{d}/model/model.safetensors"])
    c += model_case("weights header length huge", chain(
        lambda env: env.copy("{w}/model", "model"),
        lambda env: env.write("model/model.safetensors",
                              struct.pack("<Q", 1 << 62) + env.read("model/model.safetensors")[8:])),
        ["{d}/model/model.safetensors", "header"])
    c += model_case("weights header not JSON", chain(
        lambda env: env.copy("{w}/model", "model"),
        lambda env: env.write("model/model.safetensors", struct.pack("<Q", 8) + b"not json" + b"\0" * 64)),
        ["{d}/model/model.safetensors"])
    c += model_case("tensor offsets past the end", edit_header(
        lambda h: h[first_tensor(h)].update(data_offsets=[0, 1 << 40])), ["{d}/model/model.safetensors"])
    c += model_case("tensor offsets reversed", edit_header(
        lambda h: h[first_tensor(h)].update(data_offsets=[256, 0])), ["{d}/model/model.safetensors"])
    c += model_case("tensor shape disagrees with its bytes", edit_header(
        lambda h: h[first_tensor(h)].update(shape=[65])), ["{d}/model/model.safetensors", first_tensor_name()])
    c += model_case("unknown dtype", edit_header(lambda h: h[first_tensor(h)].update(dtype="F7")),
                    ["{d}/model/model.safetensors", "F7"])
    c += model_case("a tensor missing", drop_first_tensor,
                    ["{d}/model/model.safetensors", "missing"])
    c += model_case("tokenizer.json not JSON", chain(lambda env: env.copy("{w}/model", "model"),
                                                    lambda env: env.write("model/tokenizer.json", "[1, 2")),
                    ["{d}/model/tokenizer.json"])
    c += model_case("tokenizer.json missing", chain(lambda env: env.copy("{w}/model", "model"),
                                                   remove("model/tokenizer.json")),
                    ["{d}/model/tokenizer.json", "does not exist"])
    c += model_case("weights are a FIFO", chain(lambda env: env.copy("{w}/model", "model"),
                                               remove("model/model.safetensors"),
                                               lambda env: env.fifo("model/model.safetensors")),
                    ["{d}/model/model.safetensors", "FIFO"])
    c += model_case("config.json links to the zero device", chain(lambda env: env.copy("{w}/model", "model"),
                                                                  remove("model/config.json"),
                                                                  lambda env: env.link("/dev/zero",
                                                                                       "model/config.json")),
                    ["{d}/model/config.json", "character device"])
    # ---- Training pairs (JSONL) ----
    c += [
        pairs_case("not JSON", '{"text_en": "a", "text_xx": "b", "lang": "it"}\nnot json\n', ["{d}/p.jsonl:2"]),
        pairs_case("field missing", '{"text_en": "a", "lang": "it"}\n', ["{d}/p.jsonl:1", "text_xx"]),
        pairs_case("field a number", '{"text_en": "a", "text_xx": 7, "lang": "it"}\n', ["{d}/p.jsonl:1",
                                                                                       "text_xx"]),
        pairs_case("a list per line", '["a", "b"]\n', ["{d}/p.jsonl:1"]),
        pairs_case("empty file", "", ["{d}/p.jsonl"]),
        pairs_case("invalid UTF-8", b'{"text_en": "a\xff\xfe", "text_xx": "b", "lang": "it"}\n',
                   ["{d}/p.jsonl:1"]),
        pairs_case("image missing", '{"text_en": "a", "text_xx": "b", "lang": "it", "image": "nope.png"}\n',
                   ["{d}/p.jsonl:1", "image", "nope.png", "does not exist"]),
        pairs_case("image a folder", '{"text_en": "a", "text_xx": "b", "lang": "it", "image": "."}\n',
                   ["{d}/p.jsonl:1", "image", "is a folder"]),
        Case("pairs", "too few pairs for a step", TRAIN + ["--set", "data.train={d}/p.jsonl", "--set",
                                                            "train.epochs=1"],
             ["{d}/p.jsonl", "less than one optimizer step"], absent=["{d}/out"],
             setup=lambda env: env.write("p.jsonl", '{"text_en": "a", "text_xx": "b", "lang": "it"}\n')),
        Case("pairs", "pairs file is a FIFO", TRAIN + ["--set", "data.train={d}/p.jsonl"],
             ["{d}/p.jsonl", "FIFO"], absent=["{d}/out"], setup=lambda env: env.fifo("p.jsonl")),
        Case("pairs", "pairs file is the zero device", TRAIN + ["--set", "data.train=/dev/zero"],
             ["/dev/zero", "character device"], absent=["{d}/out"]),
        Case("pairs", "teacher cache not npy", TRAIN + ["--set", "data.teacher_cache={w}/pairs.jsonl"],
             ["{w}/pairs.jsonl"], absent=["{d}/out"]),
        Case("pairs", "teacher cache missing", TRAIN + ["--set", "data.teacher_cache={d}/t.npy"],
             ["{d}/t.npy", "does not exist"], absent=["{d}/out"]),
        Case("pairs", "embed --input line without text", ["embed", "--quiet", "--model", "{w}/model", "--input",
                                                          "{d}/in.jsonl", "--out", "{d}/e.npy"],
             ["{d}/in.jsonl:2", "text"], absent=["{d}/e.npy"],
             setup=lambda env: env.write("in.jsonl", '{"text": "a"}\n{"txt": "b"}\n')),
    ]
    # ---- Corpus files (HDF5) ----
    c += [
        Case("corpus", "not HDF5", ["corpus", "validate", "{w}/pairs.jsonl"], ["{w}/pairs.jsonl"]),
        Case("corpus", "truncated", ["corpus", "validate", "{d}/c.h5"], ["{d}/c.h5"],
             setup=lambda env: env.write("c.h5", open(env.expand("{w}/corpus.h5"), "rb").read()[:3000])),
        Case("corpus", "a folder", ["corpus", "inspect", "{d}"], ["{d}"]),
        Case("corpus", "modified after writing: validate", ["corpus", "validate", "{d}/c.h5"],
             ["{d}/c.h5", "fingerprint"],
             setup=lambda env: (env.copy("{w}/corpus.h5", "c.h5"),
                                flip_corpus_text(env, "c.h5"))),
        Case("corpus", "modified after writing: train", TRAIN + ["--set", "data.train={d}/c.h5"],
             ["{d}/c.h5", "fingerprint", "corpus validate"], absent=["{d}/out"],
             setup=lambda env: (env.copy("{w}/corpus.h5", "c.h5"),
                                flip_corpus_text(env, "c.h5"))),
        Case("corpus", "split onto itself", ["corpus", "split", "{d}/c.h5", "--train", "{d}/c.h5", "--heldout",
                                             "{d}/h.h5"], ["--train", "input corpus"], absent=["{d}/h.h5"],
             unchanged=["{d}/c.h5"], setup=lambda env: env.copy("{w}/corpus.h5", "c.h5")),
        Case("corpus", "split both parts into one file", ["corpus", "split", "{w}/corpus.h5", "--train",
                                                          "{d}/t.h5", "--heldout", "{d}/t.h5"],
             ["--train", "--heldout", "same file"], absent=["{d}/t.h5"]),
        Case("corpus", "split onto a FIFO", ["corpus", "split", "{w}/corpus.h5", "--train", "{d}/fifo",
                                             "--heldout", "{d}/h.h5"], ["--train", "{d}/fifo", "FIFO"],
             absent=["{d}/h.h5"], unchanged=["{d}/fifo"], setup=lambda env: env.fifo("fifo")),
        Case("corpus", "build onto the null device", ["corpus", "build", "--from", "tsv", "--input",
                                                      "{w}/pairs.it.tsv", "--lang", "it", "--out", "/dev/null"],
             ["--out", "/dev/null", "character device"], unchanged=["/dev/null"]),
        Case("corpus", "build from a missing tsv", ["corpus", "build", "--from", "tsv", "--input", "{d}/no.tsv",
                                                    "--lang", "it", "--out", "{d}/c.h5"],
             ["{d}/no.tsv", "does not exist"], absent=["{d}/c.h5"]),
        Case("corpus", "build from a tsv without tabs", ["corpus", "build", "--quiet", "--from", "tsv", "--input",
                                                         "{d}/x.tsv", "--lang", "it", "--out", "{d}/c.h5"],
             ["{d}/x.tsv:1"], absent=["{d}/c.h5"], setup=lambda env: env.write("x.tsv", "no tab here\n")),
        Case("corpus", "build from a damaged .mo", ["corpus", "build", "--quiet", "--from", "gettext",
                                                    "--locale-dir", "{d}/locale", "--langs", "it", "--out",
                                                    "{d}/c.h5"], ["{d}/locale/it/LC_MESSAGES/x.mo"],
             absent=["{d}/c.h5"],
             setup=lambda env: env.write("locale/it/LC_MESSAGES/x.mo", b"\xde\x12\x04\x95" + b"\xff" * 40)),
        Case("corpus", "build onto a full disk", ["corpus", "build", "--quiet", "--from", "tsv", "--input",
                                                  "{d}/big.tsv", "--lang", "it", "--out", "{d}/full/c.h5"],
             ["{d}/full/c.h5"], absent=["{d}/full/c.h5"],
             setup=lambda env: (env.tmpfs("full", "48k"),
                                env.write("big.tsv", "".join(f"message number {i} of the catalog\t"
                                                             f"messaggio numero {i} del catalogo\n"
                                                             for i in range(4000))))),
        Case("corpus", "build over the file-size limit (ulimit -f)",
             ["corpus", "build", "--quiet", "--from", "tsv", "--input", "{d}/big.tsv", "--lang", "it", "--out",
              "{d}/c.h5"], ["{d}/c.h5"], absent=["{d}/c.h5"], ulimit_f_kb=64,
             setup=lambda env: env.write("big.tsv", "".join(f"message number {i} of the catalog\t"
                                                            f"messaggio numero {i} del catalogo\n"
                                                            for i in range(4000)))),
        Case("corpus", "cache-teacher --out a folder", ["corpus", "cache-teacher", "--model", "{w}/model",
                                                        "--pairs", "{w}/pairs.jsonl", "--out", "{d}"],
             ["--out", "{d}", "is a folder"]),
    ]
    # ---- Checkpoints and --resume ----
    c += [
        Case("checkpoint", "resume: newest is an empty folder", RESUME, ["step-15", "damaged", "step-10"],
             accept=True, after=final_adapter, setup=ckpt(lambda env: env.mkdir("run/checkpoints/step-15"))),
        Case("checkpoint", "resume: newest lacks state.json", RESUME, ["step-10", "state.json", "step-5"],
             accept=True, after=final_adapter, setup=ckpt(remove("run/checkpoints/step-10/state.json"))),
        Case("checkpoint", "resume: newest weights truncated", RESUME, ["step-10", "trainable.safetensors",
                                                                       "step-5"], accept=True, after=final_adapter,
             setup=ckpt(lambda env: env.write("run/checkpoints/step-10/trainable.safetensors", b"\x08\0\0"))),
        Case("checkpoint", "resume: every checkpoint damaged", RESUME, ["no intact checkpoint", "step-10",
                                                                       "step-5"],
             unchanged=["{d}/run/checkpoints/step-5", "{d}/run/metrics.jsonl"],
             setup=ckpt(chain(remove("run/checkpoints/step-10/state.json"),
                              remove("run/checkpoints/step-5/state.json")))),
        Case("checkpoint", "resume: state names a step past the run", RESUME, ["no intact checkpoint", "step",
                                                                              "999"],
             setup=ckpt(chain(edit_state("step-10", lambda j: j.update(step=999)),
                              edit_state("step-5", lambda j: j.update(step=999))))),
        Case("checkpoint", "resume: unknown state version", RESUME, ["no intact checkpoint", "version", "7"],
             setup=ckpt(chain(edit_state("step-10", lambda j: j.update(version=7)),
                              edit_state("step-5", lambda j: j.update(version=7))))),
        Case("checkpoint", "resume: state.json not JSON", RESUME, ["no intact checkpoint", "state.json"],
             setup=ckpt(chain(lambda env: env.write("run/checkpoints/step-10/state.json", "{"),
                              lambda env: env.write("run/checkpoints/step-5/state.json", "[]")))),
        Case("checkpoint", "resume with another learning rate", RESUME + ["--set", "train.lr=0.5"],
             ["train.lr", "step-10"], setup=ckpt(lambda env: None)),
        Case("checkpoint", "resume with other data", RESUME + ["--set", "data.train={d}/p.jsonl"],
             ["--resume", "{d}/p.jsonl"],
             setup=ckpt(lambda env: env.write("p.jsonl", open(env.expand("{w}/pairs.jsonl")).read().replace(
                 "Cannot open", "Can't open")))),
        Case("checkpoint", "a new run into a run's folder", ["train", "{w}/tiny.yaml", "--quiet", "--set",
                                                             "output_dir={d}/run"], ["already holds checkpoints",
                                                                                    "--resume"],
             unchanged=["{d}/run/metrics.jsonl", "{d}/run/config.yaml"], setup=ckpt(lambda env: None)),
        Case("checkpoint", "export of a damaged checkpoint", ["export", "--checkpoint",
                                                              "{d}/run/checkpoints/step-10", "--adapter", "{d}/a"],
             ["step-10", "trainable.safetensors"], absent=["{d}/a"],
             setup=ckpt(remove("run/checkpoints/step-10/trainable.safetensors"))),
        Case("checkpoint", "export with a newer state version", ["export", "--checkpoint",
                                                                 "{d}/run/checkpoints/step-10", "--adapter",
                                                                 "{d}/a"], ["state.json", "version", "7"],
             absent=["{d}/a"], setup=ckpt(edit_state("step-10", lambda j: j.update(version=7)))),
        Case("checkpoint", "export --adapter onto a FIFO", ["export", "--checkpoint", "{w}/run", "--adapter",
                                                            "{d}/fifo"], ["--adapter", "{d}/fifo", "FIFO"],
             unchanged=["{d}/fifo"], setup=lambda env: env.fifo("fifo")),
        Case("checkpoint", "export --merged onto a file", ["export", "--checkpoint", "{w}/run", "--merged",
                                                           "{d}/f"], ["--merged", "{d}/f", "regular file"],
             unchanged=["{d}/f"], setup=lambda env: env.write("f", "keep")),
    ]
    # ---- Benchmarks (manifest and task JSONL) ----
    c += [
        bench_case("manifest missing", remove("bench/benchmark.json"), ["{d}/bench", "benchmark.json"]),
        bench_case("manifest not JSON", lambda env: env.write("bench/benchmark.json", "{"),
                   ["{d}/bench/benchmark.json"]),
        bench_case("manifest of another format", manifest(lambda j: j.update(format="mteb")),
                   ["{d}/bench/benchmark.json", "format"]),
        bench_case("manifest of a newer version", manifest(lambda j: j.update(format_version=9)),
                   ["{d}/bench/benchmark.json", "format_version"]),
        bench_case("task file outside the folder", manifest(lambda j: j["tasks"][0].update(file="../x.jsonl")),
                   ["{d}/bench/benchmark.json", "file", "../x.jsonl"]),
        bench_case("task file missing", remove("bench/de_to_en.jsonl"), ["{d}/bench/de_to_en.jsonl",
                                                                          "does not exist"]),
        bench_case("task file a FIFO", chain(remove("bench/de_to_en.jsonl"),
                                             lambda env: env.fifo("bench/de_to_en.jsonl")),
                   ["{d}/bench/de_to_en.jsonl", "FIFO"]),
        bench_case("unknown task family", manifest(lambda j: j["tasks"][0].update(task_type="captioning")),
                   ["{d}/bench/benchmark.json", "task_type", "captioning"]),
        bench_case("unknown direction", manifest(lambda j: j["tasks"][0].update(direction="xx->yy")),
                   ["{d}/bench/benchmark.json", "direction"]),
        bench_case("query count disagrees", manifest(lambda j: j["tasks"][0].update(num_queries=99)),
                   ["{d}/bench/de_to_en.jsonl", "num_queries"]),
        bench_case("query line not JSON", lambda env: env.write("bench/de_to_en.jsonl", "{\n"),
                   ["{d}/bench/de_to_en.jsonl:1"]),
        bench_case("tgt_text not a list", bench_line("de_to_en.jsonl", lambda j: j.update(tgt_text="x")),
                   ["{d}/bench/de_to_en.jsonl:1", "tgt_text"]),
        bench_case("tgt_text too short", bench_line("de_to_en.jsonl", lambda j: j.update(tgt_text=["x"])),
                   ["{d}/bench/de_to_en.jsonl:1", "tgt_text", "num_candidates"]),
        bench_case("tgt_img_path shorter than tgt_text", bench_line("de_to_en.jsonl",
                                                                     lambda j: j.update(tgt_img_path=[None])),
                   ["{d}/bench/de_to_en.jsonl:1", "tgt_img_path", "tgt_text"]),
        bench_case("image path missing", bench_line("de_to_en.jsonl", lambda j: j.update(qry_img_path="no.png")),
                   ["{d}/bench/de_to_en.jsonl:1", "qry_img_path", "no.png", "does not exist"]),
        bench_case("language disagrees", bench_line("de_to_en.jsonl", lambda j: j.update(lang="fr")),
                   ["{d}/bench/de_to_en.jsonl:1", "lang"]),
        bench_case("empty query", bench_line("de_to_en.jsonl", lambda j: j.update(qry_text="")),
                   ["{d}/bench/de_to_en.jsonl:1", "qry_text"]),
        Case("benchmark", "report folder is a file", ["eval", "run", "--quiet", "--model", "{w}/model",
                                                      "--benchmark", "{w}/bench", "--out", "{d}/r"],
             ["--out", "{d}/r", "regular file"], unchanged=["{d}/r"], setup=lambda env: env.write("r", "x")),
        Case("benchmark", "report folder through a file", ["eval", "run", "--quiet", "--model", "{w}/model",
                                                           "--benchmark", "{w}/bench", "--out", "{d}/r/x"],
             ["--out", "{d}/r", "not a folder"], unchanged=["{d}/r"], setup=lambda env: env.write("r", "x")),
        Case("benchmark", "--train-dir without metrics", ["eval", "run", "--quiet", "--model", "{w}/model",
                                                          "--benchmark", "{w}/bench", "--out", "{d}/r",
                                                          "--train-dir", "{w}/model"],
             ["{w}/model", "metrics.jsonl"], absent=["{d}/r"]),
        Case("benchmark", "import: a released file whose image is missing",
             ["eval", "import", "--quiet", "--out", "{d}/b", "{d}/rel/MSCOCO_t2i_de.jsonl"],
             ["{d}/rel/MSCOCO_t2i_de.jsonl:1", "tgt_img_path", "does not exist", "--image-root"], absent=["{d}/b"],
             setup=lambda env: env.copy("{fx}/eval/vlm2vec_release/MSCOCO_t2i_de.jsonl", "rel/MSCOCO_t2i_de.jsonl")),
        Case("benchmark", "import: a dataset of no known family",
             ["eval", "import", "--quiet", "--out", "{d}/b", "{fx}/eval/vlm2vec_release/Emoji_fr.jsonl"],
             ["Emoji_fr.jsonl", "dataset 'Emoji'", "--family"], absent=["{d}/b"]),
        Case("benchmark", "import: a file name without a language",
             ["eval", "import", "--quiet", "--out", "{d}/b", "{d}/ImageNet-1K.jsonl"],
             ["{d}/ImageNet-1K.jsonl", "no language", "--lang"], absent=["{d}/b"],
             setup=lambda env: env.write("ImageNet-1K.jsonl", '{"qry_text": "q", "tgt_text": ["a"]}\n')),
        Case("benchmark", "import: other candidate counts",
             ["eval", "import", "--quiet", "--out", "{d}/b", "{d}/VOC2007_it.jsonl"],
             ["{d}/VOC2007_it.jsonl:2", "tgt_text", "3 candidates", "line 1 has 2"], absent=["{d}/b"],
             setup=lambda env: env.write("VOC2007_it.jsonl", '{"qry_text": "q", "tgt_text": ["a", "b"]}\n'
                                                             '{"qry_text": "r", "tgt_text": ["a", "b", "c"]}\n')),
        Case("benchmark", "eval run: a benchmark image that is missing",
             ["eval", "run", "--quiet", "--model", "{fx}/models/tiny_phi3v", "--benchmark", "{d}/b", "--out", "{d}/r"],
             ["{d}/b/ImageNet-1K_it.jsonl:2: field 'qry_img_path'", "n01443537_2.png", "does not exist"],
             absent=["{d}/r"],
             setup=chain(lambda env: imported(env, "b"),
                         lambda env: os.remove(env.p("rel/eval_images/ImageNet-1K/n01443537_2.png")))),
        Case("benchmark", "eval run: a damaged benchmark image",
             ["eval", "run", "--quiet", "--model", "{fx}/models/tiny_phi3v", "--benchmark", "{d}/b", "--out", "{d}/r"],
             ["{d}/b/ImageNet-1K_it.jsonl:1 (qry_text, qry_img_path)", "cannot embed", "n01440764_1.png"],
             absent=["{d}/r"],
             setup=chain(lambda env: imported(env, "b"),
                         lambda env: env.write("rel/eval_images/ImageNet-1K/n01440764_1.png", b"\x89PNG\r\n\x1a\n"))),
        Case("benchmark", "eval run: a text-only model on images",
             ["eval", "run", "--quiet", "--model", "{w}/model", "--benchmark", "{d}/b", "--out", "{d}/r"],
             ["{d}/b/ImageNet-1K_it.jsonl:1", "task 'ImageNet-1K/it' has images", "bert", "no image path"],
             absent=["{d}/r"], setup=lambda env: imported(env, "b")),
        Case("benchmark", "eval run: more image tags than images",
             ["eval", "run", "--quiet", "--model", "{fx}/models/tiny_phi3v", "--benchmark", "{d}/b", "--out", "{d}/r"],
             ["{d}/b/ImageNet-1K_it.jsonl:1", "cannot embed", "image"], absent=["{d}/r"],
             setup=chain(lambda env: imported(env, "b"),
                         lambda env: edit_task_line(env, "b/ImageNet-1K_it.jsonl", 1,
                                                    lambda j: j.update(qry_text=j["qry_text"] + " <|image_2|>")))),
        Case("benchmark", "a template without its placeholder", ["eval", "run", "--quiet", "--model", "{w}/model",
                                                                  "--benchmark", "{d}/bench", "--out", "{d}/r"],
             ["benchmark.json: tasks[0]", "query_template", "{text} placeholder"], absent=["{d}/r"],
             setup=chain(lambda env: env.copy("{w}/bench", "bench"),
                         lambda env: edit_manifest(env, "bench", lambda m: m["tasks"][0].update(
                             query_template="Trova la traduzione")))),
        Case("benchmark", "a language that is no code", ["eval", "run", "--quiet", "--model", "{w}/model",
                                                          "--benchmark", "{d}/bench", "--out", "{d}/r"],
             ["benchmark.json: tasks[0]", "'language' is 'Deutsch'", "language code"], absent=["{d}/r"],
             setup=chain(lambda env: env.copy("{w}/bench", "bench"),
                         lambda env: edit_manifest(env, "bench", lambda m: m["tasks"][0].update(language="Deutsch")))),
        Case("benchmark", "import --out is a file",
             ["eval", "import", "--quiet", "--out", "{d}/b", "{fx}/eval/vlm2vec_release/ImageNet-1K_it.jsonl"],
             ["--out", "{d}/b", "regular file"], unchanged=["{d}/b"], setup=lambda env: env.write("b", "x")),
        Case("benchmark", "make-multimodal: no prepared.json", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b"],
             ["{d}/mm/prepared.json", "not found", "install-multimodal-data.sh"], absent=["{d}/b"],
             setup=lambda env: env.write("mm/flags.jsonl", "")),
        Case("benchmark", "make-multimodal: prepared.json is not JSON", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b"],
             ["{d}/mm/prepared.json", "not valid JSON"], absent=["{d}/b"],
             setup=lambda env: env.write("mm/prepared.json", "{\"format\": ")),
        Case("benchmark", "make-multimodal: an item's image is missing", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b"],
             ["{d}/mm/flags.jsonl:2", "field 'image'", "does not exist"], absent=["{d}/b"],
             setup=lambda env: mm_data(env, drop_image="flags/b.png")),
        Case("benchmark", "make-multimodal: an unknown source kind", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b"],
             ["{d}/mm/prepared.json: sources[0]", "'kind' is 'photos'", "emoji, flags, stamps, maps, vqa"],
             absent=["{d}/b"], setup=lambda env: mm_data(env, kind="photos")),
        Case("benchmark", "make-multimodal: a vqa answer outside the source's answers", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b"],
             ["{d}/mm/vqa.jsonl:1", "field 'qa'", "answer 'purple'"], absent=["{d}/b"],
             setup=lambda env: mm_data(env, answer="purple")),
        Case("benchmark", "make-multimodal: a name that is a number", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b"],
             ["{d}/mm/flags.jsonl:1", "field 'text.it'", "found number"], absent=["{d}/b"],
             setup=lambda env: mm_data(env, it_name=7)),
        Case("benchmark", "make-multimodal: an unknown --split", ["eval", "make-multimodal", "--quiet", "--data", "{d}/mm", "--out", "{d}/b", "--split", "test"],
             ["--split", "test", "heldout", "train"], absent=["{d}/b"], setup=lambda env: mm_data(env)),
    ]
    # ---- Images ----
    c += [
        image_case("truncated PNG", lambda env: env.write("img", open(env.expand(
            "{fx}/images/landscape_300x200.png"), "rb").read()[:400]), ["{d}/img"]),
        image_case("PNG claiming 100000x100000 pixels", lambda env: env.write("img", png(100000, 100000)),
                   ["{d}/img", "100000x100000", "pixels"]),
        image_case("PNG with a zero width", lambda env: env.write("img", png(0, 10)), ["{d}/img"]),
        image_case("PNG with a bad CRC", lambda env: env.write("img", png(4, 4)[:29] + b"\0\0\0\0" +
                                                               png(4, 4)[33:]), ["{d}/img"]),
        image_case("truncated JPEG", lambda env: env.write("img", open(env.expand(
            "{fx}/images/cmyk_66x44.jpg"), "rb").read()[:300]), ["{d}/img"]),
        image_case("JPEG claiming 65535x65535", lambda env: env.write("img", jpeg_sof(65535, 65535)),
                   ["{d}/img"]),
        image_case("GIF", lambda env: env.write("img", b"GIF89a" + b"\0" * 32), ["{d}/img", "GIF"]),
        image_case("not an image", lambda env: env.write("img", "hello"), ["{d}/img", "not a PNG or JPEG"]),
        image_case("empty file", lambda env: env.write("img", ""), ["{d}/img", "empty"]),
        image_case("a folder", lambda env: env.mkdir("img"), ["{d}/img", "director"]),
        image_case("a FIFO", lambda env: env.fifo("img"), ["{d}/img", "FIFO"]),
        image_case("the zero device", lambda env: env.link("/dev/zero", "img"), ["{d}/img", "character device"]),
        image_case("missing", lambda env: None, ["{d}/img", "does not exist"]),
        Case("image", "image for a text-only model", ["embed", "--quiet", "--model", "{w}/model", "--image",
                                                      "{fx}/images/landscape_300x200.png", "--out", "{d}/e.npy"],
             ["image"], absent=["{d}/e.npy"]),
    ]
    # ---- Outputs ----
    c += [
        Case("output", "embed --out onto a FIFO", EMBED[:-1] + ["{d}/fifo", "--model", "{w}/model"],
             ["--out", "{d}/fifo", "FIFO"], unchanged=["{d}/fifo"], setup=lambda env: env.fifo("fifo")),
        Case("output", "embed --out onto the null device", EMBED[:-1] + ["/dev/null", "--model", "{w}/model"],
             ["--out", "/dev/null", "character device"], unchanged=["/dev/null"]),
        Case("output", "embed --out onto a folder", EMBED[:-1] + ["{d}/sub", "--model", "{w}/model"],
             ["--out", "{d}/sub", "folder"], unchanged=["{d}/sub"], setup=lambda env: env.mkdir("sub")),
        Case("output", "embed --out in a missing folder", EMBED[:-1] + ["{d}/no/e.npy", "--model", "{w}/model"],
             ["--out", "{d}/no", "does not exist"], absent=["{d}/no"]),
        Case("output", "embed --out through a file", EMBED[:-1] + ["{d}/f/e.npy", "--model", "{w}/model"],
             ["--out", "{d}/f", "not a folder"], unchanged=["{d}/f"], setup=lambda env: env.write("f", "x")),
        Case("output", "embed --jsonl equal to --out", EMBED + ["--model", "{w}/model", "--jsonl", "{d}/e.npy"],
             ["--jsonl", "--out"], absent=["{d}/e.npy"]),
        Case("output", "embed --out onto its --input", ["embed", "--quiet", "--model", "{w}/model", "--input",
                                                        "{d}/in.jsonl", "--out", "{d}/in.jsonl"],
             ["--input", "{d}/in.jsonl"], unchanged=["{d}/in.jsonl"],
             setup=lambda env: env.write("in.jsonl", '{"text": "a"}\n')),
        Case("output", "embed onto a full disk", EMBED[:-1] + ["{d}/full/e.npy", "--model", "{w}/model", "--text",
                                                               "a second text"],
             ["{d}/full/e.npy"], absent=["{d}/full/e.npy"],
             setup=lambda env: (env.tmpfs("full", "4k"), env.write("full/filler", b"x" * 4096))),
        Case("output", "init-model --out is a file", ["init-model", "--arch", "bert", "--preset", "tiny", "--out",
                                                      "{d}/f"], ["--out", "{d}/f", "regular file"],
             unchanged=["{d}/f"], setup=lambda env: env.write("f", "x")),
        Case("output", "init-model onto a full disk", ["init-model", "--arch", "bert", "--preset", "tiny", "--out",
                                                       "{d}/full/m"], ["{d}/full/m"], absent=["{d}/full/m"],
             setup=lambda env: env.tmpfs("full", "64k")),
        Case("output", "init-model into a foreign folder", ["init-model", "--arch", "bert", "--preset", "tiny",
                                                            "--out", "{d}/mine"], ["--out", "{d}/mine", "notes.txt"],
             unchanged=["{d}/mine", "{d}/mine/notes.txt"], setup=lambda env: env.write("mine/notes.txt", "mine")),
        Case("output", "make-text-benchmark --out is a file", ["eval", "make-text-benchmark", "--corpus",
                                                               "{w}/corpus.h5", "--out", "{d}/f"],
             ["--out", "{d}/f", "regular file"], unchanged=["{d}/f"], setup=lambda env: env.write("f", "x")),
        Case("output", "embed --out in a read-only folder", EMBED[:-1] + ["{d}/ro/e.npy", "--model", "{w}/model"],
             ["--out", "{d}/ro", "not writable"], absent=["{d}/ro/e.npy"],
             setup=lambda env: env.tmpfs("ro", "64k", read_only=True)),
        Case("output", "train output_dir in a read-only folder", TRAIN[:-1] + ["output_dir={d}/ro/out"],
             ["{d}/ro/out"], absent=["{d}/ro/out"], setup=lambda env: env.tmpfs("ro", "64k", read_only=True)),
        Case("output", "eval --out in a read-only folder", ["eval", "run", "--quiet", "--model", "{w}/model",
                                                            "--benchmark", "{w}/bench", "--out", "{d}/ro/r"],
             ["--out", "{d}/ro", "not writable"], absent=["{d}/ro/r"],
             setup=lambda env: env.tmpfs("ro", "64k", read_only=True)),
        Case("output", "corpus build --out in a read-only folder", ["corpus", "build", "--quiet", "--from", "tsv",
                                                                    "--input", "{w}/pairs.it.tsv", "--lang", "it",
                                                                    "--out", "{d}/ro/c.h5"],
             ["--out", "{d}/ro", "not writable"], absent=["{d}/ro/c.h5"],
             setup=lambda env: env.tmpfs("ro", "64k", read_only=True)),
        Case("output", "train whose checkpoints do not fit the disk", TRAIN[:-1] + ["output_dir={d}/small/out"],
             ["output_dir", "checkpoint", "needs about", "{d}/small/out", "free"], absent=["{d}/small/out"],
             setup=lambda env: env.tmpfs("small", "256k")),
        Case("resources", "model larger than the memory", TRAIN + ["--set", "model={d}/model"],
             ["model", "{d}/model", "of memory", "available"], absent=["{d}/out"],
             setup=chain(lambda env: env.copy("{w}/model", "model"),
                         lambda env: os.truncate(env.p("model/model.safetensors"), 1 << 40))),
        Case("resources", "eval of a model larger than the memory",
             ["eval", "run", "--quiet", "--model", "{d}/model", "--benchmark", "{w}/bench", "--out", "{d}/r"],
             ["eval:", "{d}/model", "64.0 GB in f32", "of memory", "available"], absent=["{d}/r"],
             setup=chain(lambda env: env.copy("{w}/model", "model"),
                         lambda env: sparse_safetensors(env.p("model/model.safetensors"), [16, 1 << 30]))),
        Case("resources", "corpus build from more input than the memory",
             ["corpus", "build", "--quiet", "--from", "tsv", "--input", "{d}/huge.tsv", "--lang", "it", "--out",
              "{d}/c.h5"], ["corpus build", "64.0 GB of input", "of memory", "--input"], absent=["{d}/c.h5"],
             setup=chain(lambda env: env.write("huge.tsv", "a\tb\n"),
                         lambda env: os.truncate(env.p("huge.tsv"), 64 << 30))),
        Case("resources", "a training step larger than the memory",
             TRAIN + ["--set", "train.batch_size=10000000", "--set", "train.max_steps=1", "--set",
                      "train.checkpointing=false"],
             ["a step needs about", "largest part is the activations", "train.batch_size:",
              "train.checkpointing: true"], absent=["{d}/out"]),
        Case("resources", "train under a small ulimit -v", TRAIN, ["ulimit -v", "raise it"], absent=["{d}/out"],
             ulimit_v_kb=600000),
        Case("resources", "embed under a small ulimit -v", EMBED + ["--model", "{w}/model"], ["ulimit -v"],
             absent=["{d}/e.npy"], ulimit_v_kb=600000),
        Case("resources", "corpus build under a small ulimit -v", ["corpus", "build", "--quiet", "--from", "tsv",
                                                                  "--input", "{w}/pairs.it.tsv", "--lang", "it",
                                                                  "--out", "{d}/c.h5"], ["ulimit -v"],
             absent=["{d}/c.h5"], ulimit_v_kb=600000),
        Case("output", "train over the file-size limit (ulimit -f)", TRAIN,
             ["{d}/out/checkpoints/", "write failed", "File too large"], ulimit_f_kb=64),
        Case("output", "train onto a full disk", TRAIN[:-1] + ["output_dir={d}/full/out"], ["{d}/full/out"],
             setup=lambda env: env.tmpfs("full", "16k")),
    ]
    return c


def imported(env, name):
    """A copy of the released fixture in rel/, imported into benchmark folder `name`."""
    env.copy("{fx}/eval/vlm2vec_release", "rel")
    r = subprocess.run([env.ctx.bin, "eval", "import", "--quiet", "--out", env.p(name),
                        env.p("rel/ImageNet-1K_it.jsonl"), env.p("rel/MSCOCO_t2i_de.jsonl")], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()


def mm_data(env, kind="flags", drop_image=None, answer="red", it_name="Italia"):
    """A prepared multimodal folder in mm/ (tools/prepare_multimodal.py's layout): two flags and a vqa image."""
    img = open(env.expand("{fx}/images/landscape_300x200.png"), "rb").read()
    for name in ("flags/a.png", "flags/b.png", "vqa/a.png"):
        if name != drop_image:
            env.write("mm/" + name, img + name.encode())
    env.write("mm/flags.jsonl", json.dumps({"id": "flags/a", "image": "flags/a.png",
                                            "text": {"en": "Italy", "it": it_name}}) + "\n" +
              json.dumps({"id": "flags/b", "image": "flags/b.png", "text": {"en": "Spain", "it": "Spagna"}}) + "\n")
    env.write("mm/vqa.jsonl", json.dumps({"id": "vqa/a", "image": "vqa/a.png",
                                          "qa": [["what color is the shape?", answer]]}) + "\n")
    env.write("mm/prepared.json", json.dumps({
        "format": "xvlm2vec-multimodal-data", "format_version": 1,
        "sources": [{"name": "flags", "kind": kind, "file": "flags.jsonl"},
                    {"name": "vqa", "kind": "vqa", "file": "vqa.jsonl", "answers": ["red", "blue"]}]}))


def edit_manifest(env, bench, fn):
    path = env.p(bench + "/benchmark.json")
    with open(path) as f:
        m = json.load(f)
    fn(m)
    with open(path, "w") as f:
        json.dump(m, f)


def edit_task_line(env, name, n, fn):
    path = env.p(name)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    j = json.loads(lines[n - 1])
    fn(j)
    lines[n - 1] = json.dumps(j, ensure_ascii=False)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def sparse_safetensors(path, shape):
    """A valid .safetensors file of one f32 tensor of `shape`, its data a hole (nothing is written)."""
    n = 4
    for d in shape:
        n *= d
    header = json.dumps({"big": {"dtype": "F32", "shape": shape, "data_offsets": [0, n]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
    os.truncate(path, 8 + len(header) + n)


def first_tensor_name():
    return "embeddings.LayerNorm.bias"


def jpeg_sof(width, height):
    """A JPEG that claims a size in its frame header and then ends."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + sof + b"\xff\xd9"
