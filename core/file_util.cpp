#include "core/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace xv {

namespace fs = std::filesystem;

namespace {

std::string kind_of(const struct stat& st) {
  if (S_ISREG(st.st_mode)) return "is a regular file";
  if (S_ISDIR(st.st_mode)) return "is a folder";
  if (S_ISFIFO(st.st_mode)) return "is a FIFO";
  if (S_ISCHR(st.st_mode)) return "is a character device";
  if (S_ISBLK(st.st_mode)) return "is a block device";
  if (S_ISSOCK(st.st_mode)) return "is a socket";
  return "is not a regular file";
}

// The folder an output path goes in ("." for a bare name).
std::string parent_of(const std::string& path) {
  const fs::path p = fs::path(path).parent_path();
  return p.empty() ? "." : p.string();
}

}  // namespace

std::string path_kind(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return kind_of(st);
  const int e = errno;
  struct stat lst;
  if (::lstat(path.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) return "is a symbolic link to nothing";
  if (e == ENOENT) return "does not exist";
  if (e == ENOTDIR) return "does not exist (a part of the path is not a folder)";
  return std::string("cannot be examined: ") + std::strerror(e);
}

void require_regular_file(const std::string& path, std::string_view what) {
  const std::string k = path_kind(path);
  if (k == "is a regular file") return;
  fail("{}: {} {}{}", path, what, k, k.rfind("is a", 0) == 0 ? ", a regular file was expected" : "");
}

void require_dir(const std::string& path, std::string_view what) {
  const std::string k = path_kind(path);
  if (k == "is a folder") return;
  fail("{}: {} {}{}", path, what, k, k.rfind("is a", 0) == 0 ? ", a folder was expected" : "");
}

void check_output_file(const std::string& path, std::string_view what) {
  XV_CHECK(!path.empty(), "{}: the output path is empty", what);
  const std::string k = path_kind(path);
  XV_CHECK(k.rfind("does not exist", 0) == 0 || k == "is a regular file",
           "{}: {} {}: outputs are written only as regular files (a new path or an existing file)", what, path, k);
  // The folder it goes in, or the first part of the path that is not a folder.
  std::string parent = parent_of(path);
  std::string pk = path_kind(parent);
  for (fs::path up = fs::path(parent); pk.rfind("does not exist (", 0) == 0 && up.has_parent_path();) {
    up = up.parent_path();
    if (const std::string uk = path_kind(up.string()); uk.rfind("does not exist", 0) != 0) {
      parent = up.string(), pk = uk;
      break;
    }
  }
  XV_CHECK(pk == "is a folder", "{}: {}: {} {}", what, path, parent,
           pk.rfind("does not exist", 0) == 0 ? std::string("(its folder) does not exist") : pk + ", not a folder");
  XV_CHECK(::access(parent.c_str(), W_OK) == 0, "{}: {}: the folder {} is not writable: {}", what, path, parent,
           std::strerror(errno));
}

void check_output_dir(const std::string& path, std::string_view what, bool create_parents) {
  XV_CHECK(!path.empty(), "{}: the output path is empty", what);
  auto missing = [](const std::string& k) { return k.rfind("does not exist", 0) == 0; };
  const std::string k = path_kind(path);
  XV_CHECK(missing(k) || k == "is a folder", "{}: {} {}: a folder was expected", what, path, k);
  // The nearest existing ancestor must be a writable folder: every folder below it is created.
  fs::path anc = fs::path(path).lexically_normal();
  if (missing(k)) {
    anc = anc.parent_path();
    while (!anc.empty() && missing(path_kind(anc.string()))) {
      XV_CHECK(create_parents, "{}: {}: the folder {} does not exist", what, path, anc.string());
      anc = anc.parent_path();
    }
    if (anc.empty()) anc = ".";
    const std::string ak = path_kind(anc.string());
    XV_CHECK(ak == "is a folder", "{}: {}: {} {}, not a folder", what, path, anc.string(), ak);
  }
  XV_CHECK(::access(anc.c_str(), W_OK) == 0, "{}: {}: the folder {} is not writable: {}", what, path, anc.string(),
           std::strerror(errno));
}

void require_replaceable_file(const std::string& path) {
  const std::string k = path_kind(path);
  XV_CHECK(k.rfind("does not exist", 0) == 0 || k == "is a regular file",
           "{}: {}: outputs are written only as regular files (a new path or an existing file)", path, k);
}

bool same_file(const std::string& a, const std::string& b) {
  std::error_code ec;
  if (fs::exists(a, ec) && fs::exists(b, ec)) return fs::equivalent(a, b, ec);
  return fs::weakly_canonical(fs::absolute(a), ec) == fs::weakly_canonical(fs::absolute(b), ec);
}

std::string name_destination(std::string message, const std::string& staged, const std::string& destination) {
  if (staged.empty()) return message;
  for (size_t at = message.find(staged); at != std::string::npos; at = message.find(staged, at + destination.size()))
    message.replace(at, staged.size(), destination);
  return message;
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  require_replaceable_file(path);
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    const int e = errno;
    const std::string parent = parent_of(path);
    const std::string pk = path_kind(parent);
    XV_CHECK(pk == "is a folder", "{}: cannot write: the folder {} {}", path, parent, pk);
    fail("{}: cannot write (creating {}): {}", path, fs::path(tmp).filename().string(), std::strerror(e));
  }
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      fail("{}: write failed: {}", path, std::strerror(e));
    }
    done += size_t(w);
  }
  const int synced = ::fsync(fd) == 0 ? 0 : errno;
  const int closed = ::close(fd) == 0 ? 0 : errno;
  if (synced || closed) {
    ::unlink(tmp.c_str());
    fail("{}: flush failed: {}", path, std::strerror(synced ? synced : closed));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    fail("{}: cannot rename into place: {}", path, std::strerror(e));
  }
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  // Open first, then check what was opened (no window between the check and the read). O_NONBLOCK keeps a
  // FIFO with no writer from blocking the open; it is refused right after.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    const int e = errno;
    const std::string k = path_kind(path);
    if (k == "is a folder") fail("{}: is a folder, a file was expected", path);
    if (k.rfind("does not exist", 0) == 0) fail("{}: {}", path, k);
    fail("{}: cannot open file: {}", path, std::strerror(e));
  }
  struct stat st;
  const bool examined = ::fstat(fd, &st) == 0;
  if (!examined || !S_ISREG(st.st_mode)) {
    const std::string k = examined ? kind_of(st) : "cannot be examined";
    ::close(fd);
    if (k == "is a folder") fail("{}: is a folder, a file was expected", path);
    fail("{}: {}, a regular file was expected", path, k);
  }
  if (uint64_t(st.st_size) > max_bytes) {
    ::close(fd);
    fail("{}: is {} bytes, more than the {} bytes a file of this kind may be", path, uint64_t(st.st_size), max_bytes);
  }
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  std::string out(size_t(st.st_size), '\0');
  size_t done = 0;
  while (true) {
    if (done == out.size()) {
      // A file that grows while it is read.
      if (out.size() >= max_bytes) {
        char one;
        const ssize_t more = ::read(fd, &one, 1);
        ::close(fd);
        XV_CHECK(more <= 0, "{}: grew past the {} bytes a file of this kind may be while it was read", path, max_bytes);
        return out;
      }
      out.resize(std::min<uint64_t>(max_bytes, out.size() + (1 << 16)));
    }
    const ssize_t r = ::read(fd, out.data() + done, out.size() - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int e = errno;
      ::close(fd);
      fail("{}: read failed: {}", path, std::strerror(e));
    }
    if (r == 0) break;
    done += size_t(r);
  }
  ::close(fd);
  out.resize(done);
  return out;
}

}  // namespace xv
