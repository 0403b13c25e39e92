// The fuzz target's entry point (tests/corpus_reader_entry.h) on fixed inputs, so every CI run, and the
// sanitizer build in particular, exercises what tests/fuzz/fuzz_corpus_reader.cpp does: the seed corpora, then a
// few hundred deterministic mutations of them (bit flips, overwritten runs, truncations, 8-byte words set to
// extreme values, copied blocks). Each input must end in success or an xv::Error; each runs in a child
// process, so a crash or hang is reported with its input. One inside libhdf5 itself (not instrumented; some
// corrupt global heaps crash or hang it, docs/fuzzing.md) is printed with its stack and saved, and fails the
// test only with XV_REPLAY_STRICT set: it is not a bug of ours to fix here.
//
// The seeds are left in <build>/fuzz-seeds/corpus_reader/ as the fuzzer's starting corpus (docs/fuzzing.md);
// an input that fails is saved to <build>/fuzz-findings/ to replay with the fuzzer binary.
#include <dlfcn.h>
#include <execinfo.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <typeinfo>

#include "core/error.h"
#include "core/file_util.h"
#include "data/corpus.h"
#include "tests/corpus_reader_entry.h"
#include "tests/corpus_samples.h"

namespace {

namespace fs = std::filesystem;

struct Input {
  std::string name, bytes;
};

std::vector<Input> seeds() {
  const fs::path dir = fs::path(XV_BINARY_DIR) / "fuzz-seeds" / "corpus_reader";
  fs::create_directories(dir);
  std::vector<Input> out;
  auto add = [&](const std::string& name, xv_test::SampleOptions o) {
    xv::Corpus c = xv_test::sample_corpus(o);
    const std::string path = (dir / name).string();
    xv::write_corpus(path, c);
    out.push_back({name, xv::read_file(path)});
  };
  add("full.h5", {});
  add("text_only.h5", {.images = false, .tokens = false, .teacher = false});
  add("images_only.h5", {.images = true, .tokens = false, .teacher = false});
  add("tokens_teacher.h5", {.images = false, .tokens = true, .teacher = true});
  return out;
}

// One deterministic mutation of `s`; `how` says what was done, for the failure message.
std::string mutate(std::string s, std::mt19937_64& rng, std::string& how) {
  auto pick = [&](size_t n) { return n == 0 ? size_t(0) : size_t(rng() % n); };
  switch (rng() % 5) {
    case 0: {
      const size_t flips = 1 + pick(4);
      how = "bit flips at";
      for (size_t k = 0; k < flips; ++k) {
        const size_t at = pick(s.size());
        s[at] = char(uint8_t(s[at]) ^ uint8_t(1u << pick(8)));
        how += " " + std::to_string(at);
      }
      break;
    }
    case 1: {
      const size_t at = pick(s.size()), n = std::min(1 + pick(16), s.size() - at);
      for (size_t k = 0; k < n; ++k) s[at + k] = char(rng());
      how = "random run of " + std::to_string(n) + " at " + std::to_string(at);
      break;
    }
    case 2: {
      const size_t n = pick(s.size());
      s.resize(n);
      how = "truncated to " + std::to_string(n);
      break;
    }
    case 3: {
      // Offsets, lengths, addresses and sizes in HDF5 metadata are 8-byte words: push one to an extreme.
      const size_t at = pick(s.size() / 8) * 8;
      const uint64_t values[] = {0, ~uint64_t(0), uint64_t(1) << 62, uint64_t(1) << 31, 1, 0x7fffffff};
      const uint64_t v = values[pick(std::size(values))];
      for (size_t k = 0; k < 8 && at + k < s.size(); ++k) s[at + k] = char(v >> (8 * k));
      how = "word at " + std::to_string(at) + " set to " + std::to_string(v);
      break;
    }
    default: {
      const size_t from = pick(s.size()), to = pick(s.size());
      const size_t n = std::min({1 + pick(64), s.size() - from, s.size() - to});
      s.replace(to, n, s.substr(from, n));
      how = "copied " + std::to_string(n) + " bytes from " + std::to_string(from) + " to " + std::to_string(to);
      break;
    }
  }
  return s;
}

// Exit statuses of a replay child. Not 1: that is the sanitizers'.
constexpr int kOk = 0, kError = 10, kOtherException = 11, kErrorNamesNoFile = 12, kFaultInHdf5 = 20,
              kHangInHdf5 = 21;
constexpr unsigned kHangSeconds = 10;

// Whether the fault at hand happened while libhdf5 was running: the innermost frame that is neither ours (this
// handler), libc (the signal trampoline, a memcpy HDF5 called) nor a sanitizer runtime (its interceptors) is
// in libhdf5. Our code never runs below an HDF5 frame (HDF5 calls nothing of ours back), so a fault in our
// code never reads as one in HDF5. HDF5 is not instrumented and, up to its latest release, can crash or loop
// on some corrupt files; such a case is reported apart from our own bugs.
bool fault_inside_hdf5() {
  void* frames[64];
  const int n = backtrace(frames, 64);
  Dl_info self{};
  dladdr(reinterpret_cast<void*>(&fault_inside_hdf5), &self);
  const std::string_view self_name = self.dli_fname ? self.dli_fname : "";
  bool hdf5 = false;
  for (int i = 0; i < n; ++i) {
    Dl_info info{};
    const std::string_view lib = dladdr(frames[i], &info) && info.dli_fname ? info.dli_fname : "";
    if (lib == self_name || lib.find("libc.so") != lib.npos || lib.find("libasan") != lib.npos ||
        lib.find("libubsan") != lib.npos)
      continue;
    hdf5 = lib.find("libhdf5") != lib.npos;
    break;
  }
  backtrace_symbols_fd(frames, n, 2);
  return hdf5;
}

bool g_replay_child = false;

void on_fatal_signal(int sig) {
  if (fault_inside_hdf5()) ::_exit(sig == SIGALRM ? kHangInHdf5 : kFaultInHdf5);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

// AddressSanitizer calls this before reporting an error (in an ASan build): an overflow that its interceptors
// catch inside libhdf5 (a memcpy HDF5 does with sizes from a corrupt file) is classified like a crash there.
extern "C" void __asan_on_error() {
  if (g_replay_child && fault_inside_hdf5()) ::_exit(kFaultInHdf5);
}

namespace {

// Runs one input in a child process, so that a crash or a hang is reported with its input instead of ending
// the run. Returns "ok" or "error"; "hdf5" (a crash or hang inside libhdf5, printed, and saved) or
// "crash" / "other" (our bug: the test fails) after saving the input to <build>/fuzz-findings/.
std::string replay(const Input& in, const std::string& path) {
  static const std::string tokenizer = xv_test::sample_tokenizer_json();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    void* warm[1];
    backtrace(warm, 1);  // loads the unwinder now, not inside a signal handler
    g_replay_child = true;
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGALRM}) ::signal(sig, on_fatal_signal);
    ::alarm(kHangSeconds);
    int code = kOk;
    try {
      xv_test::read_corpus_bytes(in.bytes, path, tokenizer);
    } catch (const xv::Error& e) {
      // Every error names the file it is about.
      code = std::string(e.what()).find(path) == std::string::npos ? kErrorNamesNoFile : kError;
      if (code == kErrorNamesNoFile) std::fprintf(stderr, "error naming no file: %s\n", e.what());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s instead of xv::Error: %s\n", typeid(e).name(), e.what());
      code = kOtherException;
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (code == kOk) return "ok";
  if (code == kError) return "error";
  const fs::path keep = fs::path(XV_BINARY_DIR) / "fuzz-findings";
  fs::create_directories(keep);
  const std::string saved = (keep / ("replay-" + std::to_string(std::hash<std::string>{}(in.name)) + ".h5")).string();
  xv::write_file_atomic(saved, in.bytes);
  const std::string replay_hint = "; input saved as " + saved + " (build/tests/replay_corpus_input " + saved + " replays it)";
  if (code == kFaultInHdf5 || code == kHangInHdf5) {
    std::printf("NOTE %s: %s inside libhdf5 (the stack above)%s\n", in.name.c_str(),
                (code == kHangInHdf5 ? "looped for " + std::to_string(kHangSeconds) + " s" : "crashed").c_str(),
                replay_hint.c_str());
    if (std::getenv("XV_REPLAY_STRICT")) ADD_FAILURE() << in.name << ": failed inside libhdf5 (XV_REPLAY_STRICT)";
    return "hdf5";
  }
  ADD_FAILURE() << in.name << ": "
                << (WIFSIGNALED(status) ? "crashed with signal " + std::to_string(WTERMSIG(status))
                                        : "ended with status " + std::to_string(code) +
                                              " (11: another exception than xv::Error, 12: an error naming no "
                                              "file, 1: a sanitizer report)")
                << replay_hint;
  return WIFSIGNALED(status) ? "crash" : "other";
}

TEST(CorpusFuzzReplay, SeedsAreValid) {
  const std::string path = (fs::temp_directory_path() / ("xv_replay_" + std::to_string(::getpid()) + ".h5")).string();
  for (const auto& s : seeds()) {
    EXPECT_EQ(replay(s, path), "ok") << s.name;
    xv_test::read_corpus_bytes(s.bytes, path, "");
    const xv::Corpus c = xv::read_corpus(path);
    EXPECT_EQ(xv::validate_corpus(c, path, xv_test::sample_tokenizer_json()), std::vector<std::string>{}) << s.name;
  }
  fs::remove(path);
}

TEST(CorpusFuzzReplay, MutationsEndInSuccessOrError) {
  const std::string path = (fs::temp_directory_path() / ("xv_replay_" + std::to_string(::getpid()) + ".h5")).string();
  const std::vector<Input> base = seeds();
  std::mt19937_64 rng(20240611);
  std::map<std::string, int> outcome;
  constexpr int kMutations = 400;
  for (int i = 0; i < kMutations; ++i) {
    const Input& b = base[size_t(i) % base.size()];
    std::string how;
    std::string bytes = mutate(b.bytes, rng, how);
    // A second mutation on every third input: damage in two places gets past the first check that fires.
    if (i % 3 == 2) {
      std::string how2;
      bytes = mutate(bytes, rng, how2);
      how += "; " + how2;
    }
    outcome[replay({b.name + " #" + std::to_string(i) + " (" + how + ")", bytes}, path)]++;
  }
  fs::remove(path);
  std::printf("%d mutated inputs: %d read and validated, %d refused with xv::Error, %d crashed, %d other, "
              "%d crashed or looped inside libhdf5\n",
              kMutations, outcome["ok"], outcome["error"], outcome["crash"], outcome["other"], outcome["hdf5"]);
}

}  // namespace
