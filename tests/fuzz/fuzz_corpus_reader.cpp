// libFuzzer target for the corpus reader's untrusted-input path (tests/corpus_reader_entry.h): the input
// bytes become a would-be corpus file in this process's folder under $TMPDIR, then read_corpus and
// validate_corpus run on it. test_corpus_fuzz_replay runs the same entry point on fixed inputs in every build.
// HDF5 itself is not instrumented and crashes or hangs on some corrupt files (docs/fuzzing.md).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "tests/corpus_reader_entry.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = (xv_fuzz::work_dir("corpus_reader") / "corpus.h5").string();
  static const std::string tokenizer = std::string(XV_FIXTURES) + "/models/tiny_bert/tokenizer.json";
  try {
    xv_test::read_corpus_bytes(xv_fuzz::as_text(data, size), path, tokenizer);
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  return 0;
}
