#!/usr/bin/env python3
"""Golden fixtures for the tokenizer (tokenizer/*.cpp), made with the Hugging Face `tokenizers` library.

Regenerate (from the repository root, with a Python that has `tokenizers`; the MiniLM folder is the one
scripts/prepare-minilm.sh prepares):

    bash scripts/prepare-minilm.sh build/models/all-MiniLM-L6-v2
    python tools/make_tokenizer_fixtures.py build/models/all-MiniLM-L6-v2

What it writes under tests/fixtures/tokenizer/:
  sentences.jsonl             one JSON string per line: >= 2,000 real sentences taken from the gettext
                              catalogs under /usr/share/locale/{it,es,fr,de}/LC_MESSAGES/*.mo (English msgid
                              and translated msgstr, raw), then hand-written edge cases.
  bpe_llama/tokenizer.json    a small BPE trained here on a disjoint part of the same catalogs, with the
                              Llama / Phi-3 pipeline: normalizer Sequence[Prepend, Replace], no pre-tokenizer,
                              byte_fallback, fuse_unk, merges as "a b" strings, TemplateProcessing "<s> $A".
  bpe_metaspace/tokenizer.json  the same model with the newer pipeline: no normalizer, Metaspace
                              pre-tokenizer (prepend_scheme "first", split false), merges as ["a", "b"] lists,
                              ignore_merges, Metaspace decoder.
  expected_<name>.jsonl       one line per sentence, same order as sentences.jsonl:
                              {"ids": encode(s, add_special_tokens=False).ids,
                               "ids_special": encode(s, add_special_tokens=True).ids,
                               "decoded": decode(ids_special, skip_special_tokens=True),
                               "decoded_keep": decode(ids_special, skip_special_tokens=False)}
  meta.json                   per tokenizer: vocab_size (with added tokens) and a few token_to_id probes.
  bpe_prefix_suffix/tokenizer.json  a BPE with continuing_subword_prefix "##" and end_of_word_suffix "</w>"
                              derived from the one above, under the BERT normalizer and pre-tokenizer.
  variants/variants.json      the tokenizers above with other options on (Metaspace split and prepend schemes,
                              NFC/NFD/NFKC/Lowercase, cased BERT, added-token flags, no byte fallback, ...),
                              each an RFC 6902 patch of a base tokenizer.json (the MiniLM one included, so it
                              is never copied), its vocab_size and decode checks on random id lists;
  variants/sentences.jsonl, variants/expected_<variant>.jsonl  as above, on 40 catalog sentences, the edge
                              cases and synthetic strings made of the characters and tokens the options touch.
The MiniLM tokenizer.json itself is not copied into the fixtures: the C++ test reads it from the model folder.
Truncation and padding stored in a tokenizer.json are switched off here: xv::Tokenizer::encode never
truncates nor pads (the callers do, with their own max length).

Everything is deterministic: sorted inputs, a fixed seed; the BPE trainer is deterministic for a given input.
The sentences depend on the catalogs installed (Debian bookworm packages here), so regenerating elsewhere gives
another, equally valid, set; the committed fixtures were made with tokenizers 0.23.3.
"""
import argparse
import glob
import json
import os
import random
import struct
import sys

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

SEED = 20240601
LANGS = ["it", "es", "fr", "de"]
N_ENGLISH = 520          # English msgids in the test set
N_PER_LANG = 370         # translated msgstrs per language in the test set (2,000 catalog strings in all)
N_TRAIN = 24000          # strings (disjoint from the test set) the small BPE is trained on
MAX_CHARS = 300          # longer catalog strings (whole --help pages) are left out of the test set
BPE_VOCAB = 2000         # learned tokens, on top of the 3 specials and the 256 byte tokens
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "tokenizer")

EDGE_CASES = [
    "",
    " ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "hello",
    "Hello world",
    "hello  world   with    many spaces",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "trailing spaces   ",
    "tabs\tand\nnewlines\r\nmixed \t\n end",
    "café naïve résumé à la crème brûlée",
    "Ångström Øresund Łódź Škoda",
    "İstanbul ıi ΣΑΣ σας ς",
    "Straße STRASSE ß",
    "e\u0301 vs \u00e9 (combining acute vs precomposed)",
    "\ufb01 ligature and \uff21\uff22\uff23 fullwidth and \u216b roman",
    "日本語のテキストです。",
    "中文测试，标点符号！",
    "한국어 문장입니다",
    "Привет, мир! Это тест.",
    "مرحبا بالعالم",
    "שלום עולם",
    "ภาษาไทย",
    "emoji 😀🥰👍🏽 family 👨‍👩‍👧 flag 🇮🇹",
    "🤖",
    "math ∑ ∫ √ ≤ ≥ ≠ ∞ and arrows → ← ↔",
    "currency € £ ¥ ₹ ₿ 1,234.56 $7",
    "quotes «guillemets» „Anführung“ “curly” ‘single’",
    "dashes – — ‐ and ellipsis …",
    "don't it's we're I'm you've they'll",
    "U.S.A. e.g. i.e. etc.",
    "a.b,c;d:e!f?g(h)i[j]k{l}m<n>o/p\\q|r~s`t^u_v@w#x$y%z&*+-=",
    "<s>",
    "</s>",
    "<unk>",
    "<s>hello</s>",
    "<s> hello </s>",
    "hello<s>world",
    "<|endoftext|>",
    "text <|endoftext|> more text",
    "<|endoftext|><|endoftext|>",
    "<|image_1|>\nWhat is shown in this image?",
    "<|image_1|><|image_2|> compare the two pictures",
    " <|image_1|> ",
    "<|user|>\nhello<|end|>\n<|assistant|>",
    "<|user|>   spaces after a rstrip token",
    "x<|tool|>y and x <|tool|> y and   <|tool|>",
    "<|tool|>",
    "hello world and Hello World and helloworld",
    "[CLS] hello [SEP]",
    "[MASK] is a [PAD] token [UNK]",
    "<0x41> is not a byte token in text",
    "\u2581 literal metaspace \u2581\u2581 twice",
    "▁hello▁world",
    "zero\u200bwidth soft\u00adhyphen nbsp\u00a0here",
    "control\u0001char and bell\u0007 and del\u007f",
    "null\u0000byte",
    "unassigned \u0378 and private \ue000 and noncharacter \ufdd0",
    "replacement \ufffd char",
    "line\u2028separator and paragraph\u2029separator",
    "ogham\u1680space and ideographic\u3000space",
    "x" * 99,
    "y" * 100,
    "z" * 101,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Pneumonoultramicroscopicsilicovolcanoconiosis " * 3,
    "%s %d %1$s %(name)s {0} {name} \\n \\t",
    "--help  -v, --verbose     explain what is being done",
    "https://example.com/path?query=1&b=2#frag user@example.org",
    "1234567890 3.14159 -42 +7 1e10",
    "ÀÉÎÕÜ àéîõü ÇçÑñ",
    "\U0001d400\U0001d401 math bold, \U00020000 ext-B ideograph",
    "a\u0300\u0301\u0302 stacked marks",
    "Ⓐⓑ circled",
]


def read_mo(path):
    """(msgid, msgstr) pairs of a .mo catalog, as raw strings (plural forms: the first one)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 28:
        return []
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if endian is None:
        return []
    _, n, orig_off, trans_off = struct.unpack(endian + "4I", data[4:20])
    out = []
    for i in range(n):
        olen, ooff = struct.unpack(endian + "2I", data[orig_off + 8 * i: orig_off + 8 * i + 8])
        tlen, toff = struct.unpack(endian + "2I", data[trans_off + 8 * i: trans_off + 8 * i + 8])
        try:
            msgid = data[ooff: ooff + olen].decode("utf-8")
            msgstr = data[toff: toff + tlen].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not msgid:
            continue  # the catalog header
        msgid = msgid.split("\x04")[-1].split("\x00")[0]
        msgstr = msgstr.split("\x00")[0]
        out.append((msgid, msgstr))
    return out


def collect_strings():
    english, translated = set(), {lang: set() for lang in LANGS}
    for lang in LANGS:
        for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
            for msgid, msgstr in read_mo(path):
                english.add(msgid)
                if msgstr:
                    translated[lang].add(msgstr)
    return sorted(english), {lang: sorted(v) for lang, v in translated.items()}


def split_test_train(english, translated):
    rng = random.Random(SEED)
    short = lambda xs: [s for s in xs if 0 < len(s) <= MAX_CHARS]
    test = rng.sample(short(english), N_ENGLISH)
    for lang in LANGS:
        test += rng.sample(short(translated[lang]), N_PER_LANG)
    taken = set(test)
    pool = [s for s in english if s not in taken]
    for lang in LANGS:
        pool += [s for s in translated[lang] if s not in taken]
    pool = sorted(set(pool))
    train = rng.sample(pool, min(N_TRAIN, len(pool)))
    return test, sorted(train)


def train_bpe(train_text):
    """A small Llama-style BPE: <unk> <s> </s>, then the 256 byte tokens <0x00>..<0xFF>, then learned tokens."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Words are split at the metaspace for training only, so that merges stay inside words (as SentencePiece).
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB + 3, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=400, show_progress=False)
    tok.train_from_iterator(train_text, trainer)
    trained = json.loads(tok.to_str())["model"]
    learned = sorted(((i, t) for t, i in trained["vocab"].items() if i >= 3))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for _, t in learned:
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [m if isinstance(m, list) else m.split(" ", 1) for m in trained["merges"]]
    return vocab, merges


def added_token(id_, content, special=True, lstrip=False, rstrip=False, single_word=False, normalized=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip, "rstrip": rstrip,
            "normalized": normalized, "special": special}


def build_bpe_llama(vocab, merges):
    n = len(vocab)
    added = [added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>", rstrip=False),
             added_token(n, "<|endoftext|>"), added_token(n + 1, "<|image_1|>"), added_token(n + 2, "<|image_2|>"),
             added_token(n + 3, "<|user|>", rstrip=True), added_token(n + 4, "<|end|>"),
             added_token(n + 5, "<|assistant|>", rstrip=True),
             added_token(n + 6, "<|tool|>", special=False, lstrip=True, single_word=True)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        "pre_tokenizer": None,
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                    {"Sequence": {"id": "A", "type_id": 0}},
                                    {"SpecialToken": {"id": "<s>", "type_id": 1}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": [f"{a} {b}" for a, b in merges]},
    }


def build_bpe_metaspace(vocab, merges):
    n = len(vocab)
    added = [added_token(0, "<unk>"), added_token(1, "<s>"), added_token(2, "</s>"),
             added_token(n, "<|endoftext|>"), added_token(n + 1, "<|image_1|>"), added_token(n + 2, "<|image_2|>"),
             added_token(n + 3, "hello world", special=False, normalized=True)]
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "</s>", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                              "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteFallback"},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": True,
                  "vocab": vocab, "merges": [[a, b] for a, b in merges]},
    }


def write_json(path, obj, compact=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if compact:
            json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        else:
            json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def expected_lines(tok, sentences):
    lines = []
    for s in sentences:
        ids = tok.encode(s, add_special_tokens=False).ids
        ids_special = tok.encode(s, add_special_tokens=True).ids
        lines.append(json.dumps({"ids": ids, "ids_special": ids_special,
                                 "decoded": tok.decode(ids_special, skip_special_tokens=True),
                                 "decoded_keep": tok.decode(ids_special, skip_special_tokens=False)},
                                ensure_ascii=False, separators=(",", ":")))
    return lines


# ---------------------------------------------------------------------------------------------------------
# Variants: the three tokenizers above with other options switched on, written as RFC 6902 JSON patches
# (so the MiniLM file never needs copying), checked on a smaller set of sentences plus synthetic strings
# built from the characters and tokens those options care about, and on random id lists for decode.

def _tok(content, **kw):
    d = {"id": 0, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": False}
    d.update(kw)
    return d


def _add(path, value):
    return {"op": "add", "path": path, "value": value}


VARIANTS = [
    ("llama_no_byte_fallback", "bpe_llama", [_add("/model/byte_fallback", False), _add("/model/fuse_unk", False)]),
    ("llama_fuse_unk_ignore_merges", "bpe_llama", [_add("/model/byte_fallback", False), _add("/model/fuse_unk", True),
                                                   _add("/model/ignore_merges", True)]),
    ("llama_roberta_no_decoder", "bpe_llama", [
        _add("/post_processor", {"type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1],
                                 "trim_offsets": True, "add_prefix_space": False}),
        _add("/decoder", None)]),
    ("metaspace_split_always", "bpe_metaspace", [_add("/pre_tokenizer/split", True),
                                                 _add("/pre_tokenizer/prepend_scheme", "always")]),
    ("metaspace_never", "bpe_metaspace", [_add("/pre_tokenizer/prepend_scheme", "never"),
                                          _add("/decoder/decoders/1/prepend_scheme", "never")]),
    ("metaspace_legacy_add_prefix_space", "bpe_metaspace", [
        _add("/pre_tokenizer", {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}),
        _add("/decoder/decoders/1", {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True})]),
    ("metaspace_nfkc_lowercase", "bpe_metaspace", [
        _add("/normalizer", {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]})]),
    ("metaspace_nfd_split", "bpe_metaspace", [_add("/normalizer", {"type": "NFD"}), _add("/pre_tokenizer/split", True)]),
    ("metaspace_nfc_whitespace_sequence", "bpe_metaspace", [
        _add("/normalizer", {"type": "NFC"}),
        _add("/pre_tokenizer", {"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"},
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True}]})]),
    ("metaspace_added_token_flags", "bpe_metaspace", [_add("/normalizer", {"type": "Lowercase"})] + [
        _add("/added_tokens/-", t) for t in [
            _tok("aa", single_word=True), _tok("b", single_word=True, lstrip=True), _tok("<x>", rstrip=True),
            _tok("xyz", single_word=True, normalized=True), _tok("Foo", normalized=True, special=True),
            _tok("[MASK]", lstrip=True, special=True), _tok("ab", lstrip=True, rstrip=True, normalized=True)]]),
    ("minilm_cased", "minilm", [_add("/normalizer/lowercase", False), _add("/normalizer/strip_accents", False)]),
    ("minilm_strip_accents_cased", "minilm", [_add("/normalizer/lowercase", False),
                                              _add("/normalizer/strip_accents", True)]),
    ("minilm_no_clean_no_chinese", "minilm", [_add("/normalizer/clean_text", False),
                                              _add("/normalizer/handle_chinese_chars", False)]),
    ("minilm_added_token_flags", "minilm", [
        _add("/added_tokens/4/lstrip", True), _add("/added_tokens/4/rstrip", True),
        _add("/added_tokens/-", _tok("foo bar", normalized=True)),
        _add("/added_tokens/-", _tok("xyz", single_word=True, rstrip=True)),
        _add("/added_tokens/-", _tok("Hello World", normalized=True, special=True)),
        _add("/post_processor", {"type": "BertProcessing", "sep": ["[SEP]", 102], "cls": ["[CLS]", 101]}),
        _add("/model/max_input_chars_per_word", 6)]),
    ("bpe_prefix_suffix", "bpe_prefix_suffix", []),
]
VARIANT_CATALOG_SENTENCES = 40
VARIANT_SYNTHETIC = 100
VARIANT_DECODE_LISTS = 30

SYNTH_POOL = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") + [
    " ", " ", "  ", "\t", "\n", "\r", "\u00a0", "\u3000", "▁", ".", ",", "!", "?", "'", "-", "_", "(", ")", "$", "¿",
    "«", "…", "—", "é", "ü", "ß", "ñ", "İ", "ı", "Σ", "ς", "e\u0301", "\u0301", "\u200b", "\u200d", "\u00ad", "\x00",
    "\x01", "\x7f", "\ufffd", "日", "本", "中", "한", "😀", "🥰", "👍🏽", "\U00020000", "ﬁ", "Ａ", "①", "Ⓐ", "\ue000",
    "\u0378", "<s>", "</s>", "<unk>", "<|endoftext|>", "<|image_1|>", "<|user|>", "<|end|>", "<|tool|>", "hello world",
    "Hello World", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "foo bar", "xyz", " xyz ", "<0x41>", "the", " the", "ing",
    "hello", "aa", "ab", "<x>", "Foo", "FOO"])
SYNTH_SMALL = ["a", "b", "aa", "ab", "<x>", " ", "  ", "é", "_", "1", "xyz", "Foo", "FOO", "[MASK]", "\u0301", "-", "\n",
               "<s>", "</s>", "[CLS]", "\u00a0"]


def synthetic_strings(rng):
    out = []
    for _ in range(VARIANT_SYNTHETIC):
        n = rng.choice([1, 2, 3, 5, 8, 13, 21, 34])
        pool = SYNTH_SMALL if rng.random() < 0.4 else SYNTH_POOL
        out.append("".join(rng.choice(pool) for _ in range(n)))
    return out


def apply_patch(doc, patch):
    """The RFC 6902 "add" operation, the only one the variants use (nlohmann::json::patch applies the same)."""
    doc = json.loads(json.dumps(doc))
    for op in patch:
        assert op["op"] == "add"
        keys = [k.replace("~1", "/").replace("~0", "~") for k in op["path"].split("/")[1:]]
        parent = doc
        for k in keys[:-1]:
            parent = parent[int(k)] if isinstance(parent, list) else parent[k]
        last = keys[-1]
        if isinstance(parent, list):
            if last == "-":
                parent.append(op["value"])
            else:
                parent.insert(int(last), op["value"])
        else:
            parent[last] = op["value"]
    return doc


def write_variants(base_docs, catalog_sentences):
    rng = random.Random(SEED + 1)
    sentences = catalog_sentences[:VARIANT_CATALOG_SENTENCES] + EDGE_CASES + synthetic_strings(rng)
    variants = []
    for name, base, patch in VARIANTS:
        tok = Tokenizer.from_str(json.dumps(apply_patch(base_docs[base], patch)))
        tok.no_truncation()
        tok.no_padding()
        n = tok.get_vocab_size(with_added_tokens=True)
        decode_lists = [[rng.randrange(0, n + 3) for _ in range(rng.randrange(0, 12))]
                        for _ in range(VARIANT_DECODE_LISTS)]
        variants.append({"name": name, "base": base, "patch": patch, "vocab_size": n,
                         "decode": [{"ids": ids, "decoded": tok.decode(ids, skip_special_tokens=True),
                                     "decoded_keep": tok.decode(ids, skip_special_tokens=False)}
                                    for ids in decode_lists]})
        with open(os.path.join(OUT, "variants", f"expected_{name}.jsonl"), "w", encoding="utf-8") as f:
            f.write("\n".join(expected_lines(tok, sentences)) + "\n")
    with open(os.path.join(OUT, "variants", "sentences.jsonl"), "w", encoding="utf-8") as f:
        for s in sentences:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    write_json(os.path.join(OUT, "variants", "variants.json"), variants)
    return len(sentences)


def derive_prefix_suffix_bpe(vocab, merges):
    """A BPE with continuing_subword_prefix "##" and end_of_word_suffix "</w>", derived from the Llama-style
    model rather than trained (the library's trainer breaks ties by hash order when a prefix is set, so it
    is not reproducible): a word-initial token "▁ab" becomes "ab", any other token "ab" becomes "##ab", every
    token also gets its "</w>" form, and each merge (a, b) becomes (a', "##b") then (a', "##b</w>")."""
    def rename(t):
        return t[1:] if t.startswith("▁") else "##" + t
    specials = ["[UNK]", "[CLS]", "[SEP]"]
    out_vocab = {t: i for i, t in enumerate(specials)}
    for t in vocab:
        if t in ("<unk>", "<s>", "</s>", "▁") or (t.startswith("<0x") and len(t) == 6):
            continue
        for form in (rename(t), rename(t) + "</w>"):
            out_vocab.setdefault(form, len(out_vocab))
    out_merges = []
    for a, b in merges:
        if a == "▁" or b.startswith("▁"):
            continue  # "▁x" is the plain character "x" here
        for right in ("##" + b, "##" + b + "</w>"):
            if rename(a) in out_vocab and right in out_vocab and rename(a) + right[2:] in out_vocab:
                out_merges.append(f"{rename(a)} {right}")
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added_token(i, t) for i, t in enumerate(specials)],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "WordPiece", "prefix": "##", "cleanup": False},
            {"type": "Replace", "pattern": {"String": "</w>"}, "content": ""}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "end_of_word_suffix": "</w>", "fuse_unk": False, "byte_fallback": False,
                  "vocab": out_vocab, "merges": out_merges},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("minilm_dir", help="folder holding the all-MiniLM-L6-v2 tokenizer.json")
    args = ap.parse_args()
    minilm_path = os.path.join(args.minilm_dir, "tokenizer.json")
    if not os.path.isfile(minilm_path):
        sys.exit(f"make_tokenizer_fixtures: no tokenizer.json in {args.minilm_dir} (run scripts/prepare-minilm.sh)")

    english, translated = collect_strings()
    test, train = split_test_train(english, translated)
    sentences = test + EDGE_CASES
    vocab, merges = train_bpe(train)

    tokenizers = {}
    for name, doc in [("bpe_llama", build_bpe_llama(vocab, merges)),
                      ("bpe_metaspace", build_bpe_metaspace(vocab, merges))]:
        path = os.path.join(OUT, name, "tokenizer.json")
        write_json(path, doc)
        tokenizers[name] = Tokenizer.from_file(path)
    write_json(os.path.join(OUT, "bpe_prefix_suffix", "tokenizer.json"), derive_prefix_suffix_bpe(vocab, merges),
               compact=True)
    minilm = Tokenizer.from_file(minilm_path)
    minilm.no_truncation()
    minilm.no_padding()
    tokenizers["minilm"] = minilm

    with open(os.path.join(OUT, "sentences.jsonl"), "w", encoding="utf-8") as f:
        for s in sentences:
            f.write(json.dumps(s, ensure_ascii=False) + "\n")
    meta = {}
    probes = ["<s>", "</s>", "<unk>", "<|endoftext|>", "<|image_1|>", "[CLS]", "[SEP]", "[UNK]", "the",
              "▁the", "<0x0A>", "##ing", "hello world", "not-a-token-at-all"]
    for name, tok in tokenizers.items():
        with open(os.path.join(OUT, f"expected_{name}.jsonl"), "w", encoding="utf-8") as f:
            f.write("\n".join(expected_lines(tok, sentences)) + "\n")
        meta[name] = {"vocab_size": tok.get_vocab_size(with_added_tokens=True),
                      "token_to_id": {p: (-1 if tok.token_to_id(p) is None else tok.token_to_id(p)) for p in probes}}
    write_json(os.path.join(OUT, "meta.json"), meta)

    base_docs = {name: json.load(open(os.path.join(OUT, name, "tokenizer.json"), encoding="utf-8"))
                 for name in ["bpe_llama", "bpe_metaspace", "bpe_prefix_suffix"]}
    base_docs["minilm"] = json.load(open(minilm_path, encoding="utf-8"))
    os.makedirs(os.path.join(OUT, "variants"), exist_ok=True)
    n_variant_sentences = write_variants(base_docs, test)
    print(f"make_tokenizer_fixtures: {len(sentences)} sentences ({len(test)} from catalogs, "
          f"{len(EDGE_CASES)} edge cases), BPE vocab {len(vocab)}, {len(VARIANTS)} variants on "
          f"{n_variant_sentences} sentences; written to {OUT}")


if __name__ == "__main__":
    main()
