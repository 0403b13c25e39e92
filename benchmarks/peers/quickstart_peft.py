#!/usr/bin/env python3
"""The peer of the quickstart: `xvlm2vec train CONFIG.yaml` followed by `xvlm2vec eval run`, written with
sentence-transformers + PEFT on PyTorch, so that benchmarks/quickstart_vs_peer.sh can run both on the same work.

    python benchmarks/peers/quickstart_peft.py CONFIG.yaml --benchmark DIR [--set key=value ...]
                                               [--threads N] [--eval-batch-size 64]

What it does, and where it follows our trainer (docs/config.md):
  - The config is read as `xvlm2vec train` reads it (same defaults; `--set` takes the same dotted keys and YAML
    values). Only `trainable: lora` on a bert (sentence-transformers) model is supported.
  - The model folder is loaded with SentenceTransformer. Training uses the pipeline's embedding before its
    Normalize module (mean pooling of the last hidden state, as models/kd/bert_kd.cpp does); evaluation
    L2-normalises.
  - The transformer is wrapped with PEFT LoRA with the config's r, alpha, dropout, targets, init and rslora.
    Only the LoRA dropout is active during training: our trainer applies no dropout inside the frozen base.
  - The teacher is the same model with its adapters disabled, or the corpus's /teacher block when
    `data.teacher_cache: corpus` (a `.npy` path for JSONL pairs).
  - Loss L = 1/2 [MSE(S(en), T(en)) + MSE(S(xx), T(en))], MSE a mean over batch and dimension; each
    micro-batch's loss is scaled by 1/grad_accum; global-norm clipping at max_grad_norm; torch AdamW; the
    learning-rate schedules of transformers (get_*_schedule_with_warmup), which our lr_lambda follows.
  - Order: a seeded permutation per epoch (numpy, not our generator: the same pairs and the same number of
    steps, not the same batches), read as one stream across epochs, with the config's length bucketing
    (each window of `data.bucket_window` pairs sorted by English + other-language byte length, cut into
    micro-batches, the micro-batches shuffled), since padding decides much of the speed.
  - pairs/s is the wall time of the training loop after its first step, which is excluded as a warm-up (it
    is still one of the max_steps steps). Peak RSS is read at the end of training and again at the end.

Prints one JSON line (the evaluation has the shape of `eval run`'s results.json: tasks, languages, averages,
english). Progress goes to stderr.
"""
import argparse
import json
import math
import os
import resource
import sys
import time


def die(msg):
    print(f"quickstart_peft.py: {msg}", file=sys.stderr)
    sys.exit(2)


try:
    import h5py
    import numpy as np
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from sentence_transformers import SentenceTransformer
    from transformers import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                              get_linear_schedule_with_warmup)
except ImportError as e:
    die(f"{e}: this script needs torch, sentence-transformers, peft, transformers, h5py, pyyaml and numpy "
        "(python3 -m venv V && V/bin/pip install -r tools/requirements.txt h5py pyyaml)")

# The trainer's defaults (docs/config.md), for the keys this job uses.
DEFAULTS = {
    "model": None, "output_dir": None, "seed": 42, "trainable": "lora",
    "data": {"train": None, "teacher_cache": None, "bucket_window": 0},
    "lora": {"r": 8, "alpha": 64, "dropout": 0.1, "targets": None, "init": "kaiming", "rslora": False},
    "train": {"epochs": 1, "max_steps": 0, "batch_size": 8, "grad_accum": 4, "lr": 1e-5, "schedule": "cosine",
              "warmup_steps": 0, "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8, "max_grad_norm": 0.3,
              "threads": 0},
    "log": {"every_steps": 10},
}
BERT_TARGETS = ["query", "key", "value", "dense"]
SCHEDULES = {"cosine": get_cosine_schedule_with_warmup, "linear": get_linear_schedule_with_warmup,
             "constant": get_constant_schedule_with_warmup}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


# ---------------------------------------------------------------------------------------------- config
def load_config(path, sets):
    if not os.path.isfile(path):
        die(f"{path}: no such config file")
    with open(path, encoding="utf-8") as f:
        try:
            cfg = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            die(f"{path}: not valid YAML: {e}")
    if not isinstance(cfg, dict):
        die(f"{path}: the config must be a YAML mapping")
    for s in sets:
        key, eq, value = s.partition("=")
        if not eq or not key:
            die(f"--set {s}: expected key=value")
        parts = key.split(".")
        node = cfg
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                die(f"--set {s}: '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(value) if value != "" else None
    # Fill in the defaults; keys this job does not use (workers, prefetch, checkpoints, export) are ignored.
    out = {}
    for k, v in DEFAULTS.items():
        if isinstance(v, dict):
            sec = cfg.get(k) or {}
            if not isinstance(sec, dict):
                die(f"{path}: '{k}' must be a mapping")
            out[k] = {kk: sec.get(kk, vv) for kk, vv in v.items()}
        else:
            out[k] = cfg.get(k, v)
    if out["model"] is None:
        die(f"{path}: missing required key 'model'")
    if out["data"]["train"] is None:
        die(f"{path}: missing required key 'data.train'")
    if out["trainable"] != "lora":
        die(f"{path}: trainable '{out['trainable']}': this peer runs LoRA only")
    if out["lora"]["targets"] is None:
        out["lora"]["targets"] = BERT_TARGETS
    if out["lora"]["init"] not in ("kaiming", "gaussian"):
        die(f"{path}: lora.init must be kaiming or gaussian, found {out['lora']['init']!r}")
    if out["train"]["schedule"] not in SCHEDULES:
        die(f"{path}: train.schedule must be cosine, linear or constant, found {out['train']['schedule']!r}")
    return out


# ---------------------------------------------------------------------------------------------- data
def text_attr(v):
    """An HDF5 string attribute, variable- or fixed-length (h5py gives str or bytes)."""
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    return v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else v


class Pairs:
    """The training pairs: texts decoded on demand from the corpus's bytes + offsets pools."""

    def __init__(self, path, teacher_cache):
        if not os.path.isfile(path):
            die(f"{path}: training data not found (data.train)")
        self.teacher = None
        self.teacher_source = "adapters off"  # where the targets come from, for the report
        if h5py.is_hdf5(path):
            self._read_corpus(path, teacher_cache)
        else:
            self._read_jsonl(path, teacher_cache)

    def _read_corpus(self, path, teacher_cache):
        with h5py.File(path, "r") as f:
            fmt = text_attr(f.attrs.get("format"))
            if fmt != "xvlm2vec-corpus":
                die(f"{path}: not an xvlm2vec corpus (root attribute 'format' is {fmt!r})")
            if int(f.attrs.get("format_version", -1)) != 1:
                die(f"{path}: unknown format_version {f.attrs.get('format_version')}; this script reads version 1")
            for name in ("text/en/bytes", "text/en/offsets", "text/xx/bytes", "text/xx/offsets", "pairs/en",
                         "pairs/xx"):
                if name not in f:
                    die(f"{path}: missing dataset /{name}")
            self.en_bytes, self.en_off = f["text/en/bytes"][()].tobytes(), f["text/en/offsets"][()]
            self.xx_bytes, self.xx_off = f["text/xx/bytes"][()].tobytes(), f["text/xx/offsets"][()]
            self.en, self.xx = f["pairs/en"][()], f["pairs/xx"][()]
            if "pairs/image" in f and (f["pairs/image"][()] >= 0).any():
                die(f"{path}: the corpus has pairs with images, but the bert backbone takes text only")
            if teacher_cache == "corpus":
                if "teacher/embeddings" not in f:
                    die(f"{path}: data.teacher_cache is 'corpus' but the corpus has no /teacher block "
                        "(xvlm2vec corpus cache-teacher)")
                fp = text_attr(f.attrs.get("fingerprint"))
                tfp = text_attr(f["teacher"].attrs.get("corpus_fingerprint"))
                if fp is not None and tfp is not None and fp != tfp:
                    die(f"{path}: the /teacher block was computed for another corpus ({tfp}, this one is {fp})")
                self.teacher = f["teacher/embeddings"][()].astype(np.float32)
                self.teacher_source = "corpus /teacher block"
        n = len(self.en)
        if len(self.xx) != n:
            die(f"{path}: /pairs/en and /pairs/xx differ in length")
        self.lengths = ((self.en_off[self.en + 1] - self.en_off[self.en])
                        + (self.xx_off[self.xx + 1] - self.xx_off[self.xx])).astype(np.int64)
        if teacher_cache not in (None, "corpus"):
            self._npy_teacher(teacher_cache)

    def _read_jsonl(self, path, teacher_cache):
        if teacher_cache == "corpus":
            die(f"{path}: data.teacher_cache 'corpus' needs an HDF5 corpus, this is a JSONL file")
        self.texts = []
        with open(path, encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                if not line.strip():
                    continue
                o = json.loads(line)
                for k in ("text_en", "text_xx"):
                    if not isinstance(o.get(k), str) or not o[k]:
                        die(f"{path}:{ln}: field '{k}' must be a non-empty string")
                if o.get("image"):
                    die(f"{path}:{ln}: field 'image' is set, but the bert backbone takes text only")
                self.texts.append((o["text_en"], o["text_xx"]))
        self.lengths = np.array([len(a.encode()) + len(b.encode()) for a, b in self.texts], dtype=np.int64)
        if teacher_cache is not None:
            self._npy_teacher(teacher_cache)

    def _npy_teacher(self, path):
        if not os.path.isfile(path):
            die(f"{path}: teacher cache not found (data.teacher_cache)")
        self.teacher = np.load(path).astype(np.float32)
        self.teacher_source = path

    def __len__(self):
        return len(self.lengths)

    def get(self, i):
        if hasattr(self, "texts"):
            return self.texts[i]
        e, x = int(self.en[i]), int(self.xx[i])
        return (self.en_bytes[self.en_off[e]:self.en_off[e + 1]].decode("utf-8"),
                self.xx_bytes[self.xx_off[x]:self.xx_off[x + 1]].decode("utf-8"))


def epoch_order(pairs, seed, epoch, window, batch):
    """One epoch's pair order: a seeded permutation, then the length bucketing of data.bucket_window."""
    rng = np.random.default_rng([seed, epoch])
    seq = rng.permutation(len(pairs))
    if window <= 1:
        return seq
    out = []
    for w0 in range(0, len(seq), window):
        win = seq[w0:w0 + window]
        win = win[np.argsort(pairs.lengths[win], kind="stable")]
        groups = [win[g:g + batch] for g in range(0, len(win), batch)]
        for g in rng.permutation(len(groups)):
            out.append(groups[g])
    return np.concatenate(out)


def pair_stream(pairs, seed, window, batch):
    """Pair indices as one stream across epochs: a micro-batch may span the end of an epoch."""
    epoch = 0
    while True:
        for i in epoch_order(pairs, seed, epoch, window, batch):
            yield int(i)
        epoch += 1


# ---------------------------------------------------------------------------------------------- model
def load_model(cfg):
    model_dir = cfg["model"]
    if not os.path.isdir(model_dir):
        die(f"{model_dir}: model folder not found (model)")
    torch.manual_seed(cfg["seed"])
    st = SentenceTransformer(model_dir, device="cpu")
    bert = st[0].auto_model
    # The embedding never uses BERT's pooler (mean pooling of the last hidden state), and our bert model has
    # none: without this, the target 'dense' would also adapt pooler.dense and compute it for nothing.
    if getattr(bert, "pooler", None) is not None:
        bert.pooler = None
    lc = cfg["lora"]
    peft_model = get_peft_model(bert, LoraConfig(
        r=lc["r"], lora_alpha=lc["alpha"], lora_dropout=lc["dropout"], target_modules=list(lc["targets"]),
        init_lora_weights=True if lc["init"] == "kaiming" else "gaussian", use_rslora=bool(lc["rslora"]),
        bias="none"))
    # PEFT injected the adapters into `bert` in place, so the sentence-transformers pipeline runs the student;
    # peft_model.disable_adapter() turns them off for the teacher.
    return st, peft_model


def train_mode(st, on):
    """Our trainer applies dropout only on the adapters' inputs: the base's own dropout stays off."""
    st.eval()
    if on:
        for name, m in st.named_modules():
            if "lora_dropout" in name:
                m.train()


def embed_unnormalised(st, texts):
    """The pipeline's sentence embedding before its Normalize module: what the trainer distils."""
    features = st.preprocess(texts)
    for module in st:
        if type(module).__name__ == "Normalize":
            continue
        features = module(features)
    return features["sentence_embedding"]


# ---------------------------------------------------------------------------------------------- training
def train(cfg, st, peft_model, pairs):
    t = cfg["train"]
    bs, ga = int(t["batch_size"]), int(t["grad_accum"])
    total = int(t["max_steps"]) or int(t["epochs"]) * len(pairs) // (bs * ga)
    if total < 1:
        die(f"{cfg['data']['train']}: {len(pairs)} pairs make no optimizer step of {bs} x {ga} pairs")
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(t["lr"]), betas=tuple(float(b) for b in t["betas"]),
                            eps=float(t["eps"]), weight_decay=float(t["weight_decay"]))
    warmup = int(t["warmup_steps"])
    if t["schedule"] == "constant":  # the one schedule that takes no total
        sched = get_constant_schedule_with_warmup(opt, warmup)
    else:
        sched = SCHEDULES[t["schedule"]](opt, warmup, total)
    stream = pair_stream(pairs, int(cfg["seed"]), int(cfg["data"]["bucket_window"] or 0), bs)
    mse = torch.nn.functional.mse_loss
    teacher_rows = torch.from_numpy(pairs.teacher) if pairs.teacher is not None else None
    if teacher_rows is not None and teacher_rows.shape[1] != st.get_sentence_embedding_dimension():
        die(f"{cfg['data']['train']}: the teacher block has dimension {teacher_rows.shape[1]}, the model "
            f"{st.get_sentence_embedding_dimension()}")
    log_every = int(cfg["log"]["every_steps"])
    log, timed_from = [], None
    train_mode(st, True)
    t_loop = time.perf_counter()
    for step in range(total):
        acc = [0.0, 0.0, 0.0]
        for _ in range(ga):
            idx = [next(stream) for _ in range(bs)]
            texts = [pairs.get(i) for i in idx]
            en, xx = [p[0] for p in texts], [p[1] for p in texts]
            if teacher_rows is not None:
                t_en = teacher_rows[idx]
            else:
                with torch.no_grad(), peft_model.disable_adapter():
                    t_en = embed_unnormalised(st, en)
            l_en = mse(embed_unnormalised(st, en), t_en)
            l_xx = mse(embed_unnormalised(st, xx), t_en)
            loss = 0.5 * (l_en + l_xx)
            (loss / ga).backward()
            for k, v in enumerate((loss, l_en, l_xx)):
                acc[k] += v.item() / ga
        if not all(math.isfinite(v) for v in acc):
            die(f"step {step + 1}: the loss is not finite ({acc})")
        mgn = float(t["max_grad_norm"])
        if mgn > 0:
            norm = float(torch.nn.utils.clip_grad_norm_(params, mgn))
        else:
            norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step == 0:
            timed_from = time.perf_counter()  # the first step is the warm-up: allocations, lazy initialisation
        if (step + 1) % log_every == 0 or step + 1 == total:
            rec = {"step": step + 1, "loss": acc[0], "loss_en": acc[1], "loss_xx": acc[2], "lr": lr, "grad_norm": norm}
            log.append(rec)
            el = time.perf_counter() - t_loop
            print(f"peer: step {step + 1}/{total}  loss {acc[0]:.4e} (en {acc[1]:.4e}, xx {acc[2]:.4e})  "
                  f"lr {lr:.3e}  grad {norm:.3e}  {(step + 1) * bs * ga / el:.1f} pairs/s", file=sys.stderr)
    end = time.perf_counter()
    train_mode(st, False)
    if total >= 2:
        secs, timed_steps = end - timed_from, total - 1
    else:  # a single step: nothing is left after the warm-up, so it is timed itself
        secs, timed_steps = end - t_loop, total
    return {"steps": total, "batch_size": bs, "grad_accum": ga, "pairs_per_step": bs * ga,
            "timed_steps": timed_steps, "train_seconds": round(secs, 3),
            "pairs_per_s": round(timed_steps * bs * ga / secs, 2),
            "trainable_parameters": sum(p.numel() for p in params), "log": log}


# ---------------------------------------------------------------------------------------------- evaluation
def read_benchmark(d):
    man_path = os.path.join(d, "benchmark.json")
    if not os.path.isfile(man_path):
        die(f"{man_path}: not found (--benchmark must be a folder in docs/benchmark-format.md)")
    man = json.load(open(man_path, encoding="utf-8"))
    if man.get("format") != "xvlm2vec-benchmark":
        die(f"{man_path}: field 'format' is {man.get('format')!r}; expected 'xvlm2vec-benchmark'")
    if man.get("format_version") != 1:
        die(f"{man_path}: unknown format_version {man.get('format_version')}; this script reads version 1")
    if not man.get("tasks"):
        die(f"{man_path}: field 'tasks' must be a non-empty list")
    tasks = []
    for t in man["tasks"]:
        path = os.path.join(d, t["file"])
        if not os.path.isfile(path):
            die(f"{man_path}: task '{t['name']}': file {t['file']} not found")
        queries = []
        with open(path, encoding="utf-8") as f:
            for ln, line in enumerate(f, 1):
                if not line.strip():
                    continue
                q = json.loads(line)
                where = f"{t['file']}:{ln}"
                if q.get("qry_img_path") or any(q.get("tgt_img_path") or []):
                    die(f"{where}: has an image; this script evaluates text only")
                if not isinstance(q.get("qry_text"), str):
                    die(f"{where}: field 'qry_text' must be a string")
                c = q.get("tgt_text")
                if not isinstance(c, list) or not c:
                    die(f"{where}: field 'tgt_text' must be a non-empty list; expected the gold candidate first")
                if len(c) != t["num_candidates"]:
                    die(f"{where}: field 'tgt_text' has {len(c)} candidates, but the manifest gives task "
                        f"'{t['name']}' num_candidates {t['num_candidates']}")
                queries.append((q["qry_text"], c))
        if len(queries) != t["num_queries"]:
            die(f"{t['file']}: {len(queries)} queries, the manifest gives num_queries {t['num_queries']}")
        tasks.append({**t, "queries": queries})
    english = []
    if man.get("english"):
        path = os.path.join(d, man["english"]["file"])
        if not os.path.isfile(path):
            die(f"{man_path}: english file {man['english']['file']} not found")
        with open(path, encoding="utf-8") as f:
            english = [json.loads(l)["text"] for l in f if l.strip()]
    return man, tasks, english


def gold_ranks(E, rows):
    """1 + the number of candidates scoring strictly higher than the gold (index 0): ties favour the gold, a
    NaN score never outranks it, a NaN gold ranks last. rows: (Q, 1 + K) text indices, query first."""
    ranks = np.empty(len(rows), dtype=np.int64)
    for s in range(0, len(rows), 16):  # chunks: (16, K, D) in float64 at a time
        r = rows[s:s + 16]
        q = E[r[:, 0]].astype(np.float64)
        c = E[r[:, 1:]].astype(np.float64)
        scores = np.einsum("qd,qkd->qk", q, c)
        gold = scores[:, :1]
        rk = 1 + (scores[:, 1:] > gold).sum(axis=1)
        ranks[s:s + 16] = np.where(np.isnan(gold[:, 0]), scores.shape[1], rk)
    return ranks


def metrics(ranks):
    return {"p_at_1": float(np.mean(ranks == 1)), "r_at_5": float(np.mean(ranks <= 5)),
            "mrr": float(np.mean(1.0 / ranks))}


def mean_metrics(ms):
    return {k: float(np.mean([m[k] for m in ms])) for k in ("p_at_1", "r_at_5", "mrr")}


def evaluate(st, peft_model, bench_dir, batch_size):
    man, tasks, english = read_benchmark(bench_dir)
    index = {}  # every distinct text once, as `eval run` does

    def ix(text):
        return index.setdefault(text, len(index))

    rows = [np.array([[ix(q)] + [ix(c) for c in cands] for q, cands in t["queries"]], dtype=np.int64) for t in tasks]
    eng = np.array([ix(t) for t in english], dtype=np.int64)
    texts = list(index)
    t0 = time.perf_counter()

    def embed(who):
        print(f"peer: embedding {len(texts)} texts with the {who}", file=sys.stderr)
        e = st.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                      show_progress_bar=False)
        return e.astype(np.float32)

    with peft_model.disable_adapter():
        T = embed("teacher")
    S = embed("student")
    secs = time.perf_counter() - t0
    out_tasks, by_lang = [], {}
    for t, r in zip(tasks, rows):
        before, after = metrics(gold_ranks(T, r)), metrics(gold_ranks(S, r))
        gain = {k: after[k] - before[k] for k in before}
        out_tasks.append({"name": t["name"], "language": t["language"], "direction": t["direction"],
                          "task_type": t["task_type"], "queries": len(r), "candidates": t["num_candidates"],
                          "before": before, "after": after, "gain": gain})
        by_lang.setdefault(t["language"], {}).setdefault(t["direction"], []).append(out_tasks[-1])
    languages, by_dir = {}, {}
    for lang, dirs in by_lang.items():
        for d, ts in dirs.items():
            e = {c: mean_metrics([x[c] for x in ts]) for c in ("before", "after", "gain")}
            e["tasks"] = [x["name"] for x in ts]
            languages.setdefault(lang, {})[d] = e
            by_dir.setdefault(d, []).append((lang, e))
    averages = {}
    for d, ls in by_dir.items():
        averages[d] = {c: mean_metrics([e[c] for _, e in ls]) for c in ("before", "after", "gain")}
        averages[d]["languages"] = [lang for lang, _ in ls]
    cos = float(np.mean(np.sum(T[eng].astype(np.float64) * S[eng], axis=1))) if len(eng) else None
    return {"benchmark": bench_dir, "benchmark_name": man.get("name"), "unique_texts": len(texts),
            "embed_seconds": round(secs, 3), "tasks": out_tasks, "languages": languages, "averages": averages,
            "english": {"texts": len(eng), "cosine": cos}}


# ---------------------------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="training config (YAML), as for `xvlm2vec train`")
    ap.add_argument("--benchmark", required=True, help="benchmark folder (docs/benchmark-format.md)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: the config's train.threads, or else all cores)")
    ap.add_argument("--eval-batch-size", type=int, default=64)
    a = ap.parse_args()
    cfg = load_config(a.config, a.set)
    threads = a.threads or int(cfg["train"]["threads"] or 0) or os.cpu_count()
    torch.set_num_threads(threads)
    if not os.path.isdir(a.benchmark):
        die(f"{a.benchmark}: benchmark folder not found")
    pairs = Pairs(cfg["data"]["train"], cfg["data"]["teacher_cache"])
    if pairs.teacher is not None and len(pairs.teacher) != len(pairs):
        die(f"{cfg['data']['train']}: the teacher block has {len(pairs.teacher)} rows for {len(pairs)} pairs")
    st, peft_model = load_model(cfg)
    tr = train(cfg, st, peft_model, pairs)
    train_rss = peak_rss_mb()
    ev = evaluate(st, peft_model, a.benchmark, a.eval_batch_size)
    import peft
    import sentence_transformers
    print(json.dumps({
        "impl": "sentence-transformers+peft", "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__, "peft": peft.__version__,
        "model": cfg["model"], "train_data": cfg["data"]["train"], "pairs": len(pairs),
        "teacher": pairs.teacher_source, "threads": threads,
        "lora": cfg["lora"], "train": {k: v for k, v in cfg["train"].items() if k != "threads"},
        "seed": cfg["seed"], "bucket_window": cfg["data"]["bucket_window"],
        **tr, "peak_rss_mb": round(train_rss), "peak_rss_mb_with_eval": round(peak_rss_mb()),
        "eval": ev}, ensure_ascii=False))


if __name__ == "__main__":
    main()
