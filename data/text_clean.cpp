#include "data/text_clean.h"

#include <utf8proc.h>

#include <initializer_list>
#include <utility>

#include "tokenizer/unicode.h"

namespace xv {

namespace {

// Stands where a placeholder was taken out until the tidy-up decides what goes with it (a private-use code
// point: step 1 turns any such character of the input into a space first).
constexpr char32_t kMark = 0xE000;

bool is_ascii_upper_or_digit(char32_t c) { return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }
bool is_ascii_alpha(char32_t c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
bool is_ascii_digit(char32_t c) { return c >= '0' && c <= '9'; }

bool is_letter(char32_t c) {
  if (c < 0x80) return is_ascii_alpha(c);
  switch (utf8proc_category(utf8proc_int32_t(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}
bool is_letter_or_digit(char32_t c) { return is_letter(c) || is_ascii_digit(c); }

// The no-break and thin spaces French typography puts before : ; ! ? and inside « ».
bool is_fixed_space(char32_t c) { return c == 0x00A0 || c == 0x202F || c == 0x2009 || c == 0x2007; }
bool is_space(char32_t c) { return c == ' ' || tok::is_white_space(c) || is_fixed_space(c); }

bool is_trailing_char(char32_t c) {
  switch (c) {
    case ' ': case '\t': case '\n': case '\r': case '\v': case '\f':
    case 0x00A0: case 0x2009: case 0x202F:
    case '.': case ',': case ':': case ';': case '!': case '?': case 0x2026:
      return true;
    default:
      return false;
  }
}

// Step 1: control characters, ANSI escapes and literal backslash escapes become spaces.
std::u32string strip_controls(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char32_t c = s[i];
    if (c == 0x1B) {  // ESC [ params final  (CSI), or ESC + one character
      size_t j = i + 1;
      if (j < s.size() && s[j] == '[') {
        ++j;
        while (j < s.size() && !(s[j] >= 0x40 && s[j] <= 0x7E)) ++j;
      }
      i = j < s.size() ? j : s.size() - 1;
      out += ' ';
    } else if (c == '\\' && i + 1 < s.size() && (s[i + 1] == 'n' || s[i + 1] == 't' || s[i + 1] == 'r')) {
      out += ' ';
      ++i;
    } else if (c == 0x200B || c == 0xFEFF || c == 0x00AD) {
      // zero-width space, BOM, soft hyphen: invisible, dropped
    } else if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F) || (c >= 0xE000 && c <= 0xF8FF)) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

// An entity reference "&name;", "&#N;" or "&#xN;" starting at s[i] ('&'): its length, or 0.
size_t entity_length(const std::u32string& s, size_t i) {
  size_t j = i + 1;
  if (j < s.size() && s[j] == '#') {
    ++j;
    const bool hex = j < s.size() && (s[j] == 'x' || s[j] == 'X');
    if (hex) ++j;
    const size_t start = j;
    while (j < s.size() && (is_ascii_digit(s[j]) || (hex && is_ascii_alpha(s[j]) && (s[j] | 0x20) <= 'f'))) ++j;
    return (j > start && j < s.size() && s[j] == ';') ? j + 1 - i : 0;
  }
  const size_t start = j;
  while (j < s.size() && is_ascii_alpha(s[j])) ++j;
  return (j > start && j < s.size() && s[j] == ';') ? j + 1 - i : 0;
}

// Step 2: keyboard accelerators.
std::u32string strip_accelerators(const std::u32string& in) {
  // "(_F)" / "(&F)", with the space before it: translations keep the English mnemonic letter this way.
  std::u32string s;
  s.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '(' && i + 3 < in.size() && (in[i + 1] == '_' || in[i + 1] == '&') &&
        (is_ascii_alpha(in[i + 2]) || is_ascii_digit(in[i + 2])) && in[i + 3] == ')') {
      while (!s.empty() && is_space(s.back())) s.pop_back();
      i += 3;
      continue;
    }
    s += in[i];
  }
  // A lone marker before a letter or digit is an accelerator when it is the only one of its kind: strings
  // with several are identifiers (max_file_size) or prose, and a marker between capitals or digits is part
  // of a word (LC_ALL, AT&T). Doubled markers are the escaped literal only in strings that have an
  // accelerator; elsewhere "&&" is a shell operator and "__" part of a name.
  for (const char32_t mark : {char32_t('_'), char32_t('&')}) {
    size_t count = 0, at = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != mark) continue;
      if (i + 1 < s.size() && s[i + 1] == mark) {
        ++i;
        continue;
      }
      if (i + 1 >= s.size() || !is_letter_or_digit(s[i + 1])) continue;
      if (mark == '&' && entity_length(s, i) > 0) continue;
      if (i > 0 && is_ascii_upper_or_digit(s[i - 1]) && is_ascii_upper_or_digit(s[i + 1])) continue;
      ++count;
      at = i;
    }
    if (count != 1) continue;
    std::u32string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
      if (i == at) continue;
      out += s[i];
      if (s[i] == mark && i + 1 < s.size() && s[i + 1] == mark) ++i;  // "__" -> "_", "&&" -> "&"
    }
    s = std::move(out);
  }
  return s;
}

// Step 3: character entities.
std::u32string decode_entities(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const size_t n = s[i] == '&' ? entity_length(s, i) : 0;
    if (n == 0) {
      out += s[i];
      continue;
    }
    const std::u32string name = s.substr(i + 1, n - 2);
    char32_t c = 0;
    if (name == U"amp") c = '&';
    else if (name == U"lt") c = '<';
    else if (name == U"gt") c = '>';
    else if (name == U"quot") c = '"';
    else if (name == U"apos") c = '\'';
    else if (name == U"nbsp") c = 0x00A0;
    else if (name[0] == '#') {
      const bool hex = name.size() > 1 && (name[1] == 'x' || name[1] == 'X');
      uint32_t v = 0;
      for (size_t k = hex ? 2 : 1; k < name.size() && v <= 0x10FFFF; ++k) {
        const char32_t d = name[k];
        const uint32_t digit = is_ascii_digit(d) ? d - '0' : (d | 0x20) - 'a' + 10;
        v = v * (hex ? 16 : 10) + digit;
      }
      c = (v > 0 && v <= 0x10FFFF && !(v >= 0xD800 && v <= 0xDFFF)) ? char32_t(v) : char32_t(' ');
      if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F) || (c >= 0xE000 && c <= 0xF8FF)) c = ' ';
    }
    if (c == 0) {  // an entity we do not know: left as written
      out += s[i];
      continue;
    }
    out += c;
    i += n - 1;
  }
  return out;
}

bool is_one_of(const std::u32string& name, std::initializer_list<const char32_t*> names) {
  for (const char32_t* t : names)
    if (name == t) return true;
  return false;
}

// The HTML and Pango tags UI strings use. Other <words> are kept: in command help they are metavariables
// ("git reset <tree-ish>") that translators translate, so they are content.
bool is_markup_tag(const std::u32string& name) {
  return is_one_of(name, {U"a",   U"b",  U"big", U"blockquote", U"br", U"code", U"div",    U"em",   U"font", U"h1",
                          U"h2",  U"h3", U"h4",  U"h5",         U"h6", U"hr",   U"i",      U"img",  U"kbd",  U"li",
                          U"markup", U"ol", U"p", U"pre",       U"q",  U"s",    U"small",  U"span", U"strong",
                          U"sub", U"sup", U"table", U"td",      U"th", U"tr",   U"tt",     U"u",    U"ul"});
}
bool is_inline_tag(const std::u32string& name) {
  return is_one_of(name, {U"b", U"i", U"u", U"s", U"a", U"span", U"tt", U"big", U"small", U"sub", U"sup", U"em",
                          U"strong", U"code", U"kbd", U"q", U"markup", U"font"});
}

// Step 4: markup tags.
std::u32string strip_tags(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '<') {
      size_t j = i + 1;
      if (j < s.size() && s[j] == '/') ++j;
      if (j < s.size() && is_ascii_alpha(s[j])) {
        const size_t name_start = j;
        while (j < s.size() && (is_ascii_alpha(s[j]) || is_ascii_digit(s[j]))) ++j;
        std::u32string name = s.substr(name_start, j - name_start);
        for (auto& c : name) c = (c >= 'A' && c <= 'Z') ? c + 32 : c;
        size_t k = j;
        while (k < s.size() && s[k] != '>' && s[k] != '<') ++k;
        // After the name: ">", "/>" or a space and attributes ("<span weight=...>").
        const bool shaped = j < s.size() && (s[j] == '>' || s[j] == '/' || s[j] == ' ');
        if (k < s.size() && s[k] == '>' && shaped && is_markup_tag(name)) {
          if (!is_inline_tag(name)) out += ' ';
          i = k;
          continue;
        }
      }
    }
    out += s[i];
  }
  return out;
}

bool is_printf_conversion(char32_t c) {
  static const std::u32string_view kConv = U"diouxXeEfFgGaAcsCSpnmv";  // v: binutils, a VMA
  return kConv.find(c) != std::u32string_view::npos;
}

// A printf conversion starting at s[i] ('%'): %[N$][flags][width][.precision][length]conversion, or a
// Python %(name)[flags][width][.precision]conversion. Returns its length, or 0. The space flag is not
// accepted: "50 % des fichiers" is prose, not "% d".
size_t printf_length(const std::u32string& s, size_t i) {
  size_t j = i + 1;
  auto digits = [&] {
    const size_t start = j;
    while (j < s.size() && is_ascii_digit(s[j])) ++j;
    return j > start;
  };
  auto star = [&] {  // "*" or "*N$"
    if (j >= s.size() || s[j] != '*') return false;
    ++j;
    const size_t save = j;
    if (digits() && j < s.size() && s[j] == '$') ++j;
    else j = save;
    return true;
  };
  bool python = false;
  if (j < s.size() && s[j] == '(') {
    const size_t close = s.find(')', j);
    if (close == std::u32string::npos || close - j > 64) return 0;
    j = close + 1;
    python = true;
  } else {
    const size_t save = j;
    if (!(digits() && j < s.size() && s[j] == '$' && ++j)) j = save;  // N$
  }
  while (j < s.size() && (s[j] == '-' || s[j] == '+' || s[j] == '#' || s[j] == '0' || s[j] == '\'')) ++j;
  if (!star()) digits();
  if (j < s.size() && s[j] == '.') {
    ++j;
    if (!star()) digits();
  }
  if (!python) {
    static const std::u32string_view kLength[] = {U"hh", U"ll", U"h", U"l", U"L", U"q", U"j", U"z", U"Z", U"t"};
    for (const auto len : kLength)
      if (s.compare(j, len.size(), len) == 0) {
        j += len.size();
        break;
      }
  }
  if (j < s.size() && (is_printf_conversion(s[j]) || (python && s[j] == 'r'))) {
    // "%pA", "%pB", ...: the binutils extensions of %p.
    if (s[j] == 'p' && j + 1 < s.size() && s[j + 1] >= 'A' && s[j + 1] <= 'Z') ++j;
    return j + 1 - i;
  }
  // "%P", "%B", "%E", ...: the binutils message formatter's own conversions (program, BFD, errno, ...).
  if (!python && j == i + 1 && j < s.size() && s[j] >= 'A' && s[j] <= 'Z') return 2;
  return 0;
}

// A brace field starting at s[i] ('{'): {}, {0}, {name}, {name.attr[0]}, {0!r}, {0:>8}. Returns its length.
size_t brace_length(const std::u32string& s, size_t i) {
  size_t j = i + 1;
  while (j < s.size() && (is_ascii_alpha(s[j]) || is_ascii_digit(s[j]) || s[j] == '_' || s[j] == '.' ||
                          s[j] == '[' || s[j] == ']'))
    ++j;
  if (j + 1 < s.size() && s[j] == '!' && (s[j + 1] == 'r' || s[j + 1] == 's' || s[j + 1] == 'a')) j += 2;
  if (j < s.size() && s[j] == ':') {
    while (j < s.size() && s[j] != '}' && s[j] != '{' && !is_space(s[j])) ++j;
  }
  return (j < s.size() && s[j] == '}' && j - i <= 64) ? j + 1 - i : 0;
}

// A shell variable starting at s[i] ('$'): $NAME or ${NAME}. Returns its length.
size_t shell_var_length(const std::u32string& s, size_t i) {
  size_t j = i + 1;
  const bool braced = j < s.size() && s[j] == '{';
  if (braced) ++j;
  if (j >= s.size() || !(is_ascii_alpha(s[j]) || s[j] == '_')) return 0;
  while (j < s.size() && (is_ascii_alpha(s[j]) || is_ascii_digit(s[j]) || s[j] == '_')) ++j;
  if (!braced) return j - i;
  return (j < s.size() && s[j] == '}') ? j + 1 - i : 0;
}

// Step 5a: every placeholder becomes kMark; "%%" becomes "%".
std::u32string mark_placeholders(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    size_t n = 0;
    if (s[i] == '%') {
      if (i + 1 < s.size() && s[i + 1] == '%') {
        // "%%s" is a placeholder of a string formatted twice (the first pass leaves "%s"); "%%" alone is
        // a literal percent sign.
        n = printf_length(s, i + 1);
        if (n == 0) {
          out += '%';
          ++i;
          continue;
        }
        ++n;
      } else {
        n = printf_length(s, i);
      }
    } else if (s[i] == '{') {
      n = brace_length(s, i);
    } else if (s[i] == '$') {
      n = shell_var_length(s, i);
    }
    if (n == 0) {
      out += s[i];
    } else {
      out += kMark;
      i += n - 1;
    }
  }
  return out;
}

bool is_enclosing_pair(char32_t open, char32_t close) {
  static const std::pair<char32_t, char32_t> kPairs[] = {
      {'\'', '\''},     {'"', '"'},       {'`', '\''},      {'`', '`'},       {0x2018, 0x2019}, {0x201C, 0x201D},
      {0x201E, 0x201C}, {0x201E, 0x201D}, {0x201A, 0x2018}, {0x00AB, 0x00BB}, {0x00BB, 0x00AB}, {0x2039, 0x203A},
      {0x203A, 0x2039}, {'(', ')'},       {'[', ']'},       {'<', '>'},       {0x300C, 0x300D}, {0x2019, 0x2019}};
  for (const auto& [o, c] : kPairs)
    if (o == open && c == close) return true;
  return false;
}

bool is_closing_mark(char32_t c) {
  switch (c) {
    case ',': case '.': case ';': case ':': case '!': case '?': case ')': case ']': case 0x2026:
      return true;
    default:
      return false;
  }
}

bool is_opening_mark(char32_t c) {
  switch (c) {
    case '(': case '[': case '"': case 0x00AB: case 0x00BB: case 0x201C: case 0x201E: case 0x2018: case 0x300C:
      return true;
    default:
      return false;
  }
}

// Step 5b: what goes with each placeholder: enclosing quotes or brackets, the space before a following
// punctuation mark, a separator after a leading placeholder.
std::u32string tidy_placeholders(std::u32string s) {
  // What is part of the value: a separator between two placeholders ("%s.%s", "%s:%d", "%d/%d"), a "0x", "$"
  // or "#" written before one ("0x%08x", "$%d", "#%d"), a "%" after one ("%d%%", once step 5a has run).
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < s.size() && !changed; ++i) {
      if (s[i] != kMark) continue;
      if (i + 2 < s.size() && s[i + 2] == kMark && std::u32string_view(U".:/-_@x").find(s[i + 1]) != std::u32string_view::npos) {
        s.erase(i + 1, 2);
        changed = true;
      } else if (i + 1 < s.size() && s[i + 1] == '%') {
        s.erase(i + 1, 1);
        changed = true;
      } else if (i > 0 && (s[i - 1] == '$' || s[i - 1] == '#')) {
        s.erase(i - 1, 1);
        changed = true;
      } else if (i > 1 && (s[i - 1] == 'x' || s[i - 1] == 'X') && s[i - 2] == '0' &&
                 (i == 2 || !is_letter_or_digit(s[i - 3]))) {
        s.erase(i - 2, 2);
        changed = true;
      }
    }
  }
  // Quotes around nothing but placeholders and spaces collapse into one placeholder, repeatedly: ('%s').
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != kMark) continue;
      size_t p = i, n = i + 1;
      while (p > 0 && (is_space(s[p - 1]) || s[p - 1] == kMark)) --p;
      while (n < s.size() && (is_space(s[n]) || s[n] == kMark)) ++n;
      if (p == 0 || n >= s.size() || !is_enclosing_pair(s[p - 1], s[n])) continue;
      s.replace(p - 1, n - p + 2, 1, kMark);
      changed = true;
      break;
    }
  }
  std::u32string out;
  out.reserve(s.size());
  auto only_spaces = [&] {
    for (const char32_t c : out)
      if (!is_space(c)) return false;
    return true;
  };
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != kMark) {
      out += s[i];
      continue;
    }
    size_t j = i + 1;
    while (j < s.size() && is_space(s[j])) ++j;
    if (only_spaces()) {  // "%s: error" -> "error"
      out.clear();
      if (j < s.size() && (s[j] == ':' || s[j] == ';' || s[j] == ',')) {
        ++j;
        while (j < s.size() && is_space(s[j])) ++j;
      }
      i = j - 1;
    } else if (j < s.size() && is_closing_mark(s[j])) {  // "open %s: x" -> "open: x"
      while (!out.empty() && is_space(out.back())) out.pop_back();
      // "(default: %s)" -> "(default)": the label lost its value.
      if ((s[j] == ')' || s[j] == ']') && !out.empty() && (out.back() == ':' || out.back() == '=')) {
        out.pop_back();
        while (!out.empty() && is_space(out.back())) out.pop_back();
      }
      i = j - 1;
    } else if (is_opening_mark(out.back())) {  // "(%d bytes)" -> "(bytes)"
      i = j - 1;
    }
  }
  return out;
}

// Step 6: white space runs and the ends.
std::u32string collapse_spaces(const std::u32string& s) {
  std::u32string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (!is_space(s[i])) {
      out += s[i++];
      continue;
    }
    size_t j = i;
    while (j < s.size() && is_space(s[j])) ++j;
    const bool keep_fixed = j - i == 1 && is_fixed_space(s[i]);
    if (i > 0 && j < s.size()) out += keep_fixed ? s[i] : char32_t(' ');
    i = j;
  }
  return out;
}

}  // namespace

std::string clean_ui_text(std::string_view s) {
  std::u32string t = tok::utf8_to_u32(s);
  t = strip_controls(t);
  t = strip_accelerators(t);
  t = decode_entities(t);
  t = strip_tags(t);
  t = tidy_placeholders(mark_placeholders(t));
  t = collapse_spaces(t);
  return tok::u32_to_utf8(t);
}

size_t trailing_run_size(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = end - 1;
    while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    char32_t c;
    tok::utf8_decode(s, start, &c);
    if (!is_trailing_char(c)) break;
    end = start;
  }
  return s.size() - end;
}

std::string apply_trailing_rule(std::string_view en, std::string_view xx) {
  std::string out(xx.substr(0, xx.size() - trailing_run_size(xx)));
  out.append(en.substr(en.size() - trailing_run_size(en)));
  return out;
}

std::string_view trim_ascii(std::string_view s) {
  constexpr std::string_view kWs = " \t\n\r\v\f";
  const size_t b = s.find_first_not_of(kWs);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(kWs) + 1 - b);
}

TextCounts count_text(std::string_view s) {
  TextCounts c;
  bool in_word = false, word_has_letter = false;
  for (size_t i = 0; i < s.size();) {
    char32_t cp;
    i += size_t(tok::utf8_decode(s, i, &cp));
    ++c.chars;
    if (is_space(cp)) {
      if (in_word && word_has_letter) ++c.words;
      in_word = word_has_letter = false;
      continue;
    }
    in_word = true;
    if (is_letter(cp)) {
      ++c.letters;
      word_has_letter = true;
    }
  }
  if (in_word && word_has_letter) ++c.words;
  return c;
}

}  // namespace xv
