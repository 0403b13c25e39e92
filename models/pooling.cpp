#include "models/pooling.h"

#include "kernels/ops.h"

namespace xv {

Tensor mean_pool(const Tensor& hidden, const Tensor& mask, int64_t B, int64_t T) {
  const int64_t C = hidden.dim(-1);
  Tensor out({B, C}, DType::F32, hidden.device());
  ops::masked_mean_rows(hidden, mask, B, T, out);
  return out;
}

Tensor mean_pool_backward(const Tensor& dpooled, const Tensor& mask, int64_t B, int64_t T) {
  const int64_t C = dpooled.dim(-1);
  Tensor dh({B, T, C}, DType::F32, dpooled.device());
  ops::masked_mean_rows_backward(dpooled, mask, B, T, dh);
  return dh;
}

Tensor row_index(const std::vector<int64_t>& pos, int64_t T, Device d) {
  std::vector<int32_t> idx(pos.size());
  for (size_t b = 0; b < pos.size(); ++b) idx[b] = int32_t(int64_t(b) * T + pos[b]);
  return Tensor::indices(idx, d);
}

Tensor pool_at(const Tensor& hidden, const std::vector<int64_t>& pos, int64_t T) {
  const int64_t C = hidden.dim(-1);
  Tensor out({int64_t(pos.size()), C}, DType::F32, hidden.device());
  ops::gather_rows(hidden, View{}, row_index(pos, T, hidden.device()), out);
  return out;
}

void pool_at_backward(const Tensor& dpooled, const std::vector<int64_t>& pos, int64_t T, Tensor& dhidden) {
  ops::scatter_add_rows(dpooled, row_index(pos, T, dpooled.device()), dhidden, View{});
}

}  // namespace xv
