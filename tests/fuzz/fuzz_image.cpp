// libFuzzer target for image decoding (image/image.h): the input is an encoded image given to
// decode_image_bytes, which tells PNG from JPEG by the magic bytes. An image that decodes goes on to the
// Phi-3-vision processor (image/phi3v_processor.h) with 1 to 4 crops, picked by the input's last byte (both
// decoders stop at the end of the image and never read it as pixels, unless it is part of the image).
// The processor's branches depend only on the width, the height and the crop count, and one run costs tens
// of milliseconds under the sanitizers: so phi3v_hd_size runs on every image, the whole processor only once
// per (width, height, crops) in a process (a replay, in a fresh process, always runs it), and only up to
// 4 Mpx. The decoder is given a limit of 16 Mpx instead of PIL's 178 Mpx: a few hundred bytes of JPEG header can
// claim 160 Mpx, which decodes (as in PIL) in seconds under the sanitizers, past the per-input timeout; the
// limit's check is the same code either way.
#include <cstddef>
#include <cstdint>
#include <set>
#include <tuple>

#include "core/error.h"
#include "image/image.h"
#include "image/phi3v_processor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  constexpr int64_t kMaxProcessedPixels = int64_t(1) << 22;
  constexpr uint64_t kMaxDecodedPixels = uint64_t(1) << 24;
  static std::set<std::tuple<int, int, int>> processed;
  try {
    const xv::Image img = xv::decode_image_bytes(data, size, "fuzz image", kMaxDecodedPixels);
    xv::Phi3VImageConfig cfg;
    cfg.num_crops = 1 + (size > 0 ? data[size - 1] % 4 : 0);
    (void)xv::phi3v_hd_size(img.width, img.height, cfg.num_crops);
    if (int64_t(img.width) * img.height > kMaxProcessedPixels) return 0;
    if (!processed.insert({img.width, img.height, cfg.num_crops}).second) return 0;
    (void)xv::phi3v_preprocess(img, cfg);
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
  return 0;
}
