// `xvlm2vec eval make-multimodal`: the offline multimodal suite (docs/benchmark-format.md) built from a prepared
// data folder (tools/prepare_multimodal.py writes it from Debian and PyPI packages). The folder holds
// prepared.json and one JSONL of items per source:
//   {"id": "flags/it", "unit": "flags/it", "image": "flags/it.png", "text": {"en": "Italy", "it": "Italia", ...},
//    "label": {"en": "Europe", "it": "Europa", ...}}
// plus "context_image" (maps: the whole map a region is cropped from) and "qa" ([[question, answer], ...], vqa).
// Every item belongs to the training or the held-out split by its unit (the item, or the map its region is cut
// from): a fixed function of the unit's name, so the split never depends on the seed or on the other items.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/benchmark.h"

namespace xv {

inline constexpr const char* kMultimodalDataFormat = "xvlm2vec-multimodal-data";
inline constexpr int64_t kMultimodalDataVersion = 1;
inline constexpr int64_t kHeldOutPercent = 30;  // of the units, by the hash of their name

// "heldout" or "train": fnv1a64(unit) % 100 < kHeldOutPercent is held out.
std::string multimodal_split(const std::string& unit);

struct MultimodalOptions {
  std::string data_dir;            // the prepared folder (prepared.json)
  std::string out_dir;             // the benchmark folder to be written (image paths are made relative to it)
  std::string split = "heldout";   // which items: "heldout" (evaluation) or "train"
  int64_t candidates = 1000;       // retrieval: the pool every query of a task ranks (fewer when fewer items)
  int64_t queries = 500;           // per task, at most
  int64_t grounding_candidates = 8;  // regions per grounding query, the gold included
  uint64_t seed = 0;
  std::vector<std::string> langs = {"en", "it", "es", "fr", "de"};
  bool text_only = false;  // only the name-translation tasks (for a model without an image path)
  std::string name = "mmmeb-offline";
  std::string created_by;
};

// The suite's tasks, per language, from each source kind:
//   emoji, flags: classification (the image's CLDR group / continent among the source's classes),
//                 retrieval t2i (the name finds the image) and i2t (the image finds the name);
//   stamps:       retrieval t2i and i2t with the drawings' captions;
//   maps:         grounding (the map and a region's name find the region's crop among the map's regions);
//   vqa:          vqa (the image and an English question find the answer among all answers);
//   all but vqa:  text only, the names: xx->en (a name finds its English name among the pool's) and en->xx.
// A language without human-made names in a source gets no task from it, and the benchmark's notes say so.
// Errors name the file, the line and the field.
Benchmark make_multimodal(const MultimodalOptions& opt);

}  // namespace xv
