// The bytes behind a tensor, allocated and freed through the memory of its device. The host's memory is
// built in; a GPU backend registers its own (kernels/cuda) when it starts, so core needs no GPU library.
#pragma once
#include <cstddef>
#include <memory>

#include "core/device.h"

namespace xv {

// A device kind's allocator and copies. Implementations must be thread-safe.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  virtual void* allocate(int index, size_t bytes) = 0;  // throws xv::Error when it cannot
  virtual void deallocate(int index, void* p) noexcept = 0;
  virtual void zero(int index, void* p, size_t bytes) = 0;
  // Copies `bytes` from src (on sd) to dst (on dd); one of the two is of this memory's kind, the other the
  // same kind or the host. Returns when the copy is done.
  virtual void copy(void* dst, Device dd, const void* src, Device sd, size_t bytes) = 0;
};

// The memory of a device kind: the host's always; another kind once its backend registered it (else throws
// naming the device and why there is none).
DeviceMemory& device_memory(DeviceKind k);
void register_device_memory(DeviceKind k, DeviceMemory* m);
// Bytes held by live Storage blocks of a device kind (every index together), and the most held at once since
// the last reset_storage_peak: what the training memory plan's estimates are checked against.
size_t storage_live_bytes(DeviceKind k);
size_t storage_peak_bytes(DeviceKind k);
void reset_storage_peak(DeviceKind k);  // the peak becomes the bytes live now

// Any copy between two devices (host <-> GPU, GPU <-> GPU, host <-> host).
void copy_bytes(void* dst, Device dd, const void* src, Device sd, size_t bytes);

class Storage {
 public:
  // `bytes` on device d, zero-filled when `zero`.
  static std::shared_ptr<Storage> allocate(Device d, size_t bytes, bool zero = true);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return p_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  Storage(Device d, void* p, size_t bytes) : device_(d), p_(p), bytes_(bytes) {}
  Device device_;
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace xv
