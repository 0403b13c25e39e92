#include "core/checkpoint_dir.h"

#include <algorithm>
#include <filesystem>

namespace xv {

namespace fs = std::filesystem;

namespace {

// N of a folder named step-N, or -1.
int64_t step_of(const fs::path& p) {
  const std::string n = p.filename().string();
  if (n.rfind("step-", 0) != 0 || n.size() == 5 || n.size() > 5 + 18 ||
      n.find_first_not_of("0123456789", 5) != std::string::npos)
    return -1;  // not ours (18 digits at most: every step count fits an int64)
  return std::stoll(n.substr(5));
}

std::vector<std::string> step_folders(const std::string& output_dir, bool complete_only) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return {};
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const int64_t s = step_of(e.path());
    if (s < 0 || !fs::is_directory(e.path(), ec)) continue;
    if (!complete_only || fs::is_regular_file(e.path() / "state.json", ec)) found.emplace_back(s, e.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [_, p] : found) out.push_back(p);
  return out;
}

}  // namespace

std::vector<std::string> list_step_folders(const std::string& output_dir) { return step_folders(output_dir, false); }

std::vector<std::string> list_checkpoints(const std::string& output_dir) { return step_folders(output_dir, true); }

std::string latest_checkpoint(const std::string& output_dir) {
  auto all = list_checkpoints(output_dir);
  return all.empty() ? "" : all.back();
}

void prune_checkpoints(const std::string& output_dir, int64_t keep) {
  auto all = list_checkpoints(output_dir);
  for (size_t i = 0; i + size_t(std::max<int64_t>(1, keep)) < all.size(); ++i) {
    std::error_code ec;
    fs::remove_all(all[i], ec);
  }
}

}  // namespace xv
