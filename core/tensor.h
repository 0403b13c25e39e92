// A dense, row-major, owning f32 tensor for the CPU path: fp32 compute on the CPU.
// Weights of other dtypes are converted to f32 on load. Shapes are small vectors; the data is a
// contiguous std::vector<float>.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <numeric>
#include <string>
#include <vector>

#include "core/error.h"

namespace xv {

using Shape = std::vector<int64_t>;

inline int64_t shape_numel(const Shape& s) {
  return std::accumulate(s.begin(), s.end(), int64_t{1}, [](int64_t a, int64_t b) { return a * b; });
}
std::string shape_str(const Shape& s);

struct Tensor {
  Shape shape;
  std::vector<float> data;

  Tensor() = default;
  explicit Tensor(Shape s, float fill = 0.0f) : shape(std::move(s)), data(size_t(shape_numel(shape)), fill) {}

  int64_t numel() const { return int64_t(data.size()); }
  int64_t dim(int i) const { return shape.at(size_t(i < 0 ? int(shape.size()) + i : i)); }
  int ndim() const { return int(shape.size()); }
  float* ptr() { return data.data(); }
  const float* ptr() const { return data.data(); }
  bool empty() const { return data.empty(); }
  // Reinterprets the shape; the element count must not change.
  void reshape(Shape s) {
    XV_CHECK(shape_numel(s) == numel(), "reshape: {} elements cannot take shape {}", numel(), shape_str(s));
    shape = std::move(s);
  }
};

// Concatenates tensors along dim 0 (used to fuse q/k/v weights into one GEMM at load time).
Tensor concat_rows(const std::vector<Tensor>& parts);

}  // namespace xv
