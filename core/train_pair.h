// A training pair as the data readers hand it to the models: the English text and its translation, the
// image they share, and what the reader prepared ahead (data/corpus_stream.h fills it; the models'
// KdModel::prepare makes the backbone's part of it on the reader's workers).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace xv {

// What a backbone's KdModel::prepare made of a pair ahead of the step (tokens, a preprocessed image): each
// backbone derives its own type. Made on the data reader's worker threads.
struct PreparedInputs {
  virtual ~PreparedInputs() = default;
};

struct TrainPair {
  std::string text_en, text_xx, lang;
  std::string image;  // path, or empty; the same image serves both sides
  // Filled by the data reader (data/corpus_stream.h); all optional.
  // (Default member initialisers: brace-initialising the first four fields stays warning-free.)
  int64_t index = -1;                                // row of the pair in its source (messages, teacher cache)
  std::shared_ptr<const std::string> image_bytes{};  // the encoded image, instead of a path (a corpus)
  std::string image_name{};                          // where image_bytes came from, for messages
  std::vector<int32_t> ids_en{}, ids_xx{};           // pre-tokenised (encode with special tokens); empty = none
  std::vector<float> teacher_en{};                   // (D) the teacher's target from the corpus; empty = none
  std::shared_ptr<const PreparedInputs> prepared{};  // KdModel::prepare's output; null = prepare in the step
};

}  // namespace xv
