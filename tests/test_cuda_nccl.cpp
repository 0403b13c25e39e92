// The NCCL communicator (parallel/comm_nccl.h) on device buffers: every collective against the values it
// must produce (per-rank values, sum and max, a non-zero broadcast root, the all_to_all layout, in place),
// overlapping requests, ordering behind a compute stream, split by parity, the CommStats formulas and the
// refusal of host pointers. Runs under mpiexec (tests/CMakeLists.txt: np 1 and np 2), one GPU per rank;
// skips, saying why, without a CUDA device or with fewer devices than ranks (np 2 on a machine of one GPU:
// NCCL refuses two ranks on one device). MPI is started only once a device is known to exist.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "core/error.h"
#include "parallel/comm.h"
#include "parallel/comm_mpi.h"
#include "parallel/comm_nccl.h"

namespace {

using xv::par::Communicator;
using xv::par::DType;
using xv::par::ReduceOp;

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// The launcher's rank before MPI is started (for printing only).
int launcher_rank() {
  for (const char* v : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* s = std::getenv(v)) return std::atoi(s);
  return 0;
}

std::unique_ptr<Communicator> g_mpi, g_nccl;  // made by the first test that runs, kept for the others

template <typename T>
DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::F32;
  if constexpr (std::is_same_v<T, double>) return DType::F64;
  if constexpr (std::is_same_v<T, int64_t>) return DType::I64;
  return DType::U8;
}

// Exact in every dtype (see tests/test_mpi_comm.cpp).
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
  for (int r = 1; r < n; ++r)
    acc = op == ReduceOp::sum ? T(acc + val<T>(r, block, i)) : std::max(acc, val<T>(r, block, i));
  return acc;
}

template <typename T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  explicit Dev(const std::vector<T>& h) : n(h.size()) {
    if (cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) throw xv::Error("cudaMalloc failed");
    cudaMemcpy(p, h.data(), n * sizeof(T), cudaMemcpyHostToDevice);
  }
  ~Dev() { cudaFree(p); }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  std::vector<T> get() const {
    std::vector<T> h(n);
    cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
    return h;
  }
};

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    const int devices = device_count();
    if (devices == 0) GTEST_SKIP() << "no CUDA device: NCCL tests skipped";
    if (!g_mpi) g_mpi = xv::par::make_mpi_communicator();
    if (devices < g_mpi->size())
      GTEST_SKIP() << g_mpi->size() << " ranks but " << devices
                   << " CUDA device(s): NCCL needs one GPU per rank, NCCL tests skipped";
    if (!g_nccl) g_nccl = xv::par::make_nccl_communicator(*g_mpi, g_mpi->rank());
    comm = g_nccl.get();
  }
  Communicator* comm = nullptr;
};

template <typename T>
void check_collectives(Communicator& c, size_t count) {
  const int n = c.size(), me = c.rank();
  const DType t = dtype_of<T>();
  {  // all_gather
    std::vector<T> send(count);
    for (size_t i = 0; i < count; ++i) send[i] = val<T>(me, 0, i);
    Dev<T> ds(send), dr(std::vector<T>(n * count));
    c.all_gather(ds.p, dr.p, count, t);
    auto r = dr.get();
    for (int b = 0; b < n; ++b)
      for (size_t i = 0; i < count; ++i) EXPECT_EQ(r[b * count + i], val<T>(b, 0, i)) << "all_gather " << b << "," << i;
  }
  for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {  // reduce_scatter, all_reduce
    std::vector<T> send(n * count), buf(count);
    for (int b = 0; b < n; ++b)
      for (size_t i = 0; i < count; ++i) send[b * count + i] = val<T>(me, b, i);
    for (size_t i = 0; i < count; ++i) buf[i] = val<T>(me, 3, i);
    Dev<T> ds(send), dr{std::vector<T>(count)}, db(buf);
    auto r1 = c.ireduce_scatter(ds.p, dr.p, count, t, op);
    auto r2 = c.iall_reduce(db.p, count, t, op);
    r2->wait();
    r1->wait();
    auto rs = dr.get(), ar = db.get();
    for (size_t i = 0; i < count; ++i) {
      EXPECT_EQ(rs[i], reduce_val<T>(n, me, i, op)) << "reduce_scatter " << i;
      EXPECT_EQ(ar[i], reduce_val<T>(n, 3, i, op)) << "all_reduce " << i;
    }
  }
  {  // all_to_all, then in place
    std::vector<T> send(n * count);
    for (int s = 0; s < n; ++s)
      for (size_t i = 0; i < count; ++i) send[s * count + i] = val<T>(me, s, i);
    Dev<T> ds(send), dr(std::vector<T>(n * count));
    c.all_to_all(ds.p, dr.p, count, t);
    c.all_to_all(ds.p, ds.p, count, t);
    auto r = dr.get(), rin = ds.get();
    for (int s = 0; s < n; ++s)
      for (size_t i = 0; i < count; ++i) {
        EXPECT_EQ(r[s * count + i], val<T>(s, me, i)) << "all_to_all " << s << "," << i;
        EXPECT_EQ(rin[s * count + i], val<T>(s, me, i)) << "all_to_all in place " << s << "," << i;
      }
  }
  for (int root : {n - 1, 0}) {  // broadcast
    std::vector<T> buf(count);
    for (size_t i = 0; i < count; ++i) buf[i] = val<T>(me, 5, i);
    Dev<T> db(buf);
    c.broadcast(db.p, count, t, root);
    auto r = db.get();
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(r[i], val<T>(root, 5, i)) << "broadcast from " << root;
  }
}

TEST_F(Nccl, EveryCollectiveEveryDtype) {
  EXPECT_EQ(comm->backend(), "nccl");
  EXPECT_EQ(comm->rank(), g_mpi->rank());
  EXPECT_EQ(comm->size(), g_mpi->size());
  for (size_t count : {size_t{1}, size_t{1000}, size_t{(1 << 20) + 3}}) {
    check_collectives<float>(*comm, count);
    check_collectives<double>(*comm, count);
    check_collectives<int64_t>(*comm, count);
    check_collectives<uint8_t>(*comm, count);
  }
}

TEST_F(Nccl, InPlaceGatherAndScatter) {
  const int n = comm->size(), me = comm->rank();
  const size_t count = 513;
  std::vector<float> ag(n * count, -1.0f);
  for (size_t i = 0; i < count; ++i) ag[me * count + i] = val<float>(me, 0, i);
  Dev<float> d(ag);
  comm->all_gather(d.p + me * count, d.p, count, DType::F32);
  auto r = d.get();
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < count; ++i) EXPECT_EQ(r[b * count + i], val<float>(b, 0, i));
  std::vector<double> rs(n * count);
  for (int b = 0; b < n; ++b)
    for (size_t i = 0; i < count; ++i) rs[b * count + i] = val<double>(me, b, i);
  Dev<double> e(rs);
  comm->reduce_scatter(e.p, e.p + me * count, count, DType::F64, ReduceOp::sum);
  auto q = e.get();
  for (size_t i = 0; i < count; ++i) EXPECT_EQ(q[me * count + i], reduce_val<double>(n, me, i, ReduceOp::sum));
}

// Ordering: the buffer is filled on a user stream set as the compute stream; the collective must see it.
TEST_F(Nccl, WaitsForTheComputeStream) {
  const int n = comm->size();
  const size_t count = size_t{1} << 22;
  cudaStream_t s = nullptr;
  CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::vector<float> ones(count, 1.0f);
  Dev<float> d(std::vector<float>(count, 0.0f));
  float* pinned = nullptr;
  CUDA_OK(cudaMallocHost(&pinned, count * sizeof(float)));
  std::copy(ones.begin(), ones.end(), pinned);
  xv::par::nccl_set_compute_stream(*comm, s);
  CUDA_OK(cudaMemcpyAsync(d.p, pinned, count * sizeof(float), cudaMemcpyHostToDevice, s));
  comm->all_reduce(d.p, count, DType::F32);  // no host sync between the copy and the collective
  xv::par::nccl_set_compute_stream(*comm, nullptr);
  auto r = d.get();
  EXPECT_EQ(r[0], static_cast<float>(n));
  EXPECT_EQ(r[count - 1], static_cast<float>(n));
  EXPECT_NE(xv::par::nccl_stream(*comm), nullptr);
  cudaFreeHost(pinned);
  cudaStreamDestroy(s);
}

TEST_F(Nccl, OverlappingRequestsAndBarrier) {
  const int n = comm->size(), me = comm->rank();
  std::vector<std::unique_ptr<Dev<int64_t>>> bufs;
  std::vector<xv::par::RequestPtr> reqs;
  for (int k = 0; k < 20; ++k) {
    bufs.push_back(std::make_unique<Dev<int64_t>>(std::vector<int64_t>(256, int64_t{k} * (me + 1))));
    reqs.push_back(comm->iall_reduce(bufs.back()->p, 256, DType::I64, ReduceOp::sum));
  }
  for (auto it = reqs.rbegin(); it != reqs.rend(); ++it) (*it)->wait();
  const int64_t ranks_sum = int64_t{n} * (n + 1) / 2;
  for (int k = 0; k < 20; ++k) EXPECT_EQ(bufs[k]->get()[255], k * ranks_sum);
  comm->barrier();
}

TEST_F(Nccl, StatsFormulas) {
  const uint64_t n = static_cast<uint64_t>(comm->size());
  const int me = comm->rank();
  comm->reset_stats();
  const size_t count = 1001;
  Dev<double> a(std::vector<double>(n * count, 1.0)), b(std::vector<double>(n * count, 0.0));
  comm->all_gather(a.p, b.p, count, DType::F64);
  comm->reduce_scatter(a.p, b.p, count, DType::F64);
  comm->all_reduce(a.p, count, DType::F64);
  comm->all_to_all(a.p, b.p, count, DType::F64);
  comm->broadcast(a.p, count, DType::F64, static_cast<int>(n) - 1);
  comm->barrier();
  const auto& s = comm->stats();
  const uint64_t bytes = count * 8;
  EXPECT_EQ(s.all_gather_bytes, (n - 1) * bytes);
  EXPECT_EQ(s.reduce_scatter_bytes, (n - 1) * bytes);
  EXPECT_EQ(s.all_reduce_bytes, 2 * (n - 1) * bytes / n);
  EXPECT_EQ(s.all_to_all_bytes, (n - 1) * bytes);
  EXPECT_EQ(s.broadcast_bytes, me == static_cast<int>(n) - 1 ? 0u : bytes);
  EXPECT_EQ(s.calls, 6u);
  EXPECT_GT(s.wait_s, 0.0);
}

TEST_F(Nccl, SplitByParity) {
  const int n = comm->size(), me = comm->rank();
  auto sub = comm->split(me % 2, me);
  int expect_size = 0;
  for (int r = 0; r < n; ++r) expect_size += r % 2 == me % 2;
  ASSERT_EQ(sub->size(), expect_size);
  EXPECT_EQ(sub->rank(), me / 2);
  check_collectives<float>(*sub, 1000);
}

TEST_F(Nccl, HostPointersAreRefused) {
  std::vector<float> host(16 * comm->size());
  try {
    comm->all_reduce(host.data(), 16, DType::F32);
    FAIL() << "expected xv::Error";
  } catch (const xv::Error& e) {
    EXPECT_NE(std::string(e.what()).find("not device memory"), std::string::npos) << e.what();
  }
  comm->barrier();  // still usable
}

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
  const int rank = launcher_rank();
  auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
  if (rank != 0) {
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  int rc = RUN_ALL_TESTS();
  g_nccl.reset();
  if (g_mpi) {  // MPI was started: fail on every rank when any rank failed
    int64_t any = rc;
    g_mpi->all_reduce(&any, 1, DType::I64, ReduceOp::max);
    g_mpi.reset();
    xv::par::mpi_finalize();
    return static_cast<int>(any);
  }
  return rc;
}
