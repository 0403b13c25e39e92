#include "core/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/dtype.h"
#include "core/file_util.h"

namespace xv {

namespace {

struct NpyHeader {
  std::string descr;
  bool fortran = false;
  Shape shape;
  size_t data_offset = 0;
};

NpyHeader parse_header(const std::string& path, const std::string& bytes) {
  XV_CHECK(bytes.size() >= 10 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0,
           "{}: not a .npy file (magic \\x93NUMPY missing)", path);
  uint8_t major = uint8_t(bytes[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = uint8_t(bytes[8]) | (size_t(uint8_t(bytes[9])) << 8);
    hstart = 10;
  } else if (major == 2 || major == 3) {
    XV_CHECK(bytes.size() >= 12, "{}: truncated .npy header", path);
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= size_t(uint8_t(bytes[8 + i])) << (8 * i);
    hstart = 12;
  } else {
    fail("{}: unsupported .npy format version {}", path, int(major));
  }
  XV_CHECK(hstart + hlen <= bytes.size(), "{}: .npy header length {} runs past the end of the file", path, hlen);
  std::string h = bytes.substr(hstart, hlen);
  NpyHeader out;
  out.data_offset = hstart + hlen;
  auto field = [&](const char* key) -> std::string {
    size_t k = h.find(key);
    XV_CHECK(k != std::string::npos, "{}: .npy header has no '{}' field", path, key);
    size_t c = h.find(':', k);
    XV_CHECK(c != std::string::npos, "{}: malformed .npy header", path);
    return h.substr(c + 1);
  };
  std::string d = field("'descr'");
  size_t q1 = d.find('\''), q2 = d.find('\'', q1 + 1);
  XV_CHECK(q1 != std::string::npos && q2 != std::string::npos, "{}: malformed 'descr' in .npy header", path);
  out.descr = d.substr(q1 + 1, q2 - q1 - 1);
  out.fortran = field("'fortran_order'").find("True") < field("'fortran_order'").find(',');
  std::string s = field("'shape'");
  size_t p1 = s.find('('), p2 = s.find(')');
  XV_CHECK(p1 != std::string::npos && p2 != std::string::npos, "{}: malformed 'shape' in .npy header", path);
  std::stringstream ss(s.substr(p1 + 1, p2 - p1 - 1));
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    const size_t a = tok.find_first_not_of(" "), b = tok.find_last_not_of(" ");
    if (a == std::string::npos) continue;
    const std::string d = tok.substr(a, b - a + 1);
    XV_CHECK(!d.empty() && d.size() <= 18 && d.find_first_not_of("0123456789") == std::string::npos,
             "{}: 'shape' entries must be non-negative integers, found '{}'", path, d);
    out.shape.push_back(std::stoll(d));
  }
  XV_CHECK(!out.fortran, "{}: Fortran-ordered .npy arrays are not supported", path);
  return out;
}

std::string read_all(const std::string& path) { return read_file(path, uint64_t(1) << 40); }
}  // namespace

Tensor read_npy(const std::string& path) {
  std::string bytes = read_all(path);
  NpyHeader h = parse_header(path, bytes);
  const size_t avail = bytes.size() - h.data_offset;
  size_t n = 1;
  for (int64_t d : h.shape) {
    XV_CHECK(d == 0 || n <= avail / size_t(d), "{}: shape {} needs more data than the file's {} bytes", path,
             shape_str(h.shape), avail);
    n *= size_t(d);
  }
  const char* src = bytes.data() + h.data_offset;
  DType dt;
  if (h.descr == "<f4") dt = DType::F32;
  else if (h.descr == "<f8") dt = DType::F64;
  else if (h.descr == "<f2") dt = DType::F16;
  else if (h.descr == "<i8") dt = DType::I64;
  else if (h.descr == "<i4") dt = DType::I32;
  else if (h.descr == "|u1") dt = DType::U8;
  else if (h.descr == "|b1") dt = DType::BOOL;
  else fail("{}: unsupported .npy dtype '{}'", path, h.descr);
  XV_CHECK(avail >= n * dtype_size(dt), "{}: .npy data is truncated ({} bytes, {} expected)", path, avail,
           n * dtype_size(dt));
  Tensor t(h.shape);
  convert_to_f32(dt, src, t.data<float>(), n);
  return t;
}

std::vector<int64_t> read_npy_i64(const std::string& path, Shape* shape) {
  std::string bytes = read_all(path);
  NpyHeader h = parse_header(path, bytes);
  const size_t avail = bytes.size() - h.data_offset;
  size_t n = 1;
  for (int64_t d : h.shape) {
    XV_CHECK(d == 0 || n <= avail / size_t(d), "{}: shape {} needs more data than the file's {} bytes", path,
             shape_str(h.shape), avail);
    n *= size_t(d);
  }
  const char* src = bytes.data() + h.data_offset;
  std::vector<int64_t> out(n);
  if (h.descr == "<i8") {
    XV_CHECK(avail >= n * 8, "{}: .npy data is truncated", path);
    if (n > 0) std::memcpy(out.data(), src, n * 8);  // an empty vector's data() may be null
  } else if (h.descr == "<i4") {
    XV_CHECK(avail >= n * 4, "{}: .npy data is truncated", path);
    for (size_t i = 0; i < n; ++i) {
      int32_t v;
      std::memcpy(&v, src + 4 * i, 4);
      out[i] = v;
    }
  } else {
    fail("{}: expected an integer .npy array (<i8 or <i4), found '{}'", path, h.descr);
  }
  if (shape) *shape = h.shape;
  return out;
}

void write_npy(const std::string& path, const Tensor& t) {
  // As numpy spells it: "(2, 64)", "(5,)", "()".
  std::string shape = "(";
  for (size_t i = 0; i < t.shape().size(); ++i) shape += (i ? ", " : "") + std::to_string(t.shape()[i]);
  if (t.shape().size() == 1) shape += ",";
  shape += ")";
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += char(1);
  out += char(0);
  out += char(header.size() & 0xff);
  out += char((header.size() >> 8) & 0xff);
  out += header;
  const std::vector<float> v = t.to_vector();  // f32 on the host, whatever the tensor's dtype and device
  out.append(reinterpret_cast<const char*>(v.data()), v.size() * 4);
  write_file_atomic(path, out);
}

}  // namespace xv
