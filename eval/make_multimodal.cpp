// make_multimodal (eval/make_multimodal.h).
//
// Which items may be used: those of the chosen split; for retrieval in a language, those whose name in it is
// shared by no other item of the source and whose image's bytes are shared by no other item (one right answer
// in both directions; a copy of the gold would tie with it). Every choice comes from a stream of (seed, tag)
// with the tag naming the source, the task and the language, so one task's queries do not move when another
// task, language or source is added or dropped.
#include "eval/make_multimodal.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include <fmt/ranges.h>

#include "core/error.h"
#include "core/file_util.h"
#include "eval/sampling.h"

namespace xv {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string multimodal_split(const std::string& unit) {
  return int64_t(fnv1a64(unit) % 100) < kHeldOutPercent ? "heldout" : "train";
}

namespace {

struct Item {
  std::string id, unit, image, context_image;  // images: absolute paths
  std::map<std::string, std::string> text, label;
  std::vector<std::pair<std::string, std::string>> qa;
  int64_t line = 0;
};

struct Source {
  std::string name, kind, file, origin;
  std::vector<std::string> answers;  // vqa: every answer, in the source's order
  std::vector<Item> items;           // all of them, both splits, in file order
};

const std::vector<std::string> kKinds = {"emoji", "flags", "stamps", "maps", "vqa"};

const json& need(const json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  XV_CHECK(it != j.end(), "{}: missing field '{}'", where, key);
  return *it;
}

std::string need_string(const json& j, const char* key, const std::string& where, bool nonempty = true) {
  const json& v = need(j, key, where);
  XV_CHECK(v.is_string(), "{}: field '{}' must be a string, found {}", where, key, v.type_name());
  XV_CHECK(!nonempty || !v.get_ref<const std::string&>().empty(), "{}: field '{}' is empty", where, key);
  return v.get<std::string>();
}

// {lang: non-empty string}; absent = empty.
std::map<std::string, std::string> lang_map(const json& j, const char* key, const std::string& where) {
  std::map<std::string, std::string> m;
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return m;
  XV_CHECK(it->is_object(), "{}: field '{}' must be an object {{language: text}}, found {}", where, key,
           it->type_name());
  for (const auto& [lang, v] : it->items()) {
    XV_CHECK(v.is_string() && !v.get_ref<const std::string&>().empty(),
             "{}: field '{}.{}' must be a non-empty string, found {}", where, key, lang,
             v.is_string() ? "an empty string" : v.type_name());
    m[lang] = v.get<std::string>();
  }
  return m;
}

std::string image_file(const json& j, const char* key, const fs::path& data, const std::string& where) {
  const fs::path abs = fs::absolute(data / need_string(j, key, where)).lexically_normal();
  std::error_code ec;
  XV_CHECK(fs::is_regular_file(abs, ec), "{}: field '{}': image {} {}", where, key, abs.string(),
           fs::exists(abs, ec) ? "is not a regular file" : "does not exist");
  return abs.string();
}

Source read_source(const json& sj, const fs::path& data, const std::string& where) {
  XV_CHECK(sj.is_object(), "{}: expected an object, found {}", where, sj.type_name());
  Source s;
  s.name = need_string(sj, "name", where);
  s.kind = need_string(sj, "kind", where);
  XV_CHECK(std::find(kKinds.begin(), kKinds.end(), s.kind) != kKinds.end(),
           "{}: field 'kind' is '{}'; expected one of emoji, flags, stamps, maps, vqa", where, s.kind);
  s.file = need_string(sj, "file", where);
  if (sj.contains("origin")) s.origin = need_string(sj, "origin", where, false);
  if (s.kind == "vqa") {
    const json& a = need(sj, "answers", where);
    XV_CHECK(a.is_array() && a.size() >= 2, "{}: field 'answers' must be a list of at least 2 answers", where);
    for (const auto& x : a) {
      XV_CHECK(x.is_string() && !x.get_ref<const std::string&>().empty(),
               "{}: field 'answers' must hold non-empty strings", where);
      s.answers.push_back(x.get<std::string>());
    }
  }
  const std::string path = (data / s.file).string();
  std::ifstream in(path, std::ios::binary);
  XV_CHECK(in, "{}: cannot open source file {} (field 'file' of {})", path, path, where);
  std::unordered_set<std::string> ids;
  std::string line;
  for (int64_t n = 1; std::getline(in, line); ++n) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string w = path + ":" + std::to_string(n);
    const json j = parse_jsonl_object(line, w);
    Item it;
    it.line = n;
    it.id = need_string(j, "id", w);
    XV_CHECK(ids.insert(it.id).second, "{}: field 'id': '{}' appears twice in {}", w, it.id, path);
    it.unit = j.contains("unit") ? need_string(j, "unit", w) : it.id;
    it.image = image_file(j, "image", data, w);
    if (j.contains("context_image")) it.context_image = image_file(j, "context_image", data, w);
    XV_CHECK(s.kind != "maps" || !it.context_image.empty(), "{}: missing field 'context_image' (a maps item)", w);
    it.text = lang_map(j, "text", w);
    it.label = lang_map(j, "label", w);
    if (j.contains("qa")) {
      const json& qa = j["qa"];
      XV_CHECK(qa.is_array(), "{}: field 'qa' must be a list of [question, answer], found {}", w, qa.type_name());
      for (size_t k = 0; k < qa.size(); ++k) {
        XV_CHECK(qa[k].is_array() && qa[k].size() == 2 && qa[k][0].is_string() && qa[k][1].is_string(),
                 "{}: field 'qa' entry {} must be [question, answer] (two strings)", w, k);
        it.qa.emplace_back(qa[k][0].get<std::string>(), qa[k][1].get<std::string>());
        XV_CHECK(std::find(s.answers.begin(), s.answers.end(), it.qa.back().second) != s.answers.end(),
                 "{}: field 'qa' entry {}: answer '{}' is not one of the source's answers", w, k, it.qa.back().second);
      }
    }
    XV_CHECK(s.kind != "vqa" || !it.qa.empty(), "{}: field 'qa' is missing or empty (a vqa item)", w);
    s.items.push_back(std::move(it));
  }
  XV_CHECK(in.eof(), "{}: read error", path);
  return s;
}

std::string what_of(const std::string& kind) {
  if (kind == "emoji") return "emoji";
  if (kind == "flags") return "flag";
  if (kind == "stamps") return "drawing";
  if (kind == "maps") return "map";
  return "image";
}

uint64_t file_hash(const std::string& path) { return fnv1a64(read_file(path, uint64_t(64) << 20)); }

struct Maker {
  const MultimodalOptions& opt;
  fs::path out;
  Benchmark b;
  std::unordered_map<std::string, uint64_t> hashes;  // image path -> content hash

  std::string rel(const std::string& abs) const {
    const fs::path r = fs::path(abs).lexically_relative(out);
    return r.empty() ? abs : r.string();
  }
  uint64_t hash(const std::string& path) {
    auto it = hashes.find(path);
    if (it == hashes.end()) it = hashes.emplace(path, file_hash(path)).first;
    return it->second;
  }
  void note(const Source& s, const std::string& task, const std::vector<std::string>& langs, const std::string& why) {
    if (langs.empty()) return;
    std::string l;
    for (const auto& x : langs) l += (l.empty() ? "" : ", ") + x;
    b.notes.push_back(s.name + " (" + task + "): " + l + " not measured: " + why);
  }
  BenchmarkTask task(const Source& s, const std::string& suffix, const std::string& lang, const std::string& type) {
    BenchmarkTask t;
    t.name = s.name + (suffix.empty() ? "" : "-" + suffix) + "/" + lang;
    t.file = s.name + (suffix.empty() ? "" : "_" + suffix) + "_" + lang + ".jsonl";
    t.language = lang;
    t.direction = "xx->xx";
    t.task_type = type;
    return t;
  }
  BenchmarkQuery query(const std::string& lang, const std::string& type) {
    BenchmarkQuery q;
    q.lang = lang;
    q.task_type = type;
    return q;
  }
  void add(BenchmarkTask t) {
    t.num_queries = int64_t(t.queries.size());
    t.num_candidates = int64_t(t.queries.front().candidates.size());
    b.tasks.push_back(std::move(t));
  }

  // The split's items with a name in `lang`, one-to-one in name and image bytes.
  std::vector<const Item*> retrievable(const std::vector<const Item*>& items, const std::string& lang) {
    std::unordered_map<std::string, int> names;
    std::unordered_map<uint64_t, int> images;
    for (const Item* it : items)
      if (it->text.count(lang)) ++names[it->text.at(lang)], ++images[hash(it->image)];
    std::vector<const Item*> r;
    for (const Item* it : items)
      if (it->text.count(lang) && names[it->text.at(lang)] == 1 && images[hash(it->image)] == 1) r.push_back(it);
    return r;
  }

  void retrieval(const Source& s, const std::vector<const Item*>& items) {
    const std::string what = what_of(s.kind);
    std::vector<std::string> missing;
    for (const auto& lang : opt.langs) {
      const std::vector<const Item*> usable = retrievable(items, lang);
      if (usable.size() < 2) {
        missing.push_back(lang);
        continue;
      }
      Stream rng(opt.seed, s.name + "/retrieval/" + lang);
      const std::vector<int64_t> order = shuffled(int64_t(usable.size()), rng);
      const int64_t pool = std::min<int64_t>(opt.candidates, int64_t(order.size()));
      const int64_t nq = std::min<int64_t>(opt.queries, pool);
      BenchmarkTask t2i = task(s, "t2i", lang, "retrieval"), i2t = task(s, "i2t", lang, "retrieval");
      t2i.query_template = "Find the " + what + " that matches the given name: {text}";
      for (int64_t q = 0; q < nq; ++q) {
        const Item* gold = usable[size_t(order[size_t(q)])];
        BenchmarkQuery a = query(lang, "retrieval"), c = query(lang, "retrieval");
        a.text = gold->text.at(lang);
        c.text = "<|image_1|>\nFind the name of the given " + what + ".";
        c.image = rel(gold->image);
        for (int64_t k = -1; k < pool; ++k) {
          if (k == q) continue;
          const Item* it = k < 0 ? gold : usable[size_t(order[size_t(k)])];
          a.candidates.push_back("<|image_1|>\nRepresent the given image.");
          a.candidate_images.push_back(rel(it->image));
          c.candidates.push_back(it->text.at(lang));
        }
        t2i.queries.push_back(std::move(a));
        i2t.queries.push_back(std::move(c));
      }
      add(std::move(t2i));
      add(std::move(i2t));
    }
    note(s, "retrieval", missing, "fewer than 2 items with a human-made name in the language");
  }

  // Text only: a name in the language retrieves its English name among the pool's English names (xx->en), and
  // the reverse (en->xx). Usable: named in both, one-to-one in both languages, the two names different (an
  // untranslated name would test string identity).
  void names(const Source& s, const std::vector<const Item*>& items) {
    std::vector<std::string> missing;
    for (const auto& lang : opt.langs) {
      if (lang == "en") continue;
      std::unordered_map<std::string, int> en, xx;
      for (const Item* it : items)
        if (it->text.count(lang) && it->text.count("en")) ++en[it->text.at("en")], ++xx[it->text.at(lang)];
      std::vector<const Item*> usable;
      for (const Item* it : items)
        if (it->text.count(lang) && it->text.count("en") && en[it->text.at("en")] == 1 && xx[it->text.at(lang)] == 1 &&
            it->text.at("en") != it->text.at(lang))
          usable.push_back(it);
      if (usable.size() < 2) {
        missing.push_back(lang);
        continue;
      }
      Stream rng(opt.seed, s.name + "/names/" + lang);
      const std::vector<int64_t> order = shuffled(int64_t(usable.size()), rng);
      const int64_t pool = std::min<int64_t>(opt.candidates, int64_t(order.size()));
      const int64_t nq = std::min<int64_t>(opt.queries, pool);
      BenchmarkTask to_en = task(s, "names", lang, "retrieval"), from_en = task(s, "names", lang, "retrieval");
      to_en.name = s.name + "-names/" + lang + "->en";
      to_en.file = s.name + "_names_" + lang + "_to_en.jsonl";
      to_en.direction = "xx->en";
      from_en.name = s.name + "-names/en->" + lang;
      from_en.file = s.name + "_names_en_to_" + lang + ".jsonl";
      from_en.direction = "en->xx";
      for (int64_t q = 0; q < nq; ++q) {
        const Item* gold = usable[size_t(order[size_t(q)])];
        BenchmarkQuery a = query(lang, "retrieval"), c = query(lang, "retrieval");
        a.text = gold->text.at(lang);
        c.text = gold->text.at("en");
        for (int64_t k = -1; k < pool; ++k) {
          if (k == q) continue;
          const Item* it = k < 0 ? gold : usable[size_t(order[size_t(k)])];
          a.candidates.push_back(it->text.at("en"));
          c.candidates.push_back(it->text.at(lang));
        }
        to_en.queries.push_back(std::move(a));
        from_en.queries.push_back(std::move(c));
      }
      add(std::move(to_en));
      add(std::move(from_en));
    }
    note(s, "names, text only", missing, "fewer than 2 items named differently in the language and in English");
  }

  void classification(const Source& s, const std::vector<const Item*>& items) {
    const std::string what = what_of(s.kind);
    std::vector<std::string> missing;
    for (const auto& lang : opt.langs) {
      // The classes: every distinct label of the source in the language (both splits, in file order), so the
      // class list is the same for the training and the held-out suite.
      std::vector<std::string> classes;
      for (const Item& it : s.items)
        if (it.label.count(lang) && std::find(classes.begin(), classes.end(), it.label.at(lang)) == classes.end())
          classes.push_back(it.label.at(lang));
      std::vector<const Item*> usable;
      for (const Item* it : items)
        if (it->label.count(lang)) usable.push_back(it);
      if (classes.size() < 2 || usable.empty()) {
        missing.push_back(lang);
        continue;
      }
      Stream rng(opt.seed, s.name + "/classification/" + lang);
      const std::vector<int64_t> order = shuffled(int64_t(usable.size()), rng);
      BenchmarkTask t = task(s, "class", lang, "classification");
      for (int64_t q = 0; q < std::min<int64_t>(opt.queries, int64_t(order.size())); ++q) {
        const Item* it = usable[size_t(order[size_t(q)])];
        BenchmarkQuery a = query(lang, "classification");
        a.text = "<|image_1|>\nRepresent the given " + what + " for classification.";
        a.image = rel(it->image);
        a.candidates.push_back(it->label.at(lang));
        for (const auto& c : classes)
          if (c != it->label.at(lang)) a.candidates.push_back(c);
        t.queries.push_back(std::move(a));
      }
      add(std::move(t));
    }
    note(s, "classification", missing, "no human-made class names in the language");
  }

  void grounding(const Source& s, const std::vector<const Item*>& items) {
    const int64_t k = opt.grounding_candidates;
    std::map<std::string, std::vector<const Item*>> maps;  // unit -> regions, file order
    for (const Item* it : items) maps[it->unit].push_back(it);
    std::vector<std::string> missing;
    for (const auto& lang : opt.langs) {
      // Queries: regions named in the language, of maps with at least k regions, the name unique in its map.
      std::vector<std::pair<const std::vector<const Item*>*, int64_t>> usable;
      for (const auto& [unit, regions] : maps) {
        if (int64_t(regions.size()) < k) continue;
        std::unordered_map<std::string, int> names;
        for (const Item* r : regions)
          if (r->text.count(lang)) ++names[r->text.at(lang)];
        for (size_t i = 0; i < regions.size(); ++i)
          if (regions[i]->text.count(lang) && names[regions[i]->text.at(lang)] == 1)
            usable.emplace_back(&regions, int64_t(i));
      }
      if (usable.empty()) {
        missing.push_back(lang);
        continue;
      }
      Stream rng(opt.seed, s.name + "/grounding/" + lang);
      const std::vector<int64_t> order = shuffled(int64_t(usable.size()), rng);
      BenchmarkTask t = task(s, "grounding", lang, "grounding");
      t.query_template = "<|image_1|>\nSelect the portion of the image that shows: {text}";
      for (int64_t q = 0; q < std::min<int64_t>(opt.queries, int64_t(order.size())); ++q) {
        const auto& [regions, gi] = usable[size_t(order[size_t(q)])];
        const Item* gold = (*regions)[size_t(gi)];
        BenchmarkQuery a = query(lang, "grounding");
        a.text = gold->text.at(lang);
        a.image = rel(gold->context_image);
        a.candidates.push_back("<|image_1|>\nRepresent the given cropped image of the map.");
        a.candidate_images.push_back(rel(gold->image));
        for (int64_t o : sample_excluding(int64_t(regions->size()), gi, k - 1, rng)) {
          a.candidates.push_back("<|image_1|>\nRepresent the given cropped image of the map.");
          a.candidate_images.push_back(rel((*regions)[size_t(o)]->image));
        }
        t.queries.push_back(std::move(a));
      }
      add(std::move(t));
    }
    note(s, "grounding", missing, "no map of the split with " + std::to_string(k) +
                                      " regions has a human-made region name in the language");
  }

  void vqa(const Source& s, const std::vector<const Item*>& items) {
    std::vector<std::string> missing;
    for (const auto& lang : opt.langs) {
      if (lang != "en" || items.empty()) {
        missing.push_back(lang);
        continue;
      }
      Stream rng(opt.seed, s.name + "/vqa/" + lang);
      const std::vector<int64_t> order = shuffled(int64_t(items.size()), rng);
      BenchmarkTask t = task(s, "", lang, "vqa");
      t.query_template = "<|image_1|>\nRepresent the given image with the following question: {text}";
      for (int64_t q = 0; q < std::min<int64_t>(opt.queries, int64_t(order.size())); ++q) {
        const Item* it = items[size_t(order[size_t(q)])];
        const auto& [question, answer] = it->qa[size_t(rng.below(it->qa.size()))];
        BenchmarkQuery a = query(lang, "vqa");
        a.text = question;
        a.image = rel(it->image);
        a.candidates.push_back(answer);
        for (const auto& c : s.answers)
          if (c != answer) a.candidates.push_back(c);
        t.queries.push_back(std::move(a));
      }
      add(std::move(t));
    }
    note(s, "vqa", missing, "the source's questions and answers are English only (no human translation)");
  }
};

}  // namespace

Benchmark make_multimodal(const MultimodalOptions& opt) {
  XV_CHECK(opt.split == "heldout" || opt.split == "train",
           "eval make-multimodal: --split is '{}'; expected heldout or train", opt.split);
  XV_CHECK(opt.candidates >= 2, "eval make-multimodal: --candidates must be at least 2, found {}", opt.candidates);
  XV_CHECK(opt.queries >= 1, "eval make-multimodal: --queries must be at least 1, found {}", opt.queries);
  XV_CHECK(opt.grounding_candidates >= 2, "eval make-multimodal: --grounding-candidates must be at least 2, found {}",
           opt.grounding_candidates);
  XV_CHECK(!opt.langs.empty(), "eval make-multimodal: --langs is empty");
  const fs::path data = fs::absolute(opt.data_dir).lexically_normal();
  const std::string mpath = (data / "prepared.json").string();
  std::error_code ec;
  XV_CHECK(fs::is_regular_file(mpath, ec), "{}: not found; prepare the data first (scripts/install-multimodal-data.sh "
           "writes it)", mpath);
  json m;
  try {
    m = json::parse(read_file(mpath));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", mpath, e.what());
  }
  XV_CHECK(m.is_object(), "{}: expected a JSON object, found {}", mpath, m.type_name());
  const std::string format = need_string(m, "format", mpath);
  XV_CHECK(format == kMultimodalDataFormat, "{}: field 'format' is '{}'; expected '{}'", mpath, format,
           kMultimodalDataFormat);
  const json& ver = need(m, "format_version", mpath);
  XV_CHECK(ver.is_number_integer() && ver.get<int64_t>() == kMultimodalDataVersion,
           "{}: field 'format_version' is {}; this build reads version {}", mpath, ver.dump(), kMultimodalDataVersion);
  const json& sources = need(m, "sources", mpath);
  XV_CHECK(sources.is_array() && !sources.empty(), "{}: field 'sources' must be a non-empty list", mpath);

  Maker mk{opt, fs::absolute(opt.out_dir).lexically_normal(), {}, {}};
  mk.b.name = opt.name;
  mk.b.created_by = opt.created_by;
  std::unordered_set<std::string> names;
  std::vector<std::string> english;
  for (size_t i = 0; i < sources.size(); ++i) {
    const std::string where = mpath + ": sources[" + std::to_string(i) + "]";
    const Source s = read_source(sources[i], data, where);
    XV_CHECK(names.insert(s.name).second, "{}: field 'name': source '{}' appears twice", where, s.name);
    mk.b.source += (mk.b.source.empty() ? "" : "; ") + s.name + ": " + (s.origin.empty() ? s.file : s.origin);
    std::vector<const Item*> items;
    for (const Item& it : s.items)
      if (multimodal_split(it.unit) == opt.split) items.push_back(&it);
    if (!opt.text_only) {
      if (s.kind == "emoji" || s.kind == "flags") mk.classification(s, items);
      if (s.kind == "emoji" || s.kind == "flags" || s.kind == "stamps") mk.retrieval(s, items);
      if (s.kind == "maps") mk.grounding(s, items);
      if (s.kind == "vqa") mk.vqa(s, items);
    }
    if (s.kind != "vqa") mk.names(s, items);
    for (const Item* it : items)
      if (it->text.count("en") && std::find(english.begin(), english.end(), it->text.at("en")) == english.end() &&
          english.size() < 4096)
        english.push_back(it->text.at("en"));
  }
  XV_CHECK(!mk.b.tasks.empty(), "{}: no task could be made for the {} split in {}", mpath, opt.split,
           fmt::format("{}", fmt::join(opt.langs, ", ")));
  // English preservation: up to 1,000 distinct English names of the split's items.
  Stream rng(opt.seed, "english");
  const std::vector<int64_t> order = shuffled(int64_t(english.size()), rng);
  for (int64_t i = 0; i < std::min<int64_t>(1000, int64_t(order.size())); ++i)
    mk.b.english.push_back(english[size_t(order[size_t(i)])]);
  mk.b.source = "prepared multimodal data " + data.string() + " (" + opt.split + " split); " + mk.b.source;
  return mk.b;
}

}  // namespace xv
