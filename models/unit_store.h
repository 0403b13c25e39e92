// The frozen base of one process kept in its storage dtype and handed to the computation one unit at a time in
// f32: on the CPU (which computes in f32) a bf16 unit is widened when the model acquires it and dropped when
// it releases it, so the base costs half the memory and the widening is paid once per use of a unit rather
// than once per op. A sharded run gets the same from parallel/fsdp.h. Units already in f32, or on a device that
// computes in their dtype, pass through untouched.
#pragma once
#include <cstdint>
#include <vector>

#include "core/units.h"

namespace xv {

class WidenedUnits final : public UnitAccess {
 public:
  explicit WidenedUnits(std::vector<WeightUnit> units);
  void acquire(int u, int next) override;
  void release(int u) override;
  int units() const { return int(units_.size()); }
  int64_t resident_bytes() const;  // the units as stored
  int64_t widened_bytes() const { return widened_bytes_; }  // f32 copies held now

 private:
  struct Unit {
    WeightUnit w;
    std::vector<Tensor> stored;  // the tensors as stored, while their f32 copies are in the model
    bool widen = false;
    bool held = false;
  };
  std::vector<Unit> units_;
  int64_t widened_bytes_ = 0;
};

}  // namespace xv
