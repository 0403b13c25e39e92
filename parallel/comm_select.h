// The communicator is chosen by where the buffers live: MPI (or the world of one) moves host memory, NCCL
// moves a GPU's (its unique id travels over the host communicator). The trainer asks for the communicator of
// its model's device and hands it to FSDP, which checks that the two agree (parallel/fsdp.h).
#pragma once
#include <memory>

#include "core/device.h"
#include "parallel/comm.h"

namespace xv::par {

// A communicator over the ranks of `host` (same ranks, same order) for buffers on device d: for the cpu, a
// split of `host` (its own traffic and byte counts); for cuda:N, NCCL on GPU N (collective over `host`; throws
// naming the device when this build has no NCCL).
std::unique_ptr<Communicator> communicator_for(Device d, Communicator& host);
// Whether this build can move device buffers (NCCL compiled).
bool nccl_compiled();

}  // namespace xv::par
