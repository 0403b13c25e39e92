// MPI start-up and the MPI communicator (parallel/comm_mpi.h): one progress thread per communicator runs the
// queued collectives with MPI's blocking calls, so a non-blocking collective advances while the caller
// computes (MPI's own MPI_I* collectives only advance inside MPI calls, i.e. not during a long GEMM).
#define OMPI_SKIP_MPICXX 1  // the C API only: no C++ bindings pulled in (nor libmpi_cxx needed)
#define MPICH_SKIP_MPICXX 1
#include "parallel/comm_mpi.h"

#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "core/error.h"

namespace xv::par {

namespace {

// ---------------------------------------------------------------------------------------------------------
// Process-wide state.

struct MpiGlobal {
  std::mutex mu;
  int provided = -1;                     // thread level MPI provided; -1 before mpi_init
  int world_rank = 0, world_size = 0;    // this process in MPI_COMM_WORLD (set by mpi_init)
  std::atomic<int> live_comms{0};        // MpiCommunicators alive (mpi_finalize refuses while > 0)
  std::atomic<size_t> max_count{INT_MAX};
  std::atomic<double> collective_timeout_s{0};  // 0: wait for ever
};
MpiGlobal& global() {
  static MpiGlobal g;
  return g;
}

std::string mpi_error_text(int rc) {
  char buf[MPI_MAX_ERROR_STRING + 1] = {};
  int len = 0;
  if (MPI_Error_string(rc, buf, &len) != MPI_SUCCESS) return fmt::format("MPI error code {}", rc);
  return std::string(buf, static_cast<size_t>(std::max(len, 0)));
}

// ---------------------------------------------------------------------------------------------------------
// The progress thread: runs queued tasks in order. A task is a sequence of MPI calls that returns the first
// failing call (name and error code) or success.

struct MpiResult {
  int rc = MPI_SUCCESS;
  const char* call = "";
};

// MPI_TRY(MPI_Allgather, (args...)): return the failure from the enclosing task.
#define MPI_TRY(fn, args)                                   \
  do {                                                      \
    int rc_ = fn args;                                      \
    if (rc_ != MPI_SUCCESS) return MpiResult{rc_, #fn};     \
  } while (0)

struct Task {
  std::function<MpiResult()> run;
  std::string what;  // "all_gather of 1024 f32 per rank", for the error message
  int rank = 0, size = 0;

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;  // empty on success

  void finish(std::string err) {
    {
      std::lock_guard<std::mutex> lk(mu);
      error = std::move(err);
      done = true;
    }
    cv.notify_all();
  }
  // Waits until the task ran. Past the collective timeout (mpi_set_collective_timeout) a peer is taken to be
  // hung, stopped or lost: this rank says so and ends the job. It cannot throw instead: the progress thread is
  // inside MPI with the caller's buffers, and unwinding would wait on it for ever.
  void wait_done() {
    const double limit = global().collective_timeout_s.load();
    std::unique_lock<std::mutex> lk(mu);
    if (limit <= 0) {
      cv.wait(lk, [&] { return done; });
      return;
    }
    if (cv.wait_for(lk, std::chrono::duration<double>(limit), [&] { return done; })) return;
    lk.unlock();
    std::fprintf(stderr,
                 "xvlm2vec: rank %d of %d: MPI %s has not completed after %g s (parallel.collective_timeout_s): "
                 "another rank is hung, stopped or lost, or the ranks called different collectives; stopping every "
                 "rank\n",
                 global().world_rank, global().world_size, what.c_str(), limit);
    mpi_abort(1);
  }
  std::string message() const {
    return fmt::format("MPI {} failed on rank {} of {}: {}", what, rank, size, error);
  }
};

class ProgressThread {
 public:
  ProgressThread() : thread_([this] { loop(); }) {}
  ~ProgressThread() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();  // the loop drains the queue before it returns
  }
  ProgressThread(const ProgressThread&) = delete;
  ProgressThread& operator=(const ProgressThread&) = delete;

  void submit(std::shared_ptr<Task> t) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      queue_.push_back(std::move(t));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      std::shared_ptr<Task> t;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stop_ and nothing left
        t = std::move(queue_.front());
        queue_.pop_front();
      }
      std::string err;
      try {
        MpiResult r = t->run();
        if (r.rc != MPI_SUCCESS) err = fmt::format("{}: {}", r.call, mpi_error_text(r.rc));
      } catch (const std::exception& e) {
        err = e.what();
      }
      t->finish(std::move(err));
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Task>> queue_;
  bool stop_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

// With MPI_THREAD_MULTIPLE every communicator gets its own thread; with MPI_THREAD_SERIALIZED they share this
// one (then collectives on different communicators also run in call order, one at a time).
std::shared_ptr<ProgressThread>& serialized_thread() {
  static std::shared_ptr<ProgressThread> t;
  return t;
}

std::shared_ptr<ProgressThread> new_progress_thread() {
  MpiGlobal& g = global();
  std::lock_guard<std::mutex> lk(g.mu);
  if (g.provided >= MPI_THREAD_MULTIPLE) return std::make_shared<ProgressThread>();
  auto& t = serialized_thread();
  if (!t) t = std::make_shared<ProgressThread>();
  return t;
}

// Runs fn on the progress thread and waits; throws xv::Error when it failed.
void run_sync(ProgressThread& pt, std::string what, std::function<MpiResult()> fn) {
  auto t = std::make_shared<Task>();
  t->run = std::move(fn);
  t->what = std::move(what);
  pt.submit(t);
  t->wait_done();
  if (!t->error.empty()) fail("MPI {} failed: {}", t->what, t->error);
}

// ---------------------------------------------------------------------------------------------------------
// Types, ops, pieces.

// Element types for moving data; bf16/f16 move as 16-bit words (MPI has no reduction for them).
MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I64: return MPI_INT64_T;
    case DType::I32: return MPI_INT32_T;
    case DType::U8: return MPI_UINT8_T;
    case DType::U64: return MPI_UINT64_T;
    case DType::BF16:
    case DType::F16: return MPI_UINT16_T;
    default: break;
  }
  fail("MPI: no MPI type for {}", dtype_name(t));
}

// Reductions: F32, F64, I64, I32 and U8 (bf16/f16 sums need the device path, NCCL).
void check_reducible(DType t, const char* what) {
  XV_CHECK(t == DType::F32 || t == DType::F64 || t == DType::I64 || t == DType::I32 || t == DType::U8,
           "MPI {}: cannot reduce {} (F32, F64, I64, I32, U8; BF16 and F16 reduce on device buffers with NCCL)", what,
           dtype_name(t));
}

MPI_Op mpi_op(ReduceOp op) { return op == ReduceOp::max ? MPI_MAX : MPI_SUM; }

// A derived datatype freed when it goes out of scope.
struct TypeGuard {
  MPI_Datatype t = MPI_DATATYPE_NULL;
  ~TypeGuard() {
    if (t != MPI_DATATYPE_NULL) MPI_Type_free(&t);
  }
};

// `len` elements of `base` with extent `stride_bytes`: one piece of every rank's block, the blocks `stride_bytes`
// apart (the split path of all_gather and all_to_all).
MpiResult strided_piece_type(MPI_Datatype base, size_t len, size_t stride_bytes, TypeGuard& out) {
  TypeGuard contig;
  MPI_TRY(MPI_Type_contiguous, (static_cast<int>(len), base, &contig.t));
  MPI_TRY(MPI_Type_create_resized, (contig.t, 0, static_cast<MPI_Aint>(stride_bytes), &out.t));
  MPI_TRY(MPI_Type_commit, (&out.t));
  return {};
}

char* at(const void* p, size_t bytes) { return static_cast<char*>(const_cast<void*>(p)) + bytes; }

// p == base + offset, compared as addresses (base may be null when the count is 0).
bool same_address(const void* p, const void* base, size_t offset) {
  return reinterpret_cast<uintptr_t>(p) == reinterpret_cast<uintptr_t>(base) + offset;
}

// ---------------------------------------------------------------------------------------------------------
// The requests and the communicator.

// Where a request adds its wait time; the communicator clears `stats` when it goes (a request waited later
// adds nothing).
struct StatsLink {
  std::mutex mu;
  CommStats* stats = nullptr;
};

class MpiRequest final : public Request {
 public:
  MpiRequest(std::shared_ptr<Task> task, std::shared_ptr<StatsLink> link)
      : task_(std::move(task)), link_(std::move(link)) {}
  ~MpiRequest() override {
    // Dropped without wait(): the buffers still belong to the collective, so wait here rather than let the
    // caller free them under it. A failure can no longer be thrown; say it.
    if (waited_) return;
    task_->wait_done();
    if (!task_->error.empty()) std::fprintf(stderr, "xv: %s (request dropped unwaited)\n", task_->message().c_str());
  }

  void wait() override {
    if (waited_) return;
    auto t0 = std::chrono::steady_clock::now();
    task_->wait_done();
    double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    waited_ = true;
    {
      std::lock_guard<std::mutex> lk(link_->mu);
      if (link_->stats) link_->stats->wait_s += dt;
    }
    if (!task_->error.empty()) throw Error(task_->message());
  }

 private:
  std::shared_ptr<Task> task_;
  std::shared_ptr<StatsLink> link_;
  bool waited_ = false;
};

class MpiCommunicator final : public Communicator {
 public:
  // Takes `comm` (freed by the destructor); `pt` runs its MPI calls.
  MpiCommunicator(MPI_Comm comm, std::shared_ptr<ProgressThread> pt) : comm_(comm), pt_(std::move(pt)) {
    link_->stats = &stats_;
    global().live_comms++;
    try {
      run_sync(*pt_, "communicator set-up", [this] {
        MPI_TRY(MPI_Comm_set_errhandler, (comm_, MPI_ERRORS_RETURN));
        MPI_TRY(MPI_Comm_rank, (comm_, &rank_));
        MPI_TRY(MPI_Comm_size, (comm_, &size_));
        return MpiResult{};
      });
    } catch (...) {
      release();
      throw;
    }
  }
  ~MpiCommunicator() override { release(); }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

  // recv (size * count) <- send (count) of every rank
  RequestPtr iall_gather(const void* send, void* recv, size_t count, DType t) override {
    check_collective_args(*this, Collective::all_gather, send, recv, count, t);
    count_call(Collective::all_gather, count, t);
    const size_t es = dtype_size(t), maxc = mpi_max_count();
    const bool in_place = same_address(send, recv, rank_ * count * es);
    MPI_Comm c = comm_;
    return submit(describe(Collective::all_gather, count, t), [=]() -> MpiResult {
      const MPI_Datatype mt = mpi_type(t);
      if (count <= maxc) {
        const int n = static_cast<int>(count);
        MPI_TRY(MPI_Allgather, (in_place ? MPI_IN_PLACE : send, n, mt, recv, n, mt, c));
        return {};
      }
      for (size_t off = 0; off < count; off += maxc) {
        const size_t len = std::min(maxc, count - off);
        TypeGuard piece;  // elements [off, off + len) of every rank's block of recv
        if (MpiResult r = strided_piece_type(mt, len, count * es, piece); r.rc != MPI_SUCCESS) return r;
        MPI_TRY(MPI_Allgather, (in_place ? MPI_IN_PLACE : at(send, off * es), static_cast<int>(len), mt,
                                at(recv, off * es), 1, piece.t, c));
      }
      return {};
    });
  }

  // recv (count) <- block `rank` of the reduction of send (size * count) over the ranks
  RequestPtr ireduce_scatter(const void* send, void* recv, size_t count, DType t, ReduceOp op) override {
    check_collective_args(*this, Collective::reduce_scatter, send, recv, count, t);
    check_reducible(t, "reduce_scatter");
    count_call(Collective::reduce_scatter, count, t);
    const size_t es = dtype_size(t), maxc = mpi_max_count();
    const bool in_place = same_address(recv, send, rank_ * count * es);
    MPI_Comm c = comm_;
    const int me = rank_, n = size_;
    return submit(describe(Collective::reduce_scatter, count, t), [=]() -> MpiResult {
      const MPI_Datatype mt = mpi_type(t);
      const MPI_Op mo = mpi_op(op);
      if (count <= maxc) {
        const int k = static_cast<int>(count);
        if (!in_place) {
          MPI_TRY(MPI_Reduce_scatter_block, (send, recv, k, mt, mo, c));
          return {};
        }
        // MPI's in-place form reads the whole buffer and leaves the result in block 0; move it to block `rank`.
        MPI_TRY(MPI_Reduce_scatter_block, (MPI_IN_PLACE, at(send, 0), k, mt, mo, c));
        if (me != 0 && count > 0) std::memmove(recv, send, count * es);
        return {};
      }
      // Pieces: no reduction over a derived datatype (MPI's predefined ops take predefined types only), so
      // one MPI_Reduce per piece and destination rank.
      for (size_t off = 0; off < count; off += maxc) {
        const int len = static_cast<int>(std::min(maxc, count - off));
        for (int root = 0; root < n; ++root) {
          char* src = at(send, (root * count + off) * es);
          if (root != me) {
            MPI_TRY(MPI_Reduce, (src, nullptr, len, mt, mo, root, c));
          } else {
            char* dst = at(recv, off * es);  // == src when in place
            MPI_TRY(MPI_Reduce, (in_place ? MPI_IN_PLACE : src, dst, len, mt, mo, root, c));
          }
        }
      }
      return {};
    });
  }

  // buf (count) <- reduction of buf over the ranks
  RequestPtr iall_reduce(void* buf, size_t count, DType t, ReduceOp op) override {
    check_collective_args(*this, Collective::all_reduce, buf, buf, count, t);
    check_reducible(t, "all_reduce");
    count_call(Collective::all_reduce, count, t);
    const size_t es = dtype_size(t), maxc = mpi_max_count();
    MPI_Comm c = comm_;
    return submit(describe(Collective::all_reduce, count, t), [=]() -> MpiResult {
      size_t off = 0;
      do {  // one call also when count == 0: every rank takes part
        const size_t len = std::min(maxc, count - off);
        MPI_TRY(MPI_Allreduce,
                (MPI_IN_PLACE, at(buf, off * es), static_cast<int>(len), mpi_type(t), mpi_op(op), c));
        off += len;
      } while (off < count);
      return {};
    });
  }

  // block s of send (size * count) -> block `rank` of rank s's recv (size * count)
  RequestPtr iall_to_all(const void* send, void* recv, size_t count, DType t) override {
    check_collective_args(*this, Collective::all_to_all, send, recv, count, t);
    count_call(Collective::all_to_all, count, t);
    const size_t es = dtype_size(t), maxc = mpi_max_count();
    const bool in_place = send == recv;
    MPI_Comm c = comm_;
    return submit(describe(Collective::all_to_all, count, t), [=]() -> MpiResult {
      const MPI_Datatype mt = mpi_type(t);
      if (count <= maxc) {
        const int n = static_cast<int>(count);
        MPI_TRY(MPI_Alltoall, (in_place ? MPI_IN_PLACE : send, n, mt, recv, n, mt, c));
        return {};
      }
      for (size_t off = 0; off < count; off += maxc) {
        const size_t len = std::min(maxc, count - off);
        TypeGuard piece;  // elements [off, off + len) of every block
        if (MpiResult r = strided_piece_type(mt, len, count * es, piece); r.rc != MPI_SUCCESS) return r;
        MPI_TRY(MPI_Alltoall, (in_place ? MPI_IN_PLACE : at(send, off * es), 1, piece.t, at(recv, off * es), 1,
                               piece.t, c));
      }
      return {};
    });
  }

  // buf (count) <- root's buf
  RequestPtr ibroadcast(void* buf, size_t count, DType t, int root) override {
    check_collective_args(*this, Collective::broadcast, buf, buf, count, t, root);
    count_call(Collective::broadcast, count, t, root);
    const size_t es = dtype_size(t), maxc = mpi_max_count();
    MPI_Comm c = comm_;
    std::string what = describe(Collective::broadcast, count, t) + fmt::format(" from rank {}", root);
    return submit(std::move(what), [=]() -> MpiResult {
      size_t off = 0;
      do {
        const size_t len = std::min(maxc, count - off);
        MPI_TRY(MPI_Bcast, (at(buf, off * es), static_cast<int>(len), mpi_type(t), root, c));
        off += len;
      } while (off < count);
      return {};
    });
  }

  void barrier() override {
    stats_.calls++;
    MPI_Comm c = comm_;
    submit("barrier", [=]() -> MpiResult {
      MPI_TRY(MPI_Barrier, (c));
      return {};
    })->wait();
  }

  std::unique_ptr<Communicator> split(int color, int key) override {
    XV_CHECK(color >= 0, "split (mpi): color must be >= 0, got {} on rank {}", color, rank_);
    MPI_Comm out = MPI_COMM_NULL;
    MPI_Comm c = comm_;
    submit(fmt::format("split (color {}, key {})", color, key), [=, &out]() -> MpiResult {
      MPI_TRY(MPI_Comm_split, (c, color, key, &out));
      return {};
    })->wait();
    return std::make_unique<MpiCommunicator>(out, new_progress_thread());
  }

 private:
  std::string describe(Collective c, size_t count, DType t) const {
    return fmt::format("{} of {} {} per rank", collective_name(c), count, dtype_name(t));
  }

  RequestPtr submit(std::string what, std::function<MpiResult()> fn) {
    auto t = std::make_shared<Task>();
    t->run = std::move(fn);
    t->what = std::move(what);
    t->rank = rank_;
    t->size = size_;
    pt_->submit(t);
    return std::make_unique<MpiRequest>(std::move(t), link_);
  }

  // Drains the queue (the free goes behind every queued collective), frees the communicator, lets the
  // progress thread go (joined here when it is this communicator's own).
  void release() {
    {
      std::lock_guard<std::mutex> lk(link_->mu);
      link_->stats = nullptr;
    }
    if (comm_ != MPI_COMM_NULL) {
      MPI_Comm c = comm_;
      auto t = std::make_shared<Task>();
      t->run = [&c]() -> MpiResult {
        MPI_TRY(MPI_Comm_free, (&c));
        return {};
      };
      pt_->submit(t);
      t->wait_done();  // a failure to free is not worth terminating a destructor over
      comm_ = MPI_COMM_NULL;
    }
    pt_.reset();
    global().live_comms--;
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::shared_ptr<ProgressThread> pt_;
  std::shared_ptr<StatsLink> link_ = std::make_shared<StatsLink>();
};

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  return (end && *end == '\0' && x >= INT_MIN && x <= INT_MAX) ? static_cast<int>(x) : fallback;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Process start-up.

bool mpi_launched() {
  if (env_int("OMPI_COMM_WORLD_SIZE", 0) > 1) return true;
  if (env_int("PMI_SIZE", 0) > 1) return true;
  return env_int("SLURM_NTASKS", 0) > 1 && std::getenv("SLURM_PROCID") != nullptr;
}

void mpi_init() {
  MpiGlobal& g = global();
  std::lock_guard<std::mutex> lk(g.mu);
  int finalized = 0, initialized = 0;
  MPI_Finalized(&finalized);
  XV_CHECK(!finalized, "mpi_init: MPI was already finalized (it cannot be initialised twice)");
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
    XV_CHECK(rc == MPI_SUCCESS, "mpi_init: MPI_Init_thread failed: {}", mpi_error_text(rc));
  } else {
    MPI_Query_thread(&provided);
  }
  XV_CHECK(provided >= MPI_THREAD_SERIALIZED,
           "mpi_init: the MPI library provides thread level {} but the communicator's progress thread needs at "
           "least MPI_THREAD_SERIALIZED ({}); use an MPI built with thread support (Open MPI: the default since 3.0)",
           provided, MPI_THREAD_SERIALIZED);
  g.provided = provided;
  MPI_Comm_rank(MPI_COMM_WORLD, &g.world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g.world_size);
}

bool mpi_initialized() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized;
}

int mpi_thread_level() {
  if (!mpi_initialized()) return -1;
  int provided = MPI_THREAD_SINGLE;
  MPI_Query_thread(&provided);
  return provided;
}

void mpi_finalize() {
  if (!mpi_initialized()) return;
  MpiGlobal& g = global();
  XV_CHECK(g.live_comms.load() == 0,
           "mpi_finalize: {} MPI communicator(s) still alive; destroy them before finalizing MPI",
           g.live_comms.load());
  {
    std::lock_guard<std::mutex> lk(g.mu);
    serialized_thread().reset();
  }
  MPI_Finalize();
}

void mpi_abort(int code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (mpi_initialized()) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; without MPI there is only this process to end
}

std::unique_ptr<Communicator> make_mpi_communicator() {
  mpi_init();
  auto pt = new_progress_thread();
  MPI_Comm world = MPI_COMM_NULL;
  run_sync(*pt, "MPI_COMM_WORLD duplicate", [&world]() -> MpiResult {
    MPI_TRY(MPI_Comm_dup, (MPI_COMM_WORLD, &world));
    return {};
  });
  return std::make_unique<MpiCommunicator>(world, std::move(pt));
}

void mpi_set_max_count(size_t n) {
  XV_CHECK(n >= 1 && n <= static_cast<size_t>(INT_MAX), "mpi_set_max_count: {} is not in [1, INT_MAX]", n);
  global().max_count = n;
}

size_t mpi_max_count() { return global().max_count.load(); }

void mpi_set_collective_timeout(double seconds) {
  XV_CHECK(seconds >= 0 && std::isfinite(seconds), "collective timeout: {} s is not >= 0 (0: none)", seconds);
  global().collective_timeout_s = seconds;
}

double mpi_collective_timeout() { return global().collective_timeout_s.load(); }

}  // namespace xv::par
