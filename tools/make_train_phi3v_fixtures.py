#!/usr/bin/env python3
"""Golden fixtures for the self-knowledge-distillation training step on the tiny Phi-3-vision
(models/kd/phi3v_kd.cpp, models/phi3_decoder, models/clip_vision, models/phi3v), from PyTorch + PEFT.

Regenerate (after tools/make_image_fixtures.py and tools/make_model_fixtures.py; tools/make_fixtures.sh runs
everything), from the repository root with a Python that has torch, transformers, peft, torchvision, pillow:

    python tools/make_train_phi3v_fixtures.py

The model is tests/fixtures/models/tiny_phi3v, loaded into the reference modules of
tools/make_model_fixtures.py: transformers' Phi3Model (the decoder), transformers' CLIPVisionModel (the tower)
and HDProjector (HD glue + projector). They are assembled as Phi3VForCausalLM nests them, so that PEFT sees
the module paths of the real checkpoint: model.layers.<l>.self_attn.qkv_proj, ...,
model.vision_embed_tokens.img_processor.vision_model.encoder.layers.<l>.self_attn.q_proj, ...

The method (xVLM2Vec): teacher T = the model with its adapters off, student S = the same with LoRA; on a
batch of parallel pairs (x_en, x_xx) sharing the pair's image, with the embedding = the final (normed)
hidden state of the last non-pad token,
    L = 1/2 [ MSE(S(x_en), T(x_en)) + MSE(S(x_xx), T(x_en)) ]
and in the image-prefix variant the same two terms on the mean over every position up to and including
the row's last <s> are added and the four terms averaged. The student's tower runs once per step and
serves both sides (autograd sums both sides' gradients into it).

LoRA as PEFT: r 4, alpha 8, dropout 0 (PEFT's dropout draws from torch's RNG), targets qkv_proj, o_proj,
gate_up_proj, down_proj, q_proj, k_proj, v_proj, out_proj (VLM2Vec's) and the tower's fc1, fc2. A from PEFT's default init with a fixed
seed, B random (PEFT starts B at zero, which would leave A without gradient at step 1). The tower's last
layer feeds nothing (features come from hidden state -2): its adapters never get a gradient, and are listed
as "no_grad". AdamW (torch.optim.AdamW: lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01), global-norm
clipping at 1.0, constant learning rate.

Cases:
  text    text-only pairs with padding (batches of 3, cycling over 8 pairs), 10 AdamW steps;
  image   pairs with an image each (batches of 2, cycling over 3 pairs: 2x2, 1x4 and 2x2 crop grids; one
          prompt without <|image_1|>, which gets "<|image_1|> " in front as the embedder does), 10 AdamW steps;
  prefix  the image-prefix variant on the image case's first batch (step 1 only).

Writes tests/fixtures/train/tiny_phi3v/:
  meta.json                  LoRA and optimizer settings, the pairs, and per case: the step-1 loss terms and,
                             for text and image, per step: loss, terms, grad norm before clipping
  lora_init.safetensors      every PEFT adapter tensor before training (PEFT's names)
  grads_<case>.safetensors   the step-1 gradient of every adapter tensor that gets one (before clipping)
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
MODEL = os.path.join(FIX, "models", "tiny_phi3v")
OUT = os.path.join(FIX, "train", "tiny_phi3v")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_image_fixtures import preprocess  # noqa: E402  (the reference Phi-3-V image processor)
from make_model_fixtures import HDProjector, phi3v_prompt_ids  # noqa: E402

torch.manual_seed(0)
torch.set_num_threads(2)

R, ALPHA = 4, 8
# VLM2Vec's targets, plus the tower's MLP (fc1, fc2) so that every adapter slot of the C++ side is exercised.
TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
OPT = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01, "clip": 1.0, "schedule": "constant"}
STEPS = 10
B_SCALE = 0.3  # random B: the student must differ from the teacher enough that the MSE is not all rounding

TEXT_PAIRS = [
    ["Cannot open the file.", "Impossibile aprire il file."],
    ["Permission denied", "Permiso denegado"],
    ["No such file or directory", "Aucun fichier ou dossier de ce type"],
    ["Memory exhausted", "Speicher erschöpft"],
    ["Invalid argument", "Argomento non valido"],
    ["Write error", "Error de escritura"],
    ["The operation was cancelled.", "L'opération a été annulée."],
    ["Unknown system error", "Unbekannter Systemfehler"],
]
TEXT_BATCH = 3
# [en, xx, image (relative to tests/fixtures)]
IMAGE_PAIRS = [
    ["<|image_1|> Represent the given image.", "<|image_1|> Rappresenta l'immagine data.", "images/tiny_50x30.png"],
    ["<|image_1|>\nFind a day-to-day image that looks similar to the provided image.",
     "<|image_1|>\nTrouvez une image du quotidien qui ressemble à l'image fournie.", "images/wide_800x96.png"],
    ["Represent the given image with the following question: What is shown?",
     "Representa la imagen dada con la siguiente pregunta: ¿Qué se muestra?", "images/square_256.png"],
]
IMAGE_BATCH = 2


class ClipHolder(torch.nn.Module):
    """Phi-3-vision's img_processor is a CLIPVisionModel whose tower sits under `vision_model`; recent
    transformers flattened that level away, so it is put back here for PEFT's module paths."""

    def __init__(self, clip):
        super().__init__()
        self.vision_model = clip

    def forward(self, *args, **kwargs):
        return self.vision_model(*args, **kwargs)


class VisionEmbed(HDProjector):
    """HDProjector with its tower registered as `img_processor`, as in Phi-3-vision."""

    def __init__(self, clip, c, hidden):
        super().__init__(ClipHolder(clip), c, hidden)
        self.img_processor = self._modules.pop("clip")

    @property
    def clip(self):
        return self.img_processor


class Phi3VEmbed(torch.nn.Module):
    """Phi3VForCausalLM's nesting (model.layers, model.vision_embed_tokens) without the LM head."""

    def __init__(self, dec, vis):
        super().__init__()
        self.model = dec
        self.model.vision_embed_tokens = vis

    def vision(self, images):
        # images: [(pixel_values of the crops that run, (H, W))] -> projected tokens of each
        return [self.model.vision_embed_tokens(pv, size) for pv, size in images]

    def hidden(self, ids, mask, feats):
        emb = self.model.embed_tokens(ids.clamp(min=0))
        if feats:
            emb = emb.index_put(torch.nonzero(ids < 0, as_tuple=True), torch.cat(feats), accumulate=False)
        return self.model(inputs_embeds=emb, attention_mask=mask).last_hidden_state


def load_model():
    from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3Model

    cfg = json.load(open(os.path.join(MODEL, "config.json")))
    rs = cfg["rope_scaling"]
    pcfg = Phi3Config(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
                      intermediate_size=cfg["intermediate_size"], num_hidden_layers=cfg["num_hidden_layers"],
                      num_attention_heads=cfg["num_attention_heads"], num_key_value_heads=cfg["num_key_value_heads"],
                      max_position_embeddings=cfg["max_position_embeddings"],
                      original_max_position_embeddings=cfg["original_max_position_embeddings"],
                      rms_norm_eps=cfg["rms_norm_eps"], rope_theta=cfg["rope_theta"],
                      rope_scaling={"type": "longrope", "short_factor": rs["short_factor"],
                                    "long_factor": rs["long_factor"]},
                      pad_token_id=cfg["pad_token_id"], hidden_act="silu", attn_implementation="eager")
    dec = Phi3Model(pcfg)
    vc = cfg["img_processor"]["vision_config"]
    clip = CLIPVisionModel(CLIPVisionConfig(**vc, attn_implementation="eager"))
    vis = VisionEmbed(clip, cfg["img_processor"]["image_dim_out"], cfg["hidden_size"])
    st = load_file(os.path.join(MODEL, "model.safetensors"))
    vpre, cpre = "model.vision_embed_tokens.", "model.vision_embed_tokens.img_processor.vision_model."
    dec_sd = {k[len("model."):]: v for k, v in st.items() if k.startswith("model.") and not k.startswith(vpre)}
    clip_sd = {k[len(cpre):]: v for k, v in st.items() if k.startswith(cpre)}
    vis_sd = {k[len(vpre):]: v for k, v in st.items() if k.startswith(vpre) and not k.startswith(cpre)}
    res = dec.load_state_dict(dec_sd, strict=False)
    assert not res.unexpected_keys and all("rotary" in k for k in res.missing_keys), res
    res = clip.load_state_dict(clip_sd, strict=False)
    assert not res.unexpected_keys and all("position_ids" in k for k in res.missing_keys), res
    glue = {k: v for k, v in vis.state_dict().items() if not k.startswith("img_processor.")}
    assert set(glue) == set(vis_sd), (sorted(glue), sorted(vis_sd))
    vis.load_state_dict({**{"img_processor." + k: v for k, v in vis.img_processor.state_dict().items()}, **vis_sd})
    return Phi3VEmbed(dec, vis).eval(), cfg["pad_token_id"]


class Batch:
    """Both sides of a batch of pairs: padded ids, masks, last-token and prefix positions, the images."""

    def __init__(self, tok, pairs, pad_id, bos_id):
        self.images, ntok = [], []
        for p in pairs:
            if len(p) > 2:
                _, pv, size, n = preprocess(Image.open(os.path.join(FIX, p[2])), 4)
                self.images.append((pv[: 1 + (size[0] // 336) * (size[1] // 336)], size))
                ntok.append([n])
            else:
                ntok.append([])
        self.sides = []
        for side in range(2):
            rows = []
            for p, n in zip(pairs, ntok):
                text = p[side]
                if n and "<|image_1|>" not in text:
                    text = "<|image_1|> " + text
                rows.append(phi3v_prompt_ids(tok, text, n))
            T = max(len(r) for r in rows)
            ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            prefix = torch.zeros((len(rows), T))
            for b, r in enumerate(rows):
                ids[b, : len(r)] = torch.tensor(r)
                mask[b, : len(r)] = 1
                last_bos = max(i for i, t in enumerate(r) if t == bos_id)
                prefix[b, : last_bos + 1] = 1
            self.sides.append((ids, mask, prefix))


def pooled(model, side, feats):
    ids, mask, prefix = side
    h = model.hidden(ids, mask, feats)
    last = h[torch.arange(ids.shape[0]), mask.sum(1) - 1]
    pre = (h * prefix.unsqueeze(-1)).sum(1) / prefix.sum(1, keepdim=True)
    return last, pre


def kd_loss(model, batch, image_prefix):
    mse = torch.nn.functional.mse_loss
    with torch.no_grad(), model.disable_adapter():
        t_en, t_pre = pooled(model.base_model.model, batch.sides[0], model.base_model.model.vision(batch.images))
    inner = model.base_model.model
    feats = inner.vision(batch.images)  # one tower pass for both sides
    s_en, sp_en = pooled(inner, batch.sides[0], feats)
    s_xx, sp_xx = pooled(inner, batch.sides[1], feats)
    terms = {"loss_en": mse(s_en, t_en), "loss_xx": mse(s_xx, t_en)}
    if image_prefix:
        terms["prefix_en"] = mse(sp_en, t_pre)
        terms["prefix_xx"] = mse(sp_xx, t_pre)
    loss = sum(terms.values()) / len(terms)
    return loss, {"loss": loss.item(), **{k: v.item() for k, v in terms.items()},
                  "rel_diff": ((s_en - t_en).norm() / t_en.norm()).item()}


def run_case(name, pairs, batch_size, steps, image_prefix, tok, pad_id, bos_id, init):
    from peft import LoraConfig, get_peft_model

    base, _ = load_model()
    model = get_peft_model(base, LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=0.0, bias="none",
                                            target_modules=TARGETS))
    model.eval()
    lora = {n.replace(".default.", "."): p for n, p in model.named_parameters() if p.requires_grad}
    if init is None:  # the first case makes the initial adapters; the others start from the same
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for n, p in lora.items():
                if "lora_B" in n:
                    p.copy_(B_SCALE * torch.randn(p.shape, generator=g))
        init = {n: p.detach().clone().contiguous() for n, p in lora.items()}
    else:
        with torch.no_grad():
            for n, p in lora.items():
                p.copy_(init[n])
    opt = torch.optim.AdamW(list(lora.values()), lr=OPT["lr"], betas=tuple(OPT["betas"]), eps=OPT["eps"],
                            weight_decay=OPT["weight_decay"])
    trace, no_grad = [], []
    for step in range(steps):
        batch = Batch(tok, [pairs[(step * batch_size + i) % len(pairs)] for i in range(batch_size)], pad_id, bos_id)
        loss, rec = kd_loss(model, batch, image_prefix)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = {n: p.grad.detach().clone().contiguous() for n, p in lora.items() if p.grad is not None}
            no_grad = sorted(n for n, p in lora.items() if p.grad is None)
            save_file(grads, os.path.join(OUT, f"grads_{name}.safetensors"))
        rec["grad_norm"] = torch.nn.utils.clip_grad_norm_(list(lora.values()), OPT["clip"]).item()
        opt.step()
        trace.append({"step": step + 1, **rec})
        print(name, trace[-1])
    return init, trace, no_grad


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    _, pad_id = load_model()
    bos_id = tok.token_to_id("<s>")
    init, text_trace, no_grad = run_case("text", TEXT_PAIRS, TEXT_BATCH, STEPS, False, tok, pad_id, bos_id, None)
    _, image_trace, no_grad_img = run_case("image", IMAGE_PAIRS, IMAGE_BATCH, STEPS, False, tok, pad_id, bos_id, init)
    _, prefix_trace, _ = run_case("prefix", IMAGE_PAIRS, IMAGE_BATCH, 1, True, tok, pad_id, bos_id, init)
    save_file(init, os.path.join(OUT, "lora_init.safetensors"))
    json.dump({"r": R, "alpha": ALPHA, "targets": TARGETS, **OPT, "steps": STEPS, "pad_id": pad_id, "bos_id": bos_id,
               "no_grad": no_grad_img,
               "cases": {
                   "text": {"pairs": TEXT_PAIRS, "batch": TEXT_BATCH, "image_prefix": False, "trace": text_trace,
                            "no_grad": no_grad},
                   "image": {"pairs": IMAGE_PAIRS, "batch": IMAGE_BATCH, "image_prefix": False, "trace": image_trace,
                             "no_grad": no_grad_img},
                   "prefix": {"pairs": IMAGE_PAIRS, "batch": IMAGE_BATCH, "image_prefix": True, "trace": prefix_trace,
                              "no_grad": no_grad_img},
               }}, open(os.path.join(OUT, "meta.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    sizes = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({sizes / 1e6:.2f} MB)")


if __name__ == "__main__":
    np.set_printoptions(precision=6)
    main()
