// The NCCL communicator (parallel/comm_nccl.h): every collective is enqueued on the communicator's stream
// behind an event of the compute stream, and followed by an event its Request waits on.
#include "parallel/comm_nccl.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "core/error.h"
#include "kernels/cuda/cuda_check.h"

namespace xv::par {

namespace {

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::I64: return ncclInt64;
    case DType::I32: return ncclInt32;
    case DType::U8: return ncclUint8;
    case DType::U64: return ncclUint64;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    default: break;
  }
  fail("NCCL: no NCCL type for {}", dtype_name(t));
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::max ? ncclMax : ncclSum; }

// What a request needs of its communicator after the call: the NCCL handle (asynchronous errors), the stats
// (wait time) and the names for messages. The communicator clears `comm` and `stats` when it goes.
struct Shared {
  std::mutex mu;
  ncclComm_t comm = nullptr;
  CommStats* stats = nullptr;
  int rank = 0, size = 0;
};

// ncclCheck of docs/design.md section 9, throwing: the call, where, and the library's message (CUDA calls go
// through the project's one CUDA policy, kernels/cuda/cuda_check.h).
#define XV_NCCL_CHECK(call, where)                                                                            \
  do {                                                                                                        \
    ncclResult_t r_ = (call);                                                                                 \
    if (r_ != ncclSuccess && r_ != ncclInProgress)                                                            \
      ::xv::fail("NCCL {} failed ({}) at {}:{}: {}", #call, where, __FILE__, __LINE__, ncclGetErrorString(r_)); \
  } while (0)
class NcclRequest final : public Request {
 public:
  NcclRequest(cudaEvent_t done, std::shared_ptr<Shared> shared, std::string what)
      : done_(done), shared_(std::move(shared)), what_(std::move(what)) {}
  ~NcclRequest() override { cudaEventDestroy(done_); }  // released once the event completes

  // Polls rather than cudaEventSynchronize: a peer that failed leaves the collective hanging forever, and
  // only ncclCommGetAsyncError says so.
  void wait() override {
    if (waited_) return;
    waited_ = true;
    auto t0 = std::chrono::steady_clock::now();
    std::string error;
    for (;;) {
      cudaError_t e = cudaEventQuery(done_);
      if (e == cudaSuccess) break;
      if (e != cudaErrorNotReady) {
        error = fmt::format("CUDA cudaEventQuery: {} ({})", cudaGetErrorString(e), cudaGetErrorName(e));
        break;
      }
      ncclResult_t async = ncclSuccess;
      {
        std::lock_guard<std::mutex> lk(shared_->mu);
        if (shared_->comm) ncclCommGetAsyncError(shared_->comm, &async);
      }
      if (async != ncclSuccess && async != ncclInProgress) {
        error = fmt::format("NCCL asynchronous error: {}", ncclGetErrorString(async));
        break;
      }
      std::this_thread::yield();
    }
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::lock_guard<std::mutex> lk(shared_->mu);
    if (shared_->stats) shared_->stats->wait_s += dt;
    if (!error.empty())
      fail("NCCL {} failed on rank {} of {}: {}", what_, shared_->rank, shared_->size, error);
  }

 private:
  cudaEvent_t done_;
  std::shared_ptr<Shared> shared_;
  std::string what_;
  bool waited_ = false;
};

class NcclCommunicator final : public Communicator {
 public:
  // Takes `comm` (destroyed by the destructor); `device` is the GPU it was made on.
  NcclCommunicator(ncclComm_t comm, int device) : comm_(comm), device_(device) {
    try {
      XV_NCCL_CHECK(ncclCommUserRank(comm_, &rank_), "communicator set-up");
      XV_NCCL_CHECK(ncclCommCount(comm_, &size_), "communicator set-up");
      XV_CUDA_CHECK_AT(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "communicator set-up");
      XV_CUDA_CHECK_AT(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "communicator set-up");
      XV_CUDA_CHECK_AT(cudaMalloc(&barrier_buf_, sizeof(int32_t)), "communicator set-up");
      XV_CUDA_CHECK_AT(cudaMemset(barrier_buf_, 0, sizeof(int32_t)), "communicator set-up");
    } catch (...) {
      release();
      throw;
    }
    shared_->comm = comm_;
    shared_->stats = &stats_;
    shared_->rank = rank_;
    shared_->size = size_;
  }
  ~NcclCommunicator() override { release(); }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  DeviceKind buffers() const override { return DeviceKind::cuda; }

  // recv (size * count) <- send (count) of every rank
  RequestPtr iall_gather(const void* send, void* recv, size_t count, DType t) override {
    check_collective_args(*this, Collective::all_gather, send, recv, count, t);
    check_device(send, count, "all_gather send");
    check_device(recv, count, "all_gather recv");
    count_call(Collective::all_gather, count, t);
    begin();
    XV_NCCL_CHECK(ncclAllGather(send, recv, count, nccl_type(t), comm_, stream_), where());
    return end(Collective::all_gather, count, t);
  }

  // recv (count) <- block `rank` of the reduction of send (size * count)
  RequestPtr ireduce_scatter(const void* send, void* recv, size_t count, DType t, ReduceOp op) override {
    check_collective_args(*this, Collective::reduce_scatter, send, recv, count, t);
    check_device(send, count, "reduce_scatter send");
    check_device(recv, count, "reduce_scatter recv");
    count_call(Collective::reduce_scatter, count, t);
    begin();
    XV_NCCL_CHECK(ncclReduceScatter(send, recv, count, nccl_type(t), nccl_op(op), comm_, stream_), where());
    return end(Collective::reduce_scatter, count, t);
  }

  // buf (count) <- reduction over the ranks
  RequestPtr iall_reduce(void* buf, size_t count, DType t, ReduceOp op) override {
    check_collective_args(*this, Collective::all_reduce, buf, buf, count, t);
    check_device(buf, count, "all_reduce buf");
    count_call(Collective::all_reduce, count, t);
    begin();
    XV_NCCL_CHECK(ncclAllReduce(buf, buf, count, nccl_type(t), nccl_op(op), comm_, stream_), where());
    return end(Collective::all_reduce, count, t);
  }

  // block s of send (size * count) -> block `rank` of rank s's recv (size * count): one send and one
  // receive per peer in a group (NCCL has no all-to-all call). In place goes through a stream-ordered copy.
  RequestPtr iall_to_all(const void* send, void* recv, size_t count, DType t) override {
    check_collective_args(*this, Collective::all_to_all, send, recv, count, t);
    check_device(send, count, "all_to_all send");
    check_device(recv, count, "all_to_all recv");
    count_call(Collective::all_to_all, count, t);
    begin();
    const size_t block = count * dtype_size(t);
    void* tmp = nullptr;
    if (send == recv && count > 0) {
      XV_CUDA_CHECK_AT(cudaMallocAsync(&tmp, size_ * block, stream_), where());
      XV_CUDA_CHECK_AT(cudaMemcpyAsync(tmp, send, size_ * block, cudaMemcpyDeviceToDevice, stream_), where());
      send = tmp;
    }
    XV_NCCL_CHECK(ncclGroupStart(), where());
    for (int peer = 0; peer < size_; ++peer) {
      const auto* s = static_cast<const char*>(send) + peer * block;
      auto* d = static_cast<char*>(recv) + peer * block;
      XV_NCCL_CHECK(ncclSend(s, count, nccl_type(t), peer, comm_, stream_), where());
      XV_NCCL_CHECK(ncclRecv(d, count, nccl_type(t), peer, comm_, stream_), where());
    }
    XV_NCCL_CHECK(ncclGroupEnd(), where());
    if (tmp) XV_CUDA_CHECK_AT(cudaFreeAsync(tmp, stream_), where());
    return end(Collective::all_to_all, count, t);
  }

  // buf (count) <- root's buf
  RequestPtr ibroadcast(void* buf, size_t count, DType t, int root) override {
    check_collective_args(*this, Collective::broadcast, buf, buf, count, t, root);
    check_device(buf, count, "broadcast buf");
    count_call(Collective::broadcast, count, t, root);
    begin();
    XV_NCCL_CHECK(ncclBroadcast(buf, buf, count, nccl_type(t), root, comm_, stream_), where());
    return end(Collective::broadcast, count, t);
  }

  // A one-int all-reduce, waited on: every rank has reached it and every earlier collective is done.
  void barrier() override {
    stats_.calls++;
    begin();
    XV_NCCL_CHECK(ncclAllReduce(barrier_buf_, barrier_buf_, 1, ncclInt32, ncclSum, comm_, stream_), where());
    record("barrier")->wait();
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    XV_CHECK(color >= 0, "split (nccl): color must be >= 0, got {} on rank {}", color, rank_);
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 18, 0)
    ncclComm_t out = nullptr;
    XV_NCCL_CHECK(ncclCommSplit(comm_, color, key, &out, nullptr), where());
    return std::make_unique<NcclCommunicator>(out, device_);
#else
    fail("split (nccl): ncclCommSplit needs NCCL 2.18 or later; this build has {}.{}", NCCL_MAJOR, NCCL_MINOR);
#endif
  }

  void set_compute_stream(cudaStream_t s) { compute_ = s; }
  cudaStream_t stream() const { return stream_; }

 private:
  void release() {
    {
      std::lock_guard<std::mutex> lk(shared_->mu);
      shared_->comm = nullptr;
      shared_->stats = nullptr;
    }
    cudaSetDevice(device_);
    if (stream_) cudaStreamSynchronize(stream_);  // the queued collectives finish first
    if (comm_) ncclCommDestroy(comm_);
    if (barrier_buf_) cudaFree(barrier_buf_);
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  std::string where() const { return fmt::format("rank {} of {}, device {}", rank_, size_, device_); }

  // NCCL takes any pointer and fails later (or corrupts memory) on a host one: say so up front.
  void check_device(const void* p, size_t count, const char* what) const {
    if (count == 0) return;
    cudaPointerAttributes a{};
    cudaError_t e = cudaPointerGetAttributes(&a, p);
    if (e != cudaSuccess) cudaGetLastError();  // clear the sticky-free error of an unknown pointer
    XV_CHECK(e == cudaSuccess && (a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged),
             "NCCL {} on rank {}: {} is not device memory (cudaMalloc it)", what, rank_, p);
  }

  // The stream waits for what the compute stream has queued so far.
  void begin() {
    XV_CUDA_CHECK_AT(cudaEventRecord(ready_, compute_), where());
    XV_CUDA_CHECK_AT(cudaStreamWaitEvent(stream_, ready_, 0), where());
  }

  RequestPtr end(Collective c, size_t count, DType t) {
    return record(fmt::format("{} of {} {} per rank", collective_name(c), count, dtype_name(t)));
  }
  RequestPtr record(std::string what) {
    cudaEvent_t done = nullptr;
    XV_CUDA_CHECK_AT(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), where());
    cudaError_t e = cudaEventRecord(done, stream_);
    if (e != cudaSuccess) {
      cudaEventDestroy(done);
      XV_CUDA_CHECK_AT(e, where());
    }
    return std::make_unique<NcclRequest>(done, shared_, std::move(what));
  }

  ncclComm_t comm_;
  int device_;
  int rank_ = 0, size_ = 1;
  cudaStream_t stream_ = nullptr;   // the collectives
  cudaStream_t compute_ = nullptr;  // what they wait for; nullptr: the default stream
  cudaEvent_t ready_ = nullptr;     // recorded on compute_ before each collective
  int32_t* barrier_buf_ = nullptr;  // (1) on the device
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
};

NcclCommunicator& as_nccl(Communicator& comm, const char* fn) {
  auto* n = dynamic_cast<NcclCommunicator*>(&comm);
  XV_CHECK(n != nullptr, "{}: the communicator is \"{}\", not one from make_nccl_communicator", fn, comm.backend());
  return *n;
}

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(Communicator& mpi, int device) {
  const std::string where = fmt::format("rank {} of {}, device {}", mpi.rank(), mpi.size(), device);
  XV_CUDA_CHECK_AT(cudaSetDevice(device), where);
  // Rank 0 makes the id; a failure there is broadcast too, so that every rank throws instead of hanging.
  struct {
    int32_t ok;
    ncclUniqueId id;
  } hello{};
  std::string id_error;
  if (mpi.rank() == 0) {
    ncclResult_t r = ncclGetUniqueId(&hello.id);
    hello.ok = r == ncclSuccess;
    if (!hello.ok) id_error = ncclGetErrorString(r);
  }
  mpi.broadcast(&hello, sizeof(hello), DType::U8, 0);
  XV_CHECK(hello.ok, "NCCL ncclGetUniqueId failed on rank 0{}{}", id_error.empty() ? "" : ": ", id_error);
  ncclComm_t comm = nullptr;
  XV_NCCL_CHECK(ncclCommInitRank(&comm, mpi.size(), hello.id, mpi.rank()), where);
  return std::make_unique<NcclCommunicator>(comm, device);
}

void nccl_set_compute_stream(Communicator& comm, cudaStream_t compute) {
  as_nccl(comm, "nccl_set_compute_stream").set_compute_stream(compute);
}

cudaStream_t nccl_stream(Communicator& comm) { return as_nccl(comm, "nccl_stream").stream(); }

}  // namespace xv::par
