#!/usr/bin/env python3
"""The peer of bench_train: the same self-KD step with transformers + PEFT on PyTorch. Teacher = the
PEFT model with adapters disabled (no second copy), sentence-transformers mean pooling, the xVLM2Vec loss,
AdamW, clipping at 0.3; the same pairs, batch, LoRA (r, alpha 64, dropout 0, targets query/key/value/dense),
thread count and number of steps after one warm-up step. Prints one JSON line.

    python benchmarks/peers/train_step_peft.py MODEL_DIR PAIRS.json --threads N --batch-size B --steps S --r R
"""
import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, BertModel

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("pairs")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch-size", type=int, default=8)
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--r", type=int, default=8)
a = ap.parse_args()
torch.set_num_threads(a.threads)
pairs = json.load(open(a.pairs, encoding="utf-8"))
tok = AutoTokenizer.from_pretrained(a.model)
base = BertModel.from_pretrained(a.model, add_pooling_layer=False)
model = get_peft_model(base, LoraConfig(r=a.r, lora_alpha=64, lora_dropout=0.0, target_modules=["query", "key", "value", "dense"]))
model.train()
params = [p for p in model.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=1e-5)


def pool(texts):
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def step(s):
    batch = [pairs[(s * a.batch_size + i) % len(pairs)] for i in range(a.batch_size)]
    en, xx = [p[0] for p in batch], [p[1] for p in batch]
    with torch.no_grad(), model.disable_adapter():
        t = pool(en)
    loss = 0.5 * (torch.nn.functional.mse_loss(pool(en), t) + torch.nn.functional.mse_loss(pool(xx), t))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.3)
    opt.step()


step(0)
t0 = time.perf_counter()
for s in range(1, a.steps + 1):
    step(s)
secs = time.perf_counter() - t0
print(json.dumps({"impl": "transformers+peft", "torch": torch.__version__, "steps": a.steps, "batch_size": a.batch_size,
                  "threads": a.threads, "r": a.r, "seconds": round(secs, 3),
                  "pairs_per_s": round(a.steps * a.batch_size / secs, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
