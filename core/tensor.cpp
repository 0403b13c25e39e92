#include "core/tensor.h"

#include <algorithm>
#include <cstring>

namespace xv {

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

namespace {

void check_shape(const Shape& s) {
  for (int64_t d : s) XV_CHECK(d >= 0, "tensor: negative dimension in shape {}", shape_str(s));
}

bool is_float(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F64; }

}  // namespace

Tensor::Tensor(Shape s, DType t, Device d) : shape_(std::move(s)), dtype_(t), device_(d) {
  check_shape(shape_);
  storage_ = Storage::allocate(d, nbytes(), true);
}

Tensor::Tensor(const Tensor& o) : shape_(o.shape_), dtype_(o.dtype_), device_(o.device_) {
  if (!o.storage_) return;
  storage_ = Storage::allocate(device_, nbytes(), false);
  copy_bytes(storage_->data(), device_, o.raw(), o.device_, nbytes());
}

Tensor& Tensor::operator=(const Tensor& o) {
  if (this != &o) *this = Tensor(o);
  return *this;
}

Tensor::Tensor(Tensor&& o) noexcept
    : shape_(std::move(o.shape_)), dtype_(o.dtype_), device_(o.device_), storage_(std::move(o.storage_)),
      offset_(o.offset_) {
  o.shape_ = {0};
  o.storage_.reset();
  o.offset_ = 0;
}

Tensor& Tensor::operator=(Tensor&& o) noexcept {
  if (this == &o) return *this;
  shape_ = std::move(o.shape_);
  dtype_ = o.dtype_;
  device_ = o.device_;
  storage_ = std::move(o.storage_);
  offset_ = o.offset_;
  o.shape_ = {0};
  o.storage_.reset();
  o.offset_ = 0;
  return *this;
}

Tensor Tensor::shape_only(Shape s, DType t, Device d) {
  check_shape(s);
  Tensor out;
  out.shape_ = std::move(s);
  out.dtype_ = t;
  out.device_ = d;
  return out;
}

Tensor Tensor::from_host(Shape s, const float* src, DType t, Device d) {
  check_shape(s);
  XV_CHECK(t == DType::F32 || t == DType::BF16 || t == DType::F16, "tensor: from f32 values into {}: expected F32, "
           "BF16 or F16", dtype_name(t));
  Tensor host(std::move(s), t, Device::cpu());
  const int64_t n = host.numel();
  if (t == DType::F32) {
    if (n) std::memcpy(host.raw(), src, size_t(n) * 4);
  } else {
    uint16_t* h = host.data<uint16_t>();
    for (int64_t i = 0; i < n; ++i) h[i] = t == DType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
  }
  if (d.is_cpu()) return host;
  return std::move(host).to(d);
}

Tensor Tensor::from_host(Shape s, const int32_t* src, Device d) {
  check_shape(s);
  Tensor host(std::move(s), DType::I32, Device::cpu());
  if (host.numel()) std::memcpy(host.raw(), src, host.nbytes());
  if (d.is_cpu()) return host;
  return std::move(host).to(d);
}

Tensor Tensor::from_vector(Shape s, const std::vector<float>& v, DType t, Device d) {
  XV_CHECK(int64_t(v.size()) == shape_numel(s), "tensor: {} values for shape {}", v.size(), shape_str(s));
  return from_host(std::move(s), v.data(), t, d);
}

Tensor Tensor::from_vector(Shape s, const std::vector<int32_t>& v, Device d) {
  XV_CHECK(int64_t(v.size()) == shape_numel(s), "tensor: {} values for shape {}", v.size(), shape_str(s));
  return from_host(std::move(s), v.data(), d);
}

Tensor Tensor::filled(Shape s, float v, DType t, Device d) {
  const std::vector<float> values(static_cast<size_t>(shape_numel(s)), v);
  return from_host(std::move(s), values.data(), t, d);
}

Tensor Tensor::from_bytes(Shape s, DType t, const void* src, size_t bytes, Device d) {
  check_shape(s);
  XV_CHECK(bytes == size_t(shape_numel(s)) * dtype_size(t), "tensor: {} bytes for {} of shape {}", bytes,
           dtype_name(t), shape_str(s));
  Tensor out;
  out.shape_ = std::move(s);
  out.dtype_ = t;
  out.device_ = d;
  out.storage_ = Storage::allocate(d, bytes, false);
  copy_bytes(out.storage_->data(), d, src, Device::cpu(), bytes);
  return out;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int k = i < 0 ? n + i : i;
  XV_CHECK(k >= 0 && k < n, "tensor: dimension {} of a tensor of shape {}", i, shape_str(shape_));
  return shape_[size_t(k)];
}

void Tensor::reshape(Shape s) {
  check_shape(s);
  XV_CHECK(shape_numel(s) == numel(), "reshape: {} elements cannot take shape {}", numel(), shape_str(s));
  shape_ = std::move(s);
}

void Tensor::release() {
  storage_.reset();
  offset_ = 0;
}

Tensor Tensor::to(Device d) && {
  if (d == device_) return std::move(*this);
  return static_cast<const Tensor&>(*this).to(d);
}

Tensor Tensor::to(Device d) const& {
  if (d == device_) return *this;
  Tensor out = shape_only(shape_, dtype_, d);
  if (!storage_) return out;
  out.storage_ = Storage::allocate(d, nbytes(), false);
  copy_bytes(out.storage_->data(), d, raw(), device_, nbytes());
  return out;
}

Tensor Tensor::alias(int64_t offset, Shape s) const {
  XV_CHECK(storage_, "tensor alias: the tensor has no storage");
  check_shape(s);
  const size_t es = dtype_size(dtype_);
  XV_CHECK(offset >= 0 && offset + shape_numel(s) <= numel(), "tensor alias: elements [{}, {}) of a tensor of {}",
           offset, offset + shape_numel(s), numel());
  Tensor out;
  out.shape_ = std::move(s);
  out.dtype_ = dtype_;
  out.device_ = device_;
  out.storage_ = storage_;
  out.offset_ = offset_ + size_t(offset) * es;
  return out;
}

Tensor Tensor::to_dtype(DType t) const {
  XV_CHECK(device_.is_cpu(), "tensor: to_dtype on {}: cast device tensors with ops::cast", device_.str());
  if (t == dtype_) return *this;
  XV_CHECK(is_float(dtype_) && (t == DType::F32 || t == DType::BF16 || t == DType::F16),
           "tensor: no conversion from {} to {}", dtype_name(dtype_), dtype_name(t));
  if (!storage_) return shape_only(shape_, t, device_);
  const std::vector<float> v = to_vector();
  return from_host(shape_, v.data(), t, device_);
}

void Tensor::check_raw(bool ok) const {
  XV_CHECK(ok, "tensor: raw access as the wrong element type (the tensor is {})", dtype_name(dtype_));
}

float Tensor::at(int64_t i) const {
  XV_CHECK(device_.is_cpu(), "tensor: element access on {}: copy it to the host first (Tensor::to)", device_.str());
  XV_CHECK(storage_, "tensor: element access on a tensor without storage (shape {})", shape_str(shape_));
  XV_CHECK(i >= 0 && i < numel(), "tensor: element {} of {}", i, numel());
  const void* p = raw();
  switch (dtype_) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    case DType::F64: return float(static_cast<const double*>(p)[i]);
    case DType::I32: return float(static_cast<const int32_t*>(p)[i]);
    case DType::I64: return float(static_cast<const int64_t*>(p)[i]);
    default: break;
  }
  float f;
  convert_to_f32(dtype_, static_cast<const char*>(p) + size_t(i) * dtype_size(dtype_), &f, 1);
  return f;
}

void Tensor::set(int64_t i, float v) {
  XV_CHECK(device_.is_cpu(), "tensor: element access on {}: copy it to the host first (Tensor::to)", device_.str());
  XV_CHECK(storage_, "tensor: element access on a tensor without storage (shape {})", shape_str(shape_));
  XV_CHECK(i >= 0 && i < numel(), "tensor: element {} of {}", i, numel());
  void* p = raw();
  switch (dtype_) {
    case DType::F32: static_cast<float*>(p)[i] = v; return;
    case DType::BF16: static_cast<uint16_t*>(p)[i] = f32_to_bf16(v); return;
    case DType::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16(v); return;
    case DType::F64: static_cast<double*>(p)[i] = v; return;
    case DType::I32: static_cast<int32_t*>(p)[i] = int32_t(v); return;
    case DType::I64: static_cast<int64_t*>(p)[i] = int64_t(v); return;
    default: fail("tensor: set on a {} tensor", dtype_name(dtype_));
  }
}

std::vector<float> Tensor::to_vector() const {
  if (!device_.is_cpu()) return to(Device::cpu()).to_vector();
  XV_CHECK(storage_ || numel() == 0, "tensor: reading a tensor without storage (shape {})", shape_str(shape_));
  std::vector<float> out(static_cast<size_t>(numel()));
  if (!out.empty()) convert_to_f32(dtype_, raw(), out.data(), out.size());
  return out;
}

std::vector<int32_t> Tensor::to_i32_vector() const {
  if (!device_.is_cpu()) return to(Device::cpu()).to_i32_vector();
  XV_CHECK(dtype_ == DType::I32, "tensor: to_i32_vector on a {} tensor", dtype_name(dtype_));
  std::vector<int32_t> out(static_cast<size_t>(numel()));
  if (!out.empty()) std::memcpy(out.data(), raw(), out.size() * 4);
  return out;
}

View Tensor::view() const {
  View v;
  v.ptr = const_cast<void*>(raw());
  v.dtype = dtype_;
  v.device = device_;
  v.cols = shape_.empty() ? 1 : shape_.back();
  v.rows = v.cols == 0 ? 0 : numel() / v.cols;
  v.stride = v.cols;
  v.present = true;
  return v;
}

View Tensor::flat() const {
  View v = view();
  v.rows = 1;
  v.cols = numel();
  v.stride = v.cols;
  return v;
}

Tensor concat_rows(const std::vector<Tensor>& parts) {
  XV_CHECK(!parts.empty(), "concat_rows: nothing to concatenate");
  Shape s = parts.front().shape();
  const DType t = parts.front().dtype();
  int64_t rows = 0;
  for (const auto& p : parts) {
    XV_CHECK(p.ndim() == int(s.size()) && std::equal(p.shape().begin() + 1, p.shape().end(), s.begin() + 1) &&
                 p.dtype() == t && p.device().is_cpu(),
             "concat_rows: shape {} ({}) does not match {} ({})", shape_str(p.shape()), dtype_name(p.dtype()),
             shape_str(s), dtype_name(t));
    rows += p.dim(0);
  }
  s[0] = rows;
  if (std::all_of(parts.begin(), parts.end(), [](const Tensor& p) { return p.shape_only(); }))
    return Tensor::shape_only(s, t);
  Tensor out(s, t);
  char* dst = static_cast<char*>(out.raw());
  for (const auto& p : parts) {
    XV_CHECK(!p.shape_only(), "concat_rows: a part has no storage");
    if (p.nbytes()) std::memcpy(dst, p.raw(), p.nbytes());
    dst += p.nbytes();
  }
  return out;
}

}  // namespace xv
