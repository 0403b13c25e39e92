// NumPy .npy files (format version 1.0/2.0, little-endian, C order): the CLI's embedding output and
// the golden fixtures made by tools/. Reading accepts f4, f8, f2, i8, i4, u1, b1 and converts to f32
// (integers kept exact as int64 by read_npy_i64).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace xv {

Tensor read_npy(const std::string& path);
std::vector<int64_t> read_npy_i64(const std::string& path, Shape* shape = nullptr);
// Writes atomically: a temporary name, flushed, then renamed.
void write_npy(const std::string& path, const Tensor& t);

}  // namespace xv
