// Number checks for CLI options whose messages say what was expected ("--batch-size: must be a number >= 1,
// found '0'"), where CLI11's own read "Value 0 not in range 0.000000 to 1.797693e+308".
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <string>

#include <fmt/format.h>

namespace xv::cli {

// A number in [lo, hi] (hi: none when infinite).
inline CLI::Validator in_range(double lo, double hi = INFINITY) {
  const std::string want = std::isinf(hi) ? fmt::format(">= {}", lo) : fmt::format("in [{}, {}]", lo, hi);
  return CLI::Validator(
      [lo, hi, want](std::string& s) -> std::string {
        size_t used = 0;
        double v = NAN;
        try {
          v = std::stod(s, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != s.size() || !std::isfinite(v) || v < lo || v > hi)
          return fmt::format("must be a number {}, found '{}'", want, s);
        return {};
      },
      want);
}
inline CLI::Validator at_least(double lo) { return in_range(lo); }

}  // namespace xv::cli
