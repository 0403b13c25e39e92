// Bad model folders and inputs: each a clear xv::Error naming the file and field, never a crash
// (this suite also runs under -DXV_SANITIZE=ON).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "models/embedder.h"
#include "core/file_util.h"
#include "core/safetensors.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;
const std::string kFix = XV_FIXTURES;

// A private copy of a fixture model to damage.
std::string copy_model(const std::string& name, const std::string& tag) {
  fs::path dst = fs::temp_directory_path() / ("xv_bad_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(dst);
  fs::copy(kFix + "/models/" + name, dst, fs::copy_options::recursive);
  return dst.string();
}

std::string load_error(const std::string& dir) {
  try {
    xv::Embedder::load(dir);
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

void expect_has(const std::string& msg, std::initializer_list<const char*> parts) {
  ASSERT_FALSE(msg.empty()) << "no error was raised";
  for (const char* p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg << "\n  lacks: " << p;
}

TEST(BadInput, TruncatedWeights) {
  auto d = copy_model("tiny_bert", "trunc");
  auto bytes = xv::read_file(d + "/model.safetensors");
  xv::write_file_atomic(d + "/model.safetensors", bytes.substr(0, bytes.size() / 2));
  expect_has(load_error(d), {"model.safetensors", "outside", "truncated"});
}

TEST(BadInput, ShapeDisagreesWithConfig) {
  auto d = copy_model("tiny_bert", "shape");
  json c = json::parse(xv::read_file(d + "/config.json"));
  c["intermediate_size"] = 96;
  xv::write_file_atomic(d + "/config.json", c.dump());
  expect_has(load_error(d), {"model.safetensors", "encoder.layer.0.intermediate.dense.weight", "config.json implies"});
}

TEST(BadInput, MissingTensorAndWrongDtype) {
  auto d = copy_model("tiny_bert", "missing");
  auto ws = xv::WeightStore::open_dir(d);
  std::vector<xv::Tensor> keep;
  std::vector<std::pair<std::string, xv::Shape>> layout;
  for (const auto& n : ws.names()) {
    if (n == "encoder.layer.1.output.dense.bias") continue;
    keep.push_back(ws.get(n, ws.info(n).shape));
    layout.emplace_back(n, ws.info(n).shape);
  }
  {
    std::vector<xv::NamedTensor> nt;
    for (size_t i = 0; i < keep.size(); ++i) nt.push_back({layout[i].first, &keep[i]});
    xv::write_safetensors(d + "/model.safetensors", nt, xv::DType::F32);
  }
  expect_has(load_error(d), {"missing tensor 'encoder.layer.1.output.dense.bias'"});

  // An integer tensor where a weight belongs (the first tensor the loader reads).
  auto d2 = copy_model("tiny_bert", "dtype");
  const int64_t V = json::parse(xv::read_file(d2 + "/config.json"))["vocab_size"].get<int64_t>();
  const size_t nbytes = size_t(V) * 64 * 4;
  const std::string hdr = R"({"embeddings.word_embeddings.weight":{"dtype":"I32","shape":[)" + std::to_string(V) +
                          R"(,64],"data_offsets":[0,)" + std::to_string(nbytes) + "]}}";
  std::string raw(8, '\0');
  for (int i = 0; i < 8; ++i) raw[size_t(i)] = char((hdr.size() >> (8 * i)) & 0xff);
  xv::write_file_atomic(d2 + "/model.safetensors", raw + hdr + std::string(nbytes, '\0'));
  expect_has(load_error(d2), {"model.safetensors", "I32", "floating-point"});
}

TEST(BadInput, ConfigErrors) {
  auto d = copy_model("tiny_bert", "cfg");
  json c = json::parse(xv::read_file(d + "/config.json"));
  c["hidden_size"] = "sixty-four";
  xv::write_file_atomic(d + "/config.json", c.dump());
  expect_has(load_error(d), {"config.json", "'hidden_size'", "integer"});
  c.erase("hidden_size");
  xv::write_file_atomic(d + "/config.json", c.dump());
  expect_has(load_error(d), {"config.json", "'hidden_size'", "missing"});
  xv::write_file_atomic(d + "/config.json", "{ broken");
  expect_has(load_error(d), {"config.json", "JSON"});
  c["model_type"] = "gpt2";
  c["hidden_size"] = 64;
  xv::write_file_atomic(d + "/config.json", c.dump());
  expect_has(load_error(d), {"config.json", "'model_type'", "gpt2"});
  expect_has(load_error(d + "/does-not-exist"), {"does-not-exist", "does not exist"});
}

TEST(BadInput, CorruptTokenizer) {
  auto d = copy_model("tiny_bert", "tok");
  xv::write_file_atomic(d + "/tokenizer.json", "{\"model\": 12");
  expect_has(load_error(d), {"tokenizer.json"});
}

TEST(BadInput, TextLongerThanTheLimit) {
  auto m = xv::Embedder::load(kFix + "/models/tiny_bert");  // max_seq_length 128
  std::string longtext;
  for (int i = 0; i < 300; ++i) longtext += "word ";
  xv::EmbedOptions opt;
  try {
    m->embed({{"short", ""}, {longtext, ""}}, opt);
    FAIL() << "no error for a text past the limit";
  } catch (const xv::Error& e) {
    expect_has(e.what(), {"item 2", "limit of 128", "--truncate"});
  }
  opt.truncate = true;
  EXPECT_EQ(m->embed({{longtext, ""}}, opt).dim(0), 1);
}

TEST(BadInput, UnreadableImage) {
  auto m = xv::Embedder::load(kFix + "/models/tiny_phi3v");
  const std::string bad = (fs::temp_directory_path() / "xv_not_an_image.png").string();
  xv::write_file_atomic(bad, "this is text, not a PNG");
  try {
    m->embed({{"<|image_1|> Represent the given image.", bad}}, {});
    FAIL() << "no error for an unreadable image";
  } catch (const xv::Error& e) {
    expect_has(e.what(), {"xv_not_an_image.png"});
  }
  try {
    m->embed({{"<|image_1|> Represent the given image.", "/nonexistent/picture.jpg"}}, {});
    FAIL() << "no error for a missing image";
  } catch (const xv::Error& e) {
    expect_has(e.what(), {"picture.jpg"});
  }
}

TEST(BadInput, ImageTagWithoutImage) {
  auto m = xv::Embedder::load(kFix + "/models/tiny_phi3v");
  try {
    m->embed({{"<|image_2|> two images?", ""}}, {});
    FAIL() << "no error for a tag without its image";
  } catch (const xv::Error& e) {
    expect_has(e.what(), {"<|image_2|>"});
  }
}

}  // namespace
