#include "core/model_config.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file_util.h"

namespace xv {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

json parse_json_file(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", path, e.what());
  }
}

// Field readers: `where` is "file: field" for messages.
int64_t get_int(const json& j, const std::string& file, const std::string& key, bool required, int64_t dflt,
                int64_t min_value = 1) {
  if (!j.contains(key) || j[key].is_null()) {
    XV_CHECK(!required, "{}: required field '{}' (integer) is missing", file, key);
    return dflt;
  }
  XV_CHECK(j[key].is_number_integer(), "{}: field '{}' must be an integer, found {}", file, key, j[key].dump());
  int64_t v = j[key].get<int64_t>();
  XV_CHECK(v >= min_value, "{}: field '{}' must be >= {}, found {}", file, key, min_value, v);
  return v;
}

double get_num(const json& j, const std::string& file, const std::string& key, double dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  XV_CHECK(j[key].is_number(), "{}: field '{}' must be a number, found {}", file, key, j[key].dump());
  return j[key].get<double>();
}

std::string get_str(const json& j, const std::string& file, const std::string& key, const std::string& dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  XV_CHECK(j[key].is_string(), "{}: field '{}' must be a string, found {}", file, key, j[key].dump());
  return j[key].get<std::string>();
}

std::vector<float> get_floats(const json& j, const std::string& file, const std::string& key) {
  XV_CHECK(j.contains(key) && j[key].is_array(), "{}: field '{}' must be an array of numbers", file, key);
  std::vector<float> out;
  for (const auto& v : j[key]) {
    XV_CHECK(v.is_number(), "{}: field '{}' must hold numbers, found {}", file, key, v.dump());
    out.push_back(v.get<float>());
  }
  return out;
}

}  // namespace

std::string read_model_type(const std::string& config_path) {
  json j = parse_json_file(config_path);
  XV_CHECK(j.is_object(), "{}: expected a JSON object", config_path);
  return get_str(j, config_path, "model_type", "");
}

BertConfig load_bert_config(const std::string& model_dir) {
  const std::string file = (fs::path(model_dir) / "config.json").string();
  json j = parse_json_file(file);
  XV_CHECK(j.is_object(), "{}: expected a JSON object", file);
  std::string mt = get_str(j, file, "model_type", "");
  XV_CHECK(mt == "bert", "{}: field 'model_type' is '{}', expected 'bert'", file, mt);
  BertConfig c;
  c.vocab_size = get_int(j, file, "vocab_size", true, 0);
  c.hidden_size = get_int(j, file, "hidden_size", true, 0);
  c.num_hidden_layers = get_int(j, file, "num_hidden_layers", true, 0);
  c.num_attention_heads = get_int(j, file, "num_attention_heads", true, 0);
  c.intermediate_size = get_int(j, file, "intermediate_size", true, 0);
  c.max_position_embeddings = get_int(j, file, "max_position_embeddings", true, 0);
  c.type_vocab_size = get_int(j, file, "type_vocab_size", false, 2);
  c.pad_token_id = get_int(j, file, "pad_token_id", false, 0, 0);
  c.layer_norm_eps = float(get_num(j, file, "layer_norm_eps", 1e-12));
  c.hidden_act = get_str(j, file, "hidden_act", "gelu");
  XV_CHECK(c.hidden_act == "gelu" || c.hidden_act == "gelu_new" || c.hidden_act == "gelu_pytorch_tanh",
           "{}: field 'hidden_act' is '{}', expected gelu, gelu_new or gelu_pytorch_tanh", file, c.hidden_act);
  XV_CHECK(c.hidden_size % c.num_attention_heads == 0,
           "{}: field 'hidden_size' ({}) must be divisible by 'num_attention_heads' ({})", file, c.hidden_size,
           c.num_attention_heads);
  XV_CHECK(c.pad_token_id < c.vocab_size, "{}: field 'pad_token_id' ({}) must be < vocab_size ({})", file,
           c.pad_token_id, c.vocab_size);
  XV_CHECK(c.layer_norm_eps > 0.0f, "{}: field 'layer_norm_eps' must be > 0", file);
  std::string pos = get_str(j, file, "position_embedding_type", "absolute");
  XV_CHECK(pos == "absolute", "{}: field 'position_embedding_type' is '{}', only 'absolute' is supported", file, pos);
  c.max_seq_length = c.max_position_embeddings;
  const std::string st = (fs::path(model_dir) / "sentence_bert_config.json").string();
  std::error_code ec;
  if (fs::exists(st, ec)) {
    json s = parse_json_file(st);
    c.max_seq_length = std::min(c.max_position_embeddings, get_int(s, st, "max_seq_length", false, c.max_seq_length));
  }
  return c;
}

Phi3VConfig load_phi3v_config(const std::string& model_dir) {
  const std::string file = (fs::path(model_dir) / "config.json").string();
  json j = parse_json_file(file);
  XV_CHECK(j.is_object(), "{}: expected a JSON object", file);
  std::string mt = get_str(j, file, "model_type", "");
  XV_CHECK(mt == "phi3_v", "{}: field 'model_type' is '{}', expected 'phi3_v'", file, mt);
  Phi3VConfig c;
  c.vocab_size = get_int(j, file, "vocab_size", true, 0);
  c.hidden_size = get_int(j, file, "hidden_size", true, 0);
  c.intermediate_size = get_int(j, file, "intermediate_size", true, 0);
  c.num_hidden_layers = get_int(j, file, "num_hidden_layers", true, 0);
  c.num_attention_heads = get_int(j, file, "num_attention_heads", true, 0);
  c.num_key_value_heads = get_int(j, file, "num_key_value_heads", false, c.num_attention_heads);
  c.pad_token_id = get_int(j, file, "pad_token_id", false, 32000, 0);
  c.max_position_embeddings = get_int(j, file, "max_position_embeddings", true, 0);
  c.original_max_position_embeddings =
      get_int(j, file, "original_max_position_embeddings", false, c.max_position_embeddings);
  c.rms_norm_eps = float(get_num(j, file, "rms_norm_eps", 1e-5));
  c.rope_theta = get_num(j, file, "rope_theta", 10000.0);
  XV_CHECK(c.hidden_size % c.num_attention_heads == 0,
           "{}: field 'hidden_size' ({}) must be divisible by 'num_attention_heads' ({})", file, c.hidden_size,
           c.num_attention_heads);
  XV_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
           "{}: field 'num_attention_heads' ({}) must be a multiple of 'num_key_value_heads' ({})", file,
           c.num_attention_heads, c.num_key_value_heads);
  XV_CHECK(c.pad_token_id < c.vocab_size, "{}: field 'pad_token_id' ({}) must be < vocab_size ({})", file,
           c.pad_token_id, c.vocab_size);
  XV_CHECK(c.rms_norm_eps > 0.0f, "{}: field 'rms_norm_eps' must be > 0", file);
  XV_CHECK(c.rope_theta > 0.0, "{}: field 'rope_theta' must be > 0", file);
  std::string act = get_str(j, file, "hidden_act", "silu");
  XV_CHECK(act == "silu", "{}: field 'hidden_act' is '{}', expected 'silu'", file, act);
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
    const json& rs = j["rope_scaling"];
    const std::string f = file + ": rope_scaling";
    XV_CHECK(rs.is_object(), "{}: field 'rope_scaling' must be an object or null", file);
    c.rope_type = get_str(rs, f, "type", get_str(rs, f, "rope_type", ""));
    XV_CHECK(c.rope_type == "su" || c.rope_type == "longrope",
             "{}: field 'rope_scaling.type' is '{}', expected 'su' or 'longrope'", file, c.rope_type);
    c.rope_short_factor = get_floats(rs, f, "short_factor");
    c.rope_long_factor = get_floats(rs, f, "long_factor");
    const size_t half = size_t(c.head_dim() / 2);
    XV_CHECK(c.rope_short_factor.size() == half && c.rope_long_factor.size() == half,
             "{}: rope_scaling.short_factor and long_factor must have head_dim/2 = {} entries (found {} and {})", file,
             half, c.rope_short_factor.size(), c.rope_long_factor.size());
  }
  // Vision tower: Phi-3-vision hard-codes CLIP ViT-L/14-336; img_processor.vision_config overrides it
  // (tiny test models use that).
  XV_CHECK(j.contains("img_processor") && j["img_processor"].is_object(),
           "{}: field 'img_processor' (object) is missing: not a Phi-3-vision config", file);
  const json& ip = j["img_processor"];
  const std::string ipf = file + ": img_processor";
  c.image_dim_out = get_int(ip, ipf, "image_dim_out", false, 1024);
  const int64_t layer_idx = get_int(ip, ipf, "layer_idx", false, -2, -1000);
  XV_CHECK(layer_idx < 0, "{}: field 'img_processor.layer_idx' must be negative, found {}", file, layer_idx);
  c.layer_idx = int(layer_idx);
  std::string tf = get_str(ip, ipf, "type_feature", "patch");
  XV_CHECK(tf == "patch", "{}: field 'img_processor.type_feature' is '{}', only 'patch' is supported", file, tf);
  if (ip.contains("vision_config")) {
    const json& vc = ip["vision_config"];
    const std::string vf = file + ": img_processor.vision_config";
    XV_CHECK(vc.is_object(), "{}: field 'img_processor.vision_config' must be an object", file);
    c.vision.hidden_size = get_int(vc, vf, "hidden_size", true, 0);
    c.vision.intermediate_size = get_int(vc, vf, "intermediate_size", true, 0);
    c.vision.num_hidden_layers = get_int(vc, vf, "num_hidden_layers", true, 0);
    c.vision.num_attention_heads = get_int(vc, vf, "num_attention_heads", true, 0);
    c.vision.image_size = get_int(vc, vf, "image_size", false, 336);
    c.vision.patch_size = get_int(vc, vf, "patch_size", false, 14);
    c.vision.layer_norm_eps = float(get_num(vc, vf, "layer_norm_eps", 1e-5));
    c.vision.hidden_act = get_str(vc, vf, "hidden_act", "quick_gelu");
  }
  XV_CHECK(c.vision.hidden_size % c.vision.num_attention_heads == 0,
           "{}: vision hidden_size ({}) must be divisible by its num_attention_heads ({})", file, c.vision.hidden_size,
           c.vision.num_attention_heads);
  XV_CHECK(c.vision.image_size == 336 && c.vision.patch_size == 14,
           "{}: the HD transform needs 336-px crops of 14-px patches (image_size 336, patch_size 14)", file);
  XV_CHECK(c.image_dim_out == c.vision.hidden_size,
           "{}: field 'img_processor.image_dim_out' ({}) must equal the CLIP hidden size ({})", file, c.image_dim_out,
           c.vision.hidden_size);
  XV_CHECK(c.vision.hidden_act == "quick_gelu" || c.vision.hidden_act == "gelu",
           "{}: vision hidden_act '{}' is not supported (quick_gelu or gelu)", file, c.vision.hidden_act);
  XV_CHECK(c.layer_idx < 0 && -c.layer_idx <= c.vision.num_hidden_layers + 1,
           "{}: field 'img_processor.layer_idx' must be in [-{}, -1], found {}", file, c.vision.num_hidden_layers + 1,
           c.layer_idx);
  if (j.contains("embd_layer") && j["embd_layer"].is_object()) {
    const json& el = j["embd_layer"];
    const std::string ef = file + ": embd_layer";
    c.hd_transform_order = get_str(el, ef, "hd_transform_order", "sub_glb");
    XV_CHECK(c.hd_transform_order == "sub_glb" || c.hd_transform_order == "glb_sub",
             "{}: field 'embd_layer.hd_transform_order' must be 'sub_glb' or 'glb_sub'", file);
    std::string pc = get_str(el, ef, "projection_cls", "mlp");
    XV_CHECK(pc == "mlp", "{}: field 'embd_layer.projection_cls' is '{}', only 'mlp' is supported", file, pc);
  }
  return c;
}

}  // namespace xv
