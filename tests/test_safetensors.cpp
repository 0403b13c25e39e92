// safetensors reader/writer and the dtype conversions. Expected values come from the format's
// specification and IEEE 754, never from the code under test.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/file_util.h"
#include "core/safetensors.h"

namespace {

namespace fs = std::filesystem;

std::string tmpdir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("xv_st_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// A safetensors file from a raw header string and a data buffer.
std::string raw_file(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((uint64_t(header.size()) >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR_HAS(stmt, ...)                                            \
  do {                                                                         \
    std::string msg_ = error_of([&] { stmt; });                                \
    ASSERT_FALSE(msg_.empty()) << "no xv::Error from " #stmt;                  \
    for (const char* s_ : {__VA_ARGS__}) EXPECT_NE(msg_.find(s_), std::string::npos) << msg_ << " lacks " << s_; \
  } while (0)

TEST(DType, Bf16RoundsToNearestEven) {
  // bf16 keeps the top 16 bits of f32. 0x3F808000 is exactly halfway between 0x3F80 and 0x3F81: ties go
  // to the even 0x3F80; 0x3F818000 is halfway between 0x3F81 and 0x3F82: goes to 0x3F82.
  auto f = [](uint32_t u) { float x; std::memcpy(&x, &u, 4); return x; };
  EXPECT_EQ(xv::f32_to_bf16(f(0x3F808000u)), 0x3F80);
  EXPECT_EQ(xv::f32_to_bf16(f(0x3F818000u)), 0x3F82);
  EXPECT_EQ(xv::f32_to_bf16(f(0x3F808001u)), 0x3F81);
  EXPECT_EQ(xv::f32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(xv::f32_to_bf16(-2.0f), 0xC000);
  EXPECT_EQ(xv::f32_to_bf16(INFINITY), 0x7F80);
  EXPECT_TRUE(std::isnan(xv::bf16_to_f32(xv::f32_to_bf16(NAN))));
  EXPECT_EQ(xv::f32_to_bf16(f(0x7F7FFFFFu)), 0x7F80);  // FLT_MAX rounds up to inf, as RNE does
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(xv::f32_to_f16(1.0f), 0x3C00);
  EXPECT_EQ(xv::f32_to_f16(-2.0f), 0xC000);
  EXPECT_EQ(xv::f32_to_f16(65504.0f), 0x7BFF);       // largest finite half
  EXPECT_EQ(xv::f32_to_f16(65520.0f), 0x7C00);       // halfway to 65536 rounds to even: inf
  EXPECT_EQ(xv::f32_to_f16(65519.0f), 0x7BFF);
  EXPECT_EQ(xv::f32_to_f16(0.1f), 0x2E66);
  EXPECT_EQ(xv::f32_to_f16(std::ldexp(1.0f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(xv::f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);  // halfway to the smallest: ties to even (0)
  EXPECT_EQ(xv::f32_to_f16(std::ldexp(3.0f, -26)), 0x0001);  // 0.75 of the smallest: rounds up
  EXPECT_EQ(xv::f32_to_f16(std::ldexp(1.0f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(xv::f32_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // halfway above 1: ties to even
  EXPECT_EQ(xv::f32_to_f16(1.0f + std::ldexp(3.0f, -11)), 0x3C02);  // halfway, odd below: up
  EXPECT_EQ(xv::f16_to_f32(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(xv::f16_to_f32(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isinf(xv::f16_to_f32(0x7C00)));
  EXPECT_TRUE(std::isnan(xv::f16_to_f32(0x7E00)));
  for (uint32_t h = 0; h < 0x7C00; ++h) ASSERT_EQ(xv::f32_to_f16(xv::f16_to_f32(uint16_t(h))), h) << h;
}

TEST(SafeTensors, RoundTripAllDtypes) {
  const std::string d = tmpdir("rt");
  xv::Tensor a({2, 3}), b({4});
  for (int i = 0; i < 6; ++i) a.set(int64_t(size_t(i)), 0.5f * float(i) - 1.0f);
  for (int i = 0; i < 4; ++i) b.set(int64_t(size_t(i)), float(i * i));
  for (xv::DType dt : {xv::DType::F32, xv::DType::BF16, xv::DType::F16}) {
    const std::string p = d + "/m.safetensors";
    xv::write_safetensors(p, {{"b", &b}, {"a.weight", &a}}, dt, {{"format", "pt"}});
    xv::SafeTensorsFile f(p);
    ASSERT_EQ(f.tensors().size(), 2u);
    EXPECT_EQ(f.metadata().at("format"), "pt");
    EXPECT_EQ(f.tensors().at("a.weight").dtype, dt);
    auto ws = xv::WeightStore::open_file(p);
    EXPECT_EQ(ws.get("a.weight", {2, 3}).to_vector(), a.to_vector());  // these values are exact in all three dtypes
    EXPECT_EQ(ws.get("b", {4}).to_vector(), b.to_vector());
  }
}

TEST(SafeTensors, RejectsCorruptHeaders) {
  const std::string d = tmpdir("bad");
  auto write = [&](const std::string& name, const std::string& bytes) {
    std::string p = d + "/" + name;
    xv::write_file_atomic(p, bytes);
    return p;
  };
  const std::string ok_hdr = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  const std::string data(8, '\0');
  EXPECT_NO_THROW(xv::SafeTensorsFile(write("ok.safetensors", raw_file(ok_hdr, data))));
  EXPECT_ERROR_HAS(xv::SafeTensorsFile(write("tiny.safetensors", "abc")), "tiny.safetensors", "truncated");
  EXPECT_ERROR_HAS(xv::SafeTensorsFile(write("trunc.safetensors", raw_file(ok_hdr, data).substr(0, 30))),
                   "trunc.safetensors", "header length");
  EXPECT_ERROR_HAS(xv::SafeTensorsFile(write("cut.safetensors", raw_file(ok_hdr, data.substr(0, 4)))),
                   "cut.safetensors", "'w'", "outside");
  EXPECT_ERROR_HAS(xv::SafeTensorsFile(write("json.safetensors", raw_file("{not json", data))), "json.safetensors",
                   "JSON");
  EXPECT_ERROR_HAS(
      xv::SafeTensorsFile(write("dt.safetensors", raw_file(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", data))),
      "dt.safetensors", "'w'", "dtype");
  EXPECT_ERROR_HAS(
      xv::SafeTensorsFile(write("sh.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data))),
      "sh.safetensors", "'w'", "needs 12 bytes");
  EXPECT_ERROR_HAS(xv::SafeTensorsFile(write("ov.safetensors",
                                             raw_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                                                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                                                      data))),
                   "ov.safetensors", "overlap");
  EXPECT_ERROR_HAS(
      xv::SafeTensorsFile(write("hole.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data))),
      "hole.safetensors", "belong to no tensor");
  EXPECT_ERROR_HAS(
      xv::SafeTensorsFile(write("neg.safetensors", raw_file(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data))),
      "neg.safetensors", "non-negative");
  EXPECT_ERROR_HAS(xv::SafeTensorsFile(d + "/absent.safetensors"), "absent.safetensors", "cannot open");
}

TEST(SafeTensors, ShardedIndexAndErrors) {
  const std::string d = tmpdir("shard");
  xv::Tensor a = xv::Tensor::filled({2}, 1.0f), b = xv::Tensor::filled({3}, 2.0f);
  xv::write_safetensors(d + "/model-00001-of-00002.safetensors", {{"a", &a}}, xv::DType::F32);
  xv::write_safetensors(d + "/model-00002-of-00002.safetensors", {{"b", &b}}, xv::DType::BF16);
  nlohmann::json idx = {{"metadata", {{"total_size", 14}}},
                        {"weight_map", {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}}};
  xv::write_file_atomic(d + "/model.safetensors.index.json", idx.dump());
  auto ws = xv::WeightStore::open_dir(d);
  EXPECT_EQ(ws.get("a", {2}).to_vector(), a.to_vector());
  EXPECT_EQ(ws.get("b", {3}).to_vector(), b.to_vector());
  EXPECT_ERROR_HAS(ws.get("c", {1}), "missing tensor 'c'");
  EXPECT_ERROR_HAS(ws.get("b", {4}), "model-00002-of-00002.safetensors", "'b'", "[3]", "[4]");
  // An index naming a tensor its shard lacks.
  idx["weight_map"]["z"] = "model-00001-of-00002.safetensors";
  xv::write_file_atomic(d + "/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR_HAS(xv::WeightStore::open_dir(d), "index.json", "'z'");
  // A shard path escaping the folder.
  idx["weight_map"] = {{"a", "../x.safetensors"}};
  xv::write_file_atomic(d + "/model.safetensors.index.json", idx.dump());
  EXPECT_ERROR_HAS(xv::WeightStore::open_dir(d), "index.json", "not a file inside");
  EXPECT_ERROR_HAS(xv::WeightStore::open_dir(d + "/nope"), "does not exist");
}

TEST(SafeTensors, IntegerTensorIsNotAWeight) {
  const std::string d = tmpdir("int");
  const std::string hdr = R"({"w":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})";
  xv::write_file_atomic(d + "/m.safetensors", raw_file(hdr, std::string(8, '\0')));
  auto ws = xv::WeightStore::open_file(d + "/m.safetensors");
  EXPECT_ERROR_HAS(ws.get("w", {2}), "m.safetensors", "'w'", "I32", "floating-point");
}

}  // namespace

// set_shapes_only: tensors keep their checked shapes without data (Tensor::shape_only), reshape and concat_rows
// keep them so; the values are read later (core/units.cpp) and release_pages leaves them readable.
TEST(SafeTensors, ShapesOnlyAndReleasedPages) {
  const std::string d = tmpdir("shapes");
  xv::Tensor a({2048, 3}), b({2, 3});  // a: 12 KiB in bf16, whole pages to release
  for (int64_t i = 0; i < a.numel(); ++i) a.set(int64_t(i), float(i % 64) + 0.5f);
  for (int64_t i = 0; i < b.numel(); ++i) b.set(int64_t(i), -float(i));
  xv::write_safetensors(d + "/w.safetensors", {{"a", &a}, {"b", &b}}, xv::DType::BF16);
  xv::WeightStore ws = xv::WeightStore::open_file(d + "/w.safetensors");
  ws.set_shapes_only(true);
  xv::Tensor sa = ws.get("a", {2048, 3});
  EXPECT_TRUE(sa.shape_only());
  EXPECT_EQ(sa.shape(), (xv::Shape{2048, 3}));
  EXPECT_THROW(ws.get("a", {3, 2048}), xv::Error);  // shapes are still checked
  sa.reshape({6144});
  EXPECT_EQ(sa.shape(), (xv::Shape{6144}));
  EXPECT_THROW(sa.reshape({6145}), xv::Error);
  xv::Tensor cat = xv::concat_rows({ws.get("a", {2048, 3}), ws.get("b", {2, 3})});
  EXPECT_TRUE(cat.shape_only());
  EXPECT_EQ(cat.shape(), (xv::Shape{2050, 3}));
  EXPECT_FALSE(xv::Tensor().shape_only());
  ws.set_shapes_only(false);
  const xv::Tensor before = ws.get("a", {2048, 3});
  ws.release_pages("a");
  EXPECT_EQ(ws.get("a", {2048, 3}).to_vector(), before.to_vector());
  EXPECT_FLOAT_EQ(before.at(int64_t(3)), 3.5f);
}
