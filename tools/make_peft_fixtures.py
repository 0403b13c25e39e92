#!/usr/bin/env python3
"""Golden fixtures for LoRA adapter import/export (KdModel::load_adapter, save_adapter, save_merged) on the
tiny BERT, from PyTorch + PEFT.

Regenerate (from the repository root, after tools/make_model_fixtures.py; tools/make_fixtures.sh runs
everything):

    python tools/make_peft_fixtures.py

A LoRA (r 4, alpha 16, dropout 0.1, targets query, key, value, dense) is put on transformers' BertModel
with peft.get_peft_model; A keeps PEFT's Kaiming-uniform init and B is set to non-zero random values (PEFT
starts it at zero, which would make the adapter a no-op and the test blind). The adapter is saved with
PEFT's own save_pretrained. Embeddings are sentence-transformers-style mean pooling over the real tokens,
in eval mode (no dropout), once through the PeftModel and once through merge_and_unload()'s plain model.

Writes tests/fixtures/peft/:
  tiny_bert_adapter/   adapter_model.safetensors + adapter_config.json exactly as PEFT writes them
                       (base_model_name_or_path is the repository-relative model folder)
  sentences.json       the sentences embedded
  peft_embeddings.npy  (N, 64) float32 through the PeftModel
  merged_embeddings.npy  (N, 64) float32 through the merged model
"""
import json
import os

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, BertModel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_REL = "tests/fixtures/models/tiny_bert"
OUT = os.path.join(REPO, "tests", "fixtures", "peft")

SENTENCES = [
    "Cannot open the file.",
    "Impossibile aprire il file.",
    "Permission denied",
    "Permiso denegado",
    "Aucun fichier ou dossier de ce type",
    "Speicher erschöpft",
    "The operation was cancelled.",
    "Minimum allowed width of the column",
    "Petición de procesamiento en progreso",
    "elimina i branch che ne tracciano uno remoto ma non più presenti sul remoto",
]


def embed(model, tok, texts):
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                  token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return ((h * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy().astype(np.float32)


def main():
    os.chdir(REPO)  # PEFT records the path it was given as base_model_name_or_path: keep it relative
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(MODEL_REL)
    base = BertModel.from_pretrained(MODEL_REL, add_pooling_layer=False, attn_implementation="eager").eval()
    cfg = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.1, bias="none",
                     target_modules=["query", "key", "value", "dense"])
    model = get_peft_model(base, cfg)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.eval()
    adapter = os.path.join(OUT, "tiny_bert_adapter")
    model.save_pretrained(adapter)
    readme = os.path.join(adapter, "README.md")  # a model-card template, not part of the format
    if os.path.exists(readme):
        os.remove(readme)
    peft_emb = embed(model, tok, SENTENCES)
    merged = model.merge_and_unload().eval()
    merged_emb = embed(merged, tok, SENTENCES)
    np.save(os.path.join(OUT, "peft_embeddings.npy"), peft_emb)
    np.save(os.path.join(OUT, "merged_embeddings.npy"), merged_emb)
    with open(os.path.join(OUT, "sentences.json"), "w", encoding="utf-8") as f:
        json.dump(SENTENCES, f, ensure_ascii=False, indent=1)
    base_emb = embed(BertModel.from_pretrained(MODEL_REL, add_pooling_layer=False,
                                               attn_implementation="eager").eval(), tok, SENTENCES)
    print("adapter changes embeddings by", float(np.abs(peft_emb - base_emb).max()),
          "; peft vs merged", float(np.abs(peft_emb - merged_emb).max()))


if __name__ == "__main__":
    main()
