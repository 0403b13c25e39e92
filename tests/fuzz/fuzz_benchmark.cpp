// libFuzzer target for benchmark folders (eval/benchmark.h): read_benchmark on a folder under $TMPDIR made
// from the fixture tests/fixtures/eval/tiny_benchmark, in which one file is the input. The input's first byte
// picks which (modulo 3), the rest is that file's content:
//   0  benchmark.json, the manifest (the task and English files of the fixture beside it)
//   1  de_to_en.jsonl, the first task file the manifest lists (read first, so the others still follow)
//   2  english.jsonl, the held-out English texts (read after every task file)
// Each kind has its own folder, so the fixed files stay as the fixture has them.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/benchmark.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

namespace fs = std::filesystem;

const char* const kFuzzedFile[3] = {"benchmark.json", "de_to_en.jsonl", "english.jsonl"};

// work_dir/<kind>/: a copy of the fixture benchmark.
fs::path make_folder(int kind) {
  const fs::path dir = xv_fuzz::work_dir("benchmark") / std::to_string(kind);
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(fs::path(XV_FIXTURES) / "eval" / "tiny_benchmark"))
    xv_fuzz::write_bytes(dir / e.path().filename(), xv::read_file(e.path().string()));
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const fs::path dirs[3] = {make_folder(0), make_folder(1), make_folder(2)};
  if (size == 0) return 0;
  const int kind = data[0] % 3;
  xv_fuzz::write_bytes(dirs[kind] / kFuzzedFile[kind], xv_fuzz::as_text(data + 1, size - 1));
  try {
    (void)xv::read_benchmark(dirs[kind].string());
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  return 0;
}
