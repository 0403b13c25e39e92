// Replays one input of the corpus-reader fuzzer (tests/fuzz/fuzz_corpus_reader.cpp) in this process, under a
// debugger or a sanitizer build: the same entry point (tests/corpus_reader_entry.h), then a line saying how it
// ended. An xv::Error is the contract (exit 0); anything else escapes or crashes, as it would in the fuzzer.
//   build/tests/replay_corpus_input FILE
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "tests/corpus_reader_entry.h"
#include "tests/corpus_samples.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s FILE  (an input the corpus-reader fuzzer saved)\n", argv[0]);
    return 2;
  }
  namespace fs = std::filesystem;
  const std::string path = (fs::temp_directory_path() / ("xv_replay_" + std::to_string(::getpid()) + ".h5")).string();
  try {
    xv_test::read_corpus_bytes(xv::read_file(argv[1]), path, xv_test::sample_tokenizer_json());
    std::printf("%s: read and validated\n", argv[1]);
  } catch (const xv::Error& e) {
    std::printf("%s: xv::Error: %s\n", argv[1], e.what());
  }
  std::error_code ec;
  fs::remove(path, ec);
  return 0;
}
