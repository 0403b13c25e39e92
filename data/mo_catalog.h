// GNU gettext message catalogs (.mo files, as msgfmt writes them): a reader that trusts nothing in the file.
//
// Layout (all numbers 32-bit, in the byte order the magic number 0x950412de reveals):
//   0  magic          4  revision (major 0 or 1)   8  N, the number of strings
//   12 O, offset of the table of original strings    16 T, offset of the table of translations
//   20 S, hash table size                             24 H, hash table offset
// Each table holds N (length, offset) pairs; string i is `length` bytes at `offset`, followed by a NUL.
// An original string is [msgctxt \x04] msgid [\0 msgid_plural]; its translation is msgstr[0] [\0 msgstr[1]
// ...]. The entry with the empty msgid is the header ("Content-Type: text/plain; charset=UTF-8\n...").
// Revision 1 catalogs may add system-dependent strings (<PRIu64> and the like) in further tables: they are
// not read. The hash table is not needed to list every entry and is not read either.
//
// Every offset and length is checked against the file size: a truncated or corrupt catalog is an xv::Error
// naming the file and what is wrong.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace xv {

struct MoEntry {
  std::string context;              // msgctxt, empty when none
  std::string msgid;                // the English singular
  std::string msgid_plural;         // empty unless a plural entry
  std::vector<std::string> msgstr;  // translations: one, or one per plural form
};

struct MoCatalog {
  std::string path;
  bool big_endian = false;
  uint32_t revision = 0;
  std::string header;   // the translation of the empty msgid, as stored
  std::string charset;  // from the header's Content-Type, as written ("" when the header names none)
  std::vector<MoEntry> entries;  // in file order, header excluded; bytes as stored (see CharsetConverter)
};

// Reads and parses a .mo file. Throws xv::Error naming the file when it cannot be read or is not a
// well-formed catalog.
MoCatalog read_mo_catalog(const std::string& path);
// The same from bytes in memory; `name` stands for the file in error messages.
MoCatalog parse_mo_catalog(std::string_view bytes, const std::string& name);

// The charset parameter of a PO header's Content-Type line ("" when absent).
std::string header_charset(std::string_view header);

// Converts catalog strings to UTF-8 with iconv(3). UTF-8 and ASCII (and a header that names no charset)
// need no conversion: their strings are only checked to be valid UTF-8.
class CharsetConverter {
 public:
  // Throws xv::Error naming `charset` when iconv does not know it.
  explicit CharsetConverter(const std::string& charset);
  ~CharsetConverter();
  CharsetConverter(const CharsetConverter&) = delete;
  CharsetConverter& operator=(const CharsetConverter&) = delete;

  // The UTF-8 text of `in`; false when `in` is not valid in the charset (or, for UTF-8, not valid UTF-8).
  bool to_utf8(std::string_view in, std::string* out);
  bool identity() const { return cd_ == nullptr; }

 private:
  void* cd_ = nullptr;  // iconv_t, null for UTF-8 / ASCII
};

}  // namespace xv
