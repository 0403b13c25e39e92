// libFuzzer target for the corpus reader's untrusted-input path (tests/corpus_reader_entry.h): the input
// bytes become a would-be corpus file, then read_corpus and validate_corpus run on it. xv::Error is the
// expected outcome of bad input; a crash, a sanitizer report or any other exception is a finding.
// Built only with -DXV_FUZZ=ON under clang; docs/fuzzing.md says how to build, seed and run it.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "tests/corpus_reader_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // One file per process (libFuzzer's -jobs/-fork run several); TMPDIR=/dev/shm keeps it off the disk.
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("xv_fuzz_corpus_" + std::to_string(::getpid()) + ".h5")).string();
  static const std::string tokenizer = std::string(XV_FIXTURES) + "/models/tiny_bert/tokenizer.json";
  try {
    xv_test::read_corpus_bytes(std::string_view(reinterpret_cast<const char*>(data), size), path, tokenizer);
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  return 0;
}
