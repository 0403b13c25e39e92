#include "core/tensor.h"

#include <algorithm>

namespace xv {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Tensor concat_rows(const std::vector<Tensor>& parts) {
  XV_CHECK(!parts.empty(), "concat_rows: nothing to concatenate");
  Shape s = parts.front().shape;
  int64_t rows = 0;
  for (const auto& p : parts) {
    XV_CHECK(p.ndim() == int(s.size()) && std::equal(p.shape.begin() + 1, p.shape.end(), s.begin() + 1),
             "concat_rows: shape {} does not match {}", shape_str(p.shape), shape_str(s));
    rows += p.dim(0);
  }
  s[0] = rows;
  if (std::all_of(parts.begin(), parts.end(), [](const Tensor& p) { return p.shape_only(); })) {
    Tensor out;
    out.shape = s;
    return out;
  }
  Tensor out(s);
  float* dst = out.ptr();
  for (const auto& p : parts) dst = std::copy(p.data.begin(), p.data.end(), dst);
  return out;
}

}  // namespace xv
