// The world-of-one communicator (parallel/comm.h): every collective is a copy or nothing, in place is a
// no-op, the argument checks name the collective, and split gives another world of one. Plus what every
// backend shares: dtype sizes, the in-place rules of check_collective_args and the CommStats byte formulas
// (checked through a fake communicator of n ranks that only counts).
#include <gtest/gtest.h>

#include <type_traits>

#include <cstdint>
#include <numeric>
#include <vector>

#include "core/error.h"
#include "parallel/comm.h"

namespace {

using xv::par::Collective;
using xv::par::Communicator;
using xv::par::DType;
using xv::par::ReduceOp;

// The communicators take the project's one DType (core/dtype.h), bf16 included.
TEST(CommSelf, DtypeSizesAndNames) {
  static_assert(std::is_same_v<xv::par::DType, xv::DType>);
  EXPECT_EQ(xv::dtype_size(DType::F32), 4u);
  EXPECT_EQ(xv::dtype_size(DType::F64), 8u);
  EXPECT_EQ(xv::dtype_size(DType::I64), 8u);
  EXPECT_EQ(xv::dtype_size(DType::U8), 1u);
  EXPECT_EQ(xv::dtype_size(DType::BF16), 2u);
  EXPECT_EQ(xv::dtype_name(DType::I64), "I64");
  // U64 (HDF5 corpus counters) is in the same enum; every name round-trips.
  EXPECT_EQ(xv::dtype_size(DType::U64), 8u);
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F64, DType::I64, DType::I32, DType::I16, DType::I8,
                  DType::U8, DType::BOOL, DType::U64}) {
    DType back = DType::F32;
    ASSERT_TRUE(xv::dtype_from_name(xv::dtype_name(t), &back)) << xv::dtype_name(t);
    EXPECT_EQ(back, t);
  }
  EXPECT_STREQ(xv::par::collective_name(Collective::reduce_scatter), "reduce_scatter");
}

TEST(CommSelf, CollectivesCopyOrLeaveAlone) {
  auto c = xv::par::make_self_communicator();
  EXPECT_EQ(c->rank(), 0);
  EXPECT_EQ(c->size(), 1);
  EXPECT_EQ(c->backend(), "self");

  std::vector<float> send(5), recv(5, -1.0f);
  std::iota(send.begin(), send.end(), 1.0f);
  c->all_gather(send.data(), recv.data(), 5, DType::F32);
  EXPECT_EQ(recv, send);

  std::vector<double> ds = {1.5, -2.5, 3.5}, dr(3, 0.0);
  c->reduce_scatter(ds.data(), dr.data(), 3, DType::F64, ReduceOp::max);
  EXPECT_EQ(dr, ds);

  std::vector<int64_t> is = {int64_t{1} << 60, -7}, ir(2, 0);
  c->all_to_all(is.data(), ir.data(), 2, DType::I64);
  EXPECT_EQ(ir, is);

  std::vector<uint8_t> u = {1, 2, 255};
  c->all_reduce(u.data(), u.size(), DType::U8);
  EXPECT_EQ(u, (std::vector<uint8_t>{1, 2, 255}));
  c->broadcast(u.data(), u.size(), DType::U8, 0);
  EXPECT_EQ(u, (std::vector<uint8_t>{1, 2, 255}));
  c->barrier();
}

TEST(CommSelf, InPlaceAndNonBlocking) {
  auto c = xv::par::make_self_communicator();
  std::vector<float> buf = {1, 2, 3};
  auto r1 = c->iall_gather(buf.data(), buf.data(), 3, DType::F32);
  auto r2 = c->ireduce_scatter(buf.data(), buf.data(), 3, DType::F32, ReduceOp::sum);
  auto r3 = c->iall_to_all(buf.data(), buf.data(), 3, DType::F32);
  auto r4 = c->iall_reduce(buf.data(), 3, DType::F32, ReduceOp::sum);
  auto r5 = c->ibroadcast(buf.data(), 3, DType::F32, 0);
  r5->wait();
  r1->wait();
  r3->wait();
  r2->wait();
  r4->wait();
  r4->wait();  // a second wait is harmless
  EXPECT_EQ(buf, (std::vector<float>{1, 2, 3}));
  // Count 0 with null buffers is a valid (empty) collective.
  c->all_gather(nullptr, nullptr, 0, DType::F32);
  c->all_to_all(nullptr, nullptr, 0, DType::U8);
}

TEST(CommSelf, BadArgumentsNameTheCollective) {
  auto c = xv::par::make_self_communicator();
  std::vector<float> buf(8, 0.0f);
  try {
    c->broadcast(buf.data(), 4, DType::F32, 1);
    FAIL() << "expected xv::Error";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("broadcast (self): root 1"), std::string::npos) << e.what();
  }
  // Overlapping, but not the in-place layout.
  try {
    c->all_gather(buf.data() + 1, buf.data(), 4, DType::F32);
    FAIL() << "expected xv::Error";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("all_gather (self): send and recv overlap"), std::string::npos) << e.what();
  }
  EXPECT_THROW(c->all_to_all(buf.data() + 2, buf.data(), 4, DType::F32), xv::Error);
  EXPECT_THROW(c->reduce_scatter(buf.data(), buf.data() + 3, 4, DType::F32), xv::Error);
  EXPECT_THROW(c->split(-1, 0), xv::Error);
}

TEST(CommSelf, SplitAndStats) {
  auto c = xv::par::make_self_communicator();
  auto sub = c->split(3, 7);
  ASSERT_NE(sub, nullptr);
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->rank(), 0);
  std::vector<float> a(4, 1.0f), b(4);
  c->all_gather(a.data(), b.data(), 4, DType::F32);
  c->reduce_scatter(a.data(), b.data(), 4, DType::F32);
  c->all_reduce(a.data(), 4, DType::F32);
  c->all_to_all(a.data(), b.data(), 4, DType::F32);
  c->broadcast(a.data(), 4, DType::F32, 0);
  c->barrier();
  const auto& s = c->stats();
  EXPECT_EQ(s.calls, 6u);
  EXPECT_EQ(s.all_gather_bytes + s.reduce_scatter_bytes + s.all_reduce_bytes + s.all_to_all_bytes +
                s.broadcast_bytes,
            0u);
  EXPECT_EQ(sub->stats().calls, 0u);
  c->reset_stats();
  EXPECT_EQ(c->stats().calls, 0u);
}

// A communicator of `n` ranks that moves nothing: it checks the arguments and counts, as every backend does.
class CountingComm final : public Communicator {
 public:
  CountingComm(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "counting"; }
  xv::par::RequestPtr iall_gather(const void* s, void* r, size_t n, DType t) override {
    return go(Collective::all_gather, s, r, n, t);
  }
  xv::par::RequestPtr ireduce_scatter(const void* s, void* r, size_t n, DType t, ReduceOp) override {
    return go(Collective::reduce_scatter, s, r, n, t);
  }
  xv::par::RequestPtr iall_reduce(void* b, size_t n, DType t, ReduceOp) override {
    return go(Collective::all_reduce, b, b, n, t);
  }
  xv::par::RequestPtr iall_to_all(const void* s, void* r, size_t n, DType t) override {
    return go(Collective::all_to_all, s, r, n, t);
  }
  xv::par::RequestPtr ibroadcast(void* b, size_t n, DType t, int root) override {
    return go(Collective::broadcast, b, b, n, t, root);
  }
  void barrier() override {}
  std::unique_ptr<Communicator> split(int, int) override { return nullptr; }

 private:
  struct Done final : xv::par::Request {
    void wait() override {}
  };
  xv::par::RequestPtr go(Collective c, const void* s, const void* r, size_t n, DType t, int root = 0) {
    xv::par::check_collective_args(*this, c, s, r, n, t, root);
    count_call(c, n, t, root);
    return std::make_unique<Done>();
  }
  int rank_, size_;
};

TEST(CommStats, ByteFormulas) {
  for (int n : {1, 2, 3, 4, 7}) {
    for (int rank : {0, n - 1}) {
      CountingComm c(rank, n);
      std::vector<float> send(5 * n), recv(5 * n);
      c.all_gather(send.data(), recv.data(), 5, DType::F32);                 // (n-1) * 20
      c.reduce_scatter(send.data(), recv.data(), 5, DType::F32);             // (n-1) * 20
      c.all_reduce(send.data(), 5, DType::F32);                              // floor(2 (n-1) / n * 20)
      c.all_to_all(send.data(), recv.data(), 5, DType::F32);                 // (n-1) * 20
      c.broadcast(send.data(), 5, DType::F32, n - 1);                        // 20 unless root
      const auto& s = c.stats();
      const uint64_t m = static_cast<uint64_t>(n - 1);
      EXPECT_EQ(s.all_gather_bytes, m * 20) << "n " << n;
      EXPECT_EQ(s.reduce_scatter_bytes, m * 20) << "n " << n;
      EXPECT_EQ(s.all_reduce_bytes, 2 * m * 20 / static_cast<uint64_t>(n)) << "n " << n;
      EXPECT_EQ(s.all_to_all_bytes, m * 20) << "n " << n;
      EXPECT_EQ(s.broadcast_bytes, rank == n - 1 ? 0u : 20u) << "n " << n << " rank " << rank;
      EXPECT_EQ(s.calls, 5u);
    }
  }
  // all_reduce rounds down: n = 3, 5 f32 = 20 bytes -> 2 * 2 / 3 * 20 = 26.67 -> 26.
  CountingComm c3(1, 3);
  std::vector<float> b(5);
  c3.all_reduce(b.data(), 5, DType::F32);
  EXPECT_EQ(c3.stats().all_reduce_bytes, 26u);
  // No wrap-around for a huge count (2 (n-1) * bytes would overflow 64 bits before the division).
  CountingComm big(0, 4);
  const size_t huge = size_t{1} << 61;
  std::vector<uint8_t> one(1);
  big.all_reduce(one.data(), huge, DType::U8);
  EXPECT_EQ(big.stats().all_reduce_bytes, 3 * (huge / 2));
}

TEST(CommStats, InPlaceLayouts) {
  CountingComm c(2, 4);  // rank 2 of 4
  std::vector<float> buf(4 * 3);
  float* base = buf.data();
  EXPECT_NO_THROW(c.all_gather(base + 2 * 3, base, 3, DType::F32));        // send == recv + rank * count
  EXPECT_THROW(c.all_gather(base + 1 * 3, base, 3, DType::F32), xv::Error);  // another rank's block
  EXPECT_NO_THROW(c.reduce_scatter(base, base + 2 * 3, 3, DType::F32));    // recv == send + rank * count
  EXPECT_THROW(c.reduce_scatter(base, base, 3, DType::F32), xv::Error);
  EXPECT_NO_THROW(c.all_to_all(base, base, 3, DType::F32));
  EXPECT_THROW(c.all_to_all(base, base + 1, 3, DType::F32), xv::Error);
  EXPECT_THROW(c.broadcast(base, 3, DType::F32, 4), xv::Error);
  EXPECT_THROW(c.broadcast(base, 3, DType::F32, -1), xv::Error);
  // Adjacent, not overlapping.
  std::vector<float> two(3 + 4 * 3);
  EXPECT_NO_THROW(c.all_gather(two.data(), two.data() + 3, 3, DType::F32));
}

}  // namespace
