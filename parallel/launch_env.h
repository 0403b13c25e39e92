// Where this process stands in a launch: rank, world size, local rank and node, from the launcher's
// environment. mpirun (Open MPI: OMPI_COMM_WORLD_*), srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID,
// SLURM_NODEID, SLURM_NNODES) and PMI launchers such as MPICH's hydra (PMI_RANK, PMI_SIZE). Without any of
// them: rank 0 of 1.
#pragma once
#include <functional>
#include <string>

namespace xv::par {

struct LaunchEnv {
  std::string launcher = "none";  // "mpirun", "srun", "pmi", "none"
  int rank = 0, world = 1;
  int local_rank = 0, local_world = 1;  // on this node (local_world: 0 = unknown)
  int node = -1, nodes = 0;             // node index and count when the launcher says (srun); else -1, 0
};

// From an environment lookup (getenv for the process; a map in tests). Malformed values are an error naming
// the variable.
LaunchEnv launch_env_from(const std::function<const char*(const char*)>& getenv);
LaunchEnv launch_env();

}  // namespace xv::par
