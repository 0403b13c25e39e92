#include "parallel/launch_env.h"

#include <cstdlib>

#include "core/error.h"

namespace xv::par {

namespace {

// The integer value of `name`, or `fallback` when unset.
int env_int(const std::function<const char*(const char*)>& getenv, const char* name, int fallback, int min) {
  const char* v = getenv(name);
  if (!v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  XV_CHECK(*v && end && *end == '\0' && x >= min && x < (1L << 30),
           "environment variable {}='{}': expected an integer >= {}", name, v, min);
  return int(x);
}

}  // namespace

LaunchEnv launch_env_from(const std::function<const char*(const char*)>& getenv) {
  LaunchEnv e;
  if (getenv("OMPI_COMM_WORLD_SIZE")) {
    e.launcher = "mpirun";
    e.world = env_int(getenv, "OMPI_COMM_WORLD_SIZE", 1, 1);
    e.rank = env_int(getenv, "OMPI_COMM_WORLD_RANK", 0, 0);
    e.local_rank = env_int(getenv, "OMPI_COMM_WORLD_LOCAL_RANK", 0, 0);
    e.local_world = env_int(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE", 0, 0);
    // mpirun inside a Slurm allocation still knows the node from Slurm only per launch, not per rank.
  } else if (getenv("SLURM_PROCID") && getenv("SLURM_NTASKS")) {
    e.launcher = "srun";
    e.world = env_int(getenv, "SLURM_NTASKS", 1, 1);
    e.rank = env_int(getenv, "SLURM_PROCID", 0, 0);
    e.local_rank = env_int(getenv, "SLURM_LOCALID", 0, 0);
    e.node = env_int(getenv, "SLURM_NODEID", -1, 0);
    e.nodes = env_int(getenv, "SLURM_NNODES", 0, 1);
    // SLURM_NTASKS_PER_NODE may read "4" or "4(x2)"; the local world is derived from the nodes instead.
    e.local_world = e.nodes > 0 && e.world % e.nodes == 0 ? e.world / e.nodes : 0;
  } else if (getenv("PMI_SIZE")) {
    e.launcher = "pmi";
    e.world = env_int(getenv, "PMI_SIZE", 1, 1);
    e.rank = env_int(getenv, "PMI_RANK", 0, 0);
    e.local_rank = env_int(getenv, "MPI_LOCALRANKID", 0, 0);
    e.local_world = env_int(getenv, "MPI_LOCALNRANKS", 0, 0);
  }
  XV_CHECK(e.rank < e.world, "launcher environment ({}): rank {} is not below the world size {}", e.launcher, e.rank,
           e.world);
  return e;
}

LaunchEnv launch_env() {
  return launch_env_from([](const char* n) { return std::getenv(n); });
}

}  // namespace xv::par
