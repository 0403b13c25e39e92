#!/usr/bin/env python3
"""The peer for bench_embed: sentence-transformers on PyTorch, same model folder, same sentences,
same thread count, same batch size; best of `repeat` timed passes after a warm-up. Prints one JSON line.

    python benchmarks/peers/minilm_embed_st.py MODEL_DIR SENTENCES.json --threads N --batch-size B --repeat R
"""
import argparse
import json
import resource
import time

import torch
from sentence_transformers import SentenceTransformer

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("sentences")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--batch-size", type=int, default=32)
ap.add_argument("--repeat", type=int, default=3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
sents = json.load(open(a.sentences, encoding="utf-8"))
model = SentenceTransformer(a.model, device="cpu")
model.encode(sents[:64], batch_size=a.batch_size)
best = 1e30
with torch.inference_mode():
    for _ in range(a.repeat):
        t0 = time.perf_counter()
        model.encode(sents, batch_size=a.batch_size, normalize_embeddings=True)
        best = min(best, time.perf_counter() - t0)
print(json.dumps({"impl": "sentence-transformers", "torch": torch.__version__, "sentences": len(sents),
                  "threads": a.threads, "batch_size": a.batch_size, "best_s": round(best, 4),
                  "sentences_per_s": round(len(sents) / best, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
