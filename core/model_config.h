// config.json for the two backbones, with the Hugging Face field names. Every field read is checked for
// presence and type; an error names the file, the field and what was expected.
#pragma once
#include <string>
#include <vector>

namespace xv {

// sentence-transformers BERT encoders (all-MiniLM-L6-v2): model_type "bert".
struct BertConfig {
  int64_t vocab_size = 0, hidden_size = 0, num_hidden_layers = 0, num_attention_heads = 0, intermediate_size = 0;
  int64_t max_position_embeddings = 0, type_vocab_size = 0, pad_token_id = 0;
  float layer_norm_eps = 1e-12f;
  std::string hidden_act = "gelu";  // gelu (erf) or gelu_new / gelu_pytorch_tanh (tanh)
  // From sentence_bert_config.json when present (the sentence-transformers truncation limit).
  int64_t max_seq_length = 0;
};

// CLIP vision tower as Phi-3-vision uses it (CLIP ViT-L/14-336 unless the config says otherwise).
struct ClipVisionConfig {
  int64_t hidden_size = 1024, intermediate_size = 4096, num_hidden_layers = 24, num_attention_heads = 16;
  int64_t image_size = 336, patch_size = 14, num_channels = 3;
  float layer_norm_eps = 1e-5f;
  std::string hidden_act = "quick_gelu";
  int64_t num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
};

// Phi-3-vision (Phi3VForCausalLM): model_type "phi3_v".
struct Phi3VConfig {
  int64_t vocab_size = 0, hidden_size = 0, intermediate_size = 0, num_hidden_layers = 0;
  int64_t num_attention_heads = 0, num_key_value_heads = 0, pad_token_id = 32000;
  int64_t max_position_embeddings = 0, original_max_position_embeddings = 0;
  float rms_norm_eps = 1e-5f;
  double rope_theta = 10000.0;
  std::string rope_type;  // "" (plain), "su" or "longrope" (the same thing)
  std::vector<float> rope_short_factor, rope_long_factor;
  // Vision side (embd_layer / img_processor).
  ClipVisionConfig vision;
  int64_t image_dim_out = 1024;  // CLIP hidden size the projector consumes (x4 after the 2x2 merge)
  int layer_idx = -2;            // CLIP hidden state used: -2 = the input to the last layer
  std::string hd_transform_order = "sub_glb";
  int64_t head_dim() const { return hidden_size / num_attention_heads; }
};

std::string read_model_type(const std::string& config_path);
BertConfig load_bert_config(const std::string& model_dir);
Phi3VConfig load_phi3v_config(const std::string& model_dir);

}  // namespace xv
