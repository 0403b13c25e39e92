#include "core/resources.h"

#include <sys/resource.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

// A "Key:   123 kB" line of a /proc file, in bytes; 0 when absent.
uint64_t proc_kb(const char* file, const char* key) {
  std::ifstream f(file);
  std::string line;
  const std::string k = std::string(key) + ":";
  while (std::getline(f, line))
    if (line.rfind(k, 0) == 0) {
      std::istringstream in(line.substr(k.size()));
      uint64_t v = 0;
      in >> v;
      return v * 1024;
    }
  return 0;
}

// A cgroup v2 file holding a number or "max"; UINT64_MAX when "max" or absent.
uint64_t cgroup_value(const char* name) {
  std::ifstream f(std::string("/sys/fs/cgroup/") + name);
  std::string v;
  if (!(f >> v) || v == "max") return UINT64_MAX;
  try {
    return std::stoull(v);
  } catch (const std::exception&) {
    return UINT64_MAX;
  }
}

// The BLAS's work buffer per compute thread (OpenBLAS on x86-64: 128 MiB + its guard pages, allocated when a
// thread first runs a GEMM), and what start-up itself needs beyond what is mapped at main().
constexpr uint64_t kBlasBufferPerThread = 135266304;
constexpr uint64_t kStartMargin = uint64_t(384) << 20;

}  // namespace

MemoryBudget available_memory() {
  MemoryBudget b;
  if (const uint64_t avail = proc_kb("/proc/meminfo", "MemAvailable"); avail > 0) b = {avail, "MemAvailable"};
  const uint64_t max = cgroup_value("memory.max"), cur = cgroup_value("memory.current");
  if (max != UINT64_MAX && cur != UINT64_MAX) {
    const uint64_t left = max > cur ? max - cur : 0;
    if (left < b.bytes) b = {left, "the cgroup's memory.max"};
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    const uint64_t used = proc_kb("/proc/self/status", "VmSize");
    const uint64_t left = uint64_t(rl.rlim_cur) > used ? uint64_t(rl.rlim_cur) - used : 0;
    if (left < b.bytes) b = {left, "ulimit -v"};
  }
  return b;
}

uint64_t free_disk_bytes(const std::string& path) {
  fs::path p = fs::absolute(path);
  std::error_code ec;
  while (!p.empty() && !fs::exists(p, ec) && p != p.parent_path()) p = p.parent_path();
  struct statvfs st{};
  if (::statvfs(p.c_str(), &st) != 0) return UINT64_MAX;  // unknown: nothing to refuse on
  return uint64_t(st.f_bavail) * uint64_t(st.f_frsize);
}

std::string human_bytes(uint64_t b) {
  char buf[32];
  if (b >= (uint64_t(1) << 30)) std::snprintf(buf, sizeof buf, "%.1f GB", double(b) / double(uint64_t(1) << 30));
  else if (b >= (uint64_t(1) << 20)) std::snprintf(buf, sizeof buf, "%.0f MB", double(b) / double(1 << 20));
  else std::snprintf(buf, sizeof buf, "%.0f KB", double(b) / 1024.0);
  return buf;
}

void require_disk(const std::string& path, uint64_t need, std::string_view what, std::string_view advice) {
  const uint64_t free = free_disk_bytes(path);
  if (free == UINT64_MAX || need + need / 20 <= free) return;
  fail("{} needs about {} free under {}; the file system there has {} free{}", what, human_bytes(need), path,
       human_bytes(free), advice);
}

void require_memory(uint64_t need, std::string_view what, std::string_view advice) {
  const MemoryBudget b = available_memory();
  if (b.limited_by.empty() || need + need / 20 <= b.bytes) return;
  fail("{} needs about {} of memory; {} available (limited by {}){}", what, human_bytes(need), human_bytes(b.bytes),
       b.limited_by, advice);
}

void check_address_space_for_threads(int threads) {
  rlimit rl{};
  if (::getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  const uint64_t used = proc_kb("/proc/self/status", "VmSize");
  const uint64_t need = used + uint64_t(std::max(threads, 1)) * kBlasBufferPerThread + kStartMargin;
  XV_CHECK(uint64_t(rl.rlim_cur) >= need,
           "the address-space limit (ulimit -v) is {}, less than the {} needed to start {} compute thread(s) ({} "
           "mapped at start, a {} BLAS buffer per thread and {} to begin work): raise it (ulimit -v {}) or use "
           "fewer threads (--threads, train.threads)",
           human_bytes(uint64_t(rl.rlim_cur)), human_bytes(need), threads, human_bytes(used),
           human_bytes(kBlasBufferPerThread), human_bytes(kStartMargin), need / 1024 + 1);
}

}  // namespace xv
