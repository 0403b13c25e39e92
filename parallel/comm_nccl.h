// NCCL: the communicator over device buffers (cudaMalloc'ed pointers). Compiled when CUDA is enabled and NCCL
// is found (XV_HAVE_NCCL=1, library xv_nccl); it needs MPI to hand NCCL's unique id to every rank.
//
// The collectives run on the communicator's own CUDA stream, in call order. Before each one that stream
// waits for the work already queued on the compute stream (default: the legacy default stream 0), so a
// buffer written by a kernel is complete before NCCL reads it, while later kernels still overlap the
// transfer. Request::wait() blocks the host until the collective is done (and throws xv::Error on a CUDA
// error or an asynchronous NCCL error); kernels launched after wait() see the result.
// One GPU per rank: two ranks on one device is refused by NCCL.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>

#include "parallel/comm.h"

namespace xv::par {

// cudaSetDevice(device); rank 0 makes the ncclUniqueId and broadcasts it over `mpi` (any host communicator
// with the ranks and order the NCCL one should have); ncclCommInitRank. Collective over `mpi`.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device);

// The stream the collectives wait on before they start (see above); `comm` must come from
// make_nccl_communicator (or its split).
void nccl_set_compute_stream(Communicator& comm, cudaStream_t compute);
// The communicator's own stream, for callers that order their kernels after a collective on the device
// (cudaStreamWaitEvent) instead of waiting on the host.
cudaStream_t nccl_stream(Communicator& comm);

}  // namespace xv::par
