// Image decoding and the Phi-3-vision image processor against PIL / torchvision / torch
// (fixtures: tools/make_image_fixtures.py -> tests/fixtures/images/).
//
// Tolerances:
//   - decoding (PNG and JPEG): exact, every byte equal to np.array(Image.open(p).convert("RGB"));
//   - PIL's Image.resize (BILINEAR, BICUBIC) and the HD transform (BILINEAR resize + white padding): exact,
//     by a hash of the whole uint8 image;
//   - the normalization table (ToTensor + Normalize): exact f32;
//   - pixel_values: 1e-5 absolute at the sample grid. Measured: 0 (the crops are the exact table applied to
//     the exact HD image; the bicubic global view reproduces the fused multiply-adds of torch's x86
//     kernels). The slack is for fixtures made by a torch build that does not fuse (a few ulps, <= 1e-6).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"
#include "image/image.h"
#include "core/npy.h"
#include "image/phi3v_processor.h"

namespace {

namespace fs = std::filesystem;
const std::string kDir = std::string(XV_FIXTURES) + "/images/";
constexpr float kPixelValuesTol = 1e-5f;

const nlohmann::json& expected() {
  static const nlohmann::json j = nlohmann::json::parse(xv::read_file(kDir + "expected.json"));
  return j;
}

std::string fnv1a64(const std::vector<uint8_t>& bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (uint8_t b : bytes) h = (h ^ b) * 0x100000001B3ull;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// A scratch folder for the bad-input files, removed at the end.
struct Scratch {
  fs::path dir;
  Scratch() {
    dir = fs::path(::testing::TempDir()) / ("xv_test_image_" + std::to_string(::getpid()));
    fs::create_directories(dir);
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::string write(const std::string& name, const std::string& bytes) const {
    std::string p = (dir / name).string();
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }
};

// Runs f, which must throw xv::Error; returns the message.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const xv::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw a non-xv::Error: " << e.what();
    return "";
  }
  ADD_FAILURE() << "did not throw";
  return "";
}

bool is_jpeg(const std::string& name) { return name.size() > 4 && name.substr(name.size() - 4) == ".jpg"; }

}  // namespace

TEST(ImageDecode, MatchesPil) {
  int checked = 0;
  for (const auto& e : expected()["decode"]) {
    const std::string name = e["file"];
    SCOPED_TRACE(name);
    const xv::Image img = xv::load_image(kDir + name);
    ASSERT_EQ(img.width, e["width"].get<int>());
    ASSERT_EQ(img.height, e["height"].get<int>());
    ASSERT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3);
    if (e.contains("fnv1a64")) {
      EXPECT_EQ(fnv1a64(img.rgb), e["fnv1a64"].get<std::string>());
    } else {
      // uint8 .npy, read as f32 (exact for bytes).
      const xv::Tensor ref = xv::read_npy(kDir + e["npy"].get<std::string>());
      ASSERT_EQ(ref.shape(), (xv::Shape{img.height, img.width, 3}));
      int64_t max_diff = 0, n_diff = 0;
      for (int64_t i = 0; i < ref.numel(); ++i) {
        const int64_t d = std::abs(int64_t(ref.at(int64_t(i))) - int64_t(img.rgb[i]));
        max_diff = std::max(max_diff, d);
        n_diff += d != 0;
      }
      // JPEG too: libjpeg-turbo with Pillow's settings (islow IDCT, fancy upsampling) is bit-exact.
      EXPECT_EQ(max_diff, 0) << (is_jpeg(name) ? "JPEG" : "PNG") << ": " << n_diff << " bytes differ";
    }
    // Decoding from memory gives the same pixels.
    const std::string bytes = xv::read_file(kDir + name);
    const xv::Image mem = xv::decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name);
    EXPECT_EQ(mem.rgb, img.rgb);
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(ImageDecode, BadInputsNameTheFile) {
  Scratch s;
  const std::string png = xv::read_file(kDir + "landscape_300x200.png");
  const std::string jpg = xv::read_file(kDir + "rgb420_163x101.jpg");
  const std::string prog = xv::read_file(kDir + "progressive_121x87.jpg");

  struct Case {
    std::string path, expect;
  };
  std::vector<Case> cases = {
      {(s.dir / "missing.png").string(), "does not exist"},
      {s.write("empty.png", ""), "empty file"},
      {s.write("truncated.png", png.substr(0, png.size() / 2)), "truncated"},
      {s.write("header_only.png", png.substr(0, 20)), "truncated"},
      {s.write("truncated.jpg", jpg.substr(0, jpg.size() / 2)), "truncated"},
      {s.write("truncated_progressive.jpg", prog.substr(0, prog.size() * 2 / 3)), "truncated"},
      {s.write("soi_only.jpg", jpg.substr(0, 3)), "cannot decode JPEG"},
      {s.write("text.png", "this is not an image, just text\n"), "not a PNG or JPEG"},
      {s.write("image.gif", "GIF89a\x01\x00\x01\x00"), "GIF images are not supported"},
      {s.dir.string(), "directory"},
  };
  {
    // A flipped bit in the IHDR chunk's CRC (signature 8 + length 4 + type 4 + data 13 bytes before it).
    std::string bad = png;
    bad[8 + 4 + 4 + 13] = char(bad[8 + 4 + 4 + 13] ^ 0x01);
    cases.push_back({s.write("bad_crc.png", bad), "CRC error"});
    // A flipped byte inside the first IDAT chunk's compressed data: zlib or the CRC check fails first.
    bad = png;
    const size_t idat = bad.find("IDAT");
    ASSERT_NE(idat, std::string::npos);
    bad[idat + 4 + 10] = char(bad[idat + 4 + 10] ^ 0x5a);
    cases.push_back({s.write("bad_idat.png", bad), "cannot decode PNG"});
  }
  {
    // Garbage where the JPEG frame header should be.
    std::string bad = jpg;
    const size_t sof = bad.find("\xff\xc0");
    ASSERT_NE(sof, std::string::npos);
    for (size_t i = sof + 4; i < sof + 12; ++i) bad[i] = char(0xff);
    cases.push_back({s.write("bad_sof.jpg", bad), "cannot decode JPEG"});
  }
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    const std::string msg = error_of([&] { xv::load_image(c.path); });
    EXPECT_NE(msg.find(c.path), std::string::npos) << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
  }
  // From memory, the name given is the one reported.
  const std::string msg = error_of([&] {
    xv::decode_image_bytes(reinterpret_cast<const uint8_t*>(png.data()), png.size() - 100, "corpus row 17");
  });
  EXPECT_NE(msg.find("corpus row 17"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { xv::decode_image_bytes(nullptr, 0, "row 3"); }).find("row 3"), std::string::npos);
}

TEST(ImageDecode, CorruptedInputsNeverCrash) {
  // Every fixture image cut short at 16 places and with one bit flipped at 48 places: each decode either
  // succeeds or throws xv::Error naming the source (run under ASan/UBSan, this also checks for leaks and
  // out-of-bounds accesses on the libpng/libjpeg error paths).
  int decoded = 0, rejected = 0;
  for (const auto& e : expected()["decode"]) {
    const std::string name = e["file"];
    const std::string bytes = xv::read_file(kDir + name);
    auto attempt = [&](const std::string& b, const std::string& label) {
      try {
        xv::decode_image_bytes(reinterpret_cast<const uint8_t*>(b.data()), b.size(), label);
        ++decoded;
      } catch (const xv::Error& err) {
        EXPECT_NE(std::string(err.what()).find(label), std::string::npos) << err.what();
        ++rejected;
      }
    };
    for (int i = 0; i < 16; ++i) {
      const size_t cut = bytes.size() * size_t(i) / 16;
      attempt(bytes.substr(0, cut), name + " cut at " + std::to_string(cut));
    }
    for (int i = 0; i < 48; ++i) {
      const size_t pos = (bytes.size() * size_t(i)) / 48 + size_t(i % 7);
      if (pos >= bytes.size()) continue;
      std::string b = bytes;
      b[pos] = char(b[pos] ^ (1 << (i % 8)));
      attempt(b, name + " bit " + std::to_string(i % 8) + " flipped at " + std::to_string(pos));
    }
  }
  std::printf("  corrupted inputs: %d decoded, %d rejected with an xv::Error\n", decoded, rejected);
  EXPECT_GT(rejected, 300);
  EXPECT_GT(decoded, 50);  // flips in JPEG entropy data decode to different pixels, as in PIL
}

TEST(Phi3VImageProcessor, NormalizationIsTorchExact) {
  // A 336x336 image with num_crops 1 is not resized nor padded: crop 1 is ToTensor + Normalize of its pixels.
  xv::Image img;
  img.width = img.height = 336;
  img.rgb.resize(336 * 336 * 3);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t((i / 3 * 7 + i % 3 * 85) % 256);
  xv::Phi3VImageConfig cfg;
  cfg.num_crops = 1;
  const xv::Phi3VImageInputs in = xv::phi3v_preprocess(img, cfg);
  ASSERT_EQ(in.pixel_values.shape(), (xv::Shape{2, 3, 336, 336}));
  const xv::Tensor lut = xv::read_npy(kDir + expected()["normalize"]["npy"].get<std::string>());
  ASSERT_EQ(lut.shape(), (xv::Shape{3, 256}));
  const float* crop = in.pixel_values.data<float>() + 3 * 336 * 336;
  int seen = 0;
  for (int c = 0; c < 3; ++c)
    for (size_t p = 0; p < 336 * 336; ++p) {
      const uint8_t v = img.rgb[p * 3 + size_t(c)];
      ASSERT_EQ(crop[size_t(c) * 336 * 336 + p], lut.at(int64_t(size_t(c) * 256 + v))) << "channel " << c << " value " << int(v);
      ++seen;
    }
  EXPECT_EQ(seen, 3 * 336 * 336);
}

TEST(Phi3VImageProcessor, MatchesReference) {
  const std::vector<int> grid = expected()["grid"].get<std::vector<int>>();
  const size_t g = grid.size();
  float worst = 0.0f;
  int cases = 0;
  for (const auto& e : expected()["processor"]) {
    const std::string name = e["case"];
    SCOPED_TRACE(name);
    const int num_crops = e["num_crops"];
    xv::Image img = xv::load_image(kDir + e["file"].get<std::string>());
    if (e.contains("pre_resize"))  // PIL's Image.resize default filter, as VLM2Vec's data pipeline applies it
      img = xv::pil_resize(img, e["pre_resize"][0], e["pre_resize"][1], xv::PilFilter::kBicubic);

    const xv::Image hd = xv::phi3v_hd_transform(img, num_crops);
    EXPECT_EQ(hd.height, e["hd_height"].get<int>());
    EXPECT_EQ(hd.width, e["hd_width"].get<int>());
    EXPECT_EQ(fnv1a64(hd.rgb), e["hd_fnv1a64"].get<std::string>()) << "HD transform (resize + pad) is not bit-exact";
    const xv::Phi3VHdSize size = xv::phi3v_hd_size(img.width, img.height, num_crops);
    EXPECT_EQ(size.height, hd.height);
    EXPECT_EQ(size.width, hd.width);

    xv::Phi3VImageConfig cfg;
    cfg.num_crops = num_crops;
    const xv::Phi3VImageInputs in = xv::phi3v_preprocess(img, cfg);
    EXPECT_EQ(in.height, e["hd_height"].get<int64_t>());
    EXPECT_EQ(in.width, e["hd_width"].get<int64_t>());
    EXPECT_EQ(in.num_img_tokens, e["num_img_tokens"].get<int64_t>());
    const xv::Shape shape = e["pixel_values_shape"].get<xv::Shape>();
    ASSERT_EQ(in.pixel_values.shape(), shape);

    const xv::Tensor ref = xv::read_npy(kDir + e["npy"].get<std::string>());
    ASSERT_EQ(ref.shape(), (xv::Shape{shape[0], 3, int64_t(g), int64_t(g)}));
    float max_diff = 0.0f, max_diff_global = 0.0f;
    for (int64_t k = 0; k < shape[0]; ++k)
      for (int64_t c = 0; c < 3; ++c)
        for (size_t i = 0; i < g; ++i)
          for (size_t j = 0; j < g; ++j) {
            const float got = in.pixel_values.at(int64_t(((k * 3 + c) * 336 + grid[i]) * 336 + grid[j]));
            const float want = ref.at(int64_t(size_t(((k * 3 + c) * int64_t(g) + int64_t(i)) * int64_t(g) + int64_t(j))));
            const float d = std::fabs(got - want);
            max_diff = std::max(max_diff, d);
            if (k == 0) max_diff_global = std::max(max_diff_global, d);
          }
    EXPECT_LE(max_diff, kPixelValuesTol);
    std::printf("  %-32s hd %4lldx%-4lld %4lld tokens  max |pixel_values - torch| %.3g (global view %.3g)\n",
                name.c_str(), static_cast<long long>(in.height), static_cast<long long>(in.width),
                static_cast<long long>(in.num_img_tokens), double(max_diff), double(max_diff_global));
    worst = std::max(worst, max_diff);
    ++cases;
  }
  EXPECT_GE(cases, 10);
  std::printf("  worst max |diff| over %d cases: %.3g (tolerance %.0e)\n", cases, double(worst),
              double(kPixelValuesTol));
}

TEST(Phi3VImageProcessor, PaperTokenCount) {
  // xVLM2Vec resizes images to 1344x1344 and uses 4 crops: 757 image tokens. The HD transform picks
  // scale 2 (2 * ceil(2 / 1) = 4 <= 4 < 3 * 3), so the HD image is 672x672: 2x2 crops plus the global view.
  xv::Image img;
  img.width = img.height = 1344;
  img.rgb.resize(size_t(1344) * 1344 * 3);
  for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = uint8_t(i * 31 % 251);
  const xv::Phi3VImageInputs in = xv::phi3v_preprocess(img, xv::Phi3VImageConfig{});
  EXPECT_EQ(in.num_img_tokens, 757);
  EXPECT_EQ(in.height, 672);
  EXPECT_EQ(in.width, 672);
  EXPECT_EQ(in.pixel_values.shape(), (xv::Shape{5, 3, 336, 336}));
  const xv::Phi3VHdSize size = xv::phi3v_hd_size(1344, 1344, 4);
  EXPECT_EQ(size.height, 672);
  EXPECT_EQ(size.width, 672);
  EXPECT_EQ(xv::phi3v_num_img_tokens(672, 672), 757);
  // With 16 crops the same image keeps its size: 4x4 crops.
  EXPECT_EQ(xv::phi3v_num_img_tokens(1344, 1344), 2509);
  EXPECT_EQ(xv::phi3v_hd_size(1344, 1344, 16).width, 1344);
}

TEST(PilResize, MatchesPil) {
  int checked = 0;
  for (const auto& e : expected()["resize"]) {
    const std::string name = e["file"], filter = e["filter"];
    SCOPED_TRACE(name + " -> " + std::to_string(e["width"].get<int>()) + "x" + std::to_string(e["height"].get<int>()) +
                 " " + filter);
    const xv::Image img = xv::load_image(kDir + name);
    const xv::Image out = xv::pil_resize(img, e["width"], e["height"],
                                         filter == "bicubic" ? xv::PilFilter::kBicubic : xv::PilFilter::kBilinear);
    ASSERT_EQ(out.rgb.size(), size_t(out.width) * out.height * 3);
    EXPECT_EQ(fnv1a64(out.rgb), e["fnv1a64"].get<std::string>());
    ++checked;
  }
  EXPECT_GE(checked, 6);
  const xv::Image img = xv::load_image(kDir + "tiny_50x30.png");
  EXPECT_EQ(xv::pil_resize(img, 50, 30, xv::PilFilter::kBicubic).rgb, img.rgb);
}

TEST(Phi3VImageProcessor, BadSizesAndCrops) {
  xv::Image line;
  line.width = 2000;
  line.height = 1;
  line.rgb.assign(2000 * 3, 9);
  // 2000:1 with 1 crop would be resized to 336x0: PIL refuses, so do we, clearly.
  EXPECT_NE(error_of([&] { xv::phi3v_hd_transform(line, 1); }).find("too elongated"), std::string::npos);
  EXPECT_NE(error_of([&] { xv::phi3v_hd_transform(line, 0); }).find("num_crops"), std::string::npos);
  xv::Image empty;
  EXPECT_NE(error_of([&] { xv::phi3v_preprocess(empty, xv::Phi3VImageConfig{}); }).find("empty image"),
            std::string::npos);
}

TEST(Phi3VImageConfig, ReadsPreprocessorConfig) {
  const xv::Phi3VImageConfig cfg = xv::phi3v_image_config_from_json(kDir + "preprocessor_config.json");
  EXPECT_EQ(cfg.num_crops, 4);
  const xv::Phi3VImageConfig def;
  for (int c = 0; c < 3; ++c) {
    EXPECT_EQ(cfg.mean[c], def.mean[c]);
    EXPECT_EQ(cfg.std[c], def.std[c]);
  }

  Scratch s;
  // Absent fields: the reference class's defaults (num_crops 1, CLIP mean/std).
  const xv::Phi3VImageConfig bare = xv::phi3v_image_config_from_json(s.write("bare.json", "{}"));
  EXPECT_EQ(bare.num_crops, 1);
  EXPECT_EQ(bare.mean[2], def.mean[2]);
  const xv::Phi3VImageConfig scalar =
      xv::phi3v_image_config_from_json(s.write("scalar.json", R"({"num_crops": 16, "image_mean": 0.5, "image_std": 0.25})"));
  EXPECT_EQ(scalar.num_crops, 16);
  EXPECT_EQ(scalar.mean[1], 0.5f);
  EXPECT_EQ(scalar.std[2], 0.25f);

  struct Bad {
    std::string file, text, expect;
  };
  const std::vector<Bad> bad = {
      {"not_json.json", "{num_crops: 4", "not valid JSON"},
      {"array.json", "[1, 2]", "expected a JSON object"},
      {"crops_string.json", R"({"num_crops": "4"})", "'num_crops' must be an integer"},
      {"crops_zero.json", R"({"num_crops": 0})", "'num_crops' must be in"},
      {"mean_two.json", R"({"image_mean": [0.5, 0.5]})", "'image_mean' must be a list of 3 numbers"},
      {"std_zero.json", R"({"image_std": [0.5, 0, 0.5]})", "'image_std' must hold finite positive numbers"},
  };
  for (const Bad& b : bad) {
    const std::string p = s.write(b.file, b.text);
    const std::string msg = error_of([&] { xv::phi3v_image_config_from_json(p); });
    EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_NE(msg.find(b.expect), std::string::npos) << msg;
  }
  const std::string missing = (s.dir / "nope.json").string();
  EXPECT_NE(error_of([&] { xv::phi3v_image_config_from_json(missing); }).find(missing), std::string::npos);
}
