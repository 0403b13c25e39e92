// The training pairs (data.train: JSONL, one {"text_en", "text_xx", "lang", "image"?} object per line),
// the per-epoch permutation and the per-micro-batch dropout seeds. Every random choice of a run is a pure
// function of (seed, epoch) or (seed, step, micro-batch): the data position and the seed are the whole RNG
// state, which is what makes a resumed run bit-identical to an uninterrupted one.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/train_pair.h"

namespace xv {

struct TrainData {
  std::string path;
  std::vector<TrainPair> pairs;  // images resolved against the image root
  std::vector<int64_t> lines;    // the JSONL line of each pair (1-based)
  std::string fingerprint;          // of every field of every pair, in order
  std::string teacher_fingerprint;  // of the teacher's inputs: English text and image field, in order

  std::string where(size_t i) const { return path + ":" + std::to_string(lines[i]); }
};

// Reads and checks the pairs: valid JSON objects, non-empty string texts, string lang, and images that
// exist (relative paths are taken from `image_root`, or from the JSONL's folder when it is empty).
// Errors name file:line and the field.
TrainData read_train_data(const std::string& path, const std::string& image_root = "");

// A permutation of [0, n), the same for the same (seed, epoch) on every platform (Fisher-Yates over a
// splitmix64 stream).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);
// The LoRA dropout seed of micro-batch `micro` of optimizer step `step` (never 0: 0 means no dropout).
uint64_t micro_batch_seed(uint64_t seed, int64_t step, int64_t micro);

// The next value of a splitmix64 stream with state `s` (advanced): every seeded choice of the project.
uint64_t splitmix64(uint64_t& s);
uint64_t fnv1a64(std::string_view bytes, uint64_t h = 0xcbf29ce484222325ull);
std::string fingerprint_hex(uint64_t h);  // "fnv1a64:0123456789abcdef"

}  // namespace xv
