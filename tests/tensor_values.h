// Tests read and write a tensor's values on the host; the library itself goes through ops.
#pragma once
#include <vector>

#include "core/tensor.h"

namespace xv::test {

// The tensor's values replaced by v (same count), kept in its shape, dtype F32 and device.
inline void assign(Tensor& t, const std::vector<float>& v) {
  t = Tensor::from_vector(t.shape(), v, DType::F32, t.device());
}

// Sets element i of t to f(i), in order.
template <typename F>
void fill_each(Tensor& t, F f) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = f(i);
  assign(t, v);
}

// Adds f(i) to element i of every element of t.
template <typename F>
void add_each(Tensor& t, F f) {
  std::vector<float> v = t.to_vector();
  for (size_t i = 0; i < v.size(); ++i) v[i] += f(i);
  assign(t, v);
}

}  // namespace xv::test
