// Small file helpers shared by every writer: nothing is left half-written.
#pragma once
#include <string>
#include <string_view>

namespace xv {

// Writes `bytes` to `path` via a temporary name in the same folder, fsyncs, then renames.
void write_file_atomic(const std::string& path, std::string_view bytes);
// Reads a whole file; throws xv::Error naming the path when it cannot.
std::string read_file(const std::string& path);

}  // namespace xv
