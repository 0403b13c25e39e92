#include "data/mo_catalog.h"

#include <iconv.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/file_util.h"
#include "tokenizer/unicode.h"

namespace xv {

namespace {

constexpr uint32_t kMagic = 0x950412de;
constexpr uint32_t kMagicSwapped = 0xde120495;

uint32_t load_u32(std::string_view b, size_t at, bool big_endian) {
  const auto* p = reinterpret_cast<const unsigned char*>(b.data()) + at;
  if (big_endian) return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
  return uint32_t(p[3]) << 24 | uint32_t(p[2]) << 16 | uint32_t(p[1]) << 8 | uint32_t(p[0]);
}

// String `i` of the table at `table`: checked to lie inside the file (its NUL included).
std::string_view table_string(std::string_view b, uint64_t table, uint32_t i, bool big_endian, const std::string& name,
                              const char* what) {
  const uint64_t at = table + uint64_t(i) * 8;
  const uint32_t len = load_u32(b, size_t(at), big_endian);
  const uint32_t off = load_u32(b, size_t(at) + 4, big_endian);
  XV_CHECK(uint64_t(off) + len < b.size(),
           "{}: {} string {} (offset {}, length {}) runs past the end of the file ({} bytes): truncated or corrupt "
           "catalog",
           name, what, i, off, len, b.size());
  XV_CHECK(b[off + len] == '\0', "{}: {} string {} (offset {}, length {}) is not followed by a NUL byte: corrupt catalog",
           name, what, i, off, len);
  return b.substr(off, len);
}

std::vector<std::string> split_nul(std::string_view s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t z = s.find('\0', start);
    parts.emplace_back(s.substr(start, z == std::string_view::npos ? std::string_view::npos : z - start));
    if (z == std::string_view::npos) break;
    start = z + 1;
  }
  return parts;
}

std::string lower_ascii(std::string s) {
  for (auto& c : s)
    if (c >= 'A' && c <= 'Z') c = char(c + 32);
  return s;
}

bool is_utf8_name(const std::string& charset) {
  const std::string c = lower_ascii(charset);
  return c.empty() || c == "utf-8" || c == "utf8" || c == "ascii" || c == "us-ascii" || c == "ansi_x3.4-1968";
}

}  // namespace

std::string header_charset(std::string_view header) {
  // The header is "Field: value\n" lines; the charset is a parameter of Content-Type.
  size_t line_start = 0;
  while (line_start < header.size()) {
    size_t line_end = header.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = header.size();
    const std::string line = lower_ascii(std::string(header.substr(line_start, line_end - line_start)));
    if (line.rfind("content-type:", 0) == 0) {
      const size_t at = line.find("charset=");
      if (at == std::string::npos) return "";
      const size_t start = at + 8;
      size_t end = start;
      while (end < line.size() && line[end] != ';' && line[end] != ' ' && line[end] != '\t' && line[end] != '\r') ++end;
      // Case as written in the file (charset names are case-insensitive; messages show what the file says).
      return std::string(header.substr(line_start + start, end - start));
    }
    line_start = line_end + 1;
  }
  return "";
}

MoCatalog parse_mo_catalog(std::string_view b, const std::string& name) {
  MoCatalog cat;
  cat.path = name;
  XV_CHECK(b.size() >= 28, "{}: {} bytes, too short for a .mo header (28 bytes): truncated or not a catalog", name,
           b.size());
  const uint32_t magic = load_u32(b, 0, false);
  XV_CHECK(magic == kMagic || magic == kMagicSwapped,
           "{}: magic number 0x{:08x} is not a GNU .mo catalog's 0x950412de (in either byte order)", name, magic);
  cat.big_endian = magic == kMagicSwapped;
  const bool be = cat.big_endian;
  cat.revision = load_u32(b, 4, be);
  XV_CHECK((cat.revision >> 16) <= 1, "{}: format revision {}.{} is not supported (major revision 0 or 1 expected)",
           name, cat.revision >> 16, cat.revision & 0xffff);
  const uint32_t n = load_u32(b, 8, be);
  const uint64_t orig = load_u32(b, 12, be), trans = load_u32(b, 16, be);
  for (const auto& [table, what] : {std::pair{orig, "original"}, std::pair{trans, "translation"}}) {
    XV_CHECK(table + uint64_t(n) * 8 <= b.size(),
             "{}: the {} string table ({} entries at offset {}) runs past the end of the file ({} bytes): truncated "
             "or corrupt catalog",
             name, what, n, table, b.size());
  }
  cat.entries.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    std::string_view id = table_string(b, orig, i, be, name, "original");
    const std::string_view str = table_string(b, trans, i, be, name, "translation");
    if (id.empty()) {  // the header
      cat.header = std::string(str);
      cat.charset = header_charset(cat.header);
      continue;
    }
    MoEntry e;
    if (const size_t eot = id.find('\x04'); eot != std::string_view::npos) {
      e.context = std::string(id.substr(0, eot));
      id = id.substr(eot + 1);
    }
    if (const size_t z = id.find('\0'); z != std::string_view::npos) {
      e.msgid = std::string(id.substr(0, z));
      e.msgid_plural = std::string(id.substr(z + 1));
    } else {
      e.msgid = std::string(id);
    }
    e.msgstr = split_nul(str);
    cat.entries.push_back(std::move(e));
  }
  return cat;
}

MoCatalog read_mo_catalog(const std::string& path) {
  require_regular_file(path, "the catalog");
  std::ifstream f(path, std::ios::binary);
  XV_CHECK(f.good(), "{}: cannot open the catalog for reading", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  XV_CHECK(!f.bad(), "{}: read error", path);
  return parse_mo_catalog(ss.str(), path);
}

CharsetConverter::CharsetConverter(const std::string& charset) {
  if (is_utf8_name(charset)) return;
  iconv_t cd = iconv_open("UTF-8", charset.c_str());
  XV_CHECK(cd != iconv_t(-1), "charset \"{}\" is not known to iconv (UTF-8 or a charset iconv converts expected)",
           charset);
  cd_ = cd;
}

CharsetConverter::~CharsetConverter() {
  if (cd_ != nullptr) iconv_close(static_cast<iconv_t>(cd_));
}

bool CharsetConverter::to_utf8(std::string_view in, std::string* out) {
  if (cd_ == nullptr) {
    if (tok::utf8_invalid_at(in) != std::string_view::npos) return false;
    out->assign(in);
    return true;
  }
  auto cd = static_cast<iconv_t>(cd_);
  iconv(cd, nullptr, nullptr, nullptr, nullptr);  // reset the shift state
  std::string buf(in.size() * 4 + 16, '\0');
  char* src = const_cast<char*>(in.data());  // iconv's signature; it does not write through it
  size_t src_left = in.size();
  char* dst = buf.data();
  size_t dst_left = buf.size();
  while (src_left > 0) {
    if (iconv(cd, &src, &src_left, &dst, &dst_left) != size_t(-1)) continue;
    if (errno != E2BIG) return false;  // EILSEQ / EINVAL: not valid in the charset
    const size_t used = buf.size() - dst_left;
    buf.resize(buf.size() * 2);
    dst = buf.data() + used;
    dst_left = buf.size() - used;
  }
  if (iconv(cd, nullptr, nullptr, &dst, &dst_left) == size_t(-1)) return false;
  buf.resize(buf.size() - dst_left);
  if (tok::utf8_invalid_at(buf) != std::string_view::npos) return false;
  *out = std::move(buf);
  return true;
}

}  // namespace xv
