// safetensors reader (mmap, validated header) and writer; a model folder's weights, single file or
// sharded through model.safetensors.index.json.
//
// Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets: [b, e]},
// "__metadata__": {str: str}}, then the byte buffer. The reader checks every entry: known dtype,
// non-negative shape, begin <= end inside the buffer, (end - begin) == numel * dtype size, no two
// tensors overlapping, and no bytes of the buffer left unindexed.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace xv {

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  size_t nbytes = 0;
  const uint8_t* data = nullptr;  // points into the mapped file
  const std::string* file = nullptr;
};

class SafeTensorsFile {
 public:
  explicit SafeTensorsFile(const std::string& path);  // maps and validates; throws xv::Error
  ~SafeTensorsFile();
  SafeTensorsFile(const SafeTensorsFile&) = delete;
  SafeTensorsFile& operator=(const SafeTensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All weights of a model folder: model.safetensors, or the shards listed by model.safetensors.index.json.
class WeightStore {
 public:
  static WeightStore open_dir(const std::string& dir);
  static WeightStore open_file(const std::string& path);

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;  // throws naming the folder and tensor
  // Loads a tensor on the host as `as` (F32, BF16 or F16; converted from the file's dtype, rounding to nearest
  // even), checking that its shape equals `expected` (the shape config.json implies). With
  // set_shapes_only(true), only checks and returns a shape-only tensor (Tensor::shape_only): a model laid out
  // without its weights, which are read later unit by unit (KdModel::load with LoadOptions::shapes_only).
  Tensor get(const std::string& name, const Shape& expected, DType as = DType::F32) const;
  void set_shapes_only(bool on) { shapes_only_ = on; }
  // Drops the mapped file pages of a tensor from this process's memory (they are read again if used): after
  // converting it, so that reading a checkpoint unit by unit does not leave the whole file resident.
  void release_pages(const std::string& name) const;
  std::vector<std::string> names() const;
  int64_t elements() const;  // of every tensor together (a model's size in f32 is 4x this)
  const std::string& where() const { return where_; }

 private:
  std::string where_;
  std::vector<std::shared_ptr<SafeTensorsFile>> files_;
  std::map<std::string, const TensorInfo*> index_;
  bool shapes_only_ = false;
};

struct NamedTensor {
  std::string name;
  const Tensor* tensor;
};
// Streams tensors into a safetensors file: the layout (names, shapes) is fixed up front, tensors are
// appended in that order, and finish() flushes and renames the temporary file into place.
class SafeTensorsWriter {
 public:
  SafeTensorsWriter(const std::string& path, const std::vector<std::pair<std::string, Shape>>& layout, DType dtype,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafeTensorsWriter();  // removes the temporary file unless finish() ran
  void append(const Tensor& t);
  void finish();

 private:
  std::string path_, tmp_;
  std::vector<std::pair<std::string, Shape>> layout_;
  DType dtype_;
  size_t next_ = 0;
  int fd_ = -1;
  void write_bytes(const void* p, size_t n);
};

// Gives the new value of a tensor (same shape, any floating dtype, any device) and returns true, or returns false
// to keep the original.
using TensorReplacer = std::function<bool(const std::string& name, Tensor* out)>;
// A safetensors file like the checkpoint `ws`: every tensor under its name and dtype, the replaced ones
// converted to that dtype, written one tensor at a time (a merged or fine-tuned model from its base).
void write_safetensors_like(const std::string& path, const WeightStore& ws, const TensorReplacer& replace);

// Writes tensors (of any floating dtype, on any device) as `dtype` (F32, BF16 or F16), sorted by name,
// atomically.
void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors, DType dtype,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace xv
