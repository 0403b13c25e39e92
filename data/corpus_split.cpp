#include "data/corpus_split.h"

#include <algorithm>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "data/train_data.h"

namespace xv {

Corpus corpus_subset(const Corpus& c, const std::vector<int64_t>& pairs) {
  Corpus out;
  out.meta = c.meta;
  out.meta.fingerprint.clear();
  out.meta.created_at.clear();
  std::unordered_map<int64_t, int64_t> en_map, xx_map, img_map, src_map;
  if (c.tokens) {
    out.tokens = CorpusTokens{};
    out.tokens->tokenizer_fingerprint = c.tokens->tokenizer_fingerprint;
    out.tokens->vocab_size = c.tokens->vocab_size;
  }
  auto ids_row = [](const RaggedIds& r, size_t i) {
    return std::vector<int32_t>(r.ids.begin() + int64_t(r.offsets[i]), r.ids.begin() + int64_t(r.offsets[i + 1]));
  };
  for (int64_t p : pairs) {
    const size_t i = size_t(p);
    const int64_t e = c.pairs.en[i], x = c.pairs.xx[i], im = c.pairs.image[i], s = c.pairs.source[i];
    if (!en_map.count(e)) {
      en_map[e] = int64_t(out.text_en.push(c.text_en.at(size_t(e))));
      if (c.tokens) out.tokens->en.push(ids_row(c.tokens->en, size_t(e)));
    }
    if (!xx_map.count(x)) {
      xx_map[x] = int64_t(out.text_xx.push(c.text_xx.at(size_t(x))));
      if (c.tokens) out.tokens->xx.push(ids_row(c.tokens->xx, size_t(x)));
    }
    if (im >= 0 && !img_map.count(im)) {
      img_map[im] = int64_t(out.images.push(c.images.at(size_t(im))));
      out.image_names.push(c.image_names.at(size_t(im)));
      out.image_width.push_back(c.image_width[size_t(im)]);
      out.image_height.push_back(c.image_height[size_t(im)]);
    }
    if (!src_map.count(s)) src_map[s] = int64_t(out.sources.push(c.sources.at(size_t(s))));
    out.pairs.en.push_back(en_map[e]);
    out.pairs.xx.push_back(xx_map[x]);
    out.pairs.lang.push_back(c.pairs.lang[i]);
    out.pairs.image.push_back(im < 0 ? -1 : img_map[im]);
    out.pairs.source.push_back(int32_t(src_map[s]));
  }
  return out;
}

SplitResult split_corpus(const Corpus& c, const SplitOptions& o, const std::string& parent) {
  XV_CHECK(o.by == "source" || o.by == "pair", "corpus split: --by must be 'source' or 'pair', found '{}'", o.by);
  XV_CHECK(o.heldout_fraction > 0 && o.heldout_fraction < 1,
           "corpus split: --heldout-fraction must be in (0, 1), found {}", o.heldout_fraction);
  const size_t P = c.pairs.size();
  XV_CHECK(P >= 2, "corpus split: {} has {} pairs, too few to split", parent, P);
  std::vector<char> held(P, 0);
  SplitResult r;
  if (o.by == "source") {
    std::vector<int64_t> per_source(c.sources.size(), 0);
    for (int32_t s : c.pairs.source) ++per_source[size_t(s)];
    std::set<std::string> chosen;
    if (!o.heldout.empty()) {
      for (const auto& k : o.heldout) {
        bool found = false;
        for (size_t s = 0; s < c.sources.size(); ++s) found = found || c.sources.at(s) == k;
        XV_CHECK(found, "corpus split: --heldout: {} has no source named '{}'", parent, k);
        chosen.insert(k);
      }
    } else {
      // Sources in an order drawn from the seed (a hash of seed and name: independent of the file's order),
      // taken until the fraction of pairs is reached.
      std::vector<std::pair<uint64_t, size_t>> order;
      const uint64_t seed_h = fnv1a64(std::string_view(reinterpret_cast<const char*>(&o.seed), sizeof o.seed));
      for (size_t s = 0; s < c.sources.size(); ++s)
        if (per_source[s] > 0) order.push_back({fnv1a64(c.sources.at(s), seed_h), s});
      std::sort(order.begin(), order.end());
      int64_t taken = 0;
      const double want = o.heldout_fraction * double(P);
      for (const auto& [h, s] : order) {
        if (double(taken) >= want) break;
        if (double(taken + per_source[s]) > 1.5 * want && taken > 0) continue;  // would overshoot: try smaller ones
        chosen.insert(std::string(c.sources.at(s)));
        taken += per_source[s];
      }
      XV_CHECK(chosen.size() < order.size(), "corpus split: {}: holding out {:.0f}% of the pairs takes every source; "
               "lower --heldout-fraction or use --by pair", parent, o.heldout_fraction * 100);
    }
    r.heldout_keys.assign(chosen.begin(), chosen.end());
    for (size_t i = 0; i < P; ++i) held[i] = chosen.count(std::string(c.sources.at(size_t(c.pairs.source[i])))) > 0;
  } else {
    const std::vector<int64_t> perm = epoch_permutation(int64_t(P), o.seed, 0);
    const size_t n = std::max<size_t>(1, size_t(o.heldout_fraction * double(P)));
    for (size_t k = 0; k < n; ++k) held[size_t(perm[k])] = 1;
  }
  std::vector<int64_t> tr, ho;
  std::unordered_set<std::string_view> train_en;
  for (size_t i = 0; i < P; ++i)
    if (!held[i]) tr.push_back(int64_t(i)), train_en.insert(c.text_en.at(size_t(c.pairs.en[i])));
  for (size_t i = 0; i < P; ++i)
    if (held[i]) {
      if (o.drop_shared_english && train_en.count(c.text_en.at(size_t(c.pairs.en[i])))) {
        ++r.dropped_shared;
        continue;
      }
      ho.push_back(int64_t(i));
    }
  XV_CHECK(!tr.empty() && !ho.empty(), "corpus split: {}: one part would be empty ({} training, {} held-out pairs)",
           parent, tr.size(), ho.size());
  r.train = corpus_subset(c, tr);
  r.heldout = corpus_subset(c, ho);
  r.train.meta.source = "split:" + parent + ":train";
  r.heldout.meta.source = "split:" + parent + ":heldout";
  return r;
}

std::string inspect_corpus(const Corpus& c, const std::string& path, int64_t samples, uint64_t seed) {
  std::string s;
  const size_t P = c.pairs.size();
  s += fmt::format("{}\n  format version {}, source '{}', created {} by: {}\n  fingerprint {}\n", path,
                   c.meta.format_version, c.meta.source, c.meta.created_at, c.meta.created_by, c.meta.fingerprint);
  s += fmt::format("  {} pairs, {} English texts, {} other-language texts, {} sources, {} images\n", P, c.text_en.size(),
                   c.text_xx.size(), c.sources.size(), c.image_width.size());
  std::vector<int64_t> per_lang(c.meta.languages.size(), 0), with_image(c.meta.languages.size(), 0);
  for (size_t i = 0; i < P; ++i) ++per_lang[c.pairs.lang[i]], with_image[c.pairs.lang[i]] += c.pairs.image[i] >= 0;
  s += "  pairs per language:";
  for (size_t l = 0; l < per_lang.size(); ++l)
    s += fmt::format(" {} {} ({} with an image)", c.meta.languages[l], per_lang[l], with_image[l]);
  s += "\n";
  std::vector<int64_t> per_source(c.sources.size(), 0);
  for (int32_t src : c.pairs.source) ++per_source[size_t(src)];
  std::vector<size_t> order(c.sources.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return per_source[a] > per_source[b]; });
  s += "  largest sources:";
  for (size_t k = 0; k < std::min<size_t>(10, order.size()); ++k)
    s += fmt::format(" {} ({})", c.sources.at(order[k]), per_source[order[k]]);
  s += "\n";
  // Histograms of text length in characters (UTF-8 code points), power-of-two buckets.
  auto hist = [&](const Ragged& r, const std::vector<int64_t>& rows, const char* name) {
    std::map<int, int64_t> h;
    for (int64_t row : rows) {
      int64_t n = 0;
      for (unsigned char ch : r.at(size_t(row))) n += (ch & 0xC0) != 0x80;
      int b = 0;
      while ((int64_t(1) << (b + 1)) <= n) ++b;
      ++h[b];
    }
    s += fmt::format("  {} length (characters):\n", name);
    int64_t peak = 1;
    for (const auto& [b, n] : h) peak = std::max(peak, n);
    for (const auto& [b, n] : h)
      s += fmt::format("    {:>5}-{:<5} {:>8}  {}\n", int64_t(1) << b, (int64_t(1) << (b + 1)) - 1, n,
                       std::string(size_t(40 * n / peak), '#'));
  };
  hist(c.text_en, c.pairs.en, "English");
  hist(c.text_xx, c.pairs.xx, "other-language");
  if (!c.image_width.empty()) {
    int64_t bytes = int64_t(c.images.offsets.back());
    s += fmt::format("  images: {} ({:.1f} MiB encoded)\n", c.image_width.size(), double(bytes) / (1 << 20));
  }
  if (c.tokens)
    s += fmt::format("  tokens: {} English and {} other-language ids, tokenizer {}, vocab {}\n", c.tokens->en.ids.size(),
                     c.tokens->xx.ids.size(), c.tokens->tokenizer_fingerprint, c.tokens->vocab_size);
  if (c.teacher)
    s += fmt::format("  teacher: ({}, {}) from model {}{}\n", P, c.teacher->dim, c.teacher->model_fingerprint,
                     c.teacher->corpus_fingerprint == c.meta.fingerprint ? "" : " (for ANOTHER corpus: stale)");
  if (samples > 0 && P > 0) {
    s += "  samples:\n";
    const std::vector<int64_t> perm = epoch_permutation(int64_t(P), seed, 0);
    for (int64_t k = 0; k < std::min<int64_t>(samples, int64_t(P)); ++k) {
      const size_t i = size_t(perm[size_t(k)]);
      s += fmt::format("    [{}] {} | {}: {:?} -> {:?}{}\n", i, c.sources.at(size_t(c.pairs.source[i])),
                       c.meta.languages[c.pairs.lang[i]], std::string(c.text_en.at(size_t(c.pairs.en[i]))),
                       std::string(c.text_xx.at(size_t(c.pairs.xx[i]))),
                       c.pairs.image[i] >= 0
                           ? fmt::format(" [image {}]", c.image_names.at(size_t(c.pairs.image[i])))
                           : "");
    }
  }
  return s;
}

}  // namespace xv
