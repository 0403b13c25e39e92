#include "core/atomic_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace xv {

namespace fs = std::filesystem;

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  XV_CHECK(fd >= 0, "{}: cannot open folder: {}", dir, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  XV_CHECK(rc == 0, "{}: cannot flush folder: {}", dir, std::strerror(e));
}

StagingDir::StagingDir(const std::string& dst) : dst_(fs::path(dst).lexically_normal().string()) {
  while (!dst_.empty() && dst_.back() == '/') dst_.pop_back();
  XV_CHECK(!dst_.empty(), "output folder name is empty");
  fs::path d(dst_);
  const fs::path parent = d.has_parent_path() ? d.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(parent, ec);
  XV_CHECK(!ec, "{}: cannot create folder: {}", parent.string(), ec.message());
  XV_CHECK(!fs::exists(d) || fs::is_directory(d), "{}: exists and is not a folder", dst_);
  tmp_ = (parent / ("." + d.filename().string() + ".tmp." + std::to_string(::getpid()))).string();
  fs::remove_all(tmp_, ec);
  fs::create_directory(tmp_, ec);
  XV_CHECK(!ec, "{}: cannot create folder: {}", tmp_, ec.message());
}

StagingDir::~StagingDir() {
  if (done_) return;
  std::error_code ec;
  fs::remove_all(tmp_, ec);
}

void StagingDir::commit() {
  XV_CHECK(!done_, "{}: committed twice", dst_);
  fsync_dir(tmp_);
  std::error_code ec;
  std::string old;
  if (fs::exists(dst_)) {
    old = tmp_ + ".old";
    fs::remove_all(old, ec);
    XV_CHECK(std::rename(dst_.c_str(), old.c_str()) == 0, "{}: cannot move the previous folder aside: {}", dst_,
             std::strerror(errno));
  }
  XV_CHECK(std::rename(tmp_.c_str(), dst_.c_str()) == 0, "{}: cannot rename into place: {}", dst_,
           std::strerror(errno));
  done_ = true;
  const fs::path parent = fs::path(dst_).has_parent_path() ? fs::path(dst_).parent_path() : fs::path(".");
  fsync_dir(parent.string());
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace xv
