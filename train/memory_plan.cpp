#include "train/memory_plan.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace xv {

std::string format_memory_plan(const MemoryPlan& p) {
  const uint64_t other = p.held > p.frozen + p.trainable ? p.held - p.frozen - p.trainable : 0;
  const ActivationShape& s = p.shape;
  std::string shape = fmt::format("{} pairs x {} tokens", s.batch, s.tokens);
  if (s.crops > 0) shape += fmt::format(", {} image crops", s.crops);
  shape += s.checkpointing ? ", checkpointing" : ", no checkpointing";
  return fmt::format(
      "memory plan ({}, per rank): held {} (frozen base {}, trainable state {}, other {}); a step adds about {} "
      "(activations {} for {}; gathered units {}; optimizer {}); total about {}",
      p.device, human_bytes(p.held), human_bytes(p.frozen), human_bytes(p.trainable), human_bytes(other),
      human_bytes(p.added()), human_bytes(p.activations), shape, human_bytes(p.gathered), human_bytes(p.step),
      human_bytes(p.total()));
}

void check_memory_plan(const MemoryPlan& p, const MemoryBudget& budget, const MemoryPlanSettings& s) {
  const uint64_t need = p.added();
  if (budget.limited_by.empty() || need + need / 20 <= budget.bytes) return;
  std::vector<std::string> ways;
  // Activations grow with the batch: the largest batch whose step fits.
  if (s.batch_size > 0 && p.activations > 0) {
    const uint64_t per_pair = std::max<uint64_t>(1, p.activations / uint64_t(s.batch_size));
    const uint64_t fixed = p.gathered + p.step, room = budget.bytes - budget.bytes / 21;
    const int64_t fits = room > fixed ? int64_t((room - fixed) / per_pair) : 0;
    if (fits >= 1 && fits < s.batch_size)
      ways.push_back(fmt::format("train.batch_size: {} (raise train.grad_accum to keep the step's pairs)", fits));
  }
  if (!s.checkpointing) ways.push_back("train.checkpointing: true");
  if (!s.bf16_weights && p.gathered > 0) ways.push_back("model.weight_dtype: bf16");
  // More ranks split the weights and the optimizer state, not a micro-batch's activations.
  if (p.gathered + p.step > p.activations)
    ways.push_back(s.sharded ? "more ranks" : "more ranks (parallel.strategy: full shards the base)");
  ways.push_back("a machine with more memory");
  std::string advice;
  for (size_t i = 0; i < ways.size(); ++i) advice += (i == 0 ? "" : i + 1 == ways.size() ? ", or " : ", ") + ways[i];
  const char* largest = p.activations >= p.gathered && p.activations >= p.step ? "activations"
                        : p.gathered >= p.step                                 ? "gathered units"
                                                                               : "optimizer buffers";
  fail("train: a step needs about {} more memory than the {} loaded, but {} is available (limited by {}); the "
       "largest part is the {}.\n{}\nto fit: {}",
       human_bytes(need), human_bytes(p.held), human_bytes(budget.bytes), budget.limited_by, largest,
       format_memory_plan(p), advice);
}

}  // namespace xv
