#!/usr/bin/env python3
"""Golden fixtures for the model forward passes (models/bert, models/phi3v, models/embedder).

Regenerate (from the repository root, with a Python that has torch, transformers, tokenizers,
sentence-transformers, torchvision and pillow; tools/make_fixtures.sh does all of it):

    bash scripts/prepare-minilm.sh build/models/all-MiniLM-L6-v2
    python tools/make_model_fixtures.py build/models/all-MiniLM-L6-v2

It needs the tokenizer and image fixtures first (tools/make_tokenizer_fixtures.py,
tools/make_image_fixtures.py). It writes under tests/fixtures/models/:

  tiny_bert/          a random BERT (transformers BertModel) with a WordPiece tokenizer trained here;
  tiny_bert_golden/   sentences.json and embeddings.npy from sentence-transformers (Transformer + mean
                      Pooling) on that model;
  tiny_phi3v/         a random Phi-3-vision model in the Phi3V layout (model_type phi3_v): the decoder is
                      transformers' Phi3Model (su/longrope RoPE with a small original_max_position_embeddings,
                      so that image inputs take the long factors and text the short ones), the tower is
                      transformers' CLIPVisionModel, and the HD glue and projector are written below from a
                      reading of VLM2Vec's image_embedding_phi3_v.py; tokenizer = the BPE fixture;
  tiny_phi3v_golden/  cases.json (batches of {text, image}), for each batch the prompt ids (ids_<k>.npy,
                      right-padded with the pad id), and the pooled embeddings (emb_<k>.npy; last non-pad
                      token of the final normed hidden state); image_tokens_0.npy: the projected features of
                      the first image, to localise a mismatch;
  minilm_golden/      >= 200 real multilingual sentences (gettext catalogs) and their all-MiniLM-L6-v2
                      embeddings from sentence-transformers (normalised, as the model's modules.json says).
"""
import json
import os
import random
import re
import sys

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
OUT = os.path.join(FIX, "models")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_image_fixtures import preprocess  # noqa: E402  (the reference Phi-3-V image processor)

torch.manual_seed(0)
torch.set_num_threads(2)
SEED = 1234


def save_safetensors(path, tensors):
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().float() for k, v in tensors.items()}, path, metadata={"format": "pt"})


def reinit_(module, gen):
    """Weights with O(1) activations, so that a wrong bias, norm or scale shows in the output."""
    for name, p in module.named_parameters():
        with torch.no_grad():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))
            elif "norm" in name.lower() or "layernorm" in name.lower():
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def catalog_sentences(n_per_lang, seed):
    """Real sentences: English msgids and their translations from the tokenizer fixture's list."""
    sents = [json.loads(l) for l in open(os.path.join(FIX, "tokenizer", "sentences.jsonl"), encoding="utf-8")]
    sents = [s for s in sents if 8 <= len(s) <= 200 and "\n" not in s and "%" not in s]
    rng = random.Random(seed)
    rng.shuffle(sents)
    return sents[:n_per_lang]


# ------------------------------------------------------------------------------------------------- BERT

def make_tiny_bert():
    from sentence_transformers import SentenceTransformer, models
    from tokenizers import models as tmodels, normalizers, pre_tokenizers, processors, decoders, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = os.path.join(OUT, "tiny_bert")
    os.makedirs(out, exist_ok=True)
    texts = catalog_sentences(100000, SEED + 1)
    tok = Tokenizer(tmodels.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=1200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(texts, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(out)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128, hidden_act="gelu", layer_norm_eps=1e-12)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    reinit_(model, torch.Generator().manual_seed(SEED + 2))
    model.save_pretrained(out, safe_serialization=True)
    for extra in ["training_args.bin", "vocab.txt"]:
        if os.path.exists(os.path.join(out, extra)):
            os.remove(os.path.join(out, extra))
    json.dump({"max_seq_length": 128, "do_lower_case": False}, open(os.path.join(out, "sentence_bert_config.json"), "w"))

    st = SentenceTransformer(modules=[models.Transformer(out, max_seq_length=128), models.Pooling(64, "mean")],
                             device="cpu")
    sents = catalog_sentences(40, SEED + 3) + ["", "a", "Ünïcödé àccents — ok", "tabs\tand  spaces"]
    emb = st.encode(sents, batch_size=16, convert_to_numpy=True)
    g = os.path.join(OUT, "tiny_bert_golden")
    os.makedirs(g, exist_ok=True)
    json.dump(sents, open(os.path.join(g, "sentences.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=0)
    np.save(os.path.join(g, "embeddings.npy"), emb.astype(np.float32))
    print(f"tiny_bert: {len(sents)} sentences, dim {emb.shape[1]}")


# ---------------------------------------------------------------------------------------------- Phi-3-V

class HDProjector(torch.nn.Module):
    """Phi-3-vision's HD glue and projector, written from a reading of VLM2Vec's image_embedding_phi3_v.py."""

    def __init__(self, clip, c, hidden):
        super().__init__()
        self.clip = clip
        self.c = c
        self.glb_GN = torch.nn.Parameter(torch.zeros(1, 1, 4 * c))
        self.sub_GN = torch.nn.Parameter(torch.zeros(1, 1, 1, 4 * c))
        self.img_projection = torch.nn.Sequential(torch.nn.Linear(4 * c, hidden), torch.nn.GELU(),
                                                  torch.nn.Linear(hidden, hidden))

    def merge(self, feats, h_crop, w_crop):
        # feats (N, 576, C) -> (1, h_crop*12, w_crop*12, 4C)
        n, l, c = feats.shape
        g = int(l ** 0.5)
        x = feats.reshape(n, g, g, c).reshape(n, g // 2, 2, g // 2, 2, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(n, -1, 4 * c).reshape(1, h_crop, w_crop, g // 2, g // 2, 4 * c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(1, h_crop * g // 2, w_crop * g // 2, 4 * c)

    def newline(self, x):
        n, h, w, d = x.shape
        return torch.cat([x, self.sub_GN.expand(n, h, -1, -1)], dim=2).reshape(n, -1, d)

    def forward(self, pixel_values, size):
        # pixel_values (num_crops+1, 3, 336, 336); size (H, W) of the HD image
        hs = self.clip(pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        h_crop, w_crop = size[0] // 336, size[1] // 336
        glb = self.newline(self.merge(hs[:1], 1, 1))[0]
        sub = self.newline(self.merge(hs[1:1 + h_crop * w_crop], h_crop, w_crop))[0]
        return self.img_projection(torch.cat([sub, self.glb_GN.squeeze(0), glb]))


def phi3v_prompt_ids(tok, text, num_tokens):
    """The Phi-3-V processor's text side: each chunk between <|image_N|> tags is tokenized on its own
    (with its BOS), and -N repeated num_img_tokens times goes at each tag."""
    pattern = r"<\|image_\d+\|>"
    chunks = [tok.encode(c).ids for c in re.split(pattern, text)]
    tags = [int(t.split("|")[1].split("_")[-1]) for t in re.findall(pattern, text)]
    ids = []
    for i, c in enumerate(chunks):
        ids.extend(c)
        if i < len(tags):
            ids.extend([-tags[i]] * num_tokens[tags[i] - 1])
    return ids


def make_tiny_phi3v():
    from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3Config, Phi3Model

    out = os.path.join(OUT, "tiny_phi3v")
    os.makedirs(out, exist_ok=True)
    tok_path = os.path.join(FIX, "tokenizer", "bpe_llama", "tokenizer.json")
    tok = Tokenizer.from_file(tok_path)
    V = tok.get_vocab_size()
    hidden, inter, layers, heads = 64, 128, 2, 4
    head_dim = hidden // heads
    short = [1.0 + 0.05 * i for i in range(head_dim // 2)]
    long_ = [1.0 + 0.9 * i for i in range(head_dim // 2)]
    orig_max, max_pos, pad_id = 64, 4096, 0
    pcfg = Phi3Config(vocab_size=V, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_pos,
                      original_max_position_embeddings=orig_max, rms_norm_eps=1e-5, rope_theta=10000.0,
                      rope_scaling={"type": "longrope", "short_factor": short, "long_factor": long_},
                      pad_token_id=pad_id, hidden_act="silu", attn_implementation="eager")
    dec = Phi3Model(pcfg).eval()
    vc = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=336,
              patch_size=14, layer_norm_eps=1e-5, hidden_act="quick_gelu")
    clip = CLIPVisionModel(CLIPVisionConfig(**vc, attn_implementation="eager")).eval()
    vis = HDProjector(clip, 32, hidden).eval()
    gen = torch.Generator().manual_seed(SEED + 4)
    reinit_(dec, gen)
    reinit_(vis, gen)

    tensors = {"model." + k: v for k, v in dec.state_dict().items() if not k.startswith("rotary")}
    for k, v in clip.state_dict().items():
        if "position_ids" in k:
            continue
        # Phi-3-vision checkpoints name the tower img_processor.vision_model.* (CLIPVisionModel's layout);
        # newer transformers drop the vision_model level from the state dict.
        k = k if k.startswith("vision_model.") else "vision_model." + k
        tensors["model.vision_embed_tokens.img_processor." + k] = v
    tensors["model.vision_embed_tokens.glb_GN"] = vis.glb_GN
    tensors["model.vision_embed_tokens.sub_GN"] = vis.sub_GN
    for k, v in vis.img_projection.state_dict().items():
        tensors["model.vision_embed_tokens.img_projection." + k] = v
    save_safetensors(os.path.join(out, "model.safetensors"), tensors)
    cfg = {"architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v", "vocab_size": V, "hidden_size": hidden,
           "intermediate_size": inter, "num_hidden_layers": layers, "num_attention_heads": heads,
           "num_key_value_heads": heads, "hidden_act": "silu", "max_position_embeddings": max_pos,
           "original_max_position_embeddings": orig_max, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "rope_scaling": {"type": "su", "short_factor": short, "long_factor": long_},
           "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": pad_id, "tie_word_embeddings": False,
           "img_processor": {"image_dim_out": 32, "model_name": "openai/clip-vit-large-patch14-336",
                             "name": "clip_vision_model", "num_img_tokens": 144, "vision_config": vc},
           "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb", "projection_cls": "mlp",
                          "use_hd_transform": True, "with_learnable_separator": True}}
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=2)
    pp = {"image_processor_type": "Phi3VImageProcessor", "num_crops": 4, "do_convert_rgb": True,
          "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    json.dump(pp, open(os.path.join(out, "preprocessor_config.json"), "w"), indent=2)
    with open(tok_path, "rb") as src, open(os.path.join(out, "tokenizer.json"), "wb") as dst:
        dst.write(src.read())

    # Cases: text only (short: short RoPE factors), image only and image + text (long factors), a mixed batch.
    texts = catalog_sentences(6, SEED + 5)
    img = lambda n: os.path.join("images", n)  # relative to tests/fixtures
    batches = [
        [{"text": t} for t in texts[:4]],
        [{"text": "<|image_1|> Represent the given image.", "image": img("landscape_300x200.png")},
         {"text": "<|image_1|> Represent the given image.", "image": img("portrait_150x260.png")}],
        [{"text": "<|image_1|> Represent the given image with the following question: " + texts[4],
          "image": img("square_256.png")},
         {"text": texts[5]},
         {"text": "<|image_1|>\nFind a day-to-day image that looks similar to the provided image.",
          "image": img("wide_800x96.png")}],
    ]
    g = os.path.join(OUT, "tiny_phi3v_golden")
    os.makedirs(g, exist_ok=True)
    first_image_tokens = None
    with torch.no_grad():
        for k, batch in enumerate(batches):
            rows, feats = [], []
            for item in batch:
                ntok = []
                if "image" in item:
                    _, pv, size, n = preprocess(Image.open(os.path.join(FIX, item["image"])), 4)
                    f = vis(pv[: 1 + (size[0] // 336) * (size[1] // 336)], size)
                    assert f.shape[0] == n
                    feats.append(f)
                    ntok.append(n)
                    if first_image_tokens is None:
                        first_image_tokens = f
                rows.append(phi3v_prompt_ids(tok, item["text"], ntok))
            T = max(len(r) for r in rows)
            ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), T), dtype=torch.long)
            for b, r in enumerate(rows):
                ids[b, : len(r)] = torch.tensor(r)
                mask[b, : len(r)] = 1
            emb = dec.embed_tokens(ids.clamp(min=0))
            pos = torch.nonzero(ids < 0, as_tuple=True)
            if feats:
                emb = emb.index_put(pos, torch.cat(feats), accumulate=False)
            hs = dec(inputs_embeds=emb, attention_mask=mask).last_hidden_state
            last = mask.sum(1) - 1
            pooled = hs[torch.arange(len(rows)), last]
            np.save(os.path.join(g, f"ids_{k}.npy"), ids.numpy().astype(np.int64))
            np.save(os.path.join(g, f"emb_{k}.npy"), pooled.numpy().astype(np.float32))
            print(f"tiny_phi3v batch {k}: {len(rows)} rows, T = {T}")
    np.save(os.path.join(g, "image_tokens_0.npy"), first_image_tokens.numpy().astype(np.float32))
    json.dump({"pad_id": pad_id, "batches": batches}, open(os.path.join(g, "cases.json"), "w", encoding="utf-8"),
              ensure_ascii=False, indent=1)


# ------------------------------------------------------------------------------------------------ MiniLM

def make_minilm(minilm_dir):
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(minilm_dir, device="cpu")
    sents = catalog_sentences(240, SEED + 6)
    emb = st.encode(sents, batch_size=32, convert_to_numpy=True)
    g = os.path.join(OUT, "minilm_golden")
    os.makedirs(g, exist_ok=True)
    json.dump(sents, open(os.path.join(g, "sentences.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=0)
    np.save(os.path.join(g, "embeddings.npy"), emb.astype(np.float32))
    print(f"minilm: {len(sents)} sentences, dim {emb.shape[1]}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_model_fixtures.py MINILM_DIR")
    make_tiny_bert()
    make_tiny_phi3v()
    make_minilm(sys.argv[1])
