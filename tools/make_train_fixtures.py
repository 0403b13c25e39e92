#!/usr/bin/env python3
"""Golden fixtures for the self-knowledge-distillation training step on the tiny BERT (models/lora,
models/bert, models/kd/losses, the AdamW op of kernels/ops.h), from PyTorch + PEFT.

Regenerate (after tools/make_model_fixtures.py; tools/make_fixtures.sh runs everything):

    python tools/make_train_fixtures.py

The method (xVLM2Vec): teacher T = the model with its adapters off (frozen), student S = the same model with
LoRA adapters; on a batch of parallel pairs (x_en, x_xx), with sentence-transformers mean pooling,
    L = 1/2 [ MSE(S(x_en), T(x_en)) + MSE(S(x_xx), T(x_en)) ]
MSE is the mean over batch and dimension. LoRA as PEFT: r 4, alpha 8, dropout 0 (PEFT's dropout draws from
torch's RNG, which no other program reproduces), targets query, key, value, dense (attention.output.dense,
intermediate.dense, output.dense). The initial adapters are stored: A from PEFT's default (Kaiming-uniform)
init with a fixed seed, B random too (PEFT starts B at zero, which would leave A without gradient at step 1).
AdamW (torch.optim.AdamW: lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01), global-norm clipping at
1.0, cosine schedule with 2 warmup steps over 10 steps (transformers.get_cosine_schedule_with_warmup),
batches of 3 pairs taken in order, cycling over the 8 pairs.

Writes tests/fixtures/train/tiny_bert/:
  pairs.json           [[en, xx], ...]
  lora_init.safetensors  adapters before training (PEFT names)
  grads_step1.safetensors  gradients of every adapter tensor at step 1 (before clipping)
  trace.json           per step: loss, the two terms, lr, grad norm before clipping
  lora_final.safetensors adapters after 10 steps
"""
import json
import os

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoTokenizer, BertModel, get_cosine_schedule_with_warmup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
MODEL = os.path.join(FIX, "models", "tiny_bert")
OUT = os.path.join(FIX, "train", "tiny_bert")
STEPS, BATCH = 10, 3

torch.manual_seed(0)
torch.set_num_threads(2)

# Parallel pairs: English msgids and their Italian/Spanish/French/German translations from the catalogs.
PAIRS = [
    ["Cannot open the file.", "Impossibile aprire il file."],
    ["Permission denied", "Permiso denegado"],
    ["No such file or directory", "Aucun fichier ou dossier de ce type"],
    ["Memory exhausted", "Speicher erschöpft"],
    ["Invalid argument", "Argomento non valido"],
    ["Write error", "Error de escritura"],
    ["The operation was cancelled.", "L'opération a été annulée."],
    ["Unknown system error", "Unbekannter Systemfehler"],
]


def pool(model, tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
              token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return (h * m).sum(1) / m.sum(1).clamp(min=1e-9)


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(MODEL)
    base = BertModel.from_pretrained(MODEL, add_pooling_layer=False, attn_implementation="eager").eval()
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, bias="none", target_modules=["query", "key", "value", "dense"])
    model = get_peft_model(base, cfg)
    model.eval()  # no dropout anywhere: the reference and ours must see the same function
    g = torch.Generator().manual_seed(7)
    # Names as PEFT's adapter files spell them (get_peft_model_state_dict drops the adapter name).
    lora = {n.replace(".default.", "."): p for n, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for n, p in lora.items():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    save_file({n: p.detach().clone().contiguous() for n, p in lora.items()}, os.path.join(OUT, "lora_init.safetensors"))

    opt = torch.optim.AdamW(list(lora.values()), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=STEPS)
    trace = []
    for step in range(STEPS):
        batch = [PAIRS[(step * BATCH + i) % len(PAIRS)] for i in range(BATCH)]
        en, xx = [p[0] for p in batch], [p[1] for p in batch]
        with torch.no_grad(), model.disable_adapter():
            t_en = pool(model, tok, en)
        s_en, s_xx = pool(model, tok, en), pool(model, tok, xx)
        l_en = torch.nn.functional.mse_loss(s_en, t_en)
        l_xx = torch.nn.functional.mse_loss(s_xx, t_en)
        loss = 0.5 * (l_en + l_xx)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            save_file({n: p.grad.detach().clone().contiguous() for n, p in lora.items()},
                      os.path.join(OUT, "grads_step1.safetensors"))
        gnorm = torch.nn.utils.clip_grad_norm_(list(lora.values()), 1.0)
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        trace.append({"step": step + 1, "loss": loss.item(), "loss_en": l_en.item(), "loss_xx": l_xx.item(),
                      "lr": lr, "grad_norm": gnorm.item()})
        print(trace[-1])
    save_file({n: p.detach().clone().contiguous() for n, p in lora.items()}, os.path.join(OUT, "lora_final.safetensors"))
    json.dump(PAIRS, open(os.path.join(OUT, "pairs.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    json.dump({"r": 4, "alpha": 8, "targets": ["query", "key", "value", "dense"], "batch": BATCH, "steps": STEPS,
               "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "clip": 1.0, "warmup": 2,
               "schedule": "cosine", "trace": trace}, open(os.path.join(OUT, "trace.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
