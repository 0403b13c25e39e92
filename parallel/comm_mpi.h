// MPI: process start-up and the communicator over host buffers (parallel/comm.h). Compiled when CMake finds
// MPI (XV_HAVE_MPI=1).
//
// Non-blocking collectives make progress while the caller computes: every communicator has one progress
// thread that runs its queued collectives, in call order, with MPI's blocking calls; i*() enqueues and
// returns a Request whose wait() blocks until that collective is done (and throws xv::Error naming the
// collective, the rank and MPI's message when it failed). Blocking forms and barrier() go through the same
// queue. With MPI_THREAD_MULTIPLE each communicator has its own thread; when the library provides only
// MPI_THREAD_SERIALIZED all communicators share one thread, so that no two MPI calls ever run at once (then
// collectives on different communicators must also be started in the same order on every rank).
// A communicator's methods are called from one thread at a time (the stats are not locked); wait every
// request before destroying its communicator, and destroy every communicator before mpi_finalize().
#pragma once
#include <cstddef>
#include <memory>

#include "parallel/comm.h"

namespace xv::par {

// True when this process was started by a launcher with more than one rank: mpirun (OMPI_COMM_WORLD_SIZE),
// a PMI launcher such as MPICH's hydra (PMI_SIZE), or srun (SLURM_NTASKS with SLURM_PROCID set).
bool mpi_launched();

// MPI_Init_thread asking for MPI_THREAD_MULTIPLE; throws xv::Error when less than MPI_THREAD_SERIALIZED is
// provided. Idempotent (also when something else initialised MPI before). Not after mpi_finalize().
void mpi_init();
bool mpi_initialized();  // mpi_init() happened (here or elsewhere) and MPI is not finalized
int mpi_thread_level();  // the level MPI provided (MPI_THREAD_SINGLE .. MPI_THREAD_MULTIPLE); -1 before init

// MPI_Finalize, once; nothing when MPI is not initialised. Throws xv::Error when communicators made by
// make_mpi_communicator (or their splits) are still alive: their threads would call into a finalized MPI.
void mpi_finalize();

// MPI_Abort on MPI_COMM_WORLD: ends every rank (the way out of an error that only some ranks see).
[[noreturn]] void mpi_abort(int code);

// A communicator over MPI_COMM_WORLD (a duplicate, so our traffic never matches anyone else's). Calls
// mpi_init() first.
std::unique_ptr<Communicator> make_mpi_communicator();

// The largest element count handed to one MPI call (default INT_MAX, MPI's int counts): larger collectives
// are split into pieces of at most this many elements. Tests lower it to exercise the split path.
void mpi_set_max_count(size_t n);
size_t mpi_max_count();

// How long a rank waits for one collective (every communicator of this process) before it takes a peer to be
// hung, stopped or lost: it prints which collective on which rank, then mpi_abort(1). 0 (the default): for ever.
void mpi_set_collective_timeout(double seconds);
double mpi_collective_timeout();

}  // namespace xv::par
