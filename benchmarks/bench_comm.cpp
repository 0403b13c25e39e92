// All-gather and reduce-scatter over MPI: our communicator (parallel/comm_mpi.h: queued to the progress
// thread, waited on) against the peer, MPI_Allgather / MPI_Reduce_scatter_block called directly, side by side
// in one process. A plain main (not Google Benchmark): it runs under mpirun, e.g.
//
//   mpirun --allow-run-as-root -np 2 build/benchmarks/bench_comm [--min-bytes 4096] [--max-bytes 268435456]
//                                                                [--json FILE]
//
// --json writes every timing (ours and the peer's) for benchmarks/scaling's `scaling_model fit-link`.
//
// Sizes are the per-rank block S (f32). Bandwidths as nccl-tests defines them: the message is the whole
// gathered (all-gather) or scattered (reduce-scatter) buffer, n * S; algbw = n * S / time,
// busbw = algbw * (n - 1) / n (what each rank's link carries in a ring). Time: the average over `reps`
// back-to-back calls (nccl-tests style), the slowest rank's; each side is measured in 3 interleaved rounds
// and the best round is kept (the machine is shared). Rank 0 prints a markdown table.
//
// The peer is measured twice: called from the main thread (what a program without a progress thread does)
// and from a helper thread (as our progress thread calls it). The second isolates our overhead (queue,
// wake-up, wait). The two peers differ for reductions: Open MPI's reduce-scatter mallocs a temporary buffer
// per call, and glibc's main arena hands it back to the kernel at each free, so the main thread page-faults
// it in again every call (about 100 minor faults per call at 256 KiB); a thread's arena keeps it.
#if XV_HAVE_MPI
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/file_util.h"
#include "parallel/comm.h"
#include "parallel/comm_mpi.h"

namespace {

using xv::par::DType;

// Seconds per call of fn (average of `reps` back-to-back calls), the slowest rank's.
double time_per_call(const std::function<void()>& fn, int reps) {
  MPI_Barrier(MPI_COMM_WORLD);
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) fn();
  double local = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  double slowest = 0;
  MPI_Allreduce(&local, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return slowest;
}

// The same, with fn called from a new thread (MPI_THREAD_MULTIPLE).
double time_per_call_on_thread(const std::function<void()>& fn, int reps) {
  double t = 0;
  std::thread th([&] { t = time_per_call(fn, reps); });
  th.join();
  return t;
}

std::string human(size_t bytes) {
  if (bytes >= (size_t{1} << 20)) return std::to_string(bytes >> 20) + " MiB";
  return std::to_string(bytes >> 10) + " KiB";
}

int reps_for(size_t bytes) {
  if (bytes <= (size_t{1} << 20)) return 50;
  if (bytes <= (size_t{16} << 20)) return 10;
  return 3;
}

int run(int argc, char** argv) {
  size_t min_bytes = 4096, max_bytes = size_t{256} << 20;
  std::string json_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--min-bytes") {
      min_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (a == "--max-bytes") {
      max_bytes = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (a == "--json") {
      json_path = argv[i + 1];
    } else {
      xv::fail("bench_comm: unknown option {} (--min-bytes N, --max-bytes N, --json FILE)", a);
    }
  }
  XV_CHECK(min_bytes >= 4 && min_bytes <= max_bytes, "bench_comm: need 4 <= --min-bytes <= --max-bytes");

  xv::par::mpi_init();
  auto comm = xv::par::make_mpi_communicator();
  const int n = comm->size(), me = comm->rank();
  MPI_Comm raw;
  MPI_Comm_dup(MPI_COMM_WORLD, &raw);

  // The largest case: all-gather recv / reduce-scatter send (n * S), all-gather send / reduce-scatter recv (S).
  const size_t max_count = max_bytes / 4;
  std::vector<float> big(n * max_count), small(max_count);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 1024);  // touch every page
  for (size_t i = 0; i < small.size(); ++i) small[i] = static_cast<float>(me + 1);

  if (me == 0) {
    std::printf("# bench_comm: %d ranks, MPI thread level %d, f32; times are the slowest rank's average per call\n",
                n, xv::par::mpi_thread_level());
    std::printf("| collective | block per rank | ours: time | algbw | busbw | raw MPI, main thread: time | algbw | "
                "busbw | ours / raw | raw MPI, helper thread: time | ours / raw (helper) |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|\n");
  }
  std::string samples;  // JSON objects, for --json
  for (int which = 0; which < 2; ++which) {
    const char* name = which == 0 ? "all-gather" : "reduce-scatter";
    for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 4) {
      const size_t count = bytes / 4;
      const int reps = reps_for(bytes), ic = static_cast<int>(count);
      std::function<void()> ours, peer;
      if (which == 0) {
        ours = [&] { comm->all_gather(small.data(), big.data(), count, DType::F32); };
        peer = [&] { MPI_Allgather(small.data(), ic, MPI_FLOAT, big.data(), ic, MPI_FLOAT, raw); };
      } else {
        ours = [&] { comm->reduce_scatter(big.data(), small.data(), count, DType::F32); };
        peer = [&] { MPI_Reduce_scatter_block(big.data(), small.data(), ic, MPI_FLOAT, MPI_SUM, raw); };
      }
      ours();  // warm-up: connections, buffers registered, pages touched
      peer();
      double t_ours = 1e30, t_peer = 1e30, t_peer_thread = 1e30;
      for (int round = 0; round < 3; ++round) {
        t_peer = std::min(t_peer, time_per_call(peer, reps));
        t_ours = std::min(t_ours, time_per_call(ours, reps));
        t_peer_thread = std::min(t_peer_thread, time_per_call_on_thread(peer, reps));
      }
      if (which == 0) {  // a spot check: block r holds rank r's value
        comm->all_gather(small.data(), big.data(), count, DType::F32);
        for (int r = 0; r < n; ++r)
          XV_CHECK(big[r * count + count - 1] == static_cast<float>(r + 1), "bench_comm: wrong all-gather result");
      }
      if (me == 0) {
        const double total = static_cast<double>(n) * static_cast<double>(bytes);
        const double bus = static_cast<double>(n - 1) / n;
        auto gbs = [](double b, double t) { return b / t / 1e9; };
        std::printf("| %s | %s | %.3f ms | %.2f GB/s | %.2f GB/s | %.3f ms | %.2f GB/s | %.2f GB/s | %.2f | %.3f ms | "
                    "%.2f |\n",
                    name, human(bytes).c_str(), t_ours * 1e3, gbs(total, t_ours), gbs(total, t_ours) * bus,
                    t_peer * 1e3, gbs(total, t_peer), gbs(total, t_peer) * bus, t_ours / t_peer,
                    t_peer_thread * 1e3, t_ours / t_peer_thread);
        std::fflush(stdout);
        samples += fmt::format("{}    {{\"collective\": \"{}\", \"bytes_per_rank\": {}, \"gathered_bytes\": {}, "
                               "\"seconds\": {:.9g}, \"seconds_raw_mpi\": {:.9g}, \"seconds_raw_mpi_thread\": {:.9g}}}",
                               samples.empty() ? "" : ",\n", name, bytes, size_t(n) * bytes, t_ours, t_peer,
                               t_peer_thread);
      }
    }
  }
  if (me == 0 && !json_path.empty())
    xv::write_file_atomic(json_path, fmt::format("{{\n  \"ranks\": {},\n  \"samples\": [\n{}\n  ]\n}}\n", n, samples));
  MPI_Comm_free(&raw);
  comm.reset();
  xv::par::mpi_finalize();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_comm: %s\n", e.what());
    xv::par::mpi_abort(1);
  }
}

#else
#include <cstdio>
int main() {
  std::fprintf(stderr, "bench_comm: built without MPI (CMake did not find it)\n");
  return 1;
}
#endif
