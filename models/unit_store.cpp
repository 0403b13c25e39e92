#include "models/unit_store.h"

#include "core/error.h"
#include "kernels/ops.h"

namespace xv {

WidenedUnits::WidenedUnits(std::vector<WeightUnit> units) {
  for (WeightUnit& w : units) {
    Unit u;
    u.w = std::move(w);
    for (const Tensor* t : u.w.tensors) {
      XV_CHECK(!t->shape_only(), "unit '{}': a tensor has no storage (a deferred base needs a sharding wrapper)",
               u.w.name);
      if (t->device().is_cpu() && t->dtype() != DType::F32) u.widen = true;
    }
    units_.push_back(std::move(u));
  }
}

int64_t WidenedUnits::resident_bytes() const {
  int64_t b = 0;
  for (const Unit& u : units_) {
    if (u.held && u.widen) {
      for (const Tensor& t : u.stored) b += int64_t(t.nbytes());
      continue;
    }
    for (const Tensor* t : u.w.tensors) b += int64_t(t->nbytes());
  }
  return b;
}

void WidenedUnits::acquire(int ui, int) {
  XV_CHECK(ui >= 0 && ui < units(), "units: unit {} of {}", ui, units());
  Unit& u = units_[size_t(ui)];
  XV_CHECK(!u.held, "units: unit '{}' acquired twice", u.w.name);
  if (u.widen) {
    // The f32 copies first; only then are the tensors swapped (a failure leaves the unit as it was).
    std::vector<Tensor> wide;
    for (const Tensor* t : u.w.tensors) wide.push_back(t->dtype() == DType::F32 ? *t : ops::cast(*t, DType::F32));
    u.stored.clear();
    for (size_t i = 0; i < u.w.tensors.size(); ++i) {
      u.stored.push_back(std::move(*u.w.tensors[i]));
      *u.w.tensors[i] = std::move(wide[i]);
      widened_bytes_ += int64_t(u.w.tensors[i]->nbytes());
    }
  }
  u.held = true;
}

void WidenedUnits::release(int ui) {
  XV_CHECK(ui >= 0 && ui < units(), "units: unit {} of {}", ui, units());
  Unit& u = units_[size_t(ui)];
  if (!u.held) return;
  u.held = false;
  if (!u.widen) return;
  for (size_t i = 0; i < u.w.tensors.size(); ++i) {
    widened_bytes_ -= int64_t(u.w.tensors[i]->nbytes());
    *u.w.tensors[i] = std::move(u.stored[i]);
  }
  u.stored.clear();
}

}  // namespace xv
