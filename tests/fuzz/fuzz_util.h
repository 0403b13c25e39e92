// What the libFuzzer targets of tests/fuzz/ share: a folder of this process's own under $TMPDIR for parsers
// that only take a path (libFuzzer's -jobs and -fork run several processes side by side), and writing the
// input there. A failure to write is the harness's, not the parser's: it aborts instead of throwing.
#pragma once
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace xv_fuzz {

inline std::string_view as_text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// $TMPDIR/xv_fuzz_<name>_<pid>/, made on the first call and removed when the fuzzer exits normally (after a
// crash it stays, with the input that caused it).
inline const std::filesystem::path& work_dir(const char* name) {
  static std::string removed_at_exit;
  static const std::filesystem::path dir = [&] {
    const std::filesystem::path d = std::filesystem::temp_directory_path() /
                                    ("xv_fuzz_" + std::string(name) + "_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    removed_at_exit = d.string();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removed_at_exit, ec);
    });
    return d;
  }();
  return dir;
}

inline void write_bytes(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  out.close();
  if (!out) {
    std::fprintf(stderr, "fuzz harness: cannot write %s\n", path.c_str());
    std::abort();
  }
}

}  // namespace xv_fuzz
