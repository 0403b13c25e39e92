#!/usr/bin/env python3
"""The peer of bench_train on the tiny Phi-3-vision: the same self-KD step with PyTorch + PEFT, through the
reference modules of tools/make_train_phi3v_fixtures.py (transformers' Phi3Model and CLIPVisionModel, the
HD glue), the same pairs with their images, batch, LoRA (r, alpha 64, dropout 0, VLM2Vec's targets), AdamW,
clipping at 0.3, thread count and steps after one warm-up step. Prints one JSON line.

    python benchmarks/peers/train_step_phi3v_peft.py PAIRS.json --threads N --batch-size B --steps S --r R
(PAIRS.json: [[en, xx, image path relative to tests/fixtures], ...])
"""
import argparse
import json
import os
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_train_phi3v_fixtures as ref  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("pairs")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch-size", type=int, default=4)
ap.add_argument("--steps", type=int, default=5)
ap.add_argument("--r", type=int, default=8)
a = ap.parse_args()
torch.set_num_threads(a.threads)
pairs = json.load(open(a.pairs, encoding="utf-8"))
tok = Tokenizer.from_file(os.path.join(ref.MODEL, "tokenizer.json"))
base, pad_id = ref.load_model()
targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj", "k_proj", "v_proj", "out_proj"]
model = get_peft_model(base, LoraConfig(r=a.r, lora_alpha=64, lora_dropout=0.0, target_modules=targets))
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5)
bos = tok.token_to_id("<s>")


def step(s):
    batch = ref.Batch(tok, [pairs[(s * a.batch_size + i) % len(pairs)] for i in range(a.batch_size)], pad_id, bos)
    loss, _ = ref.kd_loss(model, batch, False)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.3)
    opt.step()


step(0)
t0 = time.perf_counter()
for s in range(1, a.steps + 1):
    step(s)
secs = time.perf_counter() - t0
print(json.dumps({"impl": "torch+peft", "arch": "phi3_v", "torch": torch.__version__, "steps": a.steps,
                  "batch_size": a.batch_size, "threads": a.threads, "r": a.r, "seconds": round(secs, 3),
                  "pairs_per_s": round(a.steps * a.batch_size / secs, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
