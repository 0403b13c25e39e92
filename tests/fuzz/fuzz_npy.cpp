// libFuzzer target for NumPy .npy files (core/npy.h): the input is written to this process's folder under
// $TMPDIR and read with read_npy (any supported dtype to f32) and read_npy_i64 (integer arrays), each on its
// own.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/npy.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = (xv_fuzz::work_dir("npy") / "array.npy").string();
  xv_fuzz::write_bytes(path, xv_fuzz::as_text(data, size));
  try {
    (void)xv::read_npy(path);
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  try {
    xv::Shape shape;
    (void)xv::read_npy_i64(path, &shape);
  } catch (const xv::Error&) {
  }
  return 0;
}
