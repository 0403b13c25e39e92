// The communicator: the collectives distributed training needs, over one group of ranks.
//
//   all_gather      send (count) from every rank -> recv (size * count), rank r's block at r * count
//   reduce_scatter  send (size * count) on every rank -> recv (count): block `rank` of the element-wise sum
//   all_reduce      buf (count) -> element-wise sum (or max) over the ranks, in place
//   all_to_all      send (size * count) -> recv (size * count): block s of rank r's send lands in block r of
//                   rank s's recv (the deterministic reduction gathers every rank's pieces this way and sums
//                   them in a fixed order itself)
//   broadcast       buf (count) from `root` to every rank
//   barrier
//
// Every collective has a non-blocking form returning a Request; the buffers belong to the collective until
// wait() returns. Collectives start in the order they are called, which must be the same on every rank.
// In place (every backend): all_gather when send is this rank's block of recv (recv + rank * count);
// reduce_scatter when recv is this rank's block of send (send + rank * count; send's other blocks are then
// left undefined); all_to_all when send == recv. Any other overlap of send and recv is an error.
// Implementations: parallel/comm_mpi.cpp (host buffers, any MPI), parallel/comm_nccl.cpp (device buffers,
// compiled when CUDA and NCCL are found), and the single-process one below (world of one, no MPI).
// Every implementation counts the bytes each rank sends and receives (CommStats), which the trainer logs.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/device.h"
#include "core/dtype.h"

namespace xv::par {

// The project's one element-type enum (core/dtype.h). Every communicator moves any dtype; reductions take F32,
// F64 and I64 everywhere and BF16/F16 on NCCL.
using xv::DType;
enum class ReduceOp { sum, max };
enum class Collective { all_gather, reduce_scatter, all_reduce, all_to_all, broadcast };
const char* collective_name(Collective c);  // "all_gather", ... (for messages)

// Bytes moved by this rank since the communicator was made (or reset_stats), by collective. For the
// ring-style algorithms of docs/distributed.md: all-gather of S bytes per rank sends and receives (n-1) S.
struct CommStats {
  uint64_t all_gather_bytes = 0;      // bytes of other ranks' blocks received
  uint64_t reduce_scatter_bytes = 0;  // bytes of this rank's send buffer that went to other ranks
  uint64_t all_reduce_bytes = 0;      // 2 (n-1)/n * count * dtype size per call (ring accounting)
  uint64_t all_to_all_bytes = 0;      // bytes sent to other ranks
  uint64_t broadcast_bytes = 0;       // count * dtype size per call, on every rank but the root
  uint64_t calls = 0;                 // collectives started, barriers included
  double wait_s = 0;  // seconds spent in wait() (blocking calls included): communication not hidden by compute
};

class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
};
using RequestPtr = std::unique_ptr<Request>;

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "self", "mpi", "nccl"
  // The memory its collectives read and write: the host (self, MPI) or a GPU's (NCCL).
  virtual DeviceKind buffers() const { return DeviceKind::cpu; }

  virtual RequestPtr iall_gather(const void* send, void* recv, size_t count, DType t) = 0;
  virtual RequestPtr ireduce_scatter(const void* send, void* recv, size_t count, DType t, ReduceOp op) = 0;
  virtual RequestPtr iall_reduce(void* buf, size_t count, DType t, ReduceOp op) = 0;
  virtual RequestPtr iall_to_all(const void* send, void* recv, size_t count, DType t) = 0;
  virtual RequestPtr ibroadcast(void* buf, size_t count, DType t, int root) = 0;
  virtual void barrier() = 0;

  // Blocking forms: start, then wait.
  void all_gather(const void* send, void* recv, size_t count, DType t) { iall_gather(send, recv, count, t)->wait(); }
  void reduce_scatter(const void* send, void* recv, size_t count, DType t, ReduceOp op = ReduceOp::sum) {
    ireduce_scatter(send, recv, count, t, op)->wait();
  }
  void all_reduce(void* buf, size_t count, DType t, ReduceOp op = ReduceOp::sum) {
    iall_reduce(buf, count, t, op)->wait();
  }
  void all_to_all(const void* send, void* recv, size_t count, DType t) { iall_to_all(send, recv, count, t)->wait(); }
  void broadcast(void* buf, size_t count, DType t, int root) { ibroadcast(buf, count, t, root)->wait(); }

  // A communicator over the ranks that pass the same `color`, ordered by `key` (hybrid sharding: one per node
  // and one across nodes). Collective: every rank calls it.
  virtual std::unique_ptr<Communicator> split(int color, int key) = 0;

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 protected:
  // One call of `c` into stats_: calls + 1 and this rank's bytes as CommStats documents them (comm_self.cpp).
  void count_call(Collective c, size_t count, DType t, int root = 0);

  CommStats stats_;
};

// A world of one rank: every collective is a copy (or nothing).
std::unique_ptr<Communicator> make_self_communicator();

// The argument checks every implementation makes before it starts a collective (comm_self.cpp): throws
// xv::Error naming the collective and the backend when `root` is not a rank or when send and recv overlap
// other than in the in-place layouts above. `count` is the per-rank block, as in the collectives; for
// all_reduce and broadcast pass buf as both send and recv.
void check_collective_args(const Communicator& comm, Collective c, const void* send, const void* recv, size_t count,
                           DType t, int root = 0);

}  // namespace xv::par
