// Folders that appear whole or not at all (checkpoints, exported adapters and models): files are written
// into a staging folder beside the destination, flushed, and the folder is renamed into place.
#pragma once
#include <string>

namespace xv {

// fsync on a folder, so that the names inside it (new files, renames) are durable.
void fsync_dir(const std::string& dir);

class StagingDir {
 public:
  // Creates `<parent>/.<name>.tmp.<pid>` (after removing a stale one) for the destination `dst`.
  explicit StagingDir(const std::string& dst);
  ~StagingDir();  // removes the staging folder unless commit() ran
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  const std::string& path() const { return tmp_; }
  std::string file(const std::string& name) const { return tmp_ + "/" + name; }
  // fsyncs the staging folder, replaces `dst` (an existing one is moved aside first, then removed) and
  // fsyncs the parent.
  void commit();

 private:
  std::string dst_, tmp_;
  bool done_ = false;
};

}  // namespace xv
