#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include "parallel/mpi_watchdog.h"

#include <mpi.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "parallel/comm_mpi.h"

namespace xv::par {

namespace {
using Clock = std::chrono::steady_clock;
constexpr int kTag = 7;
}  // namespace

struct MpiWatchdog::State {
  double timeout_s = 0;
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, size = 1;
  std::vector<int> peers;                 // rank 0: every other rank; the others: rank 0
  std::vector<MPI_Request> recv, send;    // one of each per peer
  std::vector<char> rbuf;                 // (peers)
  char beat = 1;                          // what every heartbeat carries (the send buffer, shared)
  std::vector<Clock::time_point> heard;   // (peers) last heartbeat received
  std::vector<std::string> peer_host;     // (peers) where each runs, and its pid: a silent peer on this host is
  std::vector<long> peer_pid;             // killed (a stopped process would outlive the job otherwise)
  std::string host;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread thread;

  void post_recv(size_t i) { MPI_Irecv(&rbuf[i], 1, MPI_BYTE, peers[i], kTag, comm, &recv[i]); }

  void loop() {
    const auto every = std::chrono::duration<double>(std::clamp(timeout_s / 10, 0.05, 1.0));
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu);
        if (cv.wait_for(lk, every, [&] { return stop; })) return;
      }
      const auto now = Clock::now();
      for (size_t i = 0; i < peers.size(); ++i) {
        // Every heartbeat that arrived (they queue while a peer is busy in MPI: drain them all).
        for (int flag = 1; flag;) {
          MPI_Test(&recv[i], &flag, MPI_STATUS_IGNORE);
          if (flag) heard[i] = now, post_recv(i);
        }
        // One heartbeat in flight per peer at most (a stopped peer does not let them pile up).
        int sent = 1;
        if (send[i] != MPI_REQUEST_NULL) MPI_Test(&send[i], &sent, MPI_STATUS_IGNORE);
        if (sent) MPI_Isend(&beat, 1, MPI_BYTE, peers[i], kTag, comm, &send[i]);
        const double silent = std::chrono::duration<double>(now - heard[i]).count();
        if (silent > timeout_s) {
          std::fprintf(stderr,
                       "xvlm2vec: rank %d of %d: rank %d (%s, pid %ld) has not been heard from for %.1f s (its process "
                       "is stopped, hung or lost; parallel.collective_timeout_s = %g): stopping every rank\n",
                       rank, size, peers[i], peer_host[i].c_str(), peer_pid[i], silent, timeout_s);
          // The launcher cannot end a stopped process with SIGTERM; on this host, end it here.
          if (peer_host[i] == host && peer_pid[i] > 0) ::kill(pid_t(peer_pid[i]), SIGKILL);
          mpi_abort(1);
        }
      }
    }
  }
};

MpiWatchdog::MpiWatchdog(double timeout_s) {
  XV_CHECK(timeout_s >= 0, "watchdog: timeout {} s is negative", timeout_s);
  if (timeout_s <= 0 || mpi_thread_level() < MPI_THREAD_MULTIPLE) return;
  auto s = std::make_unique<State>();
  s->timeout_s = timeout_s;
  XV_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &s->comm) == MPI_SUCCESS, "watchdog: MPI_Comm_dup failed");
  MPI_Comm_rank(s->comm, &s->rank);
  MPI_Comm_size(s->comm, &s->size);
  if (s->size < 2) {
    MPI_Comm_free(&s->comm);
    return;
  }
  if (s->rank == 0)
    for (int r = 1; r < s->size; ++r) s->peers.push_back(r);
  else
    s->peers.push_back(0);
  const size_t n = s->peers.size();
  // Every rank's host and pid, for the message and for ending a stopped peer on this host.
  char host[64] = {};
  ::gethostname(host, sizeof host - 1);
  s->host = host;
  struct Who {
    char host[64];
    long pid;
  };
  Who me{};
  std::snprintf(me.host, sizeof me.host, "%s", host);
  me.pid = long(::getpid());
  std::vector<Who> all(size_t(s->size));
  XV_CHECK(MPI_Allgather(&me, int(sizeof(Who)), MPI_BYTE, all.data(), int(sizeof(Who)), MPI_BYTE, s->comm) ==
               MPI_SUCCESS,
           "watchdog: MPI_Allgather failed");
  for (int p : s->peers) {
    s->peer_host.emplace_back(all[size_t(p)].host);
    s->peer_pid.push_back(all[size_t(p)].pid);
  }
  s->recv.assign(n, MPI_REQUEST_NULL);
  s->send.assign(n, MPI_REQUEST_NULL);
  s->rbuf.assign(n, 0);
  s->heard.assign(n, Clock::now());
  for (size_t i = 0; i < n; ++i) s->post_recv(i);
  State* raw = s.get();
  s->thread = std::thread([raw] { raw->loop(); });
  s_ = std::move(s);
}

MpiWatchdog::~MpiWatchdog() {
  if (!s_) return;
  {
    std::lock_guard<std::mutex> lk(s_->mu);
    s_->stop = true;
  }
  s_->cv.notify_all();
  s_->thread.join();
  for (auto& r : s_->recv) {
    MPI_Cancel(&r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
  }
  // A one-byte send completes locally (eager); one that has not yet is left to finish on its own.
  for (auto& r : s_->send)
    if (r != MPI_REQUEST_NULL) MPI_Request_free(&r);
  MPI_Comm_free(&s_->comm);
}

bool MpiWatchdog::active() const { return s_ != nullptr; }

}  // namespace xv::par
