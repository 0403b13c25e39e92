#include "train/parallel_plan.h"

#include <unistd.h>

#include <algorithm>
#include <vector>

#include "core/error.h"
#include "data/train_data.h"
#include "parallel/comm_select.h"
#include "parallel/launch_env.h"

namespace xv {

namespace {

// The shard group of this rank for hybrid: parallel.ranks_per_node, the launcher's node, or the host name.
int64_t hybrid_node(const TrainConfig& cfg, par::Communicator& world) {
  const int W = world.size(), R = world.rank();
  const par::LaunchEnv env = par::launch_env();
  std::vector<int64_t> all(static_cast<size_t>(W));
  int64_t node = 0;
  if (cfg.parallel.ranks_per_node > 0) {
    node = R / cfg.parallel.ranks_per_node;
  } else if (env.node >= 0) {
    node = env.node;
  } else {  // the host name: ranks on one machine form a node
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    const int64_t h = int64_t(fnv1a64(host) >> 1);
    world.all_gather(&h, all.data(), 1, DType::I64);
    std::vector<int64_t> seen;
    for (int64_t v : all)
      if (std::find(seen.begin(), seen.end(), v) == seen.end()) seen.push_back(v);
    node = std::find(seen.begin(), seen.end(), h) - seen.begin();
  }
  world.all_gather(&node, all.data(), 1, DType::I64);
  const int64_t per_node = std::count(all.begin(), all.end(), node);
  for (int64_t v : all)
    XV_CHECK(std::count(all.begin(), all.end(), v) == per_node,
             "parallel.strategy hybrid: every node needs the same number of ranks (node {} has {}, node {} has "
             "{}); set parallel.ranks_per_node", node, per_node, v, std::count(all.begin(), all.end(), v));
  return node;
}

}  // namespace

ParallelPlan make_parallel_plan(const TrainConfig& cfg, par::Communicator* given, Device device) {
  ParallelPlan p;
  if (!given) p.self = par::make_self_communicator(), given = p.self.get();
  p.world = given;
  const int W = given->size(), R = given->rank();
  if (W == 1) return p;
  const std::string& s = cfg.parallel.strategy;
  const int64_t node = s == "hybrid" ? hybrid_node(cfg, *given) : 0;
  // The ranks passing `color`, as a communicator for the model's buffers.
  auto over = [&](int color) -> std::unique_ptr<par::Communicator> {
    auto host = given->split(color, R);
    if (device.is_cpu()) return host;
    return par::communicator_for(device, *host);
  };
  p.grads = over(0);
  if (s == "full") {
    p.frozen = over(0);
    if (!cfg.parallel.replicate_trainable) p.group = over(0);
  } else if (s == "grad_op") {
    p.group = over(0);
  } else if (s == "hybrid") {
    p.frozen = over(int(node));
    if (!cfg.parallel.replicate_trainable) {
      p.group = over(int(node));
      p.across = over(p.group->rank());
    }
  }
  return p;
}

}  // namespace xv
