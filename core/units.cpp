#include "core/units.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/safetensors.h"

namespace xv {

std::function<void()> checkpoint_loader(std::shared_ptr<const WeightStore> ws, std::vector<Tensor*> tensors,
                                        std::vector<std::vector<std::string>> sources) {
  XV_CHECK(ws && tensors.size() == sources.size(), "checkpoint_loader: one source list per tensor");
  return [ws = std::move(ws), tensors = std::move(tensors), sources = std::move(sources)] {
    for (size_t i = 0; i < tensors.size(); ++i) {
      Tensor& t = *tensors[i];
      const int64_t n = t.numel();
      int64_t total = 0;
      for (const std::string& name : sources[i]) total += shape_numel(ws->info(name).shape);
      XV_CHECK(total == n, "{}: {} hold {} elements, the model's tensor {} needs {}", ws->where(),
               fmt::format("{}", fmt::join(sources[i], " + ")), total, shape_str(t.shape()), n);
      // The parts in the tensor's dtype, one after the other, on the host; then onto the tensor's device.
      Tensor whole(t.shape(), t.dtype());
      char* dst = static_cast<char*>(whole.raw());
      for (const std::string& name : sources[i]) {
        const Tensor part = ws->get(name, ws->info(name).shape, t.dtype());  // checks the dtype, converts
        std::memcpy(dst, part.raw(), part.nbytes());
        dst += part.nbytes();
        ws->release_pages(name);
      }
      t = std::move(whole).to(t.device());
    }
  };
}

}  // namespace xv
