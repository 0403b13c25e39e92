// Image decoding: PNG (libpng) and JPEG (libjpeg-turbo) to 8-bit RGB, pixel for pixel as the reference
// pipeline reads images, `PIL.Image.open(path).convert("RGB")`:
//   - the format comes from the magic bytes, never from the file name;
//   - grayscale is replicated to R=G=B; 1/2/4-bit gray expands as PIL does (x255, x85, x17);
//   - palette images are looked up in their PLTE (indices past its end give black, as in PIL);
//   - alpha (RGBA, LA, tRNS) is dropped, not composited;
//   - 16-bit PNGs: colour and gray+alpha keep the high byte of each sample; 16-bit gray is clipped to 255
//     (PIL opens it as mode "I;16", whose RGB conversion clips: most 16-bit gray photos come out white);
//   - JPEG with libjpeg's defaults, as Pillow decodes it (islow IDCT, fancy upsampling); CMYK/YCCK JPEGs are
//     read as Adobe-inverted CMYK and converted with PIL's cmyk2rgb;
//   - no gamma, ICC or EXIF-orientation handling (PIL's open + convert applies none);
//   - a truncated file is an error (PIL: "image file is truncated"), data after the last row is not read;
//   - more than 2 * 89,478,485 pixels is an error (PIL's decompression-bomb limit).
// Every libpng/libjpeg failure becomes an xv::Error naming the file and the problem.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace xv {

// The largest image file read (load_image, and whatever else reads image files whole).
inline constexpr uint64_t kMaxImageFileBytes = uint64_t(1) << 30;
// The most pixels an image may have: PIL raises DecompressionBombError above twice Image.MAX_IMAGE_PIXELS.
inline constexpr uint64_t kMaxImagePixels = 2ull * 89478485ull;

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // (H, W, 3) row-major
};

// Reads and decodes an image file.
Image load_image(const std::string& path);
// Decodes an encoded PNG or JPEG held in memory (a corpus stores images as bytes); `name` names the
// source in error messages.
// `max_pixels` lowers the pixel limit (the fuzz target's, so that one input never decodes for seconds).
Image decode_image_bytes(const uint8_t* data, size_t n, const std::string& name,
                         uint64_t max_pixels = kMaxImagePixels);

}  // namespace xv
