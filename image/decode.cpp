// PNG and JPEG decoding to RGB8, matching PIL's `Image.open(p).convert("RGB")` (see image/image.h).
//
// libpng and libjpeg report errors by longjmp. A longjmp must not cross a frame that holds C++ objects with
// destructors, so each library call sequence runs in a small "phase" function whose frame holds only plain
// pointers: it calls setjmp, runs the library, and returns false with the library's message on failure.
// The C++ code between phases allocates the buffers and throws; the library handles are freed by guards in
// the caller, which never calls setjmp itself.
#include "image/image.h"

#include <png.h>
// jpeglib.h needs FILE and size_t declared before it.
#include <cstdio>
#include <jpeglib.h>
#include <jerror.h>  // JERR_INPUT_EOF

#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/file_util.h"

namespace xv {

namespace {

// An image file is read whole before decoding; none that decodes within kMaxImagePixels needs more.

void check_pixels(const std::string& name, const char* format, uint64_t width, uint64_t height, uint64_t max_pixels) {
  XV_CHECK(width > 0 && height > 0, "{}: {} image has an empty size {}x{}", name, format, width, height);
  XV_CHECK(width * height <= max_pixels, "{}: {} image is {}x{} = {} pixels, more than the limit of {}{}", name, format,
           width, height, width * height, max_pixels,
           max_pixels == kMaxImagePixels ? " (PIL's decompression-bomb limit)" : "");
}

// ---------------------------------------------------------------------------------------------------------
// PNG

struct PngSource {  // plain data: it lives across longjmp
  const uint8_t* data;
  size_t size;
  size_t pos;
  char msg[256];
};

void png_on_error(png_structp png, png_const_charp msg) {
  auto* src = static_cast<PngSource*>(png_get_error_ptr(png));
  std::snprintf(src->msg, sizeof(src->msg), "%s", msg ? msg : "unknown libpng error");
  png_longjmp(png, 1);
}

void png_on_warning(png_structp, png_const_charp) {}  // PIL does not report them either

void png_on_read(png_structp png, png_bytep out, size_t n) {
  auto* src = static_cast<PngSource*>(png_get_io_ptr(png));
  if (n > src->size - src->pos) {
    char msg[160];
    std::snprintf(msg, sizeof(msg), "file is truncated (needed %zu bytes at offset %zu, %zu left)", n, src->pos,
                  src->size - src->pos);
    png_error(png, msg);
  }
  std::memcpy(out, src->data + src->pos, n);
  src->pos += n;
}

// The row layout after the read transformations below.
struct PngLayout {
  uint32_t width, height;
  int color_type;  // of the file: PNG_COLOR_TYPE_*
  int bit_depth;   // after transformations: 8 or 16
  int channels;    // after transformations: 1 (gray or palette index), 2, 3 or 4
  size_t rowbytes;
  uint8_t palette[256 * 3];  // indices past the PLTE stay black, as in PIL
};

bool png_read_layout(png_structp png, png_infop info, PngLayout* out) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  png_uint_32 width = 0, height = 0;
  int bit_depth = 0, color_type = 0;
  png_get_IHDR(png, info, &width, &height, &bit_depth, &color_type, nullptr, nullptr, nullptr);
  std::memset(out->palette, 0, sizeof(out->palette));
  if (color_type == PNG_COLOR_TYPE_PALETTE) {
    png_colorp pal = nullptr;
    int num = 0;
    if (png_get_PLTE(png, info, &pal, &num) & PNG_INFO_PLTE) {
      for (int i = 0; i < num && i < 256; ++i) {
        out->palette[3 * i + 0] = pal[i].red;
        out->palette[3 * i + 1] = pal[i].green;
        out->palette[3 * i + 2] = pal[i].blue;
      }
    }
    png_set_packing(png);  // 1/2/4-bit indices to one byte each; the lookup is ours (no tRNS expansion)
  } else if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) {
    png_set_expand_gray_1_2_4_to_8(png);  // scales as PIL's "1", "L;2", "L;4" unpackers do
  }
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  out->width = width;
  out->height = height;
  out->color_type = color_type;
  out->bit_depth = png_get_bit_depth(png, info);
  out->channels = png_get_channels(png, info);
  out->rowbytes = png_get_rowbytes(png, info);
  return true;
}

bool png_read_rows(png_structp png, png_bytepp rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  // The chunks after the image data (png_read_end) are not read: PIL ignores a damaged or missing tail too.
  png_read_image(png, rows);
  return true;
}

struct PngHandles {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngHandles() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

Image decode_png(const uint8_t* data, size_t n, const std::string& name, uint64_t max_pixels) {
  PngSource src{data, n, 0, {0}};
  PngHandles h;
  h.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_on_error, png_on_warning);
  XV_CHECK(h.png, "{}: cannot decode PNG: libpng could not allocate its reader", name);
  h.info = png_create_info_struct(h.png);
  XV_CHECK(h.info, "{}: cannot decode PNG: libpng could not allocate its info struct", name);
  png_set_read_fn(h.png, &src, png_on_read);
  // A bad CRC is an error in any chunk (libpng's default only warns for ancillary chunks; PIL raises).
  png_set_crc_action(h.png, PNG_CRC_ERROR_QUIT, PNG_CRC_ERROR_QUIT);

  PngLayout lay{};
  if (!png_read_layout(h.png, h.info, &lay)) fail("{}: cannot decode PNG: {}", name, src.msg);
  check_pixels(name, "PNG", lay.width, lay.height, max_pixels);
  const size_t bps = size_t(lay.bit_depth / 8);  // bytes per sample
  XV_CHECK((lay.bit_depth == 8 || lay.bit_depth == 16) && lay.channels >= 1 && lay.channels <= 4 &&
               lay.rowbytes == size_t(lay.width) * size_t(lay.channels) * bps,
           "{}: cannot decode PNG: unexpected row layout (bit depth {}, {} channels, {} bytes per row)", name,
           lay.bit_depth, lay.channels, lay.rowbytes);

  std::vector<uint8_t> raw(lay.rowbytes * lay.height);
  std::vector<png_bytep> rows(lay.height);
  for (uint32_t y = 0; y < lay.height; ++y) rows[y] = raw.data() + size_t(y) * lay.rowbytes;
  if (!png_read_rows(h.png, rows.data())) fail("{}: cannot decode PNG: {}", name, src.msg);

  Image img;
  img.width = int(lay.width);
  img.height = int(lay.height);
  const size_t npix = size_t(lay.width) * lay.height;
  img.rgb.resize(npix * 3);
  uint8_t* out = img.rgb.data();
  const uint8_t* in = raw.data();
  const size_t stride = size_t(lay.channels) * bps;  // bytes per pixel
  if (lay.color_type == PNG_COLOR_TYPE_PALETTE) {
    for (size_t i = 0; i < npix; ++i) std::memcpy(out + 3 * i, lay.palette + 3 * size_t(in[i]), 3);
  } else if (lay.channels == 1 && bps == 2) {
    // 16-bit gray: PIL's mode "I;16" converts to RGB by clipping at 255.
    for (size_t i = 0; i < npix; ++i) {
      unsigned v = (unsigned(in[2 * i]) << 8) | in[2 * i + 1];
      out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = uint8_t(v > 255 ? 255 : v);
    }
  } else if (lay.channels <= 2) {
    // 8-bit gray, gray + alpha (8 or 16 bit: the high byte, which comes first).
    for (size_t i = 0; i < npix; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = in[i * stride];
  } else {
    // RGB or RGBA, 8 or 16 bit (the high byte of each big-endian sample); alpha dropped.
    for (size_t i = 0; i < npix; ++i)
      for (int c = 0; c < 3; ++c) out[3 * i + size_t(c)] = in[i * stride + size_t(c) * bps];
  }
  return img;
}

// ---------------------------------------------------------------------------------------------------------
// JPEG

struct JpegState {  // plain data: it lives across longjmp
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr err;
  jpeg_source_mgr src;
  std::jmp_buf jump;
  char msg[JMSG_LENGTH_MAX + 64];
};

void jpeg_on_error(j_common_ptr cinfo) {
  // cinfo is the first member of JpegState (standard layout), so the state is at the same address.
  auto* st = reinterpret_cast<JpegState*>(cinfo);
  if (cinfo->err->msg_code == JERR_INPUT_EOF) {
    std::snprintf(st->msg, sizeof(st->msg), "file is truncated (premature end of JPEG data)");
  } else {
    char buf[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, buf);
    std::snprintf(st->msg, sizeof(st->msg), "%s", buf);
  }
  std::longjmp(st->jump, 1);
}

// Warnings ("Corrupt JPEG data: N extraneous bytes ...") are ignored, as Pillow does.
void jpeg_on_message(j_common_ptr) {}

// The whole file is in memory from the start: asking for more input means the data ended early.
void jpeg_src_init(j_decompress_ptr) {}
boolean jpeg_src_fill(j_decompress_ptr cinfo) {
  cinfo->err->msg_code = JERR_INPUT_EOF;
  (*cinfo->err->error_exit)(reinterpret_cast<j_common_ptr>(cinfo));
  return FALSE;
}
void jpeg_src_skip(j_decompress_ptr cinfo, long n) {
  if (n <= 0) return;
  if (size_t(n) > cinfo->src->bytes_in_buffer) jpeg_src_fill(cinfo);
  cinfo->src->next_input_byte += n;
  cinfo->src->bytes_in_buffer -= size_t(n);
}
void jpeg_src_term(j_decompress_ptr) {}

bool jpeg_phase_header(JpegState* st, const uint8_t* data, size_t n) {
  if (setjmp(st->jump)) return false;
  jpeg_create_decompress(&st->cinfo);
  st->src.next_input_byte = data;
  st->src.bytes_in_buffer = n;
  st->src.init_source = jpeg_src_init;
  st->src.fill_input_buffer = jpeg_src_fill;
  st->src.skip_input_data = jpeg_src_skip;
  st->src.resync_to_restart = jpeg_resync_to_restart;
  st->src.term_source = jpeg_src_term;
  st->cinfo.src = &st->src;
  jpeg_read_header(&st->cinfo, TRUE);
  return true;
}

bool jpeg_phase_start(JpegState* st, J_COLOR_SPACE out_space) {
  if (setjmp(st->jump)) return false;
  // libjpeg's defaults, as Pillow leaves them: JDCT_ISLOW, do_fancy_upsampling, no scaling.
  st->cinfo.out_color_space = out_space;
  jpeg_start_decompress(&st->cinfo);
  return true;
}

bool jpeg_phase_rows(JpegState* st, uint8_t* out, size_t row_bytes) {
  if (setjmp(st->jump)) return false;
  // jpeg_finish_decompress is not called: Pillow accepts a file whose EOI marker is missing once every
  // row is decoded, and reading the rows already fails on truncated scan data.
  while (st->cinfo.output_scanline < st->cinfo.output_height) {
    JSAMPROW row = out + size_t(st->cinfo.output_scanline) * row_bytes;
    jpeg_read_scanlines(&st->cinfo, &row, 1);
  }
  return true;
}

struct JpegGuard {
  JpegState* st;
  ~JpegGuard() { jpeg_destroy_decompress(&st->cinfo); }  // safe on a zeroed, never-created struct
};

Image decode_jpeg(const uint8_t* data, size_t n, const std::string& name, uint64_t max_pixels) {
  auto st = std::make_unique<JpegState>();
  std::memset(st.get(), 0, sizeof(JpegState));
  st->cinfo.err = jpeg_std_error(&st->err);
  st->err.error_exit = jpeg_on_error;
  st->err.output_message = jpeg_on_message;
  JpegGuard guard{st.get()};

  if (!jpeg_phase_header(st.get(), data, n)) fail("{}: cannot decode JPEG: {}", name, st->msg);
  check_pixels(name, "JPEG", st->cinfo.image_width, st->cinfo.image_height, max_pixels);
  J_COLOR_SPACE out_space;
  switch (st->cinfo.num_components) {  // Pillow picks the mode from the component count alone
    case 1: out_space = JCS_GRAYSCALE; break;
    case 3: out_space = JCS_RGB; break;
    case 4: out_space = JCS_CMYK; break;
    default:
      fail("{}: cannot decode JPEG: {} colour components (expected 1, 3 or 4)", name, st->cinfo.num_components);
  }
  if (!jpeg_phase_start(st.get(), out_space)) fail("{}: cannot decode JPEG: {}", name, st->msg);
  const size_t w = st->cinfo.output_width, h = st->cinfo.output_height;
  const size_t comps = size_t(st->cinfo.output_components);
  XV_CHECK(comps == (out_space == JCS_GRAYSCALE ? 1u : out_space == JCS_RGB ? 3u : 4u),
           "{}: cannot decode JPEG: libjpeg gave {} output components", name, comps);
  std::vector<uint8_t> raw(w * h * comps);
  if (!jpeg_phase_rows(st.get(), raw.data(), w * comps)) fail("{}: cannot decode JPEG: {}", name, st->msg);

  Image img;
  img.width = int(w);
  img.height = int(h);
  img.rgb.resize(w * h * 3);
  uint8_t* out = img.rgb.data();
  const size_t npix = w * h;
  if (comps == 3) {
    std::memcpy(out, raw.data(), npix * 3);
  } else if (comps == 1) {
    for (size_t i = 0; i < npix; ++i) out[3 * i] = out[3 * i + 1] = out[3 * i + 2] = raw[i];
  } else {
    // Pillow reads 4-component JPEGs as Adobe-inverted CMYK ("CMYK;I") and converts with cmyk2rgb:
    // nk = 255 - k; out = clip(nk - MULDIV255(c, nk)), MULDIV255(a, b) = ((t >> 8) + t) >> 8, t = a*b + 128.
    for (size_t i = 0; i < npix; ++i) {
      const uint8_t* p = raw.data() + 4 * i;  // as stored: inverted
      const int nk = 255 - (255 - p[3]);
      for (int c = 0; c < 3; ++c) {
        const int t = (255 - p[c]) * nk + 128;
        int v = nk - (((t >> 8) + t) >> 8);
        out[3 * i + size_t(c)] = uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
      }
    }
  }
  return img;
}

const char* other_format(const uint8_t* d, size_t n) {
  auto starts = [&](const char* m, size_t k) { return n >= k && std::memcmp(d, m, k) == 0; };
  if (starts("GIF87a", 6) || starts("GIF89a", 6)) return "GIF";
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return "WebP";
  if (starts("BM", 2)) return "BMP";
  if (starts("II*\0", 4) || starts("MM\0*", 4)) return "TIFF";
  return nullptr;
}

}  // namespace

Image decode_image_bytes(const uint8_t* data, size_t n, const std::string& name, uint64_t max_pixels) {
  XV_CHECK(n > 0, "{}: empty file, not an image", name);
  XV_CHECK(data, "{}: no image data", name);
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && std::memcmp(data, kPng, 8) == 0) return decode_png(data, n, name, max_pixels);
  if (n >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF) return decode_jpeg(data, n, name, max_pixels);
  if (const char* fmt = other_format(data, n)) fail("{}: {} images are not supported (PNG and JPEG are)", name, fmt);
  std::string head;
  for (size_t i = 0; i < n && i < 8; ++i) head += fmt::format("{}{:02x}", i ? " " : "", data[i]);
  fail("{}: not a PNG or JPEG image (the file starts with bytes {})", name, head);
}

Image load_image(const std::string& path) {
  std::error_code ec;
  XV_CHECK(!std::filesystem::is_directory(path, ec), "{}: is a directory, not an image file", path);
  std::string bytes = read_file(path, kMaxImageFileBytes);
  return decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), path);
}

}  // namespace xv
