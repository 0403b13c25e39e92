#!/usr/bin/env python3
"""The peer of `bench_image_embed --mode tower`: the same images through the Hugging Face CLIP image processor
and a PyTorch forward of the same tower (CLIPVisionModel, the weights of a phi3_v model folder's
`model.vision_embed_tokens.img_processor.vision_model.*`), to the hidden state Phi-3-vision takes (layer -2,
CLS dropped). Prints one JSON line {images_per_s, ...}.

    clip_tower_torch.py MODEL_DIR LIST.txt [--backend torchvision|pil] [--threads N] [--batch-size B] [--repeat R]
                        [--dump OUT.npy]

--backend: transformers' CLIPImageProcessor (torchvision resize, the default a user gets) or CLIPImageProcessorPil
(PIL's bicubic resize, what xvlm2vec reproduces bit for bit).
"""
import argparse
import json
import resource
import time

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPImageProcessor, CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

PREFIX = "model.vision_embed_tokens.img_processor.vision_model."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("list")
    ap.add_argument("--backend", choices=["torchvision", "pil"], default="torchvision")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dump", default="")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = json.load(open(f"{a.model_dir}/config.json"))
    vc = dict(cfg["img_processor"]["vision_config"])
    layer = cfg["img_processor"].get("layer_idx", -2)
    model = CLIPVisionModel(CLIPVisionConfig(**vc, attn_implementation="sdpa")).eval()
    w = load_file(f"{a.model_dir}/model.safetensors")
    # CLIPVisionModel's own names are with or without the "vision_model." level, by transformers version.
    inner = "vision_model." if any(k.startswith("vision_model.") for k in model.state_dict()) else ""
    sd = {inner + k[len(PREFIX):]: v.float() for k, v in w.items() if k.startswith(PREFIX)}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # The last layer and the post-LayerNorm do not feed layer -2 (a checkpoint may leave them out).
    assert not unexpected and all("post_layernorm" in k or f"layers.{vc['num_hidden_layers'] - 1}." in k
                                  for k in missing), (missing, unexpected)
    size = vc.get("image_size", 336)
    proc = (CLIPImageProcessorPil if a.backend == "pil" else CLIPImageProcessor)(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    paths = [p for p in open(a.list).read().splitlines() if p]

    def run(batch, dump=False):
        images = [Image.open(p).convert("RGB") for p in batch]
        px = proc(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = model(pixel_values=px, output_hidden_states=True).hidden_states[layer][:, 1:]
        if dump and a.dump:
            np.save(a.dump, out.float().numpy())

    t = time.perf_counter()
    run(paths[:a.batch_size], dump=True)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(a.repeat):
        for b in range(0, len(paths), a.batch_size):
            run(paths[b:b + a.batch_size])
    s = time.perf_counter() - t
    print(json.dumps({"impl": "transformers", "mode": "tower", "processor": type(proc).__name__,
                      "images": len(paths), "repeat": a.repeat, "batch_size": a.batch_size,
                      "threads": torch.get_num_threads(), "seconds": s, "warmup_seconds": warm,
                      "images_per_s": len(paths) * a.repeat / s,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
