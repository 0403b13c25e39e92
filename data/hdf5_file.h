// The project's one door to the HDF5 C library: RAII handles, typed whole and partial dataset reads with
// dtype and rank checks, chunked/compressed dataset writes, string and integer attributes. Every error is an
// xv::Error naming the file and the object ("corpus.h5: /pairs/en: ..."); HDF5's own error printing is off.
//
// HDF5 (as Debian builds it) is not thread-safe: only one thread at a time may call into this file.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace xv::h5 {

// An owned hid_t, closed with the right H5?close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_, close_ = o.close_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Gives up ownership without closing (the caller closes, to check the status).
  hid_t release() {
    const hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  herr_t (*close_)(hid_t) = nullptr;
};

// Dataset elements are the project's DType (U8, I32, I64, U64, F32 here); `element_name` spells one as
// HDF5 users know it ("uint8", "float32").
const char* element_name(DType t);
template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, uint8_t>) return DType::U8;
  else if constexpr (std::is_same_v<T, int32_t>) return DType::I32;
  else if constexpr (std::is_same_v<T, int64_t>) return DType::I64;
  else if constexpr (std::is_same_v<T, uint64_t>) return DType::U64;
  else if constexpr (std::is_same_v<T, float>) return DType::F32;
  else static_assert(sizeof(T) == 0, "unsupported element type");
}

struct WriteOptions {
  int64_t chunk_bytes = 1 << 20;  // target chunk size (sequential slab reads decompress whole chunks)
  int deflate = 4;                // zlib level; 0 = uncompressed (images, already compressed)
};

class File {
 public:
  // Opens an existing file (read-only or read-write); errors name the path.
  static File open(const std::string& path, bool writable = false);
  // Creates (truncates) a file.
  static File create(const std::string& path);

  const std::string& path() const { return path_; }
  hid_t id() const { return f_.get(); }
  void close();  // flushes; errors are reported (a failed close may mean a failed write)

  bool exists(const std::string& obj) const;  // "/a/b/c": every link along the way exists
  void remove(const std::string& obj);        // unlinks (the space is not reclaimed)

  // Dataset shape; errors when missing. `rank` > 0 checks the rank.
  std::vector<int64_t> shape(const std::string& name, int rank = 0) const;
  // Checks the element type (class, size, signedness) against `dt`.
  void check_dtype(const std::string& name, DType dt) const;

  // Whole dataset of rank 1 (or any rank, flattened, with `rank` 0), after check_dtype.
  template <typename T>
  std::vector<T> read(const std::string& name, int rank = 1) const {
    check_dtype(name, dtype_of<T>());
    std::vector<T> out(claimed_count(name, shape(name, rank), sizeof(T)));
    read_raw(name, dtype_of<T>(), out.data(), {}, {});
    return out;
  }
  // Rows [start, start+count) of a rank-1 dataset, or of the first dimension of a rank-2 one (row-major).
  template <typename T>
  void read_rows(const std::string& name, int64_t start, int64_t count, T* out) const {
    read_raw(name, dtype_of<T>(), out, {start}, {count});
  }

  // Writes a rank-1 (`cols` 0) or rank-2 (n/cols rows x cols) dataset, creating intermediate groups.
  template <typename T>
  void write(const std::string& name, const std::vector<T>& v, const WriteOptions& o = {}, int64_t cols = 0) {
    write_raw(name, dtype_of<T>(), v.data(), int64_t(v.size()), cols, o);
  }
  void write_bytes(const std::string& name, const std::string& bytes, const WriteOptions& o = {}) {
    write_raw(name, DType::U8, bytes.data(), int64_t(bytes.size()), 0, o);
  }
  std::string read_bytes(const std::string& name) const;

  // Attributes on a group or dataset ("/" = the root). Strings are UTF-8, variable length when written;
  // both fixed- and variable-length strings are read.
  bool has_attr(const std::string& obj, const std::string& attr) const;
  std::string read_string_attr(const std::string& obj, const std::string& attr) const;
  int64_t read_int_attr(const std::string& obj, const std::string& attr) const;
  void write_attr(const std::string& obj, const std::string& attr, const std::string& value);
  void write_attr(const std::string& obj, const std::string& attr, int64_t value);

 private:
  void read_raw(const std::string& name, DType dt, void* out, std::vector<int64_t> start,
                std::vector<int64_t> count) const;
  void write_raw(const std::string& name, DType dt, const void* data, int64_t n, int64_t cols, const WriteOptions& o);
  // The element count of a dataset of shape `sh`, refused when it cannot be what the file stores (a corrupt
  // dataspace must not make us allocate it).
  size_t claimed_count(const std::string& name, const std::vector<int64_t>& sh, size_t elem_size) const;
  Handle open_obj(const std::string& obj) const;
  std::string where(const std::string& obj) const { return path_ + ": " + obj; }

  std::string path_;
  Handle f_;
};

}  // namespace xv::h5
