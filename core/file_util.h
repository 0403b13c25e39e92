// Small file helpers shared by every reader and writer: inputs are regular files of bounded size, outputs
// are written only as regular files (or folders), and nothing is left half-written.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>

namespace xv {

// What a path is, for messages: "does not exist", "is a folder", "is a FIFO", "is a character device", ...
std::string path_kind(const std::string& path);

// Throws xv::Error "<path>: <what> <problem>" unless `path` is a regular file (after symlinks), e.g.
// "data.jsonl: the training pairs file (data.train) is a FIFO, a regular file was expected".
void require_regular_file(const std::string& path, std::string_view what);
// The same for a folder: "<path>: <what> does not exist" or "... is a regular file, a folder was expected".
void require_dir(const std::string& path, std::string_view what);

// An output file's path, checked before any work: an existing path must be a regular file (never replace a
// FIFO, a device node or a folder), and the folder it goes in must exist and be a folder. `what` names the
// flag or field ("--out").
void check_output_file(const std::string& path, std::string_view what);
// An output folder's path: an existing one must be a folder; its parent must exist (or be creatable when
// `create_parents`) and be a folder.
void check_output_dir(const std::string& path, std::string_view what, bool create_parents = true);

// The last check of every writer before it renames its temporary file onto `path`: refuses a `path` that
// exists and is not a regular file (a rename would replace a FIFO, a device node or a link's target).
void require_replaceable_file(const std::string& path);

// Writes `bytes` to `path` via a temporary name in the same folder, fsyncs, then renames. Refuses a `path`
// that exists and is not a regular file.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Whether two paths name one file: the same file when both exist (links included), else the same path.
bool same_file(const std::string& a, const std::string& b);

// `message` with every `staged` path (a temporary file or staging folder) replaced by the `destination` it
// stands for: what a writer's error names, so that the user reads the path they gave.
std::string name_destination(std::string message, const std::string& staged, const std::string& destination);

// Reads a whole regular file of at most `max_bytes`; throws xv::Error naming the path when it is not a
// regular file, is larger, or cannot be read. Nothing is read before those checks.
inline constexpr uint64_t kMaxTextFileBytes = uint64_t(1) << 30;  // configs, JSON, tokenizers: 1 GiB
std::string read_file(const std::string& path, uint64_t max_bytes = kMaxTextFileBytes);

}  // namespace xv
