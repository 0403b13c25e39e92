#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace xv {

double lr_lambda(const std::string& kind, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return double(step) / double(std::max<int64_t>(1, warmup));
  if (kind == "constant") return 1.0;
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  if (kind == "linear") return std::max(0.0, 1.0 - progress);
  if (kind == "cosine") return std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));  // half a cycle
  fail("lr schedule must be constant, linear or cosine, not '{}'", kind);
}

}  // namespace xv
