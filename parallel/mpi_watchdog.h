// The watchdog of a multi-rank job: a heartbeat between rank 0 and every other rank, so that a rank that is
// stopped (SIGSTOP), hung in the kernel or cut off is named within a few seconds instead of leaving the others
// waiting in a collective for ever. Compiled with MPI (XV_HAVE_MPI).
//
// Every `interval` a thread of its own sends one byte from each rank to rank 0 and from rank 0 to each rank,
// on a duplicate of MPI_COMM_WORLD. A peer not heard from for `timeout_s` is named on stderr ("rank 3 (host,
// pid) has not been heard from for 30 s"), killed when it runs on the same host (a stopped process ignores the
// launcher's SIGTERM and would outlive the job), and the job is ended (mpi_abort). The heartbeat runs beside the computation, so a
// long step or checkpoint write is never mistaken for a hang: only a rank whose whole process stopped is. It
// needs MPI_THREAD_MULTIPLE (its MPI calls run beside the communicators' progress threads); with less it does
// nothing, and the collective timeout (mpi_set_collective_timeout) is the only guard.
#pragma once
#include <memory>

namespace xv::par {

class MpiWatchdog {
 public:
  // Starts the heartbeat (collective over MPI_COMM_WORLD: every rank constructs it, in the same order relative
  // to other collectives). timeout_s <= 0: no watchdog.
  explicit MpiWatchdog(double timeout_s);
  ~MpiWatchdog();  // stops it (collective again: every rank, before its communicators go)
  MpiWatchdog(const MpiWatchdog&) = delete;
  MpiWatchdog& operator=(const MpiWatchdog&) = delete;

  bool active() const;

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace xv::par
