// The world of one rank (no MPI), plus what every communicator shares: the argument checks and the byte
// accounting of CommStats.
#include <cstdint>
#include <cstring>

#include "core/error.h"
#include "parallel/comm.h"

namespace xv::par {

const char* collective_name(Collective c) {
  switch (c) {
    case Collective::all_gather: return "all_gather";
    case Collective::reduce_scatter: return "reduce_scatter";
    case Collective::all_reduce: return "all_reduce";
    case Collective::all_to_all: return "all_to_all";
    case Collective::broadcast: return "broadcast";
  }
  return "unknown collective";
}

namespace {

// True when the byte ranges [a, a + na) and [b, b + nb) share a byte.
bool overlap(uintptr_t a, size_t na, uintptr_t b, size_t nb) {
  if (na == 0 || nb == 0) return false;
  return a < b + nb && b < a + na;
}

}  // namespace

void check_collective_args(const Communicator& comm, Collective c, const void* send, const void* recv, size_t count,
                           DType t, int root) {
  const int n = comm.size(), r = comm.rank();
  const size_t block = count * dtype_size(t);
  XV_CHECK(count == 0 || block / count == dtype_size(t), "{} ({}): {} elements of {} overflow size_t",
           collective_name(c), comm.backend(), count, dtype_name(t));
  // Addresses as integers: comparing pointers into different arrays (or offsetting a null one) is undefined.
  const auto s = reinterpret_cast<uintptr_t>(send), d = reinterpret_cast<uintptr_t>(recv);
  switch (c) {
    case Collective::all_gather:  // send (count), recv (n * count)
      if (s == d + r * block) return;
      XV_CHECK(!overlap(s, block, d, n * block),
               "all_gather ({}): send and recv overlap; in place means send == recv + rank * count", comm.backend());
      return;
    case Collective::reduce_scatter:  // send (n * count), recv (count)
      if (d == s + r * block) return;
      XV_CHECK(!overlap(s, n * block, d, block),
               "reduce_scatter ({}): send and recv overlap; in place means recv == send + rank * count",
               comm.backend());
      return;
    case Collective::all_to_all:  // send (n * count), recv (n * count)
      if (s == d) return;
      XV_CHECK(!overlap(s, n * block, d, n * block),
               "all_to_all ({}): send and recv overlap; in place means send == recv", comm.backend());
      return;
    case Collective::all_reduce: return;
    case Collective::broadcast:
      XV_CHECK(root >= 0 && root < n, "broadcast ({}): root {} is not a rank of this communicator (size {})",
               comm.backend(), root, n);
      return;
  }
}

void Communicator::count_call(Collective c, size_t count, DType t, int root) {
  const uint64_t n = static_cast<uint64_t>(size());
  const uint64_t bytes = static_cast<uint64_t>(count) * dtype_size(t);
  stats_.calls++;
  switch (c) {
    case Collective::all_gather: stats_.all_gather_bytes += (n - 1) * bytes; break;
    case Collective::reduce_scatter: stats_.reduce_scatter_bytes += (n - 1) * bytes; break;
    // floor(2 (n-1) bytes / n), split as bytes = q n + m so that 2 (n-1) bytes cannot wrap.
    case Collective::all_reduce:
      stats_.all_reduce_bytes += 2 * (n - 1) * (bytes / n) + 2 * (n - 1) * (bytes % n) / n;
      break;
    case Collective::all_to_all: stats_.all_to_all_bytes += (n - 1) * bytes; break;
    case Collective::broadcast:
      if (rank() != root) stats_.broadcast_bytes += bytes;
      break;
  }
}

namespace {

class DoneRequest final : public Request {
 public:
  void wait() override {}
};

class SelfCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "self"; }

  RequestPtr iall_gather(const void* send, void* recv, size_t count, DType t) override {
    return copy(Collective::all_gather, send, recv, count, t);
  }
  RequestPtr ireduce_scatter(const void* send, void* recv, size_t count, DType t, ReduceOp) override {
    return copy(Collective::reduce_scatter, send, recv, count, t);
  }
  RequestPtr iall_to_all(const void* send, void* recv, size_t count, DType t) override {
    return copy(Collective::all_to_all, send, recv, count, t);
  }
  RequestPtr iall_reduce(void* buf, size_t count, DType t, ReduceOp) override {
    check_collective_args(*this, Collective::all_reduce, buf, buf, count, t);
    count_call(Collective::all_reduce, count, t);
    return std::make_unique<DoneRequest>();
  }
  RequestPtr ibroadcast(void* buf, size_t count, DType t, int root) override {
    check_collective_args(*this, Collective::broadcast, buf, buf, count, t, root);
    count_call(Collective::broadcast, count, t, root);
    return std::make_unique<DoneRequest>();
  }
  void barrier() override { stats_.calls++; }

  std::unique_ptr<Communicator> split(int color, int key) override {
    XV_CHECK(color >= 0, "split (self): color must be >= 0, got {}", color);
    return make_self_communicator();
  }

 private:
  // With one rank every block-moving collective is send's single block copied to recv.
  RequestPtr copy(Collective c, const void* send, void* recv, size_t count, DType t) {
    check_collective_args(*this, c, send, recv, count, t);
    count_call(c, count, t);
    if (count > 0 && send != recv) std::memcpy(recv, send, count * dtype_size(t));
    return std::make_unique<DoneRequest>();
  }
};

}  // namespace

std::unique_ptr<Communicator> make_self_communicator() { return std::make_unique<SelfCommunicator>(); }

}  // namespace xv::par
