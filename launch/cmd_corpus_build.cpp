// xvlm2vec corpus build: a corpus (docs/corpus-format.md) from gettext catalogs, TSV or xMMEB-train JSONL.
#include "launch/commands.h"

namespace xv::cli {

Runner add_corpus_build(CLI::App& corpus) {
  (void)corpus;
  return [] { return -1; };
}

}  // namespace xv::cli
