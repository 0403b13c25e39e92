// Embeds texts and images with a model folder (Hugging Face layout), as the reference pipelines do:
//   bert   : sentence-transformers (tokenize, encoder, the pooling of modules.json: mean (default) or CLS,
//            and L2 normalisation when modules.json lists a Normalize module, as SentenceTransformer.encode);
//   phi3_v : VLM2Vec (Phi-3-vision processor, last non-pad token of the final normed hidden state).
// Optionally L2-normalised (evaluation); batches are right-padded.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace xv {

struct EmbedItem {
  std::string text;
  std::string image;  // path, or empty; phi3_v only. With an image and no <|image_1|> tag in the text,
                      // the text becomes "<|image_1|> " + text.
};

struct EmbedOptions {
  bool normalize = false;  // L2-normalise (always done when the model's pipeline ends with Normalize)
  bool truncate = false;   // bert: cut texts at the model's limit instead of failing (sentence-transformers cuts)
  int64_t batch_size = 32;
  std::function<void(int64_t done, int64_t total)> progress;  // optional
};

class Embedder {
 public:
  virtual ~Embedder() = default;
  // The model resident on `device` (its embeddings come back on the host).
  static std::unique_ptr<Embedder> load(const std::string& model_dir, Device device = Device::cpu());
  virtual const std::string& arch() const = 0;
  virtual int64_t dim() const = 0;
  // (N, dim) f32 embeddings on the host, in the order of `items`.
  virtual Tensor embed(const std::vector<EmbedItem>& items, const EmbedOptions& opt) const = 0;
};

}  // namespace xv
