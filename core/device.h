// Where a tensor's storage lives: the host (cpu) or one GPU (cuda:N). Every op runs on the backend of its
// operands' device (kernels/backend.h); a tensor never changes device in place (Tensor::to makes a copy).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace xv {

enum class DeviceKind : uint8_t { cpu, cuda };

struct Device {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;  // cuda: the device ordinal; 0 for the cpu

  static Device cpu() { return {}; }
  static Device cuda(int i = 0) { return {DeviceKind::cuda, i}; }
  bool is_cpu() const { return kind == DeviceKind::cpu; }
  bool is_cuda() const { return kind == DeviceKind::cuda; }
  std::string str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }
  friend bool operator==(const Device& a, const Device& b) { return a.kind == b.kind && a.index == b.index; }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

// "cpu", "cuda" (cuda:0) or "cuda:N"; false for anything else.
bool parse_device(std::string_view s, Device* out);

}  // namespace xv
