// build_xmmeb: pairs from xMMEB-train JSONL, one {"id", "text_en", "text_lang", "img_en", "img_lang"} object
// per line (an optional "lang" field names the line's language), with the images the lines name.
// The English text is kept as written (it is what the teacher was trained on, newlines and image tags
// included); the translation gets the trailing rule.
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <iterator>
#include <optional>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "image/image.h"
#include "data/builders.h"
#include "data/pair_assembler.h"
#include "data/text_clean.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kImageTag = "<|image_1|>";

struct ImageSlot {
  int64_t id = -1;     // index of the decoded image in ImageStore, -1 when it could not be used
  const char* reason;  // why, when id is -1
  std::string detail;
};

// Reads and decodes each distinct file once (by its resolved path); a failed image fails every pair naming
// it. Images become Corpus rows only through store_used(), for the pairs that were kept.
class ImageStore {
 public:
  const ImageSlot& get(const std::string& name, const fs::path& root) {
    const fs::path full = (fs::path(name).is_absolute() ? fs::path(name) : root / name).lexically_normal();
    const std::string key = full.string();
    if (const auto it = slots_.find(key); it != slots_.end()) return it->second;
    ImageSlot slot{-1, nullptr, {}};
    std::ifstream f(full, std::ios::binary);
    if (!f.good()) {
      slot.reason = drop_reason::kImageMissing;
      slot.detail = key + ": cannot open";
    } else {
      std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
      try {
        const Image im = decode_image_bytes(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), key);
        slot.id = int64_t(decoded_.size());
        decoded_.push_back({name, std::move(bytes), im.width, im.height});
      } catch (const Error& e) {
        slot.reason = drop_reason::kImageUnreadable;
        slot.detail = e.what();
      }
    }
    return slots_.emplace(key, std::move(slot)).first->second;
  }

  // Rewrites c->pairs.image from image ids to rows of c->images, storing each used image once, in the order
  // of the pairs that use it.
  void store_used(Corpus* c, BuildReport* r) {
    std::vector<int64_t> row_of(decoded_.size(), -1);
    for (auto& img : c->pairs.image) {
      if (img < 0) continue;
      auto& row = row_of[size_t(img)];
      if (row < 0) {
        Decoded& d = decoded_[size_t(img)];
        row = int64_t(c->images.push(d.bytes));
        c->image_names.push(d.name);
        c->image_width.push_back(d.width);
        c->image_height.push_back(d.height);
        std::string().swap(d.bytes);
        ++r->images;
      }
      img = row;
    }
  }

 private:
  struct Decoded {
    std::string name;  // as the JSONL wrote it
    std::string bytes;
    int32_t width, height;
  };
  std::map<std::string, ImageSlot> slots_;
  std::vector<Decoded> decoded_;
};

// A string field, or "" for null or absent; nullopt when present with another type.
std::optional<std::string> optional_string(const nlohmann::json& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::string();
  if (!it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

}  // namespace

Corpus build_xmmeb(const XmmebOptions& opt, BuildReport* report, const BuildProgress& progress) {
  BuildReport local;
  BuildReport& r = report ? *report : local;
  r = BuildReport{};
  r.source = "xmmeb-jsonl";
  XV_CHECK(!opt.inputs.empty(), "no input file: at least one xMMEB JSONL file expected");
  if (!opt.image_root.empty()) require_dir(opt.image_root, "image root folder");
  Corpus c;
  c.meta.source = "xmmeb-jsonl";
  PairAssembler out(&c, &r);
  if (!opt.lang.empty()) out.language(opt.lang);
  ImageStore images;
  constexpr int64_t kProgressEvery = 10000;  // lines
  for (const auto& path : opt.inputs) {
    std::ifstream f(path, std::ios::binary);
    XV_CHECK(f.good(), "{}: cannot open the JSONL file for reading", path);
    std::error_code ec;
    const auto total = int64_t(fs::file_size(path, ec));
    const fs::path root = opt.image_root.empty() ? fs::path(path).parent_path() : fs::path(opt.image_root);
    const std::string source = fs::path(path).filename().string();
    int64_t line_no = 0, lines_with_text = 0;
    std::string line;
    while (std::getline(f, line)) {
      ++line_no;
      if (progress && line_no % kProgressEvery == 0) progress(path, int64_t(f.tellg()), total);
      if (trim_ascii(line).empty()) continue;
      ++lines_with_text;
      ++r.pairs_read;
      const std::string where = fmt::format("{}:{}", path, line_no);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        r.drop(drop_reason::kBadJson, fmt::format("{}: {}", where, e.what()));
        continue;
      }
      if (!j.is_object()) {
        r.drop(drop_reason::kBadJson, fmt::format("{}: a JSON object expected, got {}", where, j.type_name()));
        continue;
      }
      const auto en = optional_string(j, "text_en"), xx = optional_string(j, "text_lang");
      const auto img_en = optional_string(j, "img_en"), img_xx = optional_string(j, "img_lang");
      const auto lang_field = optional_string(j, "lang");
      if (!en || !xx || !img_en || !img_xx || !lang_field) {
        r.drop(drop_reason::kBadField,
               fmt::format("{}: text_en and text_lang must be strings; img_en, img_lang and lang strings or null", where));
        continue;
      }
      if (en->empty() || !j.contains("text_en")) {
        r.drop(drop_reason::kBadField, fmt::format("{}: text_en missing or empty", where));
        continue;
      }
      if (xx->empty()) {
        r.drop(drop_reason::kUntranslated, drop_example(where, *en, *xx));
        continue;
      }
      const std::string& lang = lang_field->empty() ? opt.lang : *lang_field;
      if (lang.empty()) {
        r.drop(drop_reason::kNoLanguage, fmt::format("{}: no \"lang\" field and no default language given", where));
        continue;
      }
      // The pair shares one image: two different ones cannot both be it. One named side serves both.
      if (!img_en->empty() && !img_xx->empty() && *img_en != *img_xx) {
        r.drop(drop_reason::kImagesDiffer, fmt::format("{}: \"{}\" vs \"{}\"", where, *img_en, *img_xx));
        continue;
      }
      const std::string& img_name = img_en->empty() ? *img_xx : *img_en;
      const bool en_tag = en->find("<|image_") != std::string::npos;
      if (img_name.empty() && (en_tag || xx->find("<|image_") != std::string::npos)) {
        r.drop(drop_reason::kPlaceholderNoImage, drop_example(where, *en, *xx));
        continue;
      }
      if (en->find(kImageTag) != std::string::npos && xx->find(kImageTag) == std::string::npos) {
        r.drop(drop_reason::kPlaceholderLost, drop_example(where, *en, *xx));
        continue;
      }
      if (trailing_run_size(*en) == en->size() || trailing_run_size(*xx) == xx->size()) {
        r.drop(drop_reason::kEmptyAfterCleaning, drop_example(where, *en, *xx));
        continue;
      }
      int64_t image = -1;
      if (!img_name.empty()) {
        const ImageSlot& slot = images.get(img_name, root);
        if (slot.id < 0) {
          r.drop(slot.reason, fmt::format("{}: {}", where, slot.detail));
          continue;
        }
        image = slot.id;  // an ImageStore id until store_used()
      }
      out.add(*en, apply_trailing_rule(*en, *xx), out.language(lang), image, source, opt.filter, where);
    }
    XV_CHECK(!f.bad(), "{}: read error after line {}", path, line_no);
    XV_CHECK(lines_with_text > 0, "{}: empty file: one JSON object per line expected", path);
    ++r.inputs_read;
    if (progress) progress(path, total, total);
  }
  images.store_used(&c, &r);
  return c;
}

}  // namespace xv
