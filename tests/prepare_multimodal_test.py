#!/usr/bin/env python3
"""tools/prepare_multimodal.py's readers of the packages' formats, on small inputs written here in those formats
(the packages themselves are installed only by scripts/install-multimodal-data.sh):
  - CLDR UnicodeSets as labels.txt writes them (characters, ranges, {sequences}) and the emoji groups read from them;
  - gettext .mo catalogs (written here byte by byte, GNU format): entries with a message context are found under
    'context\\x04msgid', untranslated entries are absent (never filled in);
  - Tux Paint captions: the first line is English, '<lang>.utf8=' lines the rest, other languages ignored.
Usage: prepare_multimodal_test.py REPO_ROOT"""
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(sys.argv.pop(1) if len(sys.argv) > 1 else ".", "tools"))
import prepare_multimodal as pm  # noqa: E402


def write_mo(path, entries):
    """A little-endian GNU .mo file of {msgid (with 'ctx\\x04' when it has a context): msgstr}."""
    keys = sorted(entries)
    ids = [k.encode() for k in keys]
    strs = [entries[k].encode() for k in keys]
    n = len(keys)
    o_ids, o_strs = 28, 28 + 8 * n
    data_at = o_strs + 8 * n
    table_ids, table_strs, blob = [], [], b""
    for s in ids:
        table_ids.append((len(s), data_at + len(blob)))
        blob += s + b"\0"
    for s in strs:
        table_strs.append((len(s), data_at + len(blob)))
        blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, o_ids, o_strs, 0, 0)
    body = b"".join(struct.pack("<2I", *t) for t in table_ids) + b"".join(struct.pack("<2I", *t) for t in table_strs)
    with open(path, "wb") as f:
        f.write(head + body + blob)


class Readers(unittest.TestCase):
    def test_unicode_set(self):
        self.assertEqual(pm.parse_unicode_set("[a-c x{ab}]"), ["a", "b", "c", "x", "ab"])
        self.assertEqual(pm.parse_unicode_set("[😀-😂{👨‍⚕️}]"), ["😀", "😁", "😂", "👨‍⚕️"])

    def test_emoji_groups(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(f"{d}/properties")
            with open(f"{d}/properties/labels.txt", "w", encoding="utf-8") as f:
                f.write("# comment\n[😀-😁]  ;\tSmileys & People\t;\tface-positive\n"
                        "[{❤️}]  ;\tSymbols\t;\theart\n[a]  ;\tLatin\t;\tletter\n")
            saved, pm.CLDR = pm.CLDR, d
            try:
                g = pm.emoji_groups()
            finally:
                pm.CLDR = saved
        # Variation selectors are dropped from the keys; a non-emoji category is not a group.
        self.assertEqual(g, {"😀": "smileys_people", "😁": "smileys_people", "❤": "symbols"})

    def test_mo_catalog(self):
        with tempfile.TemporaryDirectory() as d:
            write_mo(f"{d}/k.mo", {"": "Content-Type: text/plain; charset=UTF-8\n",
                                   "germany.kgm\x04Bavaria": "Baviera", "Italy": "Italia", "Chad": ""})
            cat = pm.mo_catalog(f"{d}/k.mo")
        self.assertEqual(cat.get("germany.kgm\x04Bavaria"), "Baviera")
        self.assertEqual(cat.get("Italy"), "Italia")
        self.assertNotIn("Chad", cat)  # untranslated: absent
        self.assertNotIn("Bavaria", cat)  # only under its context

    def test_stamp_caption(self):
        with tempfile.TemporaryDirectory() as d:
            with open(f"{d}/frog.txt", "w", encoding="utf-8") as f:
                f.write("A frog.\nde.utf8=Ein Frosch.\nen_GB.utf8=A frog!\nit.utf8=Una rana.\nfr.utf8=\nes.utf8=Una rana.\n")
            t = pm.stamp_caption(f"{d}/frog.txt")
        self.assertEqual(t, {"en": "A frog.", "de": "Ein Frosch.", "it": "Una rana.", "es": "Una rana."})


if __name__ == "__main__":
    unittest.main()
