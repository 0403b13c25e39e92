#include "core/storage.h"

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "core/error.h"

namespace xv {

namespace {

// The host: blocks from malloc (which the CLI tunes to keep freed activations on the heap,
// kernels/cpu/runtime.h; plain malloc rather than an over-aligned allocator, which fragments glibc's heap),
// copies by memcpy.
class HostMemory final : public DeviceMemory {
 public:
  void* allocate(int, size_t bytes) override {
    void* p = std::malloc(bytes == 0 ? 1 : bytes);
    XV_CHECK(p, "cpu: cannot allocate {} bytes", bytes);
    return p;
  }
  void deallocate(int, void* p) noexcept override { std::free(p); }
  void zero(int, void* p, size_t bytes) override { std::memset(p, 0, bytes); }
  void copy(void* dst, Device, const void* src, Device, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
};

HostMemory g_host;
std::array<std::atomic<DeviceMemory*>, 2> g_memory{&g_host, nullptr};
std::array<std::atomic<size_t>, 2> g_live{}, g_peak{};

void count_allocation(DeviceKind k, size_t bytes) {
  const size_t now = g_live[size_t(k)].fetch_add(bytes, std::memory_order_relaxed) + bytes;
  size_t peak = g_peak[size_t(k)].load(std::memory_order_relaxed);
  while (now > peak && !g_peak[size_t(k)].compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

}  // namespace

DeviceMemory& device_memory(DeviceKind k) {
  DeviceMemory* m = g_memory[size_t(k)].load();
  XV_CHECK(m, "no memory for device kind cuda: this build has no CUDA backend, or it was not started "
           "(kernels/backend.h: backend(Device::cuda(i)) starts it)");
  return *m;
}

void register_device_memory(DeviceKind k, DeviceMemory* m) { g_memory[size_t(k)].store(m); }

void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes) {
  if (bytes == 0) return;
  // The non-host side's memory does the copy (a GPU's for any pair that involves it).
  const DeviceKind k = dd.is_cpu() ? sd.kind : dd.kind;
  device_memory(k).copy(dst, dd, src, sd, bytes);
}

std::shared_ptr<Storage> Storage::allocate(Device d, size_t bytes, bool zero) {
  DeviceMemory& m = device_memory(d.kind);
  void* p = m.allocate(d.index, bytes);
  if (zero && bytes) m.zero(d.index, p, bytes);
  count_allocation(d.kind, bytes);
  return std::shared_ptr<Storage>(new Storage(d, p, bytes));
}

Storage::~Storage() {
  if (!p_) return;
  device_memory(device_.kind).deallocate(device_.index, p_);
  g_live[size_t(device_.kind)].fetch_sub(bytes_, std::memory_order_relaxed);
}

size_t storage_live_bytes(DeviceKind k) { return g_live[size_t(k)].load(std::memory_order_relaxed); }
size_t storage_peak_bytes(DeviceKind k) { return g_peak[size_t(k)].load(std::memory_order_relaxed); }
void reset_storage_peak(DeviceKind k) { g_peak[size_t(k)].store(storage_live_bytes(k), std::memory_order_relaxed); }

}  // namespace xv
