// The MPI communicator (parallel/comm_mpi.h) under mpirun -np 2 and -np 3 (tests/CMakeLists.txt): every
// collective in its blocking and non-blocking forms, for each dtype, with values that differ per rank so the
// result is checkable; sum and max; broadcast from a non-zero root; the all_to_all layout; in place; the
// split path for counts above MPI's int limit (lowered with mpi_set_max_count); split by rank parity; the
// CommStats formulas. Every rank runs the same collectives in the same order, so checks are EXPECTs (an
// ASSERT that returns early on one rank would leave the others waiting in a collective).
#define OMPI_SKIP_MPICXX 1  // the C API only
#define MPICH_SKIP_MPICXX 1
#include <gtest/gtest.h>
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "parallel/comm.h"
#include "parallel/comm_mpi.h"

namespace {

using xv::par::Communicator;
using xv::par::DType;
using xv::par::ReduceOp;

template <typename T>
DType dtype_of();
template <>
DType dtype_of<float>() { return DType::F32; }
template <>
DType dtype_of<double>() { return DType::F64; }
template <>
DType dtype_of<int64_t>() { return DType::I64; }
template <>
DType dtype_of<uint8_t>() { return DType::U8; }

// A value that depends on (rank, block, index), exact in every dtype: small enough for u8 sums over 3
// ranks, large for i64 (beyond double's 53 bits, so a silent conversion would show).
template <typename T>
T val(int rank, int block, size_t i) {
  if constexpr (std::is_same_v<T, uint8_t>) {
    return static_cast<uint8_t>((rank * 29 + block * 7 + static_cast<int>(i)) % 80);
  } else if constexpr (std::is_same_v<T, int64_t>) {
    return (int64_t{1} << 55) + int64_t{1000000} * rank + 1000 * block + static_cast<int64_t>(i);
  } else {
    return static_cast<T>(rank * 1000 + block * 100 + static_cast<int>(i % 97)) - T(500);
  }
}

template <typename T>
T reduce_val(int n, int block, size_t i, ReduceOp op) {
  T acc = val<T>(0, block, i);
  for (int r = 1; r < n; ++r) acc = op == ReduceOp::sum ? T(acc + val<T>(r, block, i)) : std::max(acc, val<T>(r, block, i));
  return acc;
}

class MpiComm : public ::testing::Test {
 protected:
  void SetUp() override { comm = xv::par::make_mpi_communicator(); }
  void TearDown() override { comm.reset(); }
  std::unique_ptr<Communicator> comm;
};

TEST_F(MpiComm, World) {
  int wr = -1, ws = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &wr);
  MPI_Comm_size(MPI_COMM_WORLD, &ws);
  EXPECT_EQ(comm->rank(), wr);
  EXPECT_EQ(comm->size(), ws);
  EXPECT_EQ(comm->backend(), "mpi");
  EXPECT_TRUE(xv::par::mpi_initialized());
  EXPECT_GE(xv::par::mpi_thread_level(), MPI_THREAD_SERIALIZED);
  EXPECT_EQ(xv::par::mpi_launched(), ws > 1);
  if (wr == 0) std::printf("world size %d, MPI thread level provided %d (MPI_THREAD_MULTIPLE = %d)\n", ws,
                           xv::par::mpi_thread_level(), MPI_THREAD_MULTIPLE);
}

template <typename T>
void check_all_gather(Communicator& c, size_t count, bool blocking) {
  const int n = c.size(), me = c.rank();
  std::vector<T> send(count), recv(n * count, T(0));
  for (size_t i = 0; i < count; ++i) send[i] = val<T>(me, 0, i);
  if (blocking) {
    c.all_gather(send.data(), recv.data(), count, dtype_of<T>());
  } else {
    c.iall_gather(send.data(), recv.data(), count, dtype_of<T>())->wait();
  }
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count; ++i)
      EXPECT_EQ(recv[r * count + i], val<T>(r, 0, i)) << "rank " << me << " block " << r << " i " << i;
}

template <typename T>
void check_reduce_scatter(Communicator& c, size_t count, ReduceOp op, bool blocking) {
  const int n = c.size(), me = c.rank();
  std::vector<T> send(n * count), recv(count, T(0));
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < count; ++i) send[b * count + i] = val<T>(me, b, i);
  if (blocking) {
    c.reduce_scatter(send.data(), recv.data(), count, dtype_of<T>(), op);
  } else {
    c.ireduce_scatter(send.data(), recv.data(), count, dtype_of<T>(), op)->wait();
  }
  for (size_t i = 0; i < count; ++i)
    EXPECT_EQ(recv[i], reduce_val<T>(n, me, i, op)) << "rank " << me << " i " << i;
}

template <typename T>
void check_all_reduce(Communicator& c, size_t count, ReduceOp op, bool blocking) {
  const int n = c.size(), me = c.rank();
  std::vector<T> buf(count);
  for (size_t i = 0; i < count; ++i) buf[i] = val<T>(me, 3, i);
  if (blocking) {
    c.all_reduce(buf.data(), count, dtype_of<T>(), op);
  } else {
    c.iall_reduce(buf.data(), count, dtype_of<T>(), op)->wait();
  }
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(buf[i], reduce_val<T>(n, 3, i, op)) << "rank " << me << " i " << i;
}

template <typename T>
void check_all_to_all(Communicator& c, size_t count, bool blocking) {
  const int n = c.size(), me = c.rank();
  std::vector<T> send(n * count), recv(n * count, T(0));
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i) send[s * count + i] = val<T>(me, s, i);  // block s goes to rank s
  if (blocking) {
    c.all_to_all(send.data(), recv.data(), count, dtype_of<T>());
  } else {
    c.iall_to_all(send.data(), recv.data(), count, dtype_of<T>())->wait();
  }
  // Block s of my recv is block `me` of rank s's send.
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i)
      EXPECT_EQ(recv[s * count + i], val<T>(s, me, i)) << "rank " << me << " from " << s << " i " << i;
}

template <typename T>
void check_broadcast(Communicator& c, size_t count, int root, bool blocking) {
  const int me = c.rank();
  std::vector<T> buf(count);
  for (size_t i = 0; i < count; ++i) buf[i] = val<T>(me, 5, i);
  if (blocking) {
    c.broadcast(buf.data(), count, dtype_of<T>(), root);
  } else {
    c.ibroadcast(buf.data(), count, dtype_of<T>(), root)->wait();
  }
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(buf[i], val<T>(root, 5, i)) << "rank " << me << " i " << i;
}

template <typename T>
void check_every_collective(Communicator& c) {
  for (bool blocking : {true, false}) {
    for (size_t count : {size_t{1}, size_t{37}, size_t{4096 + 3}}) {
      check_all_gather<T>(c, count, blocking);
      check_reduce_scatter<T>(c, count, ReduceOp::sum, blocking);
      check_reduce_scatter<T>(c, count, ReduceOp::max, blocking);
      check_all_reduce<T>(c, count, ReduceOp::sum, blocking);
      check_all_reduce<T>(c, count, ReduceOp::max, blocking);
      check_all_to_all<T>(c, count, blocking);
      check_broadcast<T>(c, count, c.size() - 1, blocking);  // a non-zero root
      check_broadcast<T>(c, count, 0, blocking);
    }
  }
}

TEST_F(MpiComm, EveryCollectiveF32) { check_every_collective<float>(*comm); }
TEST_F(MpiComm, EveryCollectiveF64) { check_every_collective<double>(*comm); }
TEST_F(MpiComm, EveryCollectiveI64) { check_every_collective<int64_t>(*comm); }
TEST_F(MpiComm, EveryCollectiveU8) { check_every_collective<uint8_t>(*comm); }

// 16-bit floats (the bf16 frozen base) move as they are; MPI has no reduction for them, which every rank refuses
// before any call (so no rank waits on the others).
TEST_F(MpiComm, Bf16MovesButDoesNotReduce) {
  const int n = comm->size(), me = comm->rank();
  std::vector<uint16_t> send(3, uint16_t(0x3f80 + me)), recv(size_t(3 * n));
  comm->all_gather(send.data(), recv.data(), 3, DType::BF16);
  for (int r = 0; r < n; ++r)
    for (int i = 0; i < 3; ++i) EXPECT_EQ(recv[size_t(r * 3 + i)], uint16_t(0x3f80 + r));
  try {
    comm->all_reduce(send.data(), 3, DType::BF16);
    ADD_FAILURE() << "a bf16 all_reduce over MPI must be refused";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reduce BF16"), std::string::npos) << e.what();
  }
}

TEST_F(MpiComm, ZeroCount) {
  comm->all_gather(nullptr, nullptr, 0, DType::F32);
  comm->reduce_scatter(nullptr, nullptr, 0, DType::F64);
  comm->all_reduce(nullptr, 0, DType::I64);
  comm->all_to_all(nullptr, nullptr, 0, DType::U8);
  comm->broadcast(nullptr, 0, DType::F32, comm->size() - 1);
  comm->barrier();
}

// Several collectives in flight at once, waited in another order than started.
TEST_F(MpiComm, OverlappingNonBlocking) {
  const int n = comm->size(), me = comm->rank();
  const size_t count = 1000;
  std::vector<float> ag_send(count), ag_recv(n * count);
  std::vector<double> rs_send(n * count), rs_recv(count);
  std::vector<int64_t> ar(count);
  std::vector<uint8_t> a2a_send(n * count), a2a_recv(n * count);
  std::vector<float> bc(count);
  for (size_t i = 0; i < count; ++i) {
    ag_send[i] = val<float>(me, 0, i);
    ar[i] = val<int64_t>(me, 3, i);
    bc[i] = val<float>(me, 5, i);
  }
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < count; ++i) {
      rs_send[b * count + i] = val<double>(me, b, i);
      a2a_send[b * count + i] = val<uint8_t>(me, b, i);
    }
  auto r1 = comm->iall_gather(ag_send.data(), ag_recv.data(), count, DType::F32);
  auto r2 = comm->ireduce_scatter(rs_send.data(), rs_recv.data(), count, DType::F64, ReduceOp::sum);
  auto r3 = comm->iall_reduce(ar.data(), count, DType::I64, ReduceOp::max);
  auto r4 = comm->iall_to_all(a2a_send.data(), a2a_recv.data(), count, DType::U8);
  auto r5 = comm->ibroadcast(bc.data(), count, DType::F32, n - 1);
  // 40 more all-reduces queued behind them.
  std::vector<std::vector<int64_t>> many(40, std::vector<int64_t>(64));
  std::vector<xv::par::RequestPtr> reqs;
  for (size_t k = 0; k < many.size(); ++k) {
    for (size_t i = 0; i < 64; ++i) many[k][i] = static_cast<int64_t>(k * 1000 + i) * (me + 1);
    reqs.push_back(comm->iall_reduce(many[k].data(), 64, DType::I64, ReduceOp::sum));
  }
  for (auto it = reqs.rbegin(); it != reqs.rend(); ++it) (*it)->wait();
  r5->wait();
  r3->wait();
  r1->wait();
  r4->wait();
  r2->wait();
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(ag_recv[r * count + i], val<float>(r, 0, i));
  for (size_t i = 0; i < count; ++i) {
    EXPECT_EQ(rs_recv[i], reduce_val<double>(n, me, i, ReduceOp::sum));
    EXPECT_EQ(ar[i], reduce_val<int64_t>(n, 3, i, ReduceOp::max));
    EXPECT_EQ(bc[i], val<float>(n - 1, 5, i));
  }
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(a2a_recv[s * count + i], val<uint8_t>(s, me, i));
  const int64_t ranks_sum = static_cast<int64_t>(n) * (n + 1) / 2;
  for (size_t k = 0; k < many.size(); ++k)
    for (size_t i = 0; i < 64; ++i) EXPECT_EQ(many[k][i], static_cast<int64_t>(k * 1000 + i) * ranks_sum);
}

// The caller computes while the collective runs on the progress thread; a request dropped without wait()
// waits in its destructor (the buffers must outlive it).
TEST_F(MpiComm, ProgressWhileComputingAndDroppedRequests) {
  const int n = comm->size(), me = comm->rank();
  const size_t count = size_t{1} << 20;
  std::vector<float> send(count, static_cast<float>(me + 1)), recv(n * count);
  auto req = comm->iall_gather(send.data(), recv.data(), count, DType::F32);
  volatile double acc = 0;
  for (int i = 0; i < 2000000; ++i) acc = acc + 1e-9 * i;
  req->wait();
  for (int r = 0; r < n; ++r) EXPECT_EQ(recv[r * count + count - 1], static_cast<float>(r + 1));
  {
    std::vector<double> buf(100, me);
    auto dropped = comm->iall_reduce(buf.data(), buf.size(), DType::F64, ReduceOp::sum);
    (void)dropped;  // destroyed unwaited: its destructor waits
  }
  comm->barrier();
}

TEST_F(MpiComm, InPlace) {
  const int n = comm->size(), me = comm->rank();
  const size_t count = 11;
  // all_gather: my block of recv is the send buffer.
  std::vector<int64_t> ag(n * count, -1);
  for (size_t i = 0; i < count; ++i) ag[me * count + i] = val<int64_t>(me, 0, i);
  comm->all_gather(ag.data() + me * count, ag.data(), count, DType::I64);
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(ag[r * count + i], val<int64_t>(r, 0, i));
  // reduce_scatter: recv is my block of send.
  std::vector<float> rs(n * count);
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < count; ++i) rs[b * count + i] = val<float>(me, b, i);
  comm->reduce_scatter(rs.data(), rs.data() + me * count, count, DType::F32, ReduceOp::sum);
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(rs[me * count + i], reduce_val<float>(n, me, i, ReduceOp::sum));
  // all_to_all: send == recv.
  std::vector<double> a2a(n * count);
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i) a2a[s * count + i] = val<double>(me, s, i);
  comm->all_to_all(a2a.data(), a2a.data(), count, DType::F64);
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(a2a[s * count + i], val<double>(s, me, i));
}

// Counts above the per-call limit go in pieces (INT_MAX in real runs; 7 elements here).
TEST_F(MpiComm, CountsAboveTheLimitGoInPieces) {
  xv::par::mpi_set_max_count(7);
  for (size_t count : {size_t{7}, size_t{8}, size_t{20}, size_t{21}}) {
    check_all_gather<float>(*comm, count, false);
    check_all_gather<uint8_t>(*comm, count, true);
    check_reduce_scatter<double>(*comm, count, ReduceOp::sum, false);
    check_reduce_scatter<int64_t>(*comm, count, ReduceOp::max, true);
    check_all_reduce<float>(*comm, count, ReduceOp::sum, true);
    check_all_to_all<int64_t>(*comm, count, false);
    check_broadcast<double>(*comm, count, comm->size() - 1, true);
  }
  // In place, in pieces.
  const int n = comm->size(), me = comm->rank();
  const size_t count = 17;
  std::vector<float> ag(n * count, -1.0f);
  for (size_t i = 0; i < count; ++i) ag[me * count + i] = val<float>(me, 0, i);
  comm->all_gather(ag.data() + me * count, ag.data(), count, DType::F32);
  for (int r = 0; r < n; ++r)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(ag[r * count + i], val<float>(r, 0, i));
  std::vector<int64_t> rs(n * count);
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < count; ++i) rs[b * count + i] = val<int64_t>(me, b, i);
  comm->reduce_scatter(rs.data(), rs.data() + me * count, count, DType::I64, ReduceOp::sum);
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(rs[me * count + i], reduce_val<int64_t>(n, me, i, ReduceOp::sum));
  std::vector<double> a2a(n * count);
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i) a2a[s * count + i] = val<double>(me, s, i);
  comm->all_to_all(a2a.data(), a2a.data(), count, DType::F64);
  for (int s = 0; s < n; ++s)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(a2a[s * count + i], val<double>(s, me, i));
  xv::par::mpi_set_max_count(INT_MAX);
  EXPECT_THROW(xv::par::mpi_set_max_count(0), xv::Error);
  EXPECT_THROW(xv::par::mpi_set_max_count(size_t{INT_MAX} + 1), xv::Error);
}

// Two groups by rank parity (np 3: {0, 2} and {1}), ordered by key; the groups run their collectives
// independently, and the parent stays usable.
TEST_F(MpiComm, SplitByParity) {
  const int n = comm->size(), me = comm->rank();
  const int color = me % 2;
  auto sub = comm->split(color, -me);  // key -rank: reversed order inside each group
  std::vector<int> members;
  for (int r = 0; r < n; ++r)
    if (r % 2 == color) members.push_back(r);
  const int sn = static_cast<int>(members.size());
  ASSERT_EQ(sub->size(), sn);
  // Reversed: the highest world rank of the group is sub rank 0.
  int expect_rank = 0;
  for (int r : members)
    if (r > me) ++expect_rank;
  EXPECT_EQ(sub->rank(), expect_rank);
  EXPECT_EQ(sub->backend(), "mpi");

  std::vector<int64_t> mine = {me, 10 * me};
  std::vector<int64_t> all(2 * sn);
  sub->all_gather(mine.data(), all.data(), 2, DType::I64);
  for (int s = 0; s < sn; ++s) {
    const int world = members[sn - 1 - s];  // sub rank s
    EXPECT_EQ(all[2 * s], world);
    EXPECT_EQ(all[2 * s + 1], 10 * world);
  }
  double x = me + 1;
  auto req = sub->iall_reduce(&x, 1, DType::F64, ReduceOp::sum);
  double y = me;
  comm->all_reduce(&y, 1, DType::F64, ReduceOp::max);  // the parent, while the group's request is open
  req->wait();
  double group_sum = 0;
  for (int r : members) group_sum += r + 1;
  EXPECT_EQ(x, group_sum);
  EXPECT_EQ(y, n - 1);
  check_every_collective<float>(*sub);

  auto subsub = sub->split(0, 0);
  EXPECT_EQ(subsub->size(), sn);
  subsub->barrier();
}

TEST_F(MpiComm, StatsFormulas) {
  const uint64_t n = static_cast<uint64_t>(comm->size());
  const int me = comm->rank();
  comm->reset_stats();
  const size_t count = 1001;
  std::vector<double> send(n * count, 1.0), recv(n * count);
  comm->all_gather(send.data(), recv.data(), count, DType::F64);
  comm->iall_gather(send.data(), recv.data(), count, DType::F64)->wait();
  comm->reduce_scatter(send.data(), recv.data(), count, DType::F64);
  comm->all_reduce(send.data(), count, DType::F64);
  comm->all_to_all(send.data(), recv.data(), count, DType::F64);
  const int root = static_cast<int>(n) - 1;
  comm->broadcast(send.data(), count, DType::F64, root);
  comm->barrier();
  const auto& s = comm->stats();
  const uint64_t bytes = count * 8;
  EXPECT_EQ(s.all_gather_bytes, 2 * (n - 1) * bytes);
  EXPECT_EQ(s.reduce_scatter_bytes, (n - 1) * bytes);
  EXPECT_EQ(s.all_reduce_bytes, 2 * (n - 1) * bytes / n);  // floor
  EXPECT_EQ(s.all_to_all_bytes, (n - 1) * bytes);
  EXPECT_EQ(s.broadcast_bytes, me == root ? 0u : bytes);
  EXPECT_EQ(s.calls, 7u);
  EXPECT_GT(s.wait_s, 0.0);
  comm->reset_stats();
  EXPECT_EQ(comm->stats().calls, 0u);
}

// Bad arguments are refused on every rank before anything is sent, with the collective named.
TEST_F(MpiComm, BadArguments) {
  const int n = comm->size();
  std::vector<float> buf(4 * n);
  try {
    comm->broadcast(buf.data(), 4, DType::F32, n);
    ADD_FAILURE() << "expected xv::Error";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("broadcast (mpi): root"), std::string::npos) << e.what();
  }
  EXPECT_THROW(comm->all_to_all(buf.data() + 1, buf.data(), 2, DType::F32), xv::Error);
  EXPECT_THROW(comm->split(-3, 0), xv::Error);
  // The communicator is still in step on every rank.
  comm->barrier();
}

// An MPI call that fails is an xv::Error from wait() naming the collective, the rank and MPI's message. Made
// to fail on purpose on a communicator of its own: the ranks disagree on a broadcast's count, so the
// receivers' buffers are too small (MPI_ERR_TRUNCATE there; the root's send itself succeeds).
TEST_F(MpiComm, FailingCallIsAnErrorFromWait) {
  auto side = comm->split(0, comm->rank());
  const int root = 0, me = side->rank();
  std::vector<int64_t> buf(64, 7);
  const size_t count = me == root ? 64 : 4;
  auto req = side->ibroadcast(buf.data(), count, DType::I64, root);
  if (me == root) {
    EXPECT_NO_THROW(req->wait());
  } else {
    try {
      req->wait();
      ADD_FAILURE() << "expected xv::Error on rank " << me;
    } catch (const xv::Error& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find("MPI broadcast of 4 I64 per rank from rank 0 failed on rank " + std::to_string(me)),
                std::string::npos) << m;
      EXPECT_NE(m.find("MPI_Bcast"), std::string::npos) << m;
      EXPECT_NE(m.find("MPI_ERR_TRUNCATE"), std::string::npos) << m;
    }
  }
  side.reset();
  comm->barrier();
}

// mpi_finalize refuses while a communicator is alive (its thread would call into a finalized MPI).
TEST_F(MpiComm, FinalizeRefusedWhileCommunicatorsLive) {
  EXPECT_THROW(xv::par::mpi_finalize(), xv::Error);
  EXPECT_TRUE(xv::par::mpi_initialized());
}

// Prints the failures of ranks other than 0 (whose output gtest's own printer gives), prefixed by the rank.
class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& r) override {
    if (r.failed())
      std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, r.file_name() ? r.file_name() : "?",
                   r.line_number(), r.summary());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  xv::par::mpi_init();
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  // Fail on every rank when any rank failed.
  int any = rc;
  MPI_Allreduce(&rc, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  xv::par::mpi_finalize();
  return any;
}
