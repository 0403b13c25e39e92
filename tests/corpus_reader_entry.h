// The corpus reader's untrusted-input path, as one call: the bytes of a would-be corpus file go to `path`,
// then read_corpus and validate_corpus run on it, once reading everything and once without the image bytes,
// tokens and teacher block (the streaming-friendly path). Shared by the libFuzzer target
// (tests/fuzz/fuzz_corpus_reader.cpp) and its replay test (tests/test_corpus_fuzz_replay.cpp), so CI exercises
// exactly what the fuzzer does.
//
// Contract under test (docs/corpus-format.md, DESIGN "Errors"): any input ends in success or an xv::Error;
// another exception type, a crash or a sanitizer report is a bug. xv::Error is not caught here.
#pragma once
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"
#include "data/corpus.h"

namespace xv_test {

inline void read_corpus_bytes(std::string_view bytes, const std::string& path, const std::string& tokenizer_json) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
    XV_CHECK(out.good(), "{}: cannot write the input", path);
  }
  const xv::Corpus full = xv::read_corpus(path);
  (void)xv::validate_corpus(full, path, tokenizer_json);
  const xv::Corpus lean = xv::read_corpus(path, {.images = false, .tokens = false, .teacher = false});
  (void)xv::validate_corpus(lean, path);
}

}  // namespace xv_test
