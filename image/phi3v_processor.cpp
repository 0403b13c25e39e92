#include "image/phi3v_processor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"

namespace xv {

namespace {

constexpr int kCrop = kPhi3VCropSize;

void check_image(const Image& img, const char* what) {
  XV_CHECK(img.width > 0 && img.height > 0, "{}: empty image ({}x{})", what, img.width, img.height);
  XV_CHECK(img.rgb.size() == size_t(img.width) * size_t(img.height) * 3,
           "{}: image buffer holds {} bytes, expected {}x{}x3 = {}", what, img.rgb.size(), img.width, img.height,
           size_t(img.width) * size_t(img.height) * 3);
}

void check_num_crops(int num_crops) {
  XV_CHECK(num_crops >= 1 && num_crops <= kPhi3VMaxCrops, "phi3_v image processor: num_crops must be in [1, {}], got {}",
           kPhi3VMaxCrops, num_crops);
}

// PIL's Image.TRANSPOSE: (x, y) -> (y, x).
Image transpose(const Image& a) {
  Image t;
  t.width = a.height;
  t.height = a.width;
  t.rgb.resize(a.rgb.size());
  for (int y = 0; y < a.height; ++y)
    for (int x = 0; x < a.width; ++x)
      std::memcpy(&t.rgb[(size_t(x) * size_t(t.width) + size_t(y)) * 3], &a.rgb[(size_t(y) * size_t(a.width) + size_t(x)) * 3],
                  3);
  return t;
}

// The width-first (landscape) resize target of HD_transform. `width >= height` here.
void hd_resize_target(int width, int height, int num_crops, int* new_w, int* new_h) {
  // Python: ratio = width / height; while scale * np.ceil(scale / ratio) <= hd_num: scale += 1; scale -= 1
  const double ratio = double(width) / double(height);
  int scale = 1;
  while (double(scale) * std::ceil(double(scale) / ratio) <= double(num_crops)) ++scale;
  --scale;
  *new_w = scale * kCrop;
  const double h = double(*new_w) / ratio;  // Python: int(new_w / ratio), truncation
  *new_h = h >= 1.0 ? int(h) : 0;
  XV_CHECK(*new_h >= 1,
           "phi3_v image processor: a {}x{} image is too elongated for num_crops {} (its short side would be resized "
           "to 0 pixels)",
           width, height, num_crops);
}

// ---------------------------------------------------------------------------------------------------------
// PIL's Resample.c, 8 bits per channel.

constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  if (x < 0.0) x = -x;
  if (x < 1.0) return 1.0 - x;
  return 0.0;
}

double bicubic_filter(double x) {  // Keys' cubic with a = -0.5, as Pillow has it
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

struct ResampleCoeffs {
  int ksize = 0;
  std::vector<int> bounds;  // (out, 2): first input index, number of taps
  std::vector<int32_t> kk;  // (out, ksize): fixed-point weights
};

// precompute_coeffs + normalize_coeffs_8bpc for the box (0, in_size), i.e. the whole image.
ResampleCoeffs precompute_coeffs(int in_size, int out_size, PilFilter filter) {
  double (*filter_fn)(double) = filter == PilFilter::kBicubic ? bicubic_filter : bilinear_filter;
  const double support_unit = filter == PilFilter::kBicubic ? 2.0 : 1.0;
  const float in0 = 0.0f, in1 = float(in_size);
  const double scale = double(in1 - in0) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = support_unit * filterscale;
  ResampleCoeffs c;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.kk.assign(size_t(out_size) * size_t(c.ksize), 0);
  std::vector<double> k(size_t(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = in0 + (xx + 0.5) * scale;
    const double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    std::fill(k.begin(), k.end(), 0.0);
    for (int x = 0; x < xmax; ++x) {
      const double w = filter_fn((x + xmin - center + 0.5) * ss);
      k[size_t(x)] = w;
      ww += w;
    }
    for (int x = 0; x < xmax; ++x)
      if (ww != 0.0) k[size_t(x)] /= ww;
    int32_t* out = &c.kk[size_t(xx) * size_t(c.ksize)];
    for (int x = 0; x < c.ksize; ++x) {
      const double v = k[size_t(x)] * (1 << kPrecisionBits);
      out[x] = k[size_t(x)] < 0 ? int32_t(-0.5 + v) : int32_t(0.5 + v);
    }
    c.bounds[size_t(xx) * 2 + 0] = xmin;
    c.bounds[size_t(xx) * 2 + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;  // arithmetic shift, as the C code relies on
  return uint8_t(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass over input rows [y0, y0 + rows): (rows, in_w, 3) -> (rows, out_w, 3).
void resample_horizontal(const uint8_t* in, int in_w, int y0, int rows, int out_w, const ResampleCoeffs& c,
                         uint8_t* out) {
  for (int yy = 0; yy < rows; ++yy) {
    const uint8_t* row = in + (size_t(y0 + yy) * size_t(in_w)) * 3;
    uint8_t* orow = out + size_t(yy) * size_t(out_w) * 3;
    for (int xx = 0; xx < out_w; ++xx) {
      const int xmin = c.bounds[size_t(xx) * 2], xmax = c.bounds[size_t(xx) * 2 + 1];
      const int32_t* k = &c.kk[size_t(xx) * size_t(c.ksize)];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int x = 0; x < xmax; ++x) {
        const uint8_t* p = row + size_t(x + xmin) * 3;
        s0 += p[0] * k[x];
        s1 += p[1] * k[x];
        s2 += p[2] * k[x];
      }
      orow[size_t(xx) * 3 + 0] = clip8(s0);
      orow[size_t(xx) * 3 + 1] = clip8(s1);
      orow[size_t(xx) * 3 + 2] = clip8(s2);
    }
  }
}

// Vertical pass: (in_h, w, 3) -> (out_h, w, 3); bounds are relative to the first row of `in` (minus y_shift).
void resample_vertical(const uint8_t* in, int w, int y_shift, int out_h, const ResampleCoeffs& c, uint8_t* out) {
  for (int yy = 0; yy < out_h; ++yy) {
    const int ymin = c.bounds[size_t(yy) * 2] - y_shift, ymax = c.bounds[size_t(yy) * 2 + 1];
    const int32_t* k = &c.kk[size_t(yy) * size_t(c.ksize)];
    uint8_t* orow = out + size_t(yy) * size_t(w) * 3;
    for (int xx = 0; xx < w; ++xx) {
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      for (int y = 0; y < ymax; ++y) {
        const uint8_t* p = in + (size_t(y + ymin) * size_t(w) + size_t(xx)) * 3;
        s0 += p[0] * k[y];
        s1 += p[1] * k[y];
        s2 += p[2] * k[y];
      }
      orow[size_t(xx) * 3 + 0] = clip8(s0);
      orow[size_t(xx) * 3 + 1] = clip8(s1);
      orow[size_t(xx) * 3 + 2] = clip8(s2);
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// torch.nn.functional.interpolate(mode="bicubic", align_corners=False), CPU f32 (UpSampleKernel.cpp's
// HelperInterpCubic + the generic index/weight kernel: rows outer, columns inner, f32 arithmetic). The HD
// sides are multiples of 336, so the source offsets t are 0 or 0.5 and the weights are exact.

struct CubicAxis {
  std::vector<int64_t> idx;  // (out, 4), clamped to [0, in - 1]
  std::vector<float> w;      // (out, 4)
};

float cubic_convolution1(float x, float a) { return ((a + 2) * x - (a + 3)) * x * x + 1; }
float cubic_convolution2(float x, float a) { return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a; }

CubicAxis cubic_axis(int64_t in_size, int64_t out_size) {
  CubicAxis ax;
  ax.idx.resize(size_t(out_size) * 4);
  ax.w.resize(size_t(out_size) * 4);
  const float scale = float(in_size) / float(out_size);  // area_pixel_compute_scale, no scale given
  const float a = -0.75f;
  for (int64_t i = 0; i < out_size; ++i) {
    const float real = scale * (float(i) + 0.5f) - 0.5f;  // area_pixel_compute_source_index, cubic
    const int64_t index = std::min(int64_t(std::floor(real)), in_size - 1);
    const float t = std::min(std::max(real - float(index), 0.0f), 1.0f);
    const float x2 = 1.0f - t;
    const float coeffs[4] = {cubic_convolution2(t + 1.0f, a), cubic_convolution1(t, a), cubic_convolution1(x2, a),
                             cubic_convolution2(x2 + 1.0f, a)};
    for (int j = 0; j < 4; ++j) {
      ax.idx[size_t(i) * 4 + size_t(j)] = std::max<int64_t>(std::min<int64_t>(index + j - 1, in_size - 1), 0);
      ax.w[size_t(i) * 4 + size_t(j)] = coeffs[j];
    }
  }
  return ax;
}

// The kernel's `out = v0*w0; out += v1*w1; out += v2*w2; out += v3*w3` as torch's x86 build runs it: its
// AVX2/AVX512 kernels are compiled with multiply-add contraction, which makes it
// fma(v3, w3, fma(v2, w2, fma(v0, w0, v1*w1))). std::fma is exact whatever the CPU, so this reproduces
// those kernels bit for bit (measured: 0 differences on the fixtures); against a torch build without FMA
// the difference is a few ulps (<= 7.2e-7 on the fixtures).
inline float torch_dot4(const float v[4], const float w[4]) {
  return std::fma(v[3], w[3], std::fma(v[2], w[2], std::fma(v[0], w[0], v[1] * w[1])));
}

// planes (C, in_h, in_w) -> out (C, out_h, out_w).
void bicubic_resize(const float* planes, int channels, int64_t in_h, int64_t in_w, int64_t out_h, int64_t out_w,
                    float* out) {
  const CubicAxis ay = cubic_axis(in_h, out_h), ax = cubic_axis(in_w, out_w);
  for (int c = 0; c < channels; ++c) {
    const float* src = planes + size_t(c) * size_t(in_h * in_w);
    float* dst = out + size_t(c) * size_t(out_h * out_w);
    for (int64_t oy = 0; oy < out_h; ++oy) {
      const int64_t* yi = &ay.idx[size_t(oy) * 4];
      const float* yw = &ay.w[size_t(oy) * 4];
      for (int64_t ox = 0; ox < out_w; ++ox) {
        const int64_t* xi = &ax.idx[size_t(ox) * 4];
        const float* xw = &ax.w[size_t(ox) * 4];
        float t[4];
        for (int j = 0; j < 4; ++j) {
          const float* row = src + size_t(yi[j] * in_w);
          const float v[4] = {row[xi[0]], row[xi[1]], row[xi[2]], row[xi[3]]};
          t[j] = torch_dot4(v, xw);
        }
        dst[size_t(oy * out_w + ox)] = torch_dot4(t, yw);
      }
    }
  }
}

void read_channel_triplet(const nlohmann::json& j, const char* key, const std::string& path, float out[3],
                          bool positive) {
  if (!j.contains(key) || j[key].is_null()) return;  // the reference's default
  const nlohmann::json& v = j[key];
  double vals[3];
  if (v.is_number()) {
    vals[0] = vals[1] = vals[2] = v.get<double>();
  } else {
    XV_CHECK(v.is_array() && v.size() == 3, "{}: field '{}' must be a list of 3 numbers (one per RGB channel), got {}",
             path, key, v.dump());
    for (size_t i = 0; i < 3; ++i) {
      XV_CHECK(v[i].is_number(), "{}: field '{}' must be a list of 3 numbers, element {} is {}", path, key, i,
               v[i].dump());
      vals[i] = v[i].get<double>();
    }
  }
  for (int i = 0; i < 3; ++i) {
    XV_CHECK(std::isfinite(vals[i]) && (!positive || vals[i] > 0.0), "{}: field '{}' must hold {} numbers, got {}",
             path, key, positive ? "finite positive" : "finite", v.dump());
    out[i] = float(vals[i]);  // torchvision's Normalize holds them as f32
  }
}

}  // namespace

Phi3VImageConfig phi3v_image_config_from_json(const std::string& path) {
  const std::string text = read_file(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
  XV_CHECK(j.is_object(), "{}: expected a JSON object (a preprocessor config), got {}", path, j.type_name());
  Phi3VImageConfig cfg;
  cfg.num_crops = 1;  // Phi3VImageProcessor.__init__'s default
  if (j.contains("num_crops") && !j["num_crops"].is_null()) {
    const nlohmann::json& v = j["num_crops"];
    XV_CHECK(v.is_number_integer(), "{}: field 'num_crops' must be an integer, got {}", path, v.dump());
    const int64_t n = v.get<int64_t>();
    XV_CHECK(n >= 1 && n <= kPhi3VMaxCrops, "{}: field 'num_crops' must be in [1, {}], got {}", path, kPhi3VMaxCrops, n);
    cfg.num_crops = int(n);
  }
  read_channel_triplet(j, "image_mean", path, cfg.mean, false);
  read_channel_triplet(j, "image_std", path, cfg.std, true);
  return cfg;
}

Phi3VHdSize phi3v_hd_size(int width, int height, int num_crops) {
  check_num_crops(num_crops);
  XV_CHECK(width > 0 && height > 0, "phi3_v image processor: empty image size {}x{}", width, height);
  const bool trans = width < height;
  int new_w = 0, new_h = 0;
  hd_resize_target(trans ? height : width, trans ? width : height, num_crops, &new_w, &new_h);
  const int64_t padded_h = (int64_t(new_h) + kCrop - 1) / kCrop * kCrop;
  return trans ? Phi3VHdSize{new_w, padded_h} : Phi3VHdSize{padded_h, new_w};
}

int64_t phi3v_num_img_tokens(int64_t hd_height, int64_t hd_width) {
  const int64_t rows = hd_height / kCrop, cols = hd_width / kCrop;
  return (rows * cols + 1) * 144 + 1 + (rows + 1) * 12;
}

Image pil_resize(const Image& img, int out_width, int out_height, PilFilter filter) {
  check_image(img, "resize");
  XV_CHECK(out_width > 0 && out_height > 0, "resize: output size {}x{} must be positive", out_width, out_height);
  const bool need_h = out_width != img.width, need_v = out_height != img.height;
  if (!need_h && !need_v) return img;
  const ResampleCoeffs ch = precompute_coeffs(img.width, out_width, filter);
  const ResampleCoeffs cv = precompute_coeffs(img.height, out_height, filter);
  // Only the input rows the vertical pass reads go through the horizontal pass (as Pillow does).
  const int ybox_first = cv.bounds[0];
  const int ybox_last = cv.bounds[size_t(out_height) * 2 - 2] + cv.bounds[size_t(out_height) * 2 - 1];

  std::vector<uint8_t> temp;
  const uint8_t* src = img.rgb.data();
  int src_w = img.width, y_shift = 0;
  if (need_h) {
    const int rows = need_v ? ybox_last - ybox_first : img.height;
    const int y0 = need_v ? ybox_first : 0;
    temp.resize(size_t(rows) * size_t(out_width) * 3);
    resample_horizontal(img.rgb.data(), img.width, y0, rows, out_width, ch, temp.data());
    src = temp.data();
    src_w = out_width;
    y_shift = y0;
  }
  Image out;
  out.width = out_width;
  out.height = out_height;
  if (need_v) {
    out.rgb.resize(size_t(out_width) * size_t(out_height) * 3);
    resample_vertical(src, src_w, y_shift, out_height, cv, out.rgb.data());
  } else {
    out.rgb = std::move(temp);
  }
  return out;
}

Image phi3v_hd_transform(const Image& img, int num_crops) {
  check_image(img, "phi3_v image processor");
  check_num_crops(num_crops);
  const bool trans = img.width < img.height;
  Image transposed;
  if (trans) transposed = transpose(img);
  const Image& land = trans ? transposed : img;
  int new_w = 0, new_h = 0;
  hd_resize_target(land.width, land.height, num_crops, &new_w, &new_h);
  // torchvision's resize returns the image untouched when the size already matches.
  Image resized = pil_resize(land, new_w, new_h, PilFilter::kBilinear);
  // padding_336: white rows above and below, the top getting int((tar - h) / 2).
  const int tar = (new_h + kCrop - 1) / kCrop * kCrop;
  const int top = (tar - new_h) / 2;
  Image padded;
  padded.width = new_w;
  padded.height = tar;
  padded.rgb.assign(size_t(new_w) * size_t(tar) * 3, 255);
  std::memcpy(padded.rgb.data() + size_t(top) * size_t(new_w) * 3, resized.rgb.data(), resized.rgb.size());
  return trans ? transpose(padded) : padded;
}

Phi3VImageInputs phi3v_preprocess(const Image& img, const Phi3VImageConfig& cfg) {
  const Image hd = phi3v_hd_transform(img, cfg.num_crops);
  const int64_t H = hd.height, W = hd.width;
  XV_CHECK(H % kCrop == 0 && W % kCrop == 0, "phi3_v image processor: HD image {}x{} is not a multiple of {}", H, W,
           kCrop);
  const int64_t rows = H / kCrop, cols = W / kCrop;
  XV_CHECK(rows * cols <= cfg.num_crops, "phi3_v image processor: {} crops exceed num_crops {}", rows * cols,
           cfg.num_crops);

  // ToTensor + Normalize: (v / 255 - mean) / std, each step rounded to f32 as torch does.
  float lut[3][256];
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) lut[c][v] = (float(v) / 255.0f - cfg.mean[c]) / cfg.std[c];
  std::vector<float> planes(size_t(3 * H * W));  // (3, H, W)
  for (int64_t i = 0; i < H * W; ++i)
    for (int c = 0; c < 3; ++c) planes[size_t(c * H * W + i)] = lut[c][hd.rgb[size_t(i) * 3 + size_t(c)]];

  Phi3VImageInputs out;
  out.height = H;
  out.width = W;
  out.num_img_tokens = phi3v_num_img_tokens(H, W);
  out.pixel_values = Tensor({cfg.num_crops + 1, 3, kCrop, kCrop});  // zero crops past the last real one
  const size_t crop_elems = size_t(3) * kCrop * kCrop;
  float* pv = out.pixel_values.data<float>();
  bicubic_resize(planes.data(), 3, H, W, kCrop, kCrop, pv);  // the global view, crop 0
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < cols; ++q) {
      float* dst = pv + size_t(1 + r * cols + q) * crop_elems;
      for (int c = 0; c < 3; ++c)
        for (int y = 0; y < kCrop; ++y)
          std::memcpy(dst + (size_t(c) * kCrop + size_t(y)) * kCrop,
                      &planes[size_t(c * H * W + (r * kCrop + y) * W + q * kCrop)], kCrop * sizeof(float));
    }
  return out;
}

}  // namespace xv
