// libFuzzer target for safetensors files (core/safetensors.h): the input is written to this process's folder
// under $TMPDIR and opened with WeightStore::open_file, which maps it and checks the header (u64 length, JSON)
// and every tensor's dtype, shape and data offsets. Each tensor of a file that opens is then converted to
// f32, which reads all of its bytes: an entry that points outside the mapping faults there.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = (xv_fuzz::work_dir("safetensors") / "model.safetensors").string();
  xv_fuzz::write_bytes(path, xv_fuzz::as_text(data, size));
  try {
    const xv::WeightStore ws = xv::WeightStore::open_file(path);
    for (const std::string& name : ws.names()) {
      try {
        (void)ws.get(name, ws.info(name).shape);
      } catch (const xv::Error&) {
        // Integer tensors are refused as weights: the next tensor is still read.
      }
    }
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  return 0;
}
