#include "core/units.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "core/error.h"
#include "core/safetensors.h"

namespace xv {

std::function<void()> checkpoint_loader(std::shared_ptr<const WeightStore> ws, std::vector<Tensor*> tensors,
                                        std::vector<std::vector<std::string>> sources) {
  XV_CHECK(ws && tensors.size() == sources.size(), "checkpoint_loader: one source list per tensor");
  return [ws = std::move(ws), tensors = std::move(tensors), sources = std::move(sources)] {
    for (size_t i = 0; i < tensors.size(); ++i) {
      Tensor& t = *tensors[i];
      const int64_t n = shape_numel(t.shape);
      int64_t total = 0;
      for (const std::string& name : sources[i]) total += shape_numel(ws->info(name).shape);
      XV_CHECK(total == n, "{}: {} hold {} elements, the model's tensor {} needs {}", ws->where(),
               fmt::format("{}", fmt::join(sources[i], " + ")), total, shape_str(t.shape), n);
      t.data.assign(size_t(n), 0.0f);
      float* dst = t.data.data();
      for (const std::string& name : sources[i]) {
        const Tensor part = ws->get(name, ws->info(name).shape);  // checks the dtype, converts to f32
        dst = std::copy(part.data.begin(), part.data.end(), dst);
        ws->release_pages(name);
      }
    }
  };
}

}  // namespace xv
