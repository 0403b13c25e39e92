// Text rules of the corpus builders (docs/corpus-build.md): cleaning of UI strings taken from gettext
// catalogs, the trailing-punctuation rule, and the counts the length filters look at. Pure functions of
// their arguments; every input is valid UTF-8 (the builders check that first) and every output is too.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace xv {

// A UI string as a sentence: what a program fills in or styles at run time is taken out, what a reader
// sees is kept. In order:
//   1. control characters (C0, DEL, C1), ANSI escape sequences and the two-character escapes \n \t \r
//      written literally become spaces; zero-width spaces, BOMs and soft hyphens are removed;
//   2. keyboard accelerators: "(_F)" / "(&F)" suffixes (CJK-style translations) are removed with the space
//      before them; "__" becomes "_" and "&&" becomes "&"; a lone "_" or "&" before a letter or digit is
//      removed when it is the only one in the string and does not sit between two capitals or digits
//      (LC_ALL, AT&T, utf_8 are words, not accelerators);
//   3. the entities &amp; &lt; &gt; &quot; &apos; &nbsp; &#N; &#xN; are decoded;
//   4. markup tags of HTML and Pango (<b>, </a>, <span ...>, <br/>: a known tag name, then ">", "/>" or
//      attributes) are removed; inline ones (b i u s a span tt big small sub sup em strong code kbd q markup
//      font) leave nothing, the others a space. Other <words> stay: in command help they are metavariables
//      (<tree-ish>, <file>) that translators translate;
//   5. placeholders are removed: printf conversions (%s %d %5.2f %-10s %1$s %lu %zu %'d %*d %.*s; %%s of
//      strings formatted twice, while a lone %% becomes a literal %; the binutils forms %P %B %pA ...),
//      Python's %(name)s, brace fields {0} {name} {} {0:>8}, shell $VAR ${VAR}. What belongs to the value
//      goes with it: a separator between two placeholders ("%s.%s", "%s:%d"), a "0x", "$" or "#" before one,
//      a "%" after one, enclosing quotes or brackets ('%s' “%s” «%s» »%s« (%s) [%s]), the space before a
//      punctuation mark that followed it ("open %s: %s" -> "open:"), a label's ":" before a closing bracket
//      ("(default: %s)" -> "(default)"), and a separator right after one that began the string
//      ("%s: error" -> "error");
//   6. runs of white space become one space (a lone no-break space is kept: French typography), and the
//      ends are trimmed.
std::string clean_ui_text(std::string_view s);

// The trailing run of a text: its longest suffix made of the characters the trailing rule moves, which are
// white space (space, \t, \n, \r, \v, \f, U+00A0, U+2009, U+202F), the ASCII marks . , : ; ! ? and the
// ellipsis U+2026. Closing quotes and brackets are not in it: they pair with an opening one inside the text.
// Returns its length in bytes.
size_t trailing_run_size(std::string_view s);

// The trailing rule (docs/design.md §2: the embedding is pooled at the last token, so both sides must end the
// same way): `xx` without its own trailing run, followed by the trailing run of `en`.
//   apply_trailing_rule("Save file?\n", "Salvare il file ?") == "Salvare il file?\n"
std::string apply_trailing_rule(std::string_view en, std::string_view xx);

// Removes leading and trailing ASCII white space (space, \t, \n, \r, \v, \f).
std::string_view trim_ascii(std::string_view s);

struct TextCounts {
  size_t chars = 0;    // code points
  size_t letters = 0;  // code points of general category L*
  size_t words = 0;    // space-separated pieces holding at least one letter
};
TextCounts count_text(std::string_view s);

}  // namespace xv
