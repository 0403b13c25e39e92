#!/usr/bin/env python3
"""The corpus format (docs/corpus-format.md) read and written with h5py, independently of our C++ code: the
interoperability check of tests/test_corpus_file.cpp, in both directions.

    h5py_corpus.py write OUT.h5 [--images DIR] [--tokenizer TOKENIZER.json] [--minimal]
        Writes a small corpus by the document alone, and OUT.h5.expected.json describing every value in it.
        --images DIR       the image pairs use the first PNG and the first JPEG (sorted by name) under DIR;
                           without it, one small PNG made here
        --tokenizer FILE   adds a /tokens block recorded as made by FILE (the ids are made up, inside its vocab)
        --minimal          no images, no /teacher, no optional root attributes (a reader treats them as none)
    h5py_corpus.py check IN.h5 EXPECTED.json
        Reads IN.h5 (written by any writer) and checks every attribute, dtype, shape, offset and value against
        EXPECTED.json, the layout rules of the document, and recomputes the fingerprint from its definition.
        Prints one line per mismatch, naming the field, and exits 1 when there is any.
    h5py_corpus.py write-bad KIND OUT.h5
        Writes a corpus broken in a way our own writer cannot produce (KIND: see BAD_KINDS below).

The expected JSON (both directions use it):
    format, format_version, languages (list), fingerprint, source, created_by, created_at (null: absent)
    text_en, text_xx, sources: lists of strings
    pairs: {en, xx, lang, image, source}: lists of ints
    images: {names, width, height, sizes, fnv1a64} (fnv1a64: "fnv1a64:<hex>" of each file's bytes)
    tokens: null or {tokenizer_fingerprint, vocab_size, en, xx} (en, xx: one list of ids per text row)
    teacher: null or {model_fingerprint, corpus_fingerprint, dim, embeddings} (embeddings: P lists of dim floats)

Needs h5py and numpy only (scripts/prepare-h5py.sh makes such an environment).
"""
import argparse
import json
import os
import struct
import sys
import zlib

import h5py
import numpy as np

FORMAT_NAME = "xvlm2vec-corpus"
FORMAT_VERSION = 1
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1

# Every dataset of the document: dtype (little-endian, as stored) and rank.
REQUIRED = {
    "/text/en/bytes": "<u1", "/text/en/offsets": "<u8",
    "/text/xx/bytes": "<u1", "/text/xx/offsets": "<u8",
    "/sources/bytes": "<u1", "/sources/offsets": "<u8",
    "/pairs/en": "<i8", "/pairs/xx": "<i8", "/pairs/lang": "<u1", "/pairs/image": "<i8", "/pairs/source": "<i4",
}
IMAGES = {
    "/images/bytes": "<u1", "/images/offsets": "<u8", "/images/width": "<i4", "/images/height": "<i4",
    "/images/names/bytes": "<u1", "/images/names/offsets": "<u8",
}
TOKENS = {"/tokens/en/ids": "<i4", "/tokens/en/offsets": "<u8", "/tokens/xx/ids": "<i4", "/tokens/xx/offsets": "<u8"}
TEACHER = {"/teacher/embeddings": "<f4"}


# ---------------------------------------------------------------------------------------------- hashing
def fnv1a64(data, h=FNV_OFFSET):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def fingerprint_hex(h):
    return "fnv1a64:%016x" % h


def corpus_fingerprint(text_en, text_xx, languages, images, sources, pairs):
    """The document's definition: FNV-1a 64 started from the hash of "xvlm2vec-corpus-v1", then for every pair
    in order its English text, translation, language code, image bytes and source name, each preceded by its
    length as a little-endian uint64. A text-only pair hashes the 5 bytes 0x01 "none" in place of an image
    (no image file can be those bytes: PNG and JPEG start otherwise)."""
    h = fnv1a64(b"xvlm2vec-corpus-v1")
    for i in range(len(pairs["en"])):
        img = pairs["image"][i]
        fields = [text_en[pairs["en"][i]], text_xx[pairs["xx"][i]], languages[pairs["lang"][i]].encode(),
                  b"\x01none" if img < 0 else images[img], sources[pairs["source"][i]]]
        for f in fields:
            h = fnv1a64(struct.pack("<Q", len(f)), h)
            h = fnv1a64(f, h)
    return fingerprint_hex(h)


# ---------------------------------------------------------------------------------------------- images
def make_png(width, height):
    """A small RGB PNG made with zlib alone (so the tool needs no imaging library)."""
    # Each scanline: filter byte 0, then RGB triples.
    rows = b"".join(b"\x00" + b"".join(bytes((200, x * 60 % 256, y * 90 % 256)) for x in range(width))
                    for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def image_size(data, name):
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame marker."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                i += 1
                continue
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            seg = struct.unpack(">H", data[i + 2:i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5:i + 9])
                return w, h
            i += 2 + seg
    sys.exit(f"h5py_corpus: {name}: neither a PNG nor a JPEG with a start-of-frame marker")


# ---------------------------------------------------------------------------------------------- the sample
def sample(images_dir, tokenizer, minimal):
    """The corpus the `write` subcommand stores: several languages, English rows shared by several pairs,
    multi-byte UTF-8 on both sides, image pairs and text-only pairs."""
    languages = ["it", "es", "fr", "de", "ja", "ru"]
    text_en = ["Open file", "Cannot open '%s': permission denied", "A red square on a white background",
               "Grüße — “quoted” ✓ and an emoji 🙂", "Save changes?"]
    text_xx = ["Apri file", "Abrir archivo", "Ouvrir le fichier", "Datei öffnen",
               "'%s' を開けません: 許可がありません", "Un quadrato rosso su sfondo bianco",
               "Grüße — „zitiert“ ✓ und ein Emoji 🙂", "Не удаётся открыть «%s»: доступ запрещён",
               "¿Guardar los cambios?"]
    sources = ["coreutils", "tar", "captions/ç.jsonl"]
    # (en row, xx row, language, image, source): English row 0 serves four languages, row 1 two.
    rows = [(0, 0, "it", -1, 0), (0, 1, "es", -1, 0), (0, 2, "fr", -1, 0), (0, 3, "de", -1, 0),
            (1, 4, "ja", -1, 1), (2, 5, "it", 0, 2), (3, 6, "de", 1, 2), (1, 7, "ru", -1, 1), (4, 8, "es", -1, 0)]
    images, names = [], []
    if not minimal:
        if images_dir:
            files = sorted(os.listdir(images_dir))
            for ext in (".png", ".jpg"):
                pick = [f for f in files if f.lower().endswith(ext)]
                if pick:
                    names.append(pick[0])
                    with open(os.path.join(images_dir, pick[0]), "rb") as fh:
                        images.append(fh.read())
        else:
            names, images = ["made/red_3x2.png"], [make_png(3, 2)]
    if not images:
        rows = [(e, x, l, -1, s) for (e, x, l, _, s) in rows]
    elif len(images) == 1:
        rows = [(e, x, l, min(i, 0), s) for (e, x, l, i, s) in rows]
    pairs = {"en": [r[0] for r in rows], "xx": [r[1] for r in rows], "lang": [languages.index(r[2]) for r in rows],
             "image": [r[3] for r in rows], "source": [r[4] for r in rows]}
    sizes = [image_size(b, n) for b, n in zip(images, names)]
    enc = lambda v: [s.encode("utf-8") for s in v]  # noqa: E731
    fp = corpus_fingerprint(enc(text_en), enc(text_xx), languages, images, enc(sources), pairs)
    d = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "languages": languages, "fingerprint": fp,
        "source": None if minimal else "tsv", "created_by": None if minimal else "h5py_corpus.py write",
        "created_at": None if minimal else "2024-01-02T03:04:05Z",
        "text_en": text_en, "text_xx": text_xx, "sources": sources, "pairs": pairs,
        "images": {"names": names, "width": [w for w, _ in sizes], "height": [h for _, h in sizes],
                   "sizes": [len(b) for b in images], "fnv1a64": [fingerprint_hex(fnv1a64(b)) for b in images]},
        "tokens": None, "teacher": None,
    }
    if tokenizer:
        with open(tokenizer, "rb") as fh:
            raw = fh.read()
        vocab = len(json.loads(raw)["model"]["vocab"])
        # Made-up ids (no tokenizer library here): [CLS]-like first, one id per UTF-8 byte, [SEP]-like last.
        ids = lambda s: [vocab - 1] + [(b * 7 + i) % vocab for i, b in enumerate(s.encode())] + [0]  # noqa: E731
        d["tokens"] = {"tokenizer_fingerprint": fingerprint_hex(fnv1a64(raw)), "vocab_size": vocab,
                       "en": [ids(s) for s in text_en], "xx": [ids(s) for s in text_xx]}
    if not minimal:
        dim = 5
        emb = np.random.default_rng(7).standard_normal((len(rows), dim)).astype(np.float32)
        d["teacher"] = {"model_fingerprint": "fnv1a64:0123456789abcdef", "corpus_fingerprint": fp, "dim": dim,
                        "embeddings": [[float(v) for v in row] for row in emb]}
    return d, images


# ---------------------------------------------------------------------------------------------- writing
def chunked(f, name, data, compress):
    """A dataset laid out as the document says: about 1 MiB chunks, deflate 4 (with shuffle for multi-byte
    integers) for texts, names and integers, none for image bytes."""
    kw = {}
    if len(data) > 0:
        kw["chunks"] = (max(1, min(len(data), (1 << 20) // data.dtype.itemsize)),) + data.shape[1:]
        if compress:
            kw.update(compression="gzip", compression_opts=4, shuffle=data.dtype.itemsize > 1)
    f.create_dataset(name, data=data, **kw)


def write_ragged(f, group, elems, compress=True):
    offsets = np.zeros(len(elems) + 1, dtype="<u8")
    offsets[1:] = np.cumsum([len(e) for e in elems]) if elems else []
    chunked(f, group + "/bytes", np.frombuffer(b"".join(elems), dtype="<u1"), compress)
    chunked(f, group + "/offsets", offsets, True)


def write_ragged_ids(f, group, rows):
    offsets = np.zeros(len(rows) + 1, dtype="<u8")
    offsets[1:] = np.cumsum([len(r) for r in rows]) if rows else []
    chunked(f, group + "/ids", np.array([i for r in rows for i in r], dtype="<i4"), True)
    chunked(f, group + "/offsets", offsets, True)


def write_corpus(path, d, images):
    enc = lambda v: [s.encode("utf-8") for s in v]  # noqa: E731
    with h5py.File(path, "w") as f:
        write_ragged(f, "/text/en", enc(d["text_en"]))
        write_ragged(f, "/text/xx", enc(d["text_xx"]))
        write_ragged(f, "/sources", enc(d["sources"]))
        p = d["pairs"]
        for name, dt in (("en", "<i8"), ("xx", "<i8"), ("lang", "<u1"), ("image", "<i8"), ("source", "<i4")):
            chunked(f, "/pairs/" + name, np.array(p[name], dtype=dt), True)
        if images:
            write_ragged(f, "/images", images, compress=False)
            chunked(f, "/images/width", np.array(d["images"]["width"], dtype="<i4"), True)
            chunked(f, "/images/height", np.array(d["images"]["height"], dtype="<i4"), True)
            write_ragged(f, "/images/names", enc(d["images"]["names"]))
        if d["tokens"]:
            t = d["tokens"]
            write_ragged_ids(f, "/tokens/en", t["en"])
            write_ragged_ids(f, "/tokens/xx", t["xx"])
            f["/tokens"].attrs["tokenizer_fingerprint"] = t["tokenizer_fingerprint"]
            f["/tokens"].attrs.create("vocab_size", t["vocab_size"], dtype="<i8")
        if d["teacher"]:
            t = d["teacher"]
            f.create_dataset("/teacher/embeddings", data=np.array(t["embeddings"], dtype="<f4"))
            f["/teacher"].attrs["model_fingerprint"] = t["model_fingerprint"]
            f["/teacher"].attrs["corpus_fingerprint"] = t["corpus_fingerprint"]
        f.attrs["format"] = d["format"]
        f.attrs.create("format_version", d["format_version"], dtype="<i8")
        f.attrs["languages"] = ",".join(d["languages"])
        f.attrs["fingerprint"] = d["fingerprint"]
        if d["source"] is not None:
            # Fixed-length UTF-8, unlike the others: the document says readers take both kinds of string.
            raw = d["source"].encode("utf-8")
            f.attrs.create("source", np.array(raw, dtype="S%d" % len(raw)),
                           dtype=h5py.string_dtype("utf-8", len(raw)))
        for k in ("created_by", "created_at"):
            if d[k] is not None:
                f.attrs[k] = d[k]


def cmd_write(a):
    d, images = sample(a.images, a.tokenizer, a.minimal)
    write_corpus(a.out, d, images)
    with open(a.out + ".expected.json", "w", encoding="utf-8") as fh:
        json.dump(d, fh, ensure_ascii=False, indent=1)
    print(f"h5py_corpus: wrote {a.out} and {a.out}.expected.json ({len(d['pairs']['en'])} pairs)")


# ---------------------------------------------------------------------------------------------- bad files
def bad_pairs_en_float(f):
    del f["/pairs/en"]
    f.create_dataset("/pairs/en", data=np.zeros(9, dtype="<f8"))


def bad_text_bytes_group(f):
    del f["/text/en/bytes"]
    f.create_group("/text/en/bytes")


def bad_text_vlen_strings(f):
    del f["/text/xx/bytes"]
    f.create_dataset("/text/xx/bytes", data=["a", "b"], dtype=h5py.string_dtype("utf-8"))


def bad_version_string(f):
    f.attrs["format_version"] = "1"


def bad_version_float(f):
    f.attrs.create("format_version", 1.0, dtype="<f8")


def bad_languages_array(f):
    f.attrs["languages"] = ["it", "es"]


def bad_format_int(f):
    f.attrs.create("format", 7, dtype="<i8")


def bad_offsets_2d(f):
    del f["/sources/offsets"]
    f.create_dataset("/sources/offsets", data=np.zeros((2, 2), dtype="<u8"))


def bad_pairs_scalar(f):
    del f["/pairs/source"]
    f.create_dataset("/pairs/source", data=np.int32(0))


def bad_huge_claim(f):
    # A valid HDF5 dataset whose chunks were never written: it claims a terabyte the file does not hold.
    del f["/text/en/bytes"]
    f.create_dataset("/text/en/bytes", shape=(1 << 40,), dtype="<u1", chunks=(1 << 20,))


BAD_KINDS = {
    "pairs-en-float": (bad_pairs_en_float, "/pairs/en stored as float64"),
    "text-bytes-group": (bad_text_bytes_group, "/text/en/bytes is a group, not a dataset"),
    "text-vlen-strings": (bad_text_vlen_strings, "/text/xx/bytes is a variable-length string dataset"),
    "version-string": (bad_version_string, "format_version is the string '1'"),
    "version-float": (bad_version_float, "format_version is the float 1.0"),
    "languages-array": (bad_languages_array, "languages is an array of two strings"),
    "format-int": (bad_format_int, "format is an integer"),
    "offsets-2d": (bad_offsets_2d, "/sources/offsets has rank 2"),
    "pairs-scalar": (bad_pairs_scalar, "/pairs/source is a scalar dataset (rank 0)"),
    "huge-claim": (bad_huge_claim, "/text/en/bytes claims 2^40 bytes and stores none"),
}


def cmd_write_bad(a):
    if a.kind not in BAD_KINDS:
        sys.exit(f"h5py_corpus: unknown KIND '{a.kind}' (one of: {', '.join(BAD_KINDS)})")
    d, images = sample(None, None, False)
    write_corpus(a.out, d, images)
    with h5py.File(a.out, "r+") as f:
        BAD_KINDS[a.kind][0](f)
    print(f"h5py_corpus: wrote {a.out}: {BAD_KINDS[a.kind][1]}")


# ---------------------------------------------------------------------------------------------- checking
class Checker:
    def __init__(self, path):
        self.path = path
        self.problems = []

    def fail(self, field, msg):
        self.problems.append(f"{self.path}: {field}: {msg}")

    def equal(self, field, found, expected):
        if found != expected:
            self.fail(field, f"expected {expected!r}, found {found!r}")
            return False
        return True


def read_attr(c, obj, name):
    """(value, kind) of an attribute, or (None, None) when missing; strings of either kind come back as str."""
    if name not in obj.attrs:
        return None, None
    v = obj.attrs[name]
    dt = obj.attrs.get_id(name).dtype
    if isinstance(v, bytes):
        return v.decode("utf-8"), "string"
    if isinstance(v, str):
        return v, "string"
    if dt.kind in "iu":
        return (int(v), "%s%d" % ("int" if dt.kind == "i" else "uint", dt.itemsize * 8)) if np.ndim(v) == 0 \
            else (v.tolist(), "array")
    return v, str(dt)


def dataset(c, f, name, dtype, rank=1):
    """The dataset as a numpy array after checking its presence, dtype and rank; None when it is wrong."""
    if name not in f:
        c.fail(name, "missing")
        return None
    d = f[name]
    if not isinstance(d, h5py.Dataset):
        c.fail(name, "not a dataset")
        return None
    ok = c.equal(name + " dtype", d.dtype.str, np.dtype(dtype).str)
    ok = c.equal(name + " rank", len(d.shape), rank) and ok
    return d[()] if ok else None


def check_layout(c, f, name, compressed):
    """The document's storage choices: texts, names and integers deflated, image bytes stored plainly."""
    d = f[name]
    if d.shape[0] == 0:
        return
    if d.chunks is None:
        c.fail(name, "expected a chunked dataset")
    elif compressed:
        c.equal(name + " compression", d.compression, "gzip")
        if d.dtype.itemsize > 1:
            c.equal(name + " shuffle", d.shuffle, True)
    else:
        c.equal(name + " compression", d.compression, None)


def check_ragged(c, f, group, expected, data_name="bytes", dtype="<u1", compressed=True):
    """A ragged pair of datasets against the expected elements (str: UTF-8 text; list: ids); returns the
    elements as bytes (or lists), or None when the structure is wrong."""
    data = dataset(c, f, f"{group}/{data_name}", dtype)
    off = dataset(c, f, f"{group}/offsets", "<u8")
    if data is None or off is None:
        return None
    check_layout(c, f, f"{group}/{data_name}", compressed)
    check_layout(c, f, f"{group}/offsets", True)
    if isinstance(expected[0] if expected else "", str):
        lens = [len(s.encode("utf-8")) for s in expected]
    else:
        lens = [len(r) for r in expected]
    want = [0] + list(np.cumsum(lens, dtype=np.uint64).tolist())
    if not c.equal(f"{group}/offsets", off.tolist(), want):
        return None
    c.equal(f"{group}/{data_name} length", int(data.shape[0]), want[-1])
    out = []
    for i, e in enumerate(expected):
        got = data[want[i]:want[i + 1]]
        if isinstance(e, str):
            raw = got.tobytes()
            try:
                s = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                c.fail(f"{group} row {i}", f"invalid UTF-8: {err}")
                s = None
            if s is not None:
                c.equal(f"{group} row {i}", s, e)
            out.append(raw)
        else:
            c.equal(f"{group}/{data_name} row {i}", got.tolist(), e)
            out.append(got.tolist())
    return out


def cmd_check(a):
    with open(a.expected, encoding="utf-8") as fh:
        d = json.load(fh)
    c = Checker(a.file)
    with h5py.File(a.file, "r") as f:
        # Root attributes: kinds as the document's table says, values as expected.
        for name, kind in (("format", "string"), ("format_version", "int64"), ("languages", "string"),
                           ("fingerprint", "string"), ("source", "string"), ("created_by", "string"),
                           ("created_at", "string")):
            v, k = read_attr(c, f, name)
            want = ",".join(d["languages"]) if name == "languages" else d[name]
            if v is None:
                if want is not None and want != "":
                    c.fail(f"root attribute '{name}'", "missing")
                continue
            c.equal(f"root attribute '{name}' type", k, kind)
            c.equal(f"root attribute '{name}'", v, want)
        # The objects present: the document's, nothing else.
        known = set(REQUIRED) | set(IMAGES) | set(TOKENS) | set(TEACHER)
        groups = {"/text", "/text/en", "/text/xx", "/sources", "/pairs", "/images", "/images/names", "/tokens",
                  "/tokens/en", "/tokens/xx", "/teacher"}
        f.visit(lambda n: None if ("/" + n) in known | groups else c.fail("/" + n, "not part of the format"))

        text_en = check_ragged(c, f, "/text/en", d["text_en"])
        text_xx = check_ragged(c, f, "/text/xx", d["text_xx"])
        sources = check_ragged(c, f, "/sources", d["sources"])
        pairs = {}
        for name, dt in (("en", "<i8"), ("xx", "<i8"), ("lang", "<u1"), ("image", "<i8"), ("source", "<i4")):
            v = dataset(c, f, "/pairs/" + name, dt)
            if v is not None:
                check_layout(c, f, "/pairs/" + name, True)
                c.equal(f"/pairs/{name}", v.tolist(), d["pairs"][name])
                pairs[name] = v.tolist()

        di = d["images"]
        images = []
        if "/images" in f:
            names = check_ragged(c, f, "/images/names", di["names"])
            w = dataset(c, f, "/images/width", "<i4")
            h = dataset(c, f, "/images/height", "<i4")
            if w is not None:
                c.equal("/images/width", w.tolist(), di["width"])
            if h is not None:
                c.equal("/images/height", h.tolist(), di["height"])
            data = dataset(c, f, "/images/bytes", "<u1")
            off = dataset(c, f, "/images/offsets", "<u8")
            if data is not None and off is not None:
                check_layout(c, f, "/images/bytes", False)
                want = [0] + list(np.cumsum(di["sizes"], dtype=np.uint64).tolist())
                if c.equal("/images/offsets", off.tolist(), want) and \
                        c.equal("/images/bytes length", int(data.shape[0]), want[-1]):
                    for i in range(len(di["sizes"])):
                        b = data[want[i]:want[i + 1]].tobytes()
                        images.append(b)
                        c.equal(f"/images row {i} ({di['names'][i]}) hash", fingerprint_hex(fnv1a64(b)),
                                di["fnv1a64"][i])
                        if names is not None and w is not None and h is not None and i < len(w) and i < len(h):
                            # The recorded size agrees with the file's own header, independently of any decoder.
                            c.equal(f"/images row {i} size in its header", list(image_size(b, names[i])),
                                    [int(w[i]), int(h[i])])
        elif di["sizes"]:
            c.fail("/images", "missing")

        t = d["tokens"]
        if t is None:
            if "/tokens" in f:
                c.fail("/tokens", "present, expected none")
        elif "/tokens" not in f:
            c.fail("/tokens", "missing")
        else:
            check_ragged(c, f, "/tokens/en", t["en"], "ids", "<i4")
            check_ragged(c, f, "/tokens/xx", t["xx"], "ids", "<i4")
            for name, kind in (("tokenizer_fingerprint", "string"), ("vocab_size", "int64")):
                v, k = read_attr(c, f["/tokens"], name)
                if v is None:
                    c.fail(f"/tokens attribute '{name}'", "missing")
                else:
                    c.equal(f"/tokens attribute '{name}' type", k, kind)
                    c.equal(f"/tokens attribute '{name}'", v, t[name])

        t = d["teacher"]
        if t is None:
            if "/teacher" in f:
                c.fail("/teacher", "present, expected none")
        elif "/teacher" not in f:
            c.fail("/teacher", "missing")
        else:
            e = dataset(c, f, "/teacher/embeddings", "<f4", 2)
            if e is not None:
                want = np.array(t["embeddings"], dtype="<f4").reshape(len(d["pairs"]["en"]), t["dim"])
                if c.equal("/teacher/embeddings shape", list(e.shape), list(want.shape)):
                    bad = np.argwhere(e.view("<u4") != want.view("<u4"))
                    if len(bad):
                        r, k = bad[0]
                        c.fail("/teacher/embeddings", f"{len(bad)} values differ, first at [{r}, {k}]: "
                                                      f"expected {want[r, k]!r}, found {e[r, k]!r}")
            for name in ("model_fingerprint", "corpus_fingerprint"):
                v, k = read_attr(c, f["/teacher"], name)
                if v is None:
                    c.fail(f"/teacher attribute '{name}'", "missing")
                else:
                    c.equal(f"/teacher attribute '{name}' type", k, "string")
                    c.equal(f"/teacher attribute '{name}'", v, t[name])

        # The fingerprint, recomputed here from the contents read back.
        # From what the file holds, so a wrong value above also shows here.
        fp = None
        if None not in (text_en, text_xx, sources) and len(pairs) == 5 and len(images) == len(di["sizes"]):
            try:
                fp = corpus_fingerprint(text_en, text_xx, d["languages"], images, sources, pairs)
            except IndexError:
                c.fail("fingerprint", "not recomputed: a pair row points outside its pool")
        if fp is not None:
            c.equal("fingerprint recomputed from the contents", fp, d["fingerprint"])
        else:
            c.fail("fingerprint", "not recomputed: the contents above did not read back")

    for p in c.problems:
        print(p, file=sys.stderr)
    if c.problems:
        print(f"h5py_corpus: {a.file}: {len(c.problems)} mismatches", file=sys.stderr)
        return 1
    print(f"h5py_corpus: {a.file} matches {a.expected}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write a sample corpus and its expected JSON")
    w.add_argument("out")
    w.add_argument("--images", help="folder with a PNG and a JPEG to use")
    w.add_argument("--tokenizer", help="tokenizer.json the /tokens block is recorded as made by")
    w.add_argument("--minimal", action="store_true", help="no images, teacher or optional attributes")
    k = sub.add_parser("check", help="check a corpus against an expected JSON")
    k.add_argument("file")
    k.add_argument("expected")
    b = sub.add_parser("write-bad", help="write a corpus broken in one way")
    b.add_argument("kind", help=", ".join(BAD_KINDS))
    b.add_argument("out")
    a = ap.parse_args()
    if a.cmd == "write":
        cmd_write(a)
        return 0
    if a.cmd == "write-bad":
        cmd_write_bad(a)
        return 0
    return cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
