#!/usr/bin/env python3
"""Golden fixtures for image decoding (image/decode.cpp) and the Phi-3-vision image processor
(image/phi3v_processor.cpp), made with PIL, torchvision and torch.

Regenerate (from the repository root, with a Python that has numpy, Pillow, torch and torchvision):

    python tools/make_image_fixtures.py

It rewrites tests/fixtures/images/ from scratch. Everything is deterministic (fixed seeds, no clocks).

The reference processor below is written from a reading of VLM2Vec's
src/vlm_backbone/phi3_v/image_processing_phi3_v.py (which mirrors microsoft/Phi-3.5-vision-instruct's
image_processing_phi3_v.py): HD_transform (transpose portrait images, pick `scale` by the while loop,
torchvision resize of the PIL image = PIL BILINEAR with antialiasing, white padding_336, transpose back),
ToTensor + Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD), a global view by
torch.nn.functional.interpolate(bicubic, 336x336), the 336x336 crops in row-major order after it, zero
crops up to num_crops + 1, image_sizes = (H, W) of the HD image and
num_img_tokens = (h//336 * w//336 + 1) * 144 + 1 + (h//336 + 1) * 12.
Images enter it as `Image.open(path).convert("RGB")`: alpha is dropped, not composited.

What it writes under tests/fixtures/images/:
  *.png, *.jpg          small deterministic test images (smooth gradients plus noise, so resampling errors
                        show): RGB PNGs in several aspect ratios (landscape, portrait, square, tiny, a wide
                        panorama), grayscale (8-bit, 4-bit, 1-bit, 16-bit), palette (8-bit with tRNS, 4-bit),
                        RGBA, LA (8 and 16-bit), 16-bit RGB, an Adam7-interlaced PNG, and JPEGs (4:2:0, 4:2:2, 4:4:4, progressive,
                        grayscale, CMYK).
  decode_<name>.npy     uint8 (H, W, 3): np.array(Image.open(path).convert("RGB")), for the small images.
  lut_normalize.npy     f32 (3, 256): ToTensor + Normalize of every byte value per channel (the crops are
                        exactly this table applied to the HD image).
  pv_<case>.npy         f32 (num_crops + 1, 3, len(rows), len(cols)): the reference pixel_values at the
                        sample grid rows x cols of every crop (the full tensors are 2.7-6.8 MB each).
  expected.json         {"decode": [{file, width, height, npy | fnv1a64}],
                         "resize": [{file, width, height, filter, fnv1a64}]  (PIL Image.resize),
                         "normalize": {mean, std, npy},
                         "grid": [sample rows/cols within a 336x336 crop],
                         "processor": [{case, file, num_crops, hd_height, hd_width, num_img_tokens,
                                        pixel_values_shape, hd_fnv1a64, npy[, pre_resize]}]}
                        (pre_resize [w, h]: the image goes through PIL's Image.resize((w, h)) first, as
                        VLM2Vec's data pipeline does with (1344, 1344))
                        fnv1a64 is the 64-bit FNV-1a hash (hex) of the (H, W, 3) uint8 bytes: for the
                        decoded RGB of the larger PNGs and for the HD-transformed image (resize + pad),
                        which must match bit for bit.
  preprocessor_config.json  the Phi-3.5-vision preprocessor config layout (num_crops, image_mean, image_std).
"""
import io
import json
import math
import os
import shutil
import struct
import warnings
import zlib

import numpy as np
import torch
import torchvision
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "images")
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# Sample grid inside each 336x336 crop: the borders (where clamping and padding errors show) and a stride.
GRID = sorted(set([0, 1, 2, 3] + list(range(5, 336, 13)) + [332, 333, 334, 335]))


# ---------------------------------------------------------------------------------------------------------
# Test images

def smooth_rgb(w, h, seed, noise=10):
    """Smooth gradients and waves plus uniform noise, uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        f1, f2, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi)
        v = (128 + 70 * np.sin(2 * math.pi * f1 * x / w + ph) * np.cos(2 * math.pi * f2 * y / h)
             + 50 * (x / max(w - 1, 1) - y / max(h - 1, 1)))
        chans.append(v)
    a = np.stack(chans, axis=-1) + rng.integers(-noise, noise + 1, size=(h, w, 3))
    # A few hard edges (a bright box, a dark stripe): ringing and clipping show up there.
    a[h // 4: h // 4 + max(h // 5, 1), w // 3: w // 3 + max(w // 6, 1)] = [250, 245, 5]
    a[:, (2 * w) // 3: (2 * w) // 3 + max(w // 40, 1)] = 2
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


def png_chunk(tag, data):
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def raw_png(w, h, color_type, bit_depth, rows, interlaced=False):
    """A PNG written by hand, for layouts PIL cannot write (16-bit RGB, Adam7). `rows(x0, dx, y0, dy)` gives
    the raw scanline bytes of a (sub)image; filter type 0 everywhere."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 1 if interlaced else 0)
    raw = b""
    passes = ([(0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2), (0, 1, 1, 2)]
              if interlaced else [(0, 1, 0, 1)])
    for x0, dx, y0, dy in passes:
        for line in rows(x0, dx, y0, dy):
            raw += b"\x00" + line
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


def write_images():
    files = {}

    def save(name, im, **kw):
        p = os.path.join(OUT, name)
        im.save(p, **kw)
        files[name] = p

    # RGB PNGs for the processor: landscape (needs padding), portrait (transpose), square, tiny, panorama.
    save("landscape_300x200.png", Image.fromarray(smooth_rgb(300, 200, 1)), optimize=True)
    save("portrait_150x260.png", Image.fromarray(smooth_rgb(150, 260, 2)), optimize=True)
    save("square_256.png", Image.fromarray(smooth_rgb(256, 256, 3)), optimize=True)
    save("tiny_50x30.png", Image.fromarray(smooth_rgb(50, 30, 4)), optimize=True)
    save("wide_800x96.png", Image.fromarray(smooth_rgb(800, 96, 5, noise=6)), optimize=True)

    # Grayscale: 8-bit, 1-bit, 16-bit (PIL mode I;16; its RGB conversion clips values above 255).
    g = smooth_rgb(97, 61, 6)[..., 1]
    save("gray_97x61.png", Image.fromarray(g))
    save("gray1_45x33.png", Image.fromarray(smooth_rgb(45, 33, 7)[..., 0] > 120).convert("1"))
    g16 = (smooth_rgb(64, 48, 8)[..., 2].astype(np.uint16) * 3 + np.arange(48)[:, None] * 7).astype(np.uint16)
    g16[:10] //= 3  # keep part of it below 256, where the clip is the identity
    save("gray16_64x48.png", Image.fromarray(g16))  # uint16 -> mode I;16

    # Palette: 8-bit with a tRNS chunk (ignored by convert("RGB")), and a 4-bit one.
    src = Image.fromarray(smooth_rgb(100, 80, 9))
    pal = src.quantize(colors=200, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    save("palette_100x80.png", pal, transparency=bytes(range(0, 200)))
    pal4 = Image.fromarray(smooth_rgb(70, 50, 10)).quantize(colors=16, dither=Image.Dither.NONE)
    save("palette4_70x50.png", pal4, bits=4)

    # Alpha: RGBA and LA, with varying alpha (dropped, not composited).
    rgba = np.concatenate([smooth_rgb(130, 110, 11), smooth_rgb(130, 110, 12)[..., :1]], axis=-1)
    save("rgba_130x110.png", Image.fromarray(rgba, "RGBA"))
    la = np.stack([smooth_rgb(60, 40, 13)[..., 0], smooth_rgb(60, 40, 14)[..., 1]], axis=-1)
    save("la_60x40.png", Image.fromarray(la, "LA"))

    # 16-bit RGB (PIL keeps the high byte) and an Adam7-interlaced 8-bit RGB, written by hand.
    rgb16 = (smooth_rgb(40, 30, 15).astype(np.uint16) * 257 + np.random.default_rng(16).integers(0, 257, (30, 40, 3))
             ).astype(">u2")
    data = raw_png(40, 30, 2, 16, lambda x0, dx, y0, dy: [rgb16[y, x0::dx].tobytes() for y in range(y0, 30, dy)])
    open(os.path.join(OUT, "rgb16_40x30.png"), "wb").write(data)
    files["rgb16_40x30.png"] = os.path.join(OUT, "rgb16_40x30.png")
    ga16 = (smooth_rgb(24, 18, 23)[..., :2].astype(np.uint16) * 251 + 7).astype(">u2")
    data = raw_png(24, 18, 4, 16, lambda x0, dx, y0, dy: [ga16[y, x0::dx].tobytes() for y in range(y0, 18, dy)])
    open(os.path.join(OUT, "la16_24x18.png"), "wb").write(data)
    files["la16_24x18.png"] = os.path.join(OUT, "la16_24x18.png")
    g4 = smooth_rgb(27, 19, 24)[..., 0] >> 4  # 4-bit gray, two pixels per byte, odd width

    def pack4(row):
        row = np.concatenate([row, np.zeros(len(row) % 2, np.uint8)])
        return ((row[0::2] << 4) | row[1::2]).astype(np.uint8).tobytes()
    data = raw_png(27, 19, 0, 4, lambda x0, dx, y0, dy: [pack4(g4[y, x0::dx]) for y in range(y0, 19, dy)])
    open(os.path.join(OUT, "gray4_27x19.png"), "wb").write(data)
    files["gray4_27x19.png"] = os.path.join(OUT, "gray4_27x19.png")
    il = smooth_rgb(37, 29, 17)
    data = raw_png(37, 29, 2, 8, lambda x0, dx, y0, dy: [il[y, x0::dx].tobytes() for y in range(y0, 29, dy)
                                                           if il[y, x0::dx].size], interlaced=True)
    open(os.path.join(OUT, "interlaced_37x29.png"), "wb").write(data)
    files["interlaced_37x29.png"] = os.path.join(OUT, "interlaced_37x29.png")

    # JPEGs: odd sizes so the chroma edge handling shows; PIL's default 4:2:0, 4:2:2, 4:4:4, progressive,
    # grayscale, CMYK (Adobe-inverted, as PIL writes and reads it).
    j = Image.fromarray(smooth_rgb(163, 101, 18))
    save("rgb420_163x101.jpg", j, quality=90)
    save("rgb422_163x101.jpg", j, quality=90, subsampling=1)
    save("rgb444_163x101.jpg", j, quality=90, subsampling=0)
    save("progressive_121x87.jpg", Image.fromarray(smooth_rgb(121, 87, 19)), quality=85, progressive=True)
    save("gray_75x53.jpg", Image.fromarray(smooth_rgb(75, 53, 20)[..., 0]), quality=90)
    cmyk = np.concatenate([smooth_rgb(66, 44, 21), smooth_rgb(66, 44, 22)[..., :1] // 2], axis=-1)
    save("cmyk_66x44.jpg", Image.fromarray(cmyk, "CMYK"), quality=92)
    return files


# ---------------------------------------------------------------------------------------------------------
# Reference processor (from a reading of image_processing_phi3_v.py)

def padding_336(b):
    width, height = b.size
    tar = int(np.ceil(height / 336) * 336)
    top_padding = int((tar - height) / 2)
    bottom_padding = tar - height - top_padding
    return torchvision.transforms.functional.pad(b, [0, top_padding, 0, bottom_padding], fill=[255, 255, 255])


def hd_transform(img, hd_num):
    width, height = img.size
    trans = False
    if width < height:
        img = img.transpose(Image.TRANSPOSE)
        trans = True
        width, height = img.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * 336)
    new_h = int(new_w / ratio)
    img = torchvision.transforms.functional.resize(img, [new_h, new_w])
    img = padding_336(img)
    if trans:
        img = img.transpose(Image.TRANSPOSE)
    return img


def preprocess(image, num_crops, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
    img_processor = torchvision.transforms.Compose([
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize(mean, std),
    ])
    image = image.convert("RGB")
    elem = hd_transform(image, hd_num=num_crops)
    hd_image = img_processor(elem)
    global_image = torch.nn.functional.interpolate(hd_image.unsqueeze(0).float(), size=(336, 336),
                                                   mode="bicubic").to(hd_image.dtype)
    h, w = hd_image.size(1), hd_image.size(2)
    num_img_tokens = int(((h // 336) * (w // 336) + 1) * 144 + 1 + (h // 336 + 1) * 12)
    crops = hd_image.reshape(1, 3, h // 336, 336, w // 336, 336).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, 336, 336)
    pv = torch.cat([global_image, crops], dim=0)
    if pv.shape[0] < num_crops + 1:
        pv = torch.cat([pv, torch.zeros(num_crops + 1 - pv.shape[0], 3, 336, 336, dtype=pv.dtype)], dim=0)
    return elem, pv, (h, w), num_img_tokens


def fnv1a64(arr):
    """64-bit FNV-1a of the bytes, as hex (a plain byte loop: a few seconds for the largest HD image)."""
    h = 0xCBF29CE484222325
    for b in np.ascontiguousarray(arr).tobytes():
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def main():
    torch.set_num_threads(1)
    # convert("RGB") of the palette image with tRNS warns; dropping the transparency is what is wanted.
    warnings.filterwarnings("ignore", message="Palette images with Transparency")
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    files = write_images()
    expected = {"decode": [], "grid": GRID, "processor": []}

    # Decoding: PIL's convert("RGB") of every image. Small ones are stored whole, the processor PNGs by hash.
    hashed = {"landscape_300x200.png", "portrait_150x260.png", "square_256.png", "wide_800x96.png"}
    for name in sorted(files):
        rgb = np.array(Image.open(files[name]).convert("RGB"))
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        entry = {"file": name, "width": rgb.shape[1], "height": rgb.shape[0]}
        if name in hashed:
            entry["fnv1a64"] = fnv1a64(rgb)
        else:
            npy = "decode_" + os.path.splitext(name)[0] + ".npy"
            np.save(os.path.join(OUT, npy), rgb)
            entry["npy"] = npy
        expected["decode"].append(entry)

    # PIL's Image.resize of RGB images, BILINEAR and BICUBIC, up and down, odd sizes: hashes of the results.
    expected["resize"] = []
    for name, size, filt in [("landscape_300x200.png", (1344, 1344), "bicubic"),
                             ("wide_800x96.png", (1344, 1344), "bicubic"),
                             ("square_256.png", (101, 77), "bicubic"),
                             ("wide_800x96.png", (123, 45), "bilinear"),
                             ("portrait_150x260.png", (149, 400), "bilinear"),
                             ("tiny_50x30.png", (50, 97), "bicubic")]:
        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}[filt]
        out = np.array(Image.open(files[name]).convert("RGB").resize(size, resample))
        expected["resize"].append({"file": name, "width": size[0], "height": size[1], "filter": filt,
                                   "fnv1a64": fnv1a64(out)})

    # Normalization table: ToTensor + Normalize of a 1x256 image holding every byte value.
    ramp = Image.fromarray(np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2))
    lut = torchvision.transforms.Normalize(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)(
        torchvision.transforms.ToTensor()(ramp))[:, 0, :].numpy().astype(np.float32)
    np.save(os.path.join(OUT, "lut_normalize.npy"), lut)
    expected["normalize"] = {"mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD, "npy": "lut_normalize.npy"}

    # Processor cases: num_crops 4 (the xVLM2Vec setting, upscaling) and 1 (downscaling through the
    # antialiased bilinear filter); the JPEG goes through the whole path too.
    cases = [(n, k) for n in ["landscape_300x200.png", "portrait_150x260.png", "square_256.png", "tiny_50x30.png",
                              "wide_800x96.png", "palette_100x80.png", "rgb420_163x101.jpg"]
             for k in (4, 1)]
    cases += [("portrait_150x260.png", 16)]
    # VLM2Vec's data pipeline resizes every image to 1344x1344 (`image.resize((1344, 1344))`, PIL's default
    # BICUBIC for RGB) before the processor: the xVLM2Vec setting end to end.
    cases += [("landscape_300x200.png", 4, (1344, 1344)), ("wide_800x96.png", 4, (1344, 1344))]
    idx = np.array(GRID)
    for name, k, *pre in cases:
        image = Image.open(files[name])
        if pre:
            image = image.resize(pre[0])
        elem, pv, (h, w), ntok = preprocess(image, k)
        hd = np.array(elem)
        assert hd.shape == (h, w, 3)
        case = f"{os.path.splitext(name)[0]}{'_%dx%d' % pre[0] if pre else ''}_nc{k}"
        npy = f"pv_{case}.npy"
        sample = pv.numpy()[:, :, idx][:, :, :, idx].astype(np.float32)
        np.save(os.path.join(OUT, npy), np.ascontiguousarray(sample))
        expected["processor"].append({
            "case": case, "file": name, "num_crops": k, "hd_height": h, "hd_width": w,
            "num_img_tokens": ntok, "pixel_values_shape": list(pv.shape), "hd_fnv1a64": fnv1a64(hd), "npy": npy})
        if pre:
            expected["processor"][-1]["pre_resize"] = list(pre[0])
        print(f"{case}: hd {h}x{w}, {ntok} tokens, pixel_values {tuple(pv.shape)}")

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "preprocessor_config.json"), "w") as f:
        json.dump({"auto_map": {"AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor",
                                "AutoProcessor": "processing_phi3_v.Phi3VProcessor"},
                   "do_convert_rgb": True, "image_mean": OPENAI_CLIP_MEAN,
                   "image_processor_type": "Phi3VImageProcessor", "image_std": OPENAI_CLIP_STD,
                   "num_crops": 4, "num_img_tokens": 144, "processor_class": "Phi3VProcessor"}, f, indent=2)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(os.listdir(OUT))} files, {total / 1e6:.2f} MB, under {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
