// xvlm2vec embed: embeddings of texts and/or images to .npy (and JSONL on request).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "models/embedder.h"
#include "core/error.h"
#include "core/file_util.h"
#include "core/npy.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"

namespace xv::cli {

namespace fs = std::filesystem;

namespace {

struct EmbedArgs {
  std::string model, input, out, jsonl;
  std::vector<std::string> texts, images;
  bool normalize = false, truncate = false, quiet = false, similarity = false;
  int64_t batch_size = 32;
};

// JSONL input: one object per line with "text" and/or "image" (a path, relative to the JSONL's folder).
std::vector<EmbedItem> read_jsonl(const std::string& path) {
  require_regular_file(path, "--input");
  std::ifstream f(path);
  XV_CHECK(f.good(), "{}: cannot open input file", path);
  std::vector<EmbedItem> items;
  std::string line;
  int64_t n = 0;
  while (std::getline(f, line)) {
    ++n;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("{}:{}: not valid JSON: {}", path, n, e.what());
    }
    XV_CHECK(j.is_object(), "{}:{}: each line must be a JSON object", path, n);
    EmbedItem it;
    if (j.contains("text")) {
      XV_CHECK(j["text"].is_string(), "{}:{}: field 'text' must be a string", path, n);
      it.text = j["text"].get<std::string>();
    }
    if (j.contains("image") && !j["image"].is_null()) {
      XV_CHECK(j["image"].is_string(), "{}:{}: field 'image' must be a string (a path)", path, n);
      fs::path p = j["image"].get<std::string>();
      it.image = (p.is_absolute() ? p : fs::path(path).parent_path() / p).string();
    }
    XV_CHECK(!it.text.empty() || !it.image.empty(), "{}:{}: needs a non-empty 'text' or an 'image'", path, n);
    items.push_back(std::move(it));
  }
  XV_CHECK(!items.empty(), "{}: no input lines", path);
  return items;
}

std::vector<EmbedItem> collect_items(const EmbedArgs& a) {
  if (!a.input.empty()) {
    XV_CHECK(a.texts.empty() && a.images.empty(), "embed: --input cannot be combined with --text or --image");
    return read_jsonl(a.input);
  }
  XV_CHECK(!a.texts.empty() || !a.images.empty(), "embed: give --text, --image or --input");
  std::vector<EmbedItem> items;
  if (a.texts.empty()) {
    // Image only: VLM2Vec's image-side instruction.
    for (const auto& img : a.images) items.push_back({"<|image_1|> Represent the given image.", img});
    return items;
  }
  XV_CHECK(a.images.empty() || a.images.size() == 1 || a.images.size() == a.texts.size(),
           "embed: give one --image for all texts or one per --text ({} texts, {} images)", a.texts.size(),
           a.images.size());
  for (size_t i = 0; i < a.texts.size(); ++i) {
    XV_CHECK(!a.texts[i].empty() || !a.images.empty(), "embed: --text number {} is empty", i + 1);
    items.push_back({a.texts[i], a.images.empty() ? "" : a.images[a.images.size() == 1 ? 0 : i]});
  }
  return items;
}

// Cosine similarities between all items, rows labelled with the start of each text.
void print_similarity(const std::vector<EmbedItem>& items, const Tensor& e) {
  const int64_t N = e.dim(0), C = e.dim(1);
  const std::vector<float> ev = e.to_vector();
  std::vector<double> norm(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) {
    double s = 0;
    for (int64_t c = 0; c < C; ++c) s += double(ev[size_t(i * C + c)]) * ev[size_t(i * C + c)];
    norm[size_t(i)] = std::sqrt(std::max(s, 1e-24));
  }
  std::printf("%-34s", "cosine similarity");
  for (int64_t j = 0; j < N; ++j) std::printf(" %6lld", static_cast<long long>(j + 1));
  std::printf("\n");
  for (int64_t i = 0; i < N; ++i) {
    std::string label = items[size_t(i)].image.empty() ? items[size_t(i)].text
                                                       : "[" + fs::path(items[size_t(i)].image).filename().string() + "] " + items[size_t(i)].text;
    // Cut at 28 bytes without splitting a UTF-8 sequence.
    size_t cut = std::min<size_t>(label.size(), 28);
    while (cut < label.size() && (static_cast<unsigned char>(label[cut]) & 0xC0) == 0x80) --cut;
    std::printf("%2lld %-31s", static_cast<long long>(i + 1), (label.substr(0, cut) + (cut < label.size() ? "..." : "")).c_str());
    for (int64_t j = 0; j < N; ++j) {
      double d = 0;
      for (int64_t c = 0; c < C; ++c) d += double(ev[size_t(i * C + c)]) * ev[size_t(j * C + c)];
      std::printf(" %6.3f", d / (norm[size_t(i)] * norm[size_t(j)]));
    }
    std::printf("\n");
  }
}

}  // namespace

Runner add_embed(CLI::App& app) {
  auto* sub = app.add_subcommand("embed", "Embed texts and images with a model folder");
  auto a = std::make_shared<EmbedArgs>();
  sub->add_option("--model", a->model, "Model folder (Hugging Face layout: config.json, model.safetensors, tokenizer.json)")
      ->required();
  sub->add_option("--text", a->texts, "Text(s) to embed (repeatable)");
  sub->add_option("--image", a->images, "Image path(s): one for all texts, one per text, or alone (phi3_v)");
  sub->add_option("--input", a->input, "JSONL file, one {\"text\": ..., \"image\": ...} per line");
  sub->add_option("--out", a->out, "Output .npy file, float32 (N, dim)")->required();
  sub->add_option("--jsonl", a->jsonl, "Also write JSONL lines {index, text, image, embedding}");
  sub->add_flag("--normalize", a->normalize, "L2-normalise the embeddings (as at evaluation)");
  sub->add_flag("--truncate", a->truncate, "Cut texts longer than the model's limit instead of failing");
  sub->add_option("--batch-size", a->batch_size, "Items per forward pass")->default_val(32)->check(at_least(1));
  sub->add_flag("--quiet", a->quiet, "No progress output");
  sub->add_flag("--similarity", a->similarity, "Print the cosine similarity matrix of the embeddings");
  return [a] {
    const auto t0 = std::chrono::steady_clock::now();
    check_output_file(a->out, "--out");
    if (!a->jsonl.empty()) check_output_file(a->jsonl, "--jsonl");
    XV_CHECK(a->jsonl.empty() || !same_file(a->jsonl, a->out), "--jsonl: {} is also --out: give two files", a->jsonl);
    if (!a->input.empty())
      XV_CHECK(!same_file(a->input, a->out) && (a->jsonl.empty() || !same_file(a->input, a->jsonl)),
               "--input: {} is also an output: write the embeddings elsewhere", a->input);
    std::vector<EmbedItem> items = collect_items(*a);
    auto model = Embedder::load(a->model);
    EmbedOptions opt;
    opt.normalize = a->normalize;
    opt.truncate = a->truncate;
    opt.batch_size = a->batch_size;
    const bool tty = ::isatty(2);
    if (!a->quiet)
      opt.progress = [tty](int64_t done, int64_t total) {
        if (tty) std::fprintf(stderr, "\rembed: %lld/%lld", static_cast<long long>(done), static_cast<long long>(total));
        else std::fprintf(stderr, "embed: %lld/%lld\n", static_cast<long long>(done), static_cast<long long>(total));
        if (tty && done == total) std::fprintf(stderr, "\n");
      };
    Tensor e = model->embed(items, opt);
    if (!a->jsonl.empty()) {
      std::string s;
      for (size_t i = 0; i < items.size(); ++i) {
        nlohmann::json j = {{"index", i}, {"text", items[i].text}};
        if (!items[i].image.empty()) j["image"] = items[i].image;
        j["embedding"] = std::vector<float>(e.data<float>() + int64_t(i) * e.dim(1), e.data<float>() + int64_t(i + 1) * e.dim(1));
        s += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
      }
      write_file_atomic(a->jsonl, s);
    }
    write_npy(a->out, e);
    if (a->similarity) print_similarity(items, e);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!a->quiet)
      std::fprintf(stderr, "embed: %zu item(s), dim %lld (%s), %.2f s -> %s\n", items.size(),
                   static_cast<long long>(e.dim(1)), model->arch().c_str(), secs, a->out.c_str());
    return 0;
  };
}

}  // namespace xv::cli
