#include "models/init.h"

#include "core/atomic_dir.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "core/file_util.h"
#include "core/safetensors.h"
#include "core/tensor.h"

namespace xv {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Deterministic normal samples on every platform and for any thread count: element i of the stream
// is Box-Muller over two splitmix64 hashes of (seed, i) (std::normal_distribution's algorithm is
// implementation-defined, and a sequential generator would serialise 4 billion draws).
struct Rng {
  uint64_t seed;
  static uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  static double uniform(uint64_t h) { return (double(h >> 11) + 0.5) * (1.0 / 9007199254740992.0); }
  float normal(uint64_t i) const {
    const uint64_t a = mix(seed ^ mix(2 * i)), b = mix(seed ^ mix(2 * i + 1));
    return float(std::sqrt(-2.0 * std::log(uniform(a))) * std::cos(2.0 * M_PI * uniform(b)));
  }
};

// Collects tensor specs, then streams them to the file one at a time (the phi35v preset has 4.15B
// parameters: no full copy is ever held in memory).
struct Builder {
  Rng rng;
  struct Spec {
    std::string name;
    Shape shape;
    float std;    // > 0: normal(0, std); otherwise constant `value`
    float value;
  };
  std::vector<Spec> specs;
  int64_t params = 0;
  void normal(const std::string& name, Shape s, float std) { add({name, std::move(s), std, 0.0f}); }
  void fill(const std::string& name, Shape s, float value) { add({name, std::move(s), 0.0f, value}); }
  void add(Spec sp) {
    params += shape_numel(sp.shape);
    specs.push_back(std::move(sp));
  }
  void write(const std::string& path, DType dtype, bool progress) {
    std::sort(specs.begin(), specs.end(), [](const Spec& a, const Spec& b) { return a.name < b.name; });
    std::vector<std::pair<std::string, Shape>> layout;
    for (const auto& sp : specs) layout.emplace_back(sp.name, sp.shape);
    SafeTensorsWriter w(path, layout, dtype, {{"format", "pt"}});
    int64_t written = 0;
    int reported = 0;
    for (const auto& sp : specs) {
      std::vector<float> v(static_cast<size_t>(shape_numel(sp.shape)), sp.value);
      if (sp.std > 0.0f) {
        const int64_t n = int64_t(v.size());
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; ++i) v[size_t(i)] = rng.normal(uint64_t(written + i)) * sp.std;
      }
      const Tensor t = Tensor::from_vector(sp.shape, v);
      w.append(t);
      written += t.numel();
      const int pct = int(100 * written / std::max<int64_t>(params, 1));
      if (progress && params >= 100000000 && pct / 10 > reported / 10) {
        reported = pct;
        std::fprintf(stderr, "init-model: %d%% (%.2fB of %.2fB parameters)\n", pct, double(written) / 1e9,
                     double(params) / 1e9);
      }
    }
    w.finish();
  }
};

// A small Llama-style tokenizer: specials, the 256 byte-fallback tokens, "▁" and printable ASCII
// characters, with merges for "▁" + letter. Enough to tokenize any text (unknown bytes fall back).
json llama_byte_tokenizer() {
  json vocab = json::object();
  int id = 0;
  for (const char* s : {"<unk>", "<s>", "</s>"}) vocab[s] = id++;
  char buf[8];
  for (int b = 0; b < 256; ++b) {
    std::snprintf(buf, sizeof buf, "<0x%02X>", b);
    vocab[buf] = id++;
  }
  vocab["\xe2\x96\x81"] = id++;
  json merges = json::array();
  for (int c = 33; c < 127; ++c) vocab[std::string(1, char(c))] = id++;
  for (int c = 'a'; c <= 'z'; ++c) {
    vocab["\xe2\x96\x81" + std::string(1, char(c))] = id++;
    merges.push_back(std::string("\xe2\x96\x81 ") + char(c));
  }
  json added = json::array();
  auto special = [&](int i, const std::string& content) {
    added.push_back({{"id", i}, {"content", content}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}});
  };
  special(0, "<unk>");
  special(1, "<s>");
  special(2, "</s>");
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}}}}}},
          {"pre_tokenizer", nullptr},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                      {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}}},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", "<unk>"}, {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}, {"ignore_merges", false},
            {"vocab", vocab}, {"merges", merges}}}};
}

// A small uncased WordPiece tokenizer: specials, ASCII characters and their ## continuations.
json bert_char_tokenizer() {
  json vocab = json::object();
  int id = 0;
  for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}) vocab[s] = id++;
  for (int c = 33; c < 127; ++c) {
    if (c >= 'A' && c <= 'Z') continue;
    vocab[std::string(1, char(c))] = id++;
  }
  for (int c = 33; c < 127; ++c) {
    if (c >= 'A' && c <= 'Z') continue;
    vocab["##" + std::string(1, char(c))] = id++;
  }
  json added = json::array();
  int i = 0;
  for (const char* s : {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"})
    added.push_back({{"id", i++}, {"content", s}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", true}});
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "BertNormalizer"}, {"clean_text", true}, {"handle_chinese_chars", true},
            {"strip_accents", nullptr}, {"lowercase", true}}},
          {"pre_tokenizer", {{"type", "BertPreTokenizer"}}},
          {"post_processor",
           {{"type", "TemplateProcessing"},
            {"single", {{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                        {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}}},
            {"pair", {{{"SpecialToken", {{"id", "[CLS]"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                      {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "B"}, {"type_id", 1}}}},
                      {{"SpecialToken", {{"id", "[SEP]"}, {"type_id", 1}}}}}},
            {"special_tokens",
             {{"[CLS]", {{"id", "[CLS]"}, {"ids", {2}}, {"tokens", {"[CLS]"}}}},
              {"[SEP]", {{"id", "[SEP]"}, {"ids", {3}}, {"tokens", {"[SEP]"}}}}}}}},
          {"decoder", {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}}},
          {"model",
           {{"type", "WordPiece"}, {"unk_token", "[UNK]"}, {"continuing_subword_prefix", "##"},
            {"max_input_chars_per_word", 100}, {"vocab", vocab}}}};
}

int64_t init_bert(const InitModelOptions& opt, Builder& b) {
  const bool tiny = opt.preset == "tiny";
  XV_CHECK(tiny || opt.preset == "minilm", "init-model: --preset for bert must be tiny or minilm, not '{}'", opt.preset);
  const int64_t V = tiny ? 512 : 30522, C = tiny ? 64 : 384, H = tiny ? 4 : 12, I = tiny ? 128 : 1536;
  const int64_t L = opt.layers > 0 ? opt.layers : tiny ? 2 : 6;
  const int64_t P = tiny ? 128 : 512;
  const float s = 0.02f;
  b.normal("embeddings.word_embeddings.weight", {V, C}, s);
  b.normal("embeddings.position_embeddings.weight", {P, C}, s);
  b.normal("embeddings.token_type_embeddings.weight", {2, C}, s);
  b.fill("embeddings.LayerNorm.weight", {C}, 1.0f);
  b.fill("embeddings.LayerNorm.bias", {C}, 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "encoder.layer." + std::to_string(l) + ".";
    for (const char* n : {"attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"}) {
      b.normal(p + n + ".weight", {C, C}, s);
      b.fill(p + n + ".bias", {C}, 0.0f);
    }
    b.fill(p + "attention.output.LayerNorm.weight", {C}, 1.0f);
    b.fill(p + "attention.output.LayerNorm.bias", {C}, 0.0f);
    b.normal(p + "intermediate.dense.weight", {I, C}, s);
    b.fill(p + "intermediate.dense.bias", {I}, 0.0f);
    b.normal(p + "output.dense.weight", {C, I}, s);
    b.fill(p + "output.dense.bias", {C}, 0.0f);
    b.fill(p + "output.LayerNorm.weight", {C}, 1.0f);
    b.fill(p + "output.LayerNorm.bias", {C}, 0.0f);
  }
  json cfg = {{"architectures", {"BertModel"}}, {"model_type", "bert"}, {"vocab_size", V}, {"hidden_size", C},
              {"num_hidden_layers", L}, {"num_attention_heads", H}, {"intermediate_size", I},
              {"max_position_embeddings", P}, {"type_vocab_size", 2}, {"pad_token_id", 0},
              {"layer_norm_eps", 1e-12}, {"hidden_act", "gelu"}, {"position_embedding_type", "absolute"}};
  write_file_atomic((fs::path(opt.out_dir) / "config.json").string(), cfg.dump(2) + "\n");
  return V;
}

int64_t init_phi3v(const InitModelOptions& opt, Builder& b) {
  const bool tiny = opt.preset == "tiny";
  XV_CHECK(tiny || opt.preset == "phi35v", "init-model: --preset for phi3_v must be tiny or phi35v, not '{}'",
           opt.preset);
  const int64_t V = tiny ? 512 : 32064, C = tiny ? 64 : 3072, H = tiny ? 4 : 32, I = tiny ? 128 : 8192;
  const int64_t L = opt.layers > 0 ? opt.layers : tiny ? 2 : 32;
  const int64_t D = C / H, VC = tiny ? 32 : 1024, VL = tiny ? 3 : 24, VH = tiny ? 2 : 16, VI = tiny ? 64 : 4096;
  const float s = 0.02f;
  b.normal("model.embed_tokens.weight", {V, C}, s);
  for (int64_t l = 0; l < L; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    b.fill(p + "input_layernorm.weight", {C}, 1.0f);
    b.normal(p + "self_attn.qkv_proj.weight", {3 * C, C}, s);
    b.normal(p + "self_attn.o_proj.weight", {C, C}, s);
    b.fill(p + "post_attention_layernorm.weight", {C}, 1.0f);
    b.normal(p + "mlp.gate_up_proj.weight", {2 * I, C}, s);
    b.normal(p + "mlp.down_proj.weight", {C, I}, s);
  }
  b.fill("model.norm.weight", {C}, 1.0f);
  b.normal("lm_head.weight", {V, C}, s);
  const std::string v = "model.vision_embed_tokens.";
  const std::string vm = v + "img_processor.vision_model.";
  b.normal(vm + "embeddings.class_embedding", {VC}, s);
  b.normal(vm + "embeddings.patch_embedding.weight", {VC, 3, 14, 14}, s);
  b.normal(vm + "embeddings.position_embedding.weight", {577, VC}, s);
  b.fill(vm + "pre_layrnorm.weight", {VC}, 1.0f);
  b.fill(vm + "pre_layrnorm.bias", {VC}, 0.0f);
  for (int64_t l = 0; l < VL; ++l) {
    const std::string p = vm + "encoder.layers." + std::to_string(l) + ".";
    for (const char* n : {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"}) {
      b.normal(p + n + ".weight", {VC, VC}, s);
      b.fill(p + n + ".bias", {VC}, 0.0f);
    }
    for (const char* n : {"layer_norm1", "layer_norm2"}) {
      b.fill(p + n + ".weight", {VC}, 1.0f);
      b.fill(p + n + ".bias", {VC}, 0.0f);
    }
    b.normal(p + "mlp.fc1.weight", {VI, VC}, s);
    b.fill(p + "mlp.fc1.bias", {VI}, 0.0f);
    b.normal(p + "mlp.fc2.weight", {VC, VI}, s);
    b.fill(p + "mlp.fc2.bias", {VC}, 0.0f);
  }
  b.fill(vm + "post_layernorm.weight", {VC}, 1.0f);
  b.fill(vm + "post_layernorm.bias", {VC}, 0.0f);
  b.normal(v + "glb_GN", {1, 1, 4 * VC}, s);
  b.normal(v + "sub_GN", {1, 1, 1, 4 * VC}, s);
  b.normal(v + "img_projection.0.weight", {C, 4 * VC}, s);
  b.fill(v + "img_projection.0.bias", {C}, 0.0f);
  b.normal(v + "img_projection.2.weight", {C, C}, s);
  b.fill(v + "img_projection.2.bias", {C}, 0.0f);

  // Phi-3.5-vision's su scaling factors are per rotary dimension pair; a random model uses ones.
  json ones = std::vector<double>(size_t(D / 2), 1.0);
  json img_processor = {{"image_dim_out", VC}, {"model_name", "openai/clip-vit-large-patch14-336"},
                        {"name", "clip_vision_model"}, {"num_img_tokens", 144}};
  if (tiny)
    img_processor["vision_config"] = {{"hidden_size", VC}, {"intermediate_size", VI}, {"num_hidden_layers", VL},
                                      {"num_attention_heads", VH}, {"image_size", 336}, {"patch_size", 14},
                                      {"layer_norm_eps", 1e-5}, {"hidden_act", "quick_gelu"}};
  json cfg = {{"architectures", {"Phi3VForCausalLM"}}, {"model_type", "phi3_v"}, {"vocab_size", V},
              {"hidden_size", C}, {"intermediate_size", I}, {"num_hidden_layers", L}, {"num_attention_heads", H},
              {"num_key_value_heads", H}, {"hidden_act", "silu"}, {"max_position_embeddings", 131072},
              {"original_max_position_embeddings", 4096}, {"rms_norm_eps", 1e-5}, {"rope_theta", 10000.0},
              {"rope_scaling", {{"type", "su"}, {"short_factor", ones}, {"long_factor", ones}}},
              {"bos_token_id", 1}, {"eos_token_id", 2}, {"pad_token_id", tiny ? 0 : 32000},
              {"tie_word_embeddings", false}, {"img_processor", img_processor},
              {"embd_layer", {{"embedding_cls", "image"}, {"hd_transform_order", "sub_glb"}, {"projection_cls", "mlp"},
                              {"use_hd_transform", true}, {"with_learnable_separator", true}}}};
  write_file_atomic((fs::path(opt.out_dir) / "config.json").string(), cfg.dump(2) + "\n");
  json pp = {{"image_processor_type", "Phi3VImageProcessor"}, {"num_crops", 4}, {"do_convert_rgb", true},
             {"image_mean", {0.48145466, 0.4578275, 0.40821073}}, {"image_std", {0.26862954, 0.26130258, 0.27577711}}};
  write_file_atomic((fs::path(opt.out_dir) / "preprocessor_config.json").string(), pp.dump(2) + "\n");
  return V;
}

// init_model's work, written into the staging folder and committed.
int64_t init_into(const InitModelOptions& in, StagingDir& staging) {
  InitModelOptions opt = in;
  opt.out_dir = staging.path();
  Builder b{Rng{opt.seed}, {}, 0};
  if (opt.arch == "bert") init_bert(opt, b);
  else if (opt.arch == "phi3_v") init_phi3v(opt, b);
  else fail("init-model: --arch must be phi3_v or bert, not '{}'", opt.arch);
  const std::string tok = (fs::path(opt.out_dir) / "tokenizer.json").string();
  if (!opt.tokenizer_json.empty()) write_file_atomic(tok, read_file(opt.tokenizer_json));
  else write_file_atomic(tok, (opt.arch == "bert" ? bert_char_tokenizer() : llama_byte_tokenizer()).dump() + "\n");
  b.write((fs::path(opt.out_dir) / "model.safetensors").string(), opt.dtype, opt.progress);
  staging.commit();
  return b.params;
}

}  // namespace

int64_t init_model(const InitModelOptions& in) {
  XV_CHECK(!in.out_dir.empty(), "init-model: --out is required");
  // The folder appears whole or not at all (a full disk, a bad preset leave nothing), and only ever replaces a
  // folder holding nothing but what init-model writes.
  std::error_code ec;
  if (fs::is_directory(in.out_dir, ec))
    for (const auto& e : fs::directory_iterator(in.out_dir, ec)) {
      const std::string n = e.path().filename().string();
      XV_CHECK(n == "config.json" || n == "model.safetensors" || n == "tokenizer.json" ||
                   n == "preprocessor_config.json",
               "--out: {} holds {}, which init-model does not write: give a new or empty folder (an existing model "
               "folder made by init-model is replaced)", in.out_dir, n);
    }
  StagingDir staging(in.out_dir);
  try {
    return init_into(in, staging);
  } catch (const Error& e) {
    throw Error(name_destination(e.what(), staging.path(), in.out_dir));
  }
}


}  // namespace xv
