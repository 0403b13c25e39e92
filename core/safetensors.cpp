#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/file_util.h"

namespace xv {

namespace fs = std::filesystem;
using json = nlohmann::json;

SafeTensorsFile::SafeTensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  XV_CHECK(fd >= 0, "{}: cannot open safetensors file: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    fail("{}: cannot stat file", path);
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail("{}: truncated safetensors file ({} bytes; at least the 8-byte header length is expected)", path, size_);
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  XV_CHECK(map_ != MAP_FAILED, "{}: mmap failed: {}", path, std::strerror(errno));
  try {
    const uint8_t* base = static_cast<const uint8_t*>(map_);
    uint64_t n = 0;
    for (int i = 0; i < 8; ++i) n |= uint64_t(base[i]) << (8 * i);
    XV_CHECK(n <= size_ - 8, "{}: header length {} runs past the end of the file ({} bytes): truncated or corrupt",
             path, n, size_);
    XV_CHECK(n <= (100u << 20), "{}: header length {} exceeds 100 MB: corrupt", path, n);
    json h;
    try {
      h = json::parse(reinterpret_cast<const char*>(base + 8), reinterpret_cast<const char*>(base + 8 + n));
    } catch (const json::exception& e) {
      fail("{}: header is not valid JSON: {}", path, e.what());
    }
    XV_CHECK(h.is_object(), "{}: header must be a JSON object", path);
    const uint8_t* buf = base + 8 + n;
    const size_t buf_size = size_ - 8 - n;
    std::vector<std::pair<size_t, size_t>> ranges;
    for (auto it = h.begin(); it != h.end(); ++it) {
      const std::string& name = it.key();
      if (name == "__metadata__") {
        XV_CHECK(it->is_object(), "{}: '__metadata__' must be an object of strings", path);
        for (auto m = it->begin(); m != it->end(); ++m) {
          XV_CHECK(m->is_string(), "{}: '__metadata__.{}' must be a string", path, m.key());
          metadata_[m.key()] = m->get<std::string>();
        }
        continue;
      }
      const json& e = *it;
      XV_CHECK(e.is_object() && e.contains("dtype") && e.contains("shape") && e.contains("data_offsets"),
               "{}: tensor '{}' needs 'dtype', 'shape' and 'data_offsets'", path, name);
      TensorInfo ti;
      ti.name = name;
      XV_CHECK(e["dtype"].is_string() && dtype_from_name(e["dtype"].get<std::string>(), &ti.dtype),
               "{}: tensor '{}' has unknown dtype {} (expected F32, F16, BF16, F64, I64, I32, I16, I8, U8 or BOOL)",
               path, name, e["dtype"].dump());
      XV_CHECK(e["shape"].is_array(), "{}: tensor '{}': 'shape' must be an array", path, name);
      for (const auto& d : e["shape"]) {
        XV_CHECK(d.is_number_integer() && d.get<int64_t>() >= 0,
                 "{}: tensor '{}': 'shape' entries must be non-negative integers, found {}", path, name, d.dump());
        ti.shape.push_back(d.get<int64_t>());
      }
      const json& off = e["data_offsets"];
      XV_CHECK(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(),
               "{}: tensor '{}': 'data_offsets' must be [begin, end] of non-negative integers", path, name);
      size_t b = off[0].get<size_t>(), en = off[1].get<size_t>();
      XV_CHECK(b <= en && en <= buf_size,
               "{}: tensor '{}': data_offsets [{}, {}] fall outside the {}-byte data buffer (truncated file?)", path,
               name, b, en, buf_size);
      // Overflow-safe numel * size.
      size_t nbytes = dtype_size(ti.dtype);
      for (int64_t d : ti.shape) {
        XV_CHECK(d == 0 || nbytes <= SIZE_MAX / size_t(d), "{}: tensor '{}': shape overflows", path, name);
        nbytes *= size_t(d);
      }
      XV_CHECK(nbytes == en - b, "{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets span {}", path, name,
               shape_str(ti.shape), dtype_name(ti.dtype), nbytes, en - b);
      ti.nbytes = nbytes;
      ti.data = buf + b;
      ti.file = &path_;
      ranges.emplace_back(b, en);
      tensors_.emplace(name, std::move(ti));
    }
    std::sort(ranges.begin(), ranges.end());
    size_t pos = 0;
    for (const auto& [b, en] : ranges) {
      XV_CHECK(b >= pos, "{}: tensors overlap in the data buffer at byte {}", path, b);
      XV_CHECK(b == pos, "{}: bytes [{}, {}) of the data buffer belong to no tensor", path, pos, b);
      pos = en;
    }
    XV_CHECK(pos == buf_size, "{}: bytes [{}, {}) at the end of the data buffer belong to no tensor", path, pos,
             buf_size);
    for (auto& [name, ti] : tensors_) ti.file = &path_;
  } catch (...) {
    ::munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafeTensorsFile::~SafeTensorsFile() {
  if (map_) ::munmap(map_, size_);
}

WeightStore WeightStore::open_file(const std::string& path) {
  require_regular_file(path, "weight file");  // a FIFO would block the open, a device has no size
  WeightStore ws;
  ws.where_ = path;
  auto f = std::make_shared<SafeTensorsFile>(path);
  for (const auto& [name, ti] : f->tensors()) ws.index_[name] = &ti;
  ws.files_.push_back(std::move(f));
  return ws;
}

WeightStore WeightStore::open_dir(const std::string& dir) {
  std::error_code ec;
  require_dir(dir, "model folder");
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
  if (fs::exists(single, ec)) {
    return open_file(single);  // messages name the file
  }
  XV_CHECK(fs::exists(index, ec), "{}: no model.safetensors or model.safetensors.index.json in the model folder", dir);
  json j;
  try {
    j = json::parse(read_file(index));
  } catch (const json::exception& e) {
    fail("{}: not valid JSON: {}", index, e.what());
  }
  XV_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
           "{}: field 'weight_map' (object tensor name -> shard file) is missing", index);
  WeightStore ws;
  ws.where_ = dir;
  std::map<std::string, std::shared_ptr<SafeTensorsFile>> shards;
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    XV_CHECK(it->is_string(), "{}: weight_map.{} must be a file name", index, it.key());
    const std::string shard = it->get<std::string>();
    XV_CHECK(shard.find('/') == std::string::npos && shard.find("..") == std::string::npos,
             "{}: weight_map.{} names '{}', which is not a file inside the model folder", index, it.key(), shard);
    auto& f = shards[shard];
    if (!f) {
      f = std::make_shared<SafeTensorsFile>((fs::path(dir) / shard).string());
      ws.files_.push_back(f);
    }
    auto t = f->tensors().find(it.key());
    XV_CHECK(t != f->tensors().end(), "{}: weight_map says tensor '{}' is in {}, but that shard does not hold it",
             index, it.key(), shard);
    ws.index_[it.key()] = &t->second;
  }
  return ws;
}

const TensorInfo& WeightStore::info(const std::string& name) const {
  auto it = index_.find(name);
  XV_CHECK(it != index_.end(), "{}: missing tensor '{}'", where_, name);
  return *it->second;
}

Tensor WeightStore::get(const std::string& name, const Shape& expected, DType as) const {
  const TensorInfo& ti = info(name);
  XV_CHECK(ti.shape == expected, "{}: tensor '{}' has shape {} but config.json implies {}", *ti.file, name,
           shape_str(ti.shape), shape_str(expected));
  XV_CHECK(ti.dtype == DType::F32 || ti.dtype == DType::BF16 || ti.dtype == DType::F16 || ti.dtype == DType::F64,
           "{}: tensor '{}' has dtype {}; a floating-point dtype (F32, BF16, F16) is expected", *ti.file, name,
           dtype_name(ti.dtype));
  XV_CHECK(as == DType::F32 || as == DType::BF16 || as == DType::F16, "{}: tensor '{}' cannot be held as {}", *ti.file,
           name, dtype_name(as));
  if (shapes_only_) return Tensor::shape_only(ti.shape, as);
  if (ti.dtype == as) return Tensor::from_bytes(ti.shape, as, ti.data, ti.nbytes);
  Tensor t(ti.shape);
  convert_to_f32(ti.dtype, ti.data, t.data<float>(), size_t(t.numel()));
  return as == DType::F32 ? t : t.to_dtype(as);
}

void WeightStore::release_pages(const std::string& name) const {
  const TensorInfo& ti = info(name);
  const uintptr_t page = uintptr_t(::sysconf(_SC_PAGESIZE));
  const uintptr_t b = (uintptr_t(ti.data) + page - 1) / page * page, e = (uintptr_t(ti.data) + ti.nbytes) / page * page;
  if (b < e) ::madvise(reinterpret_cast<void*>(b), e - b, MADV_DONTNEED);  // advisory: a failure costs memory only
}

int64_t WeightStore::elements() const {
  int64_t n = 0;
  for (const auto& [name, info] : index_) n += shape_numel(info->shape);
  return n;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : index_) out.push_back(n);
  return out;
}

SafeTensorsWriter::SafeTensorsWriter(const std::string& path, const std::vector<std::pair<std::string, Shape>>& layout,
                                     DType dtype, const std::map<std::string, std::string>& metadata)
    : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())), layout_(layout), dtype_(dtype) {
  require_replaceable_file(path);
  XV_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16,
           "{}: safetensors writer supports F32, BF16 and F16, not {}", path, dtype_name(dtype));
  json h = json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t off = 0;
  for (const auto& [name, shape] : layout_) {
    const size_t nb = size_t(shape_numel(shape)) * dtype_size(dtype);
    XV_CHECK(!h.contains(name), "{}: tensor '{}' is listed twice", path, name);
    h[name] = {{"dtype", std::string(dtype_name(dtype))}, {"shape", shape}, {"data_offsets", {off, off + nb}}};
    off += nb;
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');  // 8-byte aligned data buffer, as the reference writer does
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  XV_CHECK(fd_ >= 0, "{}: cannot write (creating {}): {}", path_, tmp_, std::strerror(errno));
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((uint64_t(hs.size()) >> (8 * i)) & 0xff);
  try {
    write_bytes(len, 8);
    write_bytes(hs.data(), hs.size());
  } catch (...) {  // the destructor does not run for a constructor that throws
    ::close(fd_);
    ::unlink(tmp_.c_str());
    fd_ = -1;
    throw;
  }
}

SafeTensorsWriter::~SafeTensorsWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(tmp_.c_str());
  }
}

void SafeTensorsWriter::write_bytes(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd_, c, n);
    XV_CHECK(w > 0, "{}: write failed: {}", path_, std::strerror(errno));
    c += w;
    n -= size_t(w);
  }
}

void SafeTensorsWriter::append(const Tensor& t) {
  XV_CHECK(next_ < layout_.size(), "{}: more tensors appended than the layout lists", path_);
  const auto& [name, shape] = layout_[next_++];
  XV_CHECK(t.shape() == shape, "{}: tensor '{}' appended with shape {}, the layout says {}", path_, name,
           shape_str(t.shape()), shape_str(shape));
  const size_t n = size_t(t.numel());
  if (n == 0) return;
  if (t.dtype() == dtype_) {  // its bytes as they are (from the device when it lives there)
    if (t.device().is_cpu()) {
      write_bytes(t.raw(), t.nbytes());
    } else {
      const Tensor host = t.to(Device::cpu());
      write_bytes(host.raw(), host.nbytes());
    }
    return;
  }
  const std::vector<float> v = t.to_vector();
  if (dtype_ == DType::F32) {
    write_bytes(v.data(), n * 4);
    return;
  }
  std::vector<uint16_t> h16(n);
  for (size_t i = 0; i < n; ++i) h16[i] = dtype_ == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
  write_bytes(h16.data(), n * 2);
}

void SafeTensorsWriter::finish() {
  XV_CHECK(next_ == layout_.size(), "{}: {} of {} tensors written", path_, next_, layout_.size());
  XV_CHECK(::fsync(fd_) == 0, "{}: flush failed: {}", path_, std::strerror(errno));
  ::close(fd_);
  fd_ = -1;
  if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp_.c_str());
    fail("{}: cannot rename into place: {}", path_, std::strerror(e));
  }
}

void write_safetensors(const std::string& path, const std::vector<NamedTensor>& tensors, DType dtype,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<NamedTensor> sorted = tensors;
  std::sort(sorted.begin(), sorted.end(), [](const NamedTensor& a, const NamedTensor& b) { return a.name < b.name; });
  std::vector<std::pair<std::string, Shape>> layout;
  for (const auto& nt : sorted) layout.emplace_back(nt.name, nt.tensor->shape());
  SafeTensorsWriter w(path, layout, dtype, metadata);
  for (const auto& nt : sorted) w.append(*nt.tensor);
  w.finish();
}

void write_safetensors_like(const std::string& path, const WeightStore& ws, const TensorReplacer& replace) {
  const std::vector<std::string> names = ws.names();
  json h = json::object();
  h["__metadata__"] = {{"format", "pt"}};
  size_t off = 0;
  for (const auto& n : names) {
    const TensorInfo& ti = ws.info(n);
    h[n] = {{"dtype", std::string(dtype_name(ti.dtype))}, {"shape", ti.shape}, {"data_offsets", {off, off + ti.nbytes}}};
    off += ti.nbytes;
  }
  std::string hs = h.dump();
  hs.append((8 - hs.size() % 8) % 8, ' ');
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  XV_CHECK(fd >= 0, "{}: cannot create file: {}", path, std::strerror(errno));
  struct Fd {
    int fd;
    ~Fd() { ::close(fd); }
  } guard{fd};
  auto put = [&](const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd, c, n);
      XV_CHECK(w > 0, "{}: write failed: {}", path, std::strerror(errno));
      c += w;
      n -= size_t(w);
    }
  };
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t((uint64_t(hs.size()) >> (8 * i)) & 0xff);
  put(len, 8);
  put(hs.data(), hs.size());
  Tensor t;
  for (const auto& n : names) {  // one tensor at a time: nothing beyond it is held in memory
    const TensorInfo& ti = ws.info(n);
    if (!replace(n, &t)) {
      put(ti.data, ti.nbytes);
      continue;
    }
    XV_CHECK(t.shape() == ti.shape, "{}: the new '{}' has shape {}, the checkpoint's {}", ws.where(), n,
             shape_str(t.shape()), shape_str(ti.shape));
    XV_CHECK(ti.dtype == DType::F32 || ti.dtype == DType::BF16 || ti.dtype == DType::F16,
             "{}: cannot write a new '{}' as dtype {}", ws.where(), n, dtype_name(ti.dtype));
    if (t.dtype() == ti.dtype) {  // its bytes as they are
      if (t.device().is_cpu()) {
        put(t.raw(), ti.nbytes);
      } else {
        const Tensor host = t.to(Device::cpu());
        put(host.raw(), ti.nbytes);
      }
      continue;
    }
    const std::vector<float> v = t.to_vector();
    if (ti.dtype == DType::F32) {
      put(v.data(), ti.nbytes);
    } else {
      std::vector<uint16_t> h16(v.size());
      for (size_t i = 0; i < h16.size(); ++i) h16[i] = ti.dtype == DType::BF16 ? f32_to_bf16(v[i]) : f32_to_f16(v[i]);
      put(h16.data(), h16.size() * 2);
    }
  }
  XV_CHECK(::fsync(fd) == 0, "{}: flush failed: {}", path, std::strerror(errno));
}

}  // namespace xv
