// The teacher cache: the teacher's English embeddings of every training pair, computed once
// (`xvlm2vec corpus cache-teacher`) and read by the trainer instead of a teacher forward pass (required for
// full fine-tuning, where no frozen copy of the model exists; a saving of one forward per step with LoRA).
//
// FILE.npy holds float32 (N, D), row i for the i-th pair of the JSONL. FILE.npy.json, beside it, records
// what made it: the model's fingerprint (config.json, and the name, size and header of every weight file)
// and the fingerprint of the teacher's inputs (English text and image of every pair). The trainer refuses a
// cache made by another model or from other pairs.
#pragma once
#include <functional>
#include <string>

#include "models/kd/kd_model.h"
#include "core/tensor.h"
#include "data/train_data.h"

namespace xv {

std::string model_fingerprint(const std::string& model_dir);
inline std::string teacher_cache_sidecar(const std::string& npy_path) { return npy_path + ".json"; }

// Teacher embeddings of every pair, `batch_size` pairs per forward pass, in order.
Tensor compute_teacher_embeddings(KdModel& model, const TrainData& data, int64_t batch_size,
                                  const std::function<void(int64_t done, int64_t total)>& progress = {});
// Writes FILE.npy and FILE.npy.json (each atomically).
void write_teacher_cache(const std::string& npy_path, const Tensor& emb, const std::string& model_dir,
                         const TrainData& data);
// Reads (N, D) after checking the sidecar against the model and the pairs.
Tensor load_teacher_cache(const std::string& npy_path, const std::string& model_dir, const TrainData& data,
                          int64_t dim);

}  // namespace xv
