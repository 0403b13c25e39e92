// What the machine can give a run before it starts: free disk under a path, available memory (the least of
// MemAvailable, the cgroup's limit and the address-space limit `ulimit -v`), so that long work is refused up
// front with the amount it needs instead of failing hours in.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace xv {

struct MemoryBudget {
  uint64_t bytes = UINT64_MAX;  // what can still be allocated
  std::string limited_by;       // "MemAvailable", "the cgroup's memory.max", "ulimit -v"; "" when unknown
};
MemoryBudget available_memory();

// Free bytes for an unprivileged writer on the file system holding `path` (or its nearest existing folder).
uint64_t free_disk_bytes(const std::string& path);

// "1.2 GB", "340 MB": sizes in messages.
std::string human_bytes(uint64_t bytes);

// Throws xv::Error "<what> needs about N free under <path>; the file system there has M free<advice>" when
// `need` exceeds the free space (with a 5% margin).
void require_disk(const std::string& path, uint64_t need, std::string_view what, std::string_view advice);
// Throws xv::Error "<what> needs about N of memory; ... M available (limited by ...)<advice>".
void require_memory(uint64_t need, std::string_view what, std::string_view advice);

// At start-up, under an address-space limit (ulimit -v): refuses one too small to start `threads` compute
// threads (the BLAS reserves a work buffer per thread when it first runs; below that it retries for ever).
void check_address_space_for_threads(int threads);

}  // namespace xv
