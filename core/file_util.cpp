#include "core/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace xv {

void write_file_atomic(const std::string& path, std::string_view bytes) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  XV_CHECK(fd >= 0, "{}: cannot create file: {}", tmp, std::strerror(errno));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("{}: write failed: {}", tmp, std::strerror(e));
    }
    done += size_t(w);
  }
  const int synced = ::fsync(fd) == 0 ? 0 : errno;
  const int closed = ::close(fd) == 0 ? 0 : errno;
  if (synced || closed) {
    ::unlink(tmp.c_str());
    fail("{}: flush failed: {}", tmp, std::strerror(synced ? synced : closed));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot rename into place: {}", path, std::strerror(e));
  }
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  XV_CHECK(!std::filesystem::is_directory(path, ec), "{}: is a folder, a file was expected", path);
  std::ifstream f(path, std::ios::binary);
  XV_CHECK(f.good(), "{}: cannot open file: {}", path, std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) out.append(buf, size_t(f.gcount()));
  XV_CHECK(!f.bad(), "{}: read failed", path);
  return out;
}

}  // namespace xv
