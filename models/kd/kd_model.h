// The student/teacher pair the self-knowledge-distillation trainer drives, one implementation per backbone
// (bert: models/kd/bert_kd.cpp; phi3_v: models/kd/phi3v_kd.cpp). The teacher is the student with its adapters off,
// over the same frozen base weights: no second copy of the model exists.
//
//   L = 1/2 [ MSE(S(x_en), T(x_en)) + MSE(S(x_xx), T(x_en)) ]         (MSE: mean over batch and dimension)
//   image-prefix variant (phi3_v, images present): the same two terms on the mean-pooled prefix (every
//   position up to and including the last <s>) are added and the four terms averaged.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/load_options.h"
#include "models/lora.h"
#include "core/tensor.h"
#include "core/train_pair.h"
#include "core/units.h"

namespace xv {

struct KdLossTerms {
  double loss = 0;     // what is minimised
  double loss_en = 0;  // MSE(S(x_en), T(x_en)): English preservation
  double loss_xx = 0;  // MSE(S(x_xx), T(x_en)): alignment
  double prefix_en = 0, prefix_xx = 0;  // image-prefix terms (0 unless that variant is on)
};

struct KdStepOptions {
  float loss_scale = 1.0f;         // multiplies the gradients (1 / gradient-accumulation steps)
  uint64_t dropout_seed = 0;       // LoRA dropout mask seed for this micro-batch (0: no dropout)
  bool checkpointing = false;      // keep layer inputs only; recompute in backward
  bool image_prefix_loss = false;  // phi3_v
  const Tensor* teacher_en = nullptr;  // (B, D) teacher targets from a teacher cache; null: computed
  // phi3_v with a UnitAccess: walk the vision tower's units (acquire, release) even when this micro-batch has
  // no images, so that every rank of a shard group gathers the same units in the same order. Set it when the
  // corpus has images (any rank's micro-batch may then have some).
  bool vision_units = false;
};

// A micro-batch's size, for the activation-memory estimate (train/memory_plan.h).
struct ActivationShape {
  int64_t batch = 0;   // pairs
  int64_t tokens = 0;  // tokens of the longest side of any pair (image tokens included)
  int64_t crops = 0;   // image crops in the micro-batch (phi3_v: the HD sub-crops and the global crop)
  bool checkpointing = true;
  bool teacher_cache = false;  // the English targets come from a teacher cache (no teacher pass)
  bool image_prefix_loss = false;
};

// The size of one prepared pair: its longest side in tokens (image tokens included) and its image crops.
struct PreparedSize {
  int64_t tokens = 0, crops = 0;
};

class KdModel {
 public:
  virtual ~KdModel() = default;
  // Loads the base model from a Hugging Face folder; `trainable` is "lora" or "full". With o.shapes_only
  // (trainable 'lora'; ignored for 'full') the frozen base is laid out shape-only and its units come with
  // WeightUnit::load, so a sharding wrapper reads it unit by unit and never holds it whole; until then only
  // forward_backward under that wrapper may run. o.weight_dtype stores the frozen base (BF16 halves it; the
  // trainable tensors are F32 whatever it says, so 'full' needs F32). o.device: where the model lives.
  static std::unique_ptr<KdModel> load(const std::string& model_dir, const std::string& trainable,
                                       const LoraConfig& lora, uint64_t seed, const LoadOptions& o = {});
  virtual const std::string& arch() const = 0;
  virtual int64_t dim() const = 0;
  virtual Device device() const = 0;
  // Whether pairs may carry images (the backbone has an image path).
  virtual bool takes_images() const = 0;
  virtual std::vector<TrainableTensor> trainable() = 0;
  // The frozen base weights as units (core/units.h), in the order a step uses them; empty when nothing
  // is frozen (trainable 'full'). forward_backward brackets their use with `access` once it is set; the
  // teacher pass and the student passes share one acquire of each unit. Only forward_backward honours it.
  // The grouping chosen here is the one forward_backward brackets.
  virtual std::vector<WeightUnit> frozen_units(const UnitOptions& o) {
    (void)o;
    return {};
  }
  virtual void set_unit_access(UnitAccess* access) { (void)access; }
  virtual void zero_grad() = 0;
  // The per-pair work of a step that needs no weights (tokenizing, decoding and preprocessing the image),
  // done ahead by the data reader's worker threads. Thread-safe (const); may throw xv::Error.
  virtual std::shared_ptr<const PreparedInputs> prepare(const TrainPair& pair) const = 0;
  // What prepare() made, measured: the pair's longest side in tokens and its image crops.
  virtual PreparedSize prepared_size(const PreparedInputs& p) const = 0;
  // An upper estimate of the device memory (bytes) one forward_backward on a micro-batch of this shape
  // allocates on top of what the model holds (activations kept for backward, the passes' hidden states and
  // gradients, one layer's recomputation and backward temporaries); tests/test_memory_plan.cpp holds it
  // against the bytes a step really allocates.
  virtual uint64_t activation_bytes(const ActivationShape& s) const = 0;
  // Forward and backward of the loss on one micro-batch; gradients accumulate into trainable().
  virtual KdLossTerms forward_backward(const std::vector<TrainPair>& batch, const KdStepOptions& opt) = 0;
  // Teacher embeddings of the English side (B, D) on the host, for a teacher cache.
  virtual Tensor teacher_embed(const std::vector<TrainPair>& batch) = 0;
  // Student embeddings of texts (normalised or not) on the host, for evaluation during or after training.
  virtual Tensor student_embed(const std::vector<std::string>& texts, bool normalize) = 0;

  // A PEFT adapter folder (adapter_model.safetensors + adapter_config.json) that
  // peft.PeftModel.from_pretrained loads onto the transformers model; and back.
  virtual void save_adapter(const std::string& dir) const = 0;
  virtual void load_adapter(const std::string& dir) = 0;
  // The student with its adapters merged into the base weights (W + scaling B A), as a Hugging Face model
  // folder that `xvlm2vec embed` reads.
  virtual void save_merged(const std::string& dir) const = 0;
};

}  // namespace xv
