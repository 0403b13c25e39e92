#include "core/device.h"

#include <charconv>

namespace xv {

bool parse_device(std::string_view s, Device* out) {
  if (s == "cpu") {
    *out = Device::cpu();
    return true;
  }
  if (s == "cuda") {
    *out = Device::cuda(0);
    return true;
  }
  if (s.substr(0, 5) != "cuda:" || s.size() == 5) return false;
  int i = -1;
  const auto r = std::from_chars(s.data() + 5, s.data() + s.size(), i);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || i < 0) return false;
  *out = Device::cuda(i);
  return true;
}

}  // namespace xv
