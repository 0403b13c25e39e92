// Errors at every boundary (files, configs, CLI): one exception type whose message names the file,
// the field and what was expected. The CLI prints it and exits non-zero.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace xv {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

template <typename... Args>
[[noreturn]] inline void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace xv

// XV_CHECK(cond, "fmt", args...): throws xv::Error with the formatted message when cond is false.
#define XV_CHECK(cond, ...)          \
  do {                               \
    if (!(cond)) ::xv::fail(__VA_ARGS__); \
  } while (0)
