// config.json parsing for both backbones, Phi-3-vision's defaults, and the prompt's image tags.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/file_util.h"
#include "core/model_config.h"
#include "models/phi3v.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string write_config(const std::string& tag, const json& j) {
  fs::path d = fs::temp_directory_path() / ("xv_cfg_" + tag + "_" + std::to_string(::getpid()));
  fs::create_directories(d);
  xv::write_file_atomic((d / "config.json").string(), j.dump());
  return d.string();
}

// The fields of a Phi-3.5-vision-instruct config.json (values as published: hidden 3072, 32 layers,
// 32 heads, vocab 32064, su scaling with 48 factors per list, original context 4096).
json phi35v_config() {
  return {{"model_type", "phi3_v"}, {"architectures", {"Phi3VForCausalLM"}}, {"hidden_size", 3072},
          {"intermediate_size", 8192}, {"num_hidden_layers", 32}, {"num_attention_heads", 32},
          {"num_key_value_heads", 32}, {"vocab_size", 32064}, {"max_position_embeddings", 131072},
          {"original_max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
          {"hidden_act", "silu"}, {"pad_token_id", 32000},
          {"rope_scaling", {{"type", "su"}, {"short_factor", std::vector<double>(48, 1.05)},
                            {"long_factor", std::vector<double>(48, 1.5)}}},
          {"img_processor", {{"image_dim_out", 1024}, {"model_name", "openai/clip-vit-large-patch14-336"},
                             {"name", "clip_vision_model"}, {"num_img_tokens", 144}}},
          {"embd_layer", {{"embedding_cls", "image"}, {"hd_transform_order", "sub_glb"}, {"projection_cls", "mlp"},
                          {"use_hd_transform", true}, {"with_learnable_separator", true}}}};
}

TEST(ModelConfig, Phi35VisionDefaultsToClipLarge336) {
  auto c = xv::load_phi3v_config(write_config("phi35v", phi35v_config()));
  EXPECT_EQ(c.head_dim(), 96);
  EXPECT_EQ(c.rope_type, "su");
  EXPECT_EQ(c.rope_long_factor.size(), 48u);
  EXPECT_EQ(c.vision.hidden_size, 1024);  // CLIP ViT-L/14-336
  EXPECT_EQ(c.vision.num_hidden_layers, 24);
  EXPECT_EQ(c.vision.num_attention_heads, 16);
  EXPECT_EQ(c.vision.intermediate_size, 4096);
  EXPECT_EQ(c.vision.num_patches(), 576);
  EXPECT_EQ(c.layer_idx, -2);
  EXPECT_EQ(c.hd_transform_order, "sub_glb");
}

std::string config_error(json j) {
  try {
    xv::load_phi3v_config(write_config("bad", j));
  } catch (const xv::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, Phi3VErrorsNameTheField) {
  auto j = phi35v_config();
  j["rope_scaling"]["long_factor"] = std::vector<double>(40, 1.0);
  EXPECT_NE(config_error(j).find("head_dim/2 = 48"), std::string::npos);
  j = phi35v_config();
  j["num_attention_heads"] = 7;
  EXPECT_NE(config_error(j).find("'num_attention_heads'"), std::string::npos);
  j = phi35v_config();
  j.erase("img_processor");
  EXPECT_NE(config_error(j).find("'img_processor'"), std::string::npos);
  j = phi35v_config();
  j["img_processor"]["image_dim_out"] = 768;
  EXPECT_NE(config_error(j).find("image_dim_out"), std::string::npos);
  j = phi35v_config();
  j["rope_scaling"]["type"] = "yarn";
  EXPECT_NE(config_error(j).find("'rope_scaling.type'"), std::string::npos);
  j = phi35v_config();
  j["vocab_size"] = -3;
  EXPECT_NE(config_error(j).find("'vocab_size' must be >= 1"), std::string::npos);
}

TEST(Phi3VPrompt, TagsBecomeNegativeRunsAndEachChunkGetsItsBos) {
  auto tok = xv::Tokenizer::from_file(std::string(XV_FIXTURES) + "/tokenizer/bpe_llama/tokenizer.json");
  const int32_t bos = tok->token_to_id("<s>");
  auto ids = xv::phi3v_prompt_ids(*tok, "<|image_2|> a <|image_1|>b", {3, 2});
  // chunk "" -> [<s>], image 2 (2 tokens), chunk " a " -> [<s> ...], image 1 (3 tokens), chunk "b" -> [<s> ...]
  ASSERT_GE(ids.size(), 1u + 2 + 1 + 3 + 1);
  EXPECT_EQ(ids[0], bos);
  EXPECT_EQ(ids[1], -2);
  EXPECT_EQ(ids[2], -2);
  EXPECT_EQ(ids[3], bos);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), -1), 3);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), bos), 3);
  // Text that only looks like a tag stays text.
  auto plain = xv::phi3v_prompt_ids(*tok, "<|image_|> <|image_x|>", {});
  EXPECT_EQ(std::count_if(plain.begin(), plain.end(), [](int32_t v) { return v < 0; }), 0);
  EXPECT_THROW(xv::phi3v_prompt_ids(*tok, "<|image_3|>", {5}), xv::Error);
}

}  // namespace
