#!/usr/bin/env python3
"""Prepares the data of the offline multimodal suite (docs/benchmark-format.md, "eval make-multimodal").

Reads what Debian 12 and PyPI packages install (scripts/install-multimodal-data.sh installs them) and writes,
into --out, one JSONL of items per source plus the images, and `prepared.json` naming the sources and where
each came from. `xvlm2vec eval make-multimodal` builds the benchmark from that folder (the split, the tasks,
the candidates). Only human-made names are kept: a name a catalog leaves untranslated is absent for that
language, never filled in.

Sources (each needs its package; a missing one is an error naming the package):
  emoji   fonts-noto-color-emoji (rendered with Pillow at size 109, only sequences that render as one glyph)
          + unicode-cldr-core: names (annotations/ + annotationsDerived/, type="tts"), emoji groups
          (properties/labels.txt) and their translated labels (main/<lang>.xml characterLabel)
  flags   iso-flags-png-320x240 (by alpha-2) + iso-codes (iso_3166-1.json, iso_3166-1.mo) + CLDR continents
          (supplementalData.xml territoryContainment, main/<lang>.xml territory names)
  stamps  tuxpaint-stamps-default (each drawing's .txt caption in every language; SVG-only stamps through
          rsvg-convert from librsvg2-bin)
  maps    kgeography-data (.kgm: each region a colour of the map PNG; names in kgeography.mo), one crop per region
  vqa     easy-vqa from PyPI (images, English template questions and answers)

Item lines: {"id", "unit" (the split unit), "image" (relative to --out), "text": {lang: name},
"label": {lang: class} (classification sources), "context_image" (maps: the whole map), "qa": [[q, a], ...]
(vqa, English)}.
"""
import argparse
import gettext
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

LANGS = ["en", "it", "es", "fr", "de"]
CLDR = "/usr/share/unicode/cldr/common"
FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
FLAGS = "/usr/share/iso-flags-png-320x240"
ISO_JSON = "/usr/share/iso-codes/json/iso_3166-1.json"
STAMPS = "/usr/share/tuxpaint/stamps"
KGEO = "/usr/share/kgeography"
LOCALE = "/usr/share/locale"


def need(path, package):
    if not os.path.exists(path):
        sys.exit(f"prepare_multimodal: {path} is missing; install the Debian package '{package}' "
                 f"(scripts/install-multimodal-data.sh does)")


def deb_version(package):
    try:
        with open("/var/lib/dpkg/status", encoding="utf-8") as f:
            block = f.read().split("\n\n")
        for b in block:
            if f"Package: {package}\n" in b + "\n":
                m = re.search(r"^Version: (.+)$", b, re.M)
                if m:
                    return m.group(1)
    except OSError:
        pass
    return "unknown"


def mo_catalog(path):
    """The catalog of a .mo file as {key: msgstr}, keys 'ctx\\x04msgid' with a context; untranslated entries absent."""
    with open(path, "rb") as f:
        t = gettext.GNUTranslations(f)
    return {k: v for k, v in t._catalog.items() if isinstance(k, str) and k and v}


def write_jsonl(path, items):
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n")


# ---------------------------------------------------------------- emoji
def parse_unicode_set(s):
    """A CLDR UnicodeSet of the simple kind labels.txt uses: single characters, ranges a-b and {sequences}."""
    assert s.startswith("[") and s.endswith("]"), s
    body, out, i = s[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "{":
            j = body.index("}", i)
            out.append(body[i + 1:j])
            i = j + 1
        elif i + 2 < len(body) and body[i + 1] == "-":
            out.extend(chr(x) for x in range(ord(c), ord(body[i + 2]) + 1))
            i += 3
        else:
            if not c.isspace():
                out.append(c)
            i += 1
    return out


GROUP_TYPES = {"Smileys & People": "smileys_people", "Animals & Nature": "animals_nature",
               "Food & Drink": "food_drink", "Travel & Places": "travel_places", "Activities": "activities",
               "Objects": "objects", "Symbols": "symbols", "Flags": "flags"}


def emoji_groups():
    groups = {}
    with open(f"{CLDR}/properties/labels.txt", encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p.strip() for p in line.split(";")]
            if len(parts) < 2 or parts[1] not in GROUP_TYPES:
                continue
            for seq in parse_unicode_set(parts[0]):
                groups.setdefault(seq.replace("\ufe0f", ""), GROUP_TYPES[parts[1]])
    return groups


def character_labels(lang):
    root = ET.parse(f"{CLDR}/main/{lang}.xml").getroot()
    return {e.get("type"): e.text.strip() for e in root.iter("characterLabel") if e.text and not e.get("alt")}


def emoji_names(lang):
    names = {}
    for sub in ("annotations", "annotationsDerived"):
        path = f"{CLDR}/{sub}/{lang}.xml"
        if not os.path.exists(path):
            continue
        for e in ET.parse(path).getroot().iter("annotation"):
            if e.get("type") == "tts" and e.text and e.text.strip() and e.text.strip() != "↑↑↑":
                names[e.get("cp")] = e.text.strip()
    return names


def prepare_emoji(out, limit):
    from PIL import Image, ImageDraw, ImageFont
    need(FONT, "fonts-noto-color-emoji")
    need(f"{CLDR}/annotations/en.xml", "unicode-cldr-core")
    font = ImageFont.truetype(FONT, 109)
    names = {l: emoji_names(l) for l in LANGS}
    groups = emoji_groups()
    labels = {l: character_labels(l) for l in LANGS}

    def render(seq):
        img = Image.new("RGBA", (160 * max(1, len(seq)), 160), (0, 0, 0, 0))
        ImageDraw.Draw(img).text((10, 10), seq, font=font, embedded_color=True)
        return img

    notdef = render("\ue000").tobytes()
    os.makedirs(f"{out}/emoji", exist_ok=True)
    items, tried = [], 0
    for cp in sorted(names["en"]):
        tried += 1
        img = render(cp)
        box = img.getbbox()
        # One glyph: something drawn, not the missing-glyph box, and no wider than one emoji's advance.
        if box is None or img.tobytes() == notdef or box[2] - box[0] > 140:
            continue
        tile = Image.new("RGB", (160, 160), (255, 255, 255))
        tile.paste(img.crop((0, 0, 160, 160)), (0, 0), img.crop((0, 0, 160, 160)))
        key = "-".join(f"{ord(c):04X}" for c in cp)
        tile.save(f"{out}/emoji/{key}.png")
        item = {"id": f"emoji/{key}", "unit": f"emoji/{key}", "image": f"emoji/{key}.png",
                "text": {l: names[l][cp] for l in LANGS if cp in names[l]}}
        g = groups.get(cp.replace("\ufe0f", ""))
        if g:
            item["label"] = {l: labels[l][g] for l in LANGS if g in labels[l]}
        items.append(item)
        if limit and len(items) >= limit:
            break
    write_jsonl(f"{out}/emoji.jsonl", items)
    print(f"emoji: {len(items)} of {tried} CLDR-named sequences render as one glyph; "
          f"{sum('label' in i for i in items)} have a CLDR group", file=sys.stderr)
    return {"name": "emoji", "kind": "emoji", "file": "emoji.jsonl", "items": len(items),
            "origin": f"fonts-noto-color-emoji {deb_version('fonts-noto-color-emoji')} rendered by Pillow at size 109; "
                      f"names: unicode-cldr-core {deb_version('unicode-cldr-core')} annotations (tts); groups: CLDR "
                      f"properties/labels.txt with main/<lang>.xml characterLabel"}


# ---------------------------------------------------------------- flags
def prepare_flags(out):
    need(FLAGS, "iso-flags-png-320x240")
    need(ISO_JSON, "iso-codes")
    need(f"{CLDR}/supplemental/supplementalData.xml", "unicode-cldr-core")
    countries = json.load(open(ISO_JSON, encoding="utf-8"))["3166-1"]
    cats = {l: mo_catalog(f"{LOCALE}/{l}/LC_MESSAGES/iso_3166-1.mo") for l in LANGS if l != "en"}
    root = ET.parse(f"{CLDR}/supplemental/supplementalData.xml").getroot()
    contains = {}
    for g in root.iter("group"):
        if g.get("status") in ("grouping", "deprecated"):
            continue
        for c in g.get("contains", "").split():
            contains.setdefault(c, g.get("type"))
    continents = {"002", "019", "142", "150", "009"}

    def continent(code):
        seen = set()
        while code in contains and code not in seen:
            seen.add(code)
            code = contains[code]
            if code in continents:
                return code
        return None

    region_names = {}
    for l in LANGS:
        r = ET.parse(f"{CLDR}/main/{l}.xml").getroot()
        region_names[l] = {e.get("type"): e.text for e in r.iter("territory") if not e.get("alt") and e.text}
    os.makedirs(f"{out}/flags", exist_ok=True)
    items = []
    for c in countries:
        a2 = c["alpha_2"].lower()
        src = f"{FLAGS}/{a2}.png"
        if not os.path.exists(src):
            continue
        shutil.copyfile(src, f"{out}/flags/{a2}.png")
        text = {"en": c["name"]}
        for l, cat in cats.items():
            if c["name"] in cat:
                text[l] = cat[c["name"]]
        item = {"id": f"flags/{a2}", "unit": f"flags/{a2}", "image": f"flags/{a2}.png", "text": text}
        k = continent(c["alpha_2"])
        if k:
            item["label"] = {l: region_names[l][k] for l in LANGS if k in region_names[l]}
        items.append(item)
    write_jsonl(f"{out}/flags.jsonl", items)
    print(f"flags: {len(items)} countries with a flag", file=sys.stderr)
    return {"name": "flags", "kind": "flags", "file": "flags.jsonl", "items": len(items),
            "origin": f"iso-flags-png-320x240 {deb_version('iso-flags-png-320x240')}; names: iso-codes "
                      f"{deb_version('iso-codes')} (iso_3166-1.json, iso_3166-1.mo); continents: unicode-cldr-core "
                      f"supplementalData.xml territoryContainment with main/<lang>.xml territory names"}


# ---------------------------------------------------------------- stamps
def stamp_caption(path):
    text = {}
    with open(path, encoding="utf-8", errors="strict") as f:
        lines = f.read().splitlines()
    if lines and lines[0].strip():
        text["en"] = lines[0].strip()
    for line in lines[1:]:
        m = re.match(r"^([a-z]{2})\.utf8=(.*)$", line)
        if m and m.group(1) in LANGS and m.group(2).strip():
            text[m.group(1)] = m.group(2).strip()
    return text


def prepare_stamps(out):
    need(STAMPS, "tuxpaint-stamps-default")
    from PIL import Image
    os.makedirs(f"{out}/stamps", exist_ok=True)
    rsvg = shutil.which("rsvg-convert")
    items, skipped = [], 0
    for dirpath, _, files in sorted(os.walk(STAMPS)):
        for fn in sorted(files):
            if not fn.endswith(".txt"):
                continue
            base = fn[:-4]
            png = os.path.join(dirpath, base + ".png")
            svg = os.path.join(dirpath, base + ".svg")
            if not os.path.exists(png):
                # 165 stamps are SVG only: rasterised by librsvg (rsvg-convert) at 300 px wide when it is there.
                if not (os.path.exists(svg) and rsvg):
                    skipped += 1
                    continue
                png = f"{out}/stamps/.svg.png"
                subprocess.run([rsvg, "--width", "300", "--keep-aspect-ratio", "-o", png, svg], check=True)
            try:
                text = stamp_caption(os.path.join(dirpath, fn))
            except UnicodeDecodeError:
                continue
            if "en" not in text:
                continue
            rel = os.path.relpath(os.path.join(dirpath, base), STAMPS)
            key = rel.replace(os.sep, "_")
            # Stamps are RGBA drawings on transparency: flattened on white, as Tux Paint shows them.
            im = Image.open(png).convert("RGBA")
            flat = Image.new("RGB", im.size, (255, 255, 255))
            flat.paste(im, (0, 0), im)
            flat.save(f"{out}/stamps/{key}.png")
            items.append({"id": f"stamps/{key}", "unit": f"stamps/{key}", "image": f"stamps/{key}.png",
                          "text": text, "category": rel.split(os.sep)[0]})
    if os.path.exists(f"{out}/stamps/.svg.png"):
        os.remove(f"{out}/stamps/.svg.png")
    write_jsonl(f"{out}/stamps.jsonl", items)
    print(f"stamps: {len(items)} drawings with a caption"
          + (f" ({skipped} left out: no PNG, and no SVG with rsvg-convert (librsvg2-bin) to draw it)" if skipped else ""),
          file=sys.stderr)
    return {"name": "stamps", "kind": "stamps", "file": "stamps.jsonl", "items": len(items),
            "origin": f"tuxpaint-stamps-default {deb_version('tuxpaint-stamps-default')} (captions from each "
                      f"stamp's .txt; SVG-only stamps rasterised by librsvg2-bin {deb_version('librsvg2-bin')})"}


# ---------------------------------------------------------------- maps
def prepare_maps(out, min_pixels=400, pad=6):
    need(KGEO, "kgeography-data")
    from PIL import Image
    import numpy as np
    cats = {l: mo_catalog(f"{LOCALE}/{l}/LC_MESSAGES/kgeography.mo") for l in LANGS if l != "en"
            and os.path.exists(f"{LOCALE}/{l}/LC_MESSAGES/kgeography.mo")}
    os.makedirs(f"{out}/maps", exist_ok=True)
    items, maps = [], 0
    for fn in sorted(os.listdir(KGEO)):
        if not fn.endswith(".kgm"):
            continue
        try:
            root = ET.parse(f"{KGEO}/{fn}").getroot()
        except ET.ParseError:
            continue
        mapfile = root.findtext("mapFile")
        if not mapfile or not os.path.exists(f"{KGEO}/{mapfile}"):
            continue
        mapname = fn[:-4]
        rgb = np.asarray(Image.open(f"{KGEO}/{mapfile}").convert("RGB"))
        regions = []
        for d in root.iter("division"):
            if (d.findtext("ignore") or "").strip() == "yes":
                continue
            name, col = (d.findtext("name") or "").strip(), d.find("color")
            if not name or col is None:
                continue
            c = [int(col.findtext(k)) for k in ("red", "green", "blue")]
            mask = np.all(rgb == np.array(c, dtype=rgb.dtype), axis=2)
            if mask.sum() < min_pixels:
                continue
            ys, xs = np.nonzero(mask)
            regions.append((name, xs.min(), ys.min(), xs.max(), ys.max()))
        if len(regions) < 2:
            continue
        maps += 1
        os.makedirs(f"{out}/maps/{mapname}", exist_ok=True)
        full = Image.open(f"{KGEO}/{mapfile}").convert("RGB")
        full.save(f"{out}/maps/{mapname}.png")
        h, w = rgb.shape[:2]
        for i, (name, x0, y0, x1, y1) in enumerate(regions):
            crop = full.crop((max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad + 1), min(h, y1 + pad + 1)))
            crop.save(f"{out}/maps/{mapname}/{i:03d}.png")
            text = {"en": name}
            for l, cat in cats.items():
                v = cat.get(f"{fn}\x04{name}")
                if v:
                    text[l] = v
            items.append({"id": f"maps/{mapname}/{i:03d}", "unit": f"maps/{mapname}",
                          "image": f"maps/{mapname}/{i:03d}.png", "context_image": f"maps/{mapname}.png",
                          "text": text})
    write_jsonl(f"{out}/maps.jsonl", items)
    print(f"maps: {len(items)} regions of {maps} maps", file=sys.stderr)
    return {"name": "maps", "kind": "maps", "file": "maps.jsonl", "items": len(items),
            "origin": f"kgeography-data {deb_version('kgeography-data')} (.kgm regions by colour; names: "
                      f"kgeography.mo, context = the .kgm file)"}


# ---------------------------------------------------------------- vqa
def prepare_vqa(out):
    try:
        import easy_vqa
    except ImportError:
        sys.exit("prepare_multimodal: easy-vqa is missing; pip install easy-vqa==1.0 "
                 "(scripts/install-multimodal-data.sh does)")
    base = os.path.join(os.path.dirname(easy_vqa.__file__), "data")
    os.makedirs(f"{out}/vqa", exist_ok=True)
    items = []
    for part in ("train", "test"):
        qs = json.load(open(f"{base}/{part}/questions.json", encoding="utf-8"))
        by_image = {}
        for q, a, img in qs:
            by_image.setdefault(int(img), []).append([q, a])
        for img in sorted(by_image):
            key = f"{part}-{img}"
            shutil.copyfile(f"{base}/{part}/images/{img}.png", f"{out}/vqa/{key}.png")
            items.append({"id": f"vqa/{key}", "unit": f"vqa/{key}", "image": f"vqa/{key}.png",
                          "qa": by_image[img], "text": {}})
    answers = [a.strip() for a in open(f"{base}/answers.txt", encoding="utf-8") if a.strip()]
    write_jsonl(f"{out}/vqa.jsonl", items)
    print(f"vqa: {len(items)} images, {sum(len(i['qa']) for i in items)} questions, {len(answers)} answers",
          file=sys.stderr)
    return {"name": "vqa", "kind": "vqa", "file": "vqa.jsonl", "items": len(items), "answers": answers,
            "origin": "easy-vqa 1.0 (PyPI): synthetic shapes, English template questions; no translation exists"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--sources", default="emoji,flags,stamps,maps,vqa")
    ap.add_argument("--emoji-limit", type=int, default=0, help="stop after this many emoji (0: all)")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    makers = {"emoji": lambda: prepare_emoji(a.out, a.emoji_limit), "flags": lambda: prepare_flags(a.out),
              "stamps": lambda: prepare_stamps(a.out), "maps": lambda: prepare_maps(a.out),
              "vqa": lambda: prepare_vqa(a.out)}
    sources = []
    for s in a.sources.split(","):
        if s not in makers:
            sys.exit(f"prepare_multimodal: unknown source '{s}'; expected some of {', '.join(makers)}")
        sources.append(makers[s]())
    manifest = {"format": "xvlm2vec-multimodal-data", "format_version": 1, "languages": LANGS,
                "sources": sources}
    tmp = f"{a.out}/prepared.json.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, ensure_ascii=False, indent=1)
    os.replace(tmp, f"{a.out}/prepared.json")
    print(f"prepare_multimodal: {sum(s['items'] for s in sources)} items in {len(sources)} sources -> {a.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
