// FSDP-style sharding from outside the model (docs/design.md section 6, docs/distributed.md).
//
// Every buffer lives where the model's tensors live (a backend's memory: the host, or a GPU), and the
// communicator must move that kind of memory (MPI for host buffers, NCCL for device buffers:
// parallel/comm_select.h): nothing is staged through the host on the device path.
//
// FrozenShards: each unit of frozen base weights (KdModel::frozen_units) becomes one flat buffer in the
// weights' storage dtype (f32, or bf16 when model.weight_dtype halves it), zero-padded to a multiple of n, of
// which this rank keeps 1/n. acquire(u) all-gathers the unit (waiting for the prefetch started at the previous
// acquire, if any, and starting the next unit's) and points the unit's tensors into the gathered buffer (no
// copy); on the CPU a bf16 unit is widened to f32 once per acquire (the CPU computes in f32). release(u) makes
// them shape-only again.
//
// TrainableShards: the trainable tensors (f32) as one flat buffer, zero-padded to a multiple of
// world * kNormChunk. Per optimizer step:
//   gradients    reduce-scatter (sharded), or all-reduce (replicated); hybrid: reduce-scatter in the node,
//                then all-reduce the shard across nodes.
//                Deterministic mode: every micro-batch's gradient is kept apart (take_micro_batch), every rank
//                receives its world shard of all of them (all-to-all) and sums them in global micro-batch order
//                (j = m * world + rank), from zero: bit-equal to one process with world * grad_accum
//                micro-batches, at any world size.
//   norm         sums of squares (double) per chunk of kNormChunk elements, summed in chunk order: the same
//                value at every world size.
//   AdamW        on the elements this rank owns (its shard; all of them when replicated), in place in the
//                model's tensors, then the updated elements are all-gathered into every rank's tensors.
// The parameters themselves are never copied into a second buffer between steps.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/units.h"
#include "kernels/ops.h"
#include "parallel/comm.h"

namespace xv::par {

class FrozenShards : public UnitAccess {
 public:
  // Takes this rank's shard of every unit and releases the units' tensors; a unit with WeightUnit::load is read
  // from the checkpoint first, one unit at a time. The tensors of a unit share one dtype and one device.
  FrozenShards(Communicator& comm, std::vector<WeightUnit> units, bool prefetch);
  ~FrozenShards() override;
  void acquire(int u, int next) override;
  void release(int u) override;

  int units() const { return int(units_.size()); }
  int64_t resident_bytes() const;            // the shards this rank keeps
  int64_t peak_gathered_bytes() const { return peak_gathered_; }  // most bytes of whole units held at once
  int64_t gathers() const { return gathers_; }                    // all-gathers started so far

 private:
  struct Unit {
    WeightUnit w;
    std::vector<Shape> shapes;  // of w.tensors
    DType dtype = DType::F32;   // the storage dtype of every tensor of the unit
    Device device;
    int64_t total = 0, shard = 0;
    Tensor mine;  // (shard) this rank's part of the flat buffer
    Tensor full;  // (n * shard) while gathering
    RequestPtr req;
    bool held = false;
    int64_t held_bytes = 0;  // of the buffer the tensors point into while held
  };
  void start(Unit& u);
  void note_gathered(int64_t delta);
  Communicator& comm_;
  std::vector<Unit> units_;
  bool prefetch_;
  int64_t gathered_ = 0, peak_gathered_ = 0, gathers_ = 0;
};

struct TrainableOptions {
  Communicator* world = nullptr;  // every rank
  Communicator* group = nullptr;  // the optimizer's shard group (world; the node for hybrid); null = replicated
  Communicator* across = nullptr;  // hybrid: the ranks holding the same shard on the other nodes
  bool deterministic = false;
  int64_t grad_accum = 1;
};

class TrainableShards {
 public:
  static constexpr int64_t kNormChunk = 4096;
  TrainableShards(std::vector<TrainableTensor> tensors, ops::AdamWParams cfg, TrainableOptions o);

  // Deterministic mode: after micro-batch m of this step, moves the model's gradients aside (and zeroes them).
  void take_micro_batch(int64_t m);
  // Reduce, clip to max_norm (0: no clipping), AdamW with `lr` on this rank's elements, parameters back into
  // the model. Returns the global gradient norm before clipping.
  double step(float lr, double max_norm);

  int64_t size() const { return total_; }     // trainable elements
  int64_t padded() const { return padded_; }  // the flat buffer
  int64_t own_begin() const { return own_begin_; }
  int64_t own_end() const { return own_end_; }
  Tensor& exp_avg() { return m_; }      // (own_end - own_begin) F32, on the tensors' device
  Tensor& exp_avg_sq() { return v_; }  // (own_end - own_begin)
  int64_t adamw_steps() const { return t_; }
  void set_adamw_steps(int64_t t) { t_ = t; }
  const std::vector<TrainableTensor>& tensors() const { return tensors_; }
  const std::vector<int64_t>& offsets() const { return offsets_; }  // of each tensor in the flat buffer

 private:
  void model_grads_to(Tensor& flat) const;
  // fn(tensor i, element k in it, flat offset f, count n) for each tensor's part of [b, e) of the flat layout.
  template <typename F>
  void for_segments(int64_t b, int64_t e, F fn) const {
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const int64_t tb = std::max(b, offsets_[i]), te = std::min(e, offsets_[i] + tensors_[i].value->numel());
      if (tb < te) fn(i, tb - offsets_[i], tb, te - tb);
    }
  }

  std::vector<TrainableTensor> tensors_;
  std::vector<int64_t> offsets_;
  ops::AdamWParams cfg_;
  TrainableOptions o_;
  int64_t total_ = 0, padded_ = 0, own_begin_ = 0, own_end_ = 0;
  Device device_;                // of every trainable tensor and buffer
  Tensor m_, v_;                 // (owned) Adam moments
  std::vector<Tensor> micro_;    // deterministic: (grad_accum) x (padded)
  int64_t t_ = 0;
};

}  // namespace xv::par
