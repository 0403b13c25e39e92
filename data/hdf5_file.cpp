#include "data/hdf5_file.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <mutex>

namespace xv::h5 {

namespace {

// HDF5 prints its error stack to stderr by default; we report errors ourselves. Its exit-time clean-up is off
// (H5dont_atexit, before any other call): every file of ours is closed explicitly with its status checked, and
// after a close that failed (a full disk) the library's own clean-up at exit dereferences the half-closed file
// and crashes (seen with 1.10.8) instead of letting the error message stand.
void silence_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] {
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

hid_t mem_type(DType dt) {
  switch (dt) {
    case DType::U8: return H5T_NATIVE_UINT8;
    case DType::I32: return H5T_NATIVE_INT32;
    case DType::I64: return H5T_NATIVE_INT64;
    case DType::U64: return H5T_NATIVE_UINT64;
    case DType::F32: return H5T_NATIVE_FLOAT;
    default: break;
  }
  fail("HDF5: no dataset element type for {}", dtype_name(dt));
}

// Stored (file) types: little-endian, as h5py writes on every common platform.
hid_t file_type(DType dt) {
  switch (dt) {
    case DType::U8: return H5T_STD_U8LE;
    case DType::I32: return H5T_STD_I32LE;
    case DType::I64: return H5T_STD_I64LE;
    case DType::U64: return H5T_STD_U64LE;
    case DType::F32: return H5T_IEEE_F32LE;
    default: break;
  }
  fail("HDF5: no dataset element type for {}", dtype_name(dt));
}


std::string describe_type(hid_t t) {
  const H5T_class_t c = H5Tget_class(t);
  const size_t size = H5Tget_size(t);
  if (c == H5T_INTEGER) return fmt::format("{}int{}", H5Tget_sign(t) == H5T_SGN_NONE ? "u" : "", size * 8);
  if (c == H5T_FLOAT) return fmt::format("float{}", size * 8);
  if (c == H5T_STRING) return "string";
  if (c == H5T_COMPOUND) return "compound";
  if (c == H5T_VLEN) return "variable-length";
  return "an unsupported type";
}

}  // namespace

const char* element_name(DType dt) {
  switch (dt) {
    case DType::U8: return "uint8";
    case DType::I32: return "int32";
    case DType::I64: return "int64";
    case DType::U64: return "uint64";
    case DType::F32: return "float32";
    default: break;
  }
  return "an unsupported type";
}

File File::open(const std::string& path, bool writable) {
  silence_hdf5();
  File f;
  f.path_ = path;
  std::error_code ec;
  XV_CHECK(std::filesystem::is_regular_file(path, ec), "{}: no such file", path);
  XV_CHECK(H5Fis_hdf5(path.c_str()) > 0, "{}: not an HDF5 file (truncated, or another format)", path);
  const hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  XV_CHECK(id >= 0, "{}: cannot open as HDF5{}", path, writable ? " for writing" : "");
  f.f_ = Handle(id, H5Fclose);
  return f;
}

File File::create(const std::string& path) {
  silence_hdf5();
  File f;
  f.path_ = path;
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  XV_CHECK(id >= 0, "{}: cannot create an HDF5 file", path);
  f.f_ = Handle(id, H5Fclose);
  return f;
}

void File::close() {
  if (!f_.valid()) return;
  const herr_t a = H5Fflush(f_.get(), H5F_SCOPE_LOCAL);
  const hid_t id = f_.release();  // closed here, with its status checked
  const herr_t b = H5Fclose(id);
  XV_CHECK(a >= 0 && b >= 0, "{}: writing the HDF5 file failed (disk full, or the file-size limit ulimit -f reached?)",
           path_);
}

bool File::exists(const std::string& obj) const {
  if (obj == "/") return true;
  std::string cur;
  size_t pos = 1;
  while (pos <= obj.size()) {
    const size_t next = std::min(obj.find('/', pos), obj.size());
    cur = obj.substr(0, next);
    if (H5Lexists(f_.get(), cur.c_str(), H5P_DEFAULT) <= 0) return false;
    pos = next + 1;
  }
  return true;
}

void File::remove(const std::string& obj) {
  XV_CHECK(H5Ldelete(f_.get(), obj.c_str(), H5P_DEFAULT) >= 0, "{}: cannot remove", where(obj));
}

Handle File::open_obj(const std::string& obj) const {
  XV_CHECK(exists(obj), "{}: missing (required by the corpus format)", where(obj));
  const hid_t id = H5Oopen(f_.get(), obj.c_str(), H5P_DEFAULT);
  XV_CHECK(id >= 0, "{}: cannot open", where(obj));
  return Handle(id, H5Oclose);
}

std::vector<int64_t> File::shape(const std::string& name, int rank) const {
  XV_CHECK(exists(name), "{}: dataset missing (required by the corpus format)", where(name));
  Handle d(H5Dopen2(f_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  XV_CHECK(d.valid(), "{}: not a dataset", where(name));
  Handle s(H5Dget_space(d.get()), H5Sclose);
  XV_CHECK(s.valid(), "{}: unreadable dataspace", where(name));
  const int r = H5Sget_simple_extent_ndims(s.get());
  XV_CHECK(r >= 0 && r <= 8, "{}: unreadable dataspace", where(name));
  XV_CHECK(rank == 0 || r == rank, "{}: expected a rank-{} dataset, found rank {}", where(name), rank, r);
  std::vector<hsize_t> dims(static_cast<size_t>(r));
  H5Sget_simple_extent_dims(s.get(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

void File::check_dtype(const std::string& name, DType dt) const {
  XV_CHECK(exists(name), "{}: dataset missing (required by the corpus format)", where(name));
  Handle d(H5Dopen2(f_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  XV_CHECK(d.valid(), "{}: not a dataset", where(name));
  Handle t(H5Dget_type(d.get()), H5Tclose);
  const H5T_class_t c = H5Tget_class(t.get());
  const bool want_float = dt == DType::F32;
  const bool want_signed = dt == DType::I32 || dt == DType::I64;
  const bool ok = want_float ? (c == H5T_FLOAT && H5Tget_size(t.get()) == 4)
                             : (c == H5T_INTEGER && H5Tget_size(t.get()) == dtype_size(dt) &&
                                (H5Tget_sign(t.get()) == H5T_SGN_2) == want_signed);
  XV_CHECK(ok, "{}: expected {} elements, found {}", where(name), element_name(dt), describe_type(t.get()));
}

void File::read_raw(const std::string& name, DType dt, void* out, std::vector<int64_t> start,
                    std::vector<int64_t> count) const {
  Handle d(H5Dopen2(f_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  XV_CHECK(d.valid(), "{}: dataset missing (required by the corpus format)", where(name));
  if (start.empty()) {
    XV_CHECK(H5Dread(d.get(), mem_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) >= 0,
             "{}: read failed (truncated or corrupt file?)", where(name));
    return;
  }
  Handle fs(H5Dget_space(d.get()), H5Sclose);
  const int r = H5Sget_simple_extent_ndims(fs.get());
  XV_CHECK(r == 1 || r == 2, "{}: expected rank 1 or 2 for a row read, found {}", where(name), r);
  hsize_t dims[2] = {0, 0};
  H5Sget_simple_extent_dims(fs.get(), dims, nullptr);
  XV_CHECK(start[0] >= 0 && count[0] >= 0 && hsize_t(start[0] + count[0]) <= dims[0],
           "{}: rows [{}, {}) out of range (it has {})", where(name), start[0], start[0] + count[0], dims[0]);
  if (count[0] == 0) return;
  hsize_t st[2] = {hsize_t(start[0]), 0}, ct[2] = {hsize_t(count[0]), r == 2 ? dims[1] : 1};
  H5Sselect_hyperslab(fs.get(), H5S_SELECT_SET, st, nullptr, ct, nullptr);
  Handle ms(H5Screate_simple(r, ct, nullptr), H5Sclose);
  XV_CHECK(H5Dread(d.get(), mem_type(dt), ms.get(), fs.get(), H5P_DEFAULT, out) >= 0,
           "{}: read of rows [{}, {}) failed (truncated or corrupt file?)", where(name), start[0], start[0] + count[0]);
}

size_t File::claimed_count(const std::string& name, const std::vector<int64_t>& sh, size_t elem_size) const {
  uint64_t n = 1, bytes = 0;
  bool overflow = false;
  for (int64_t d : sh) overflow |= d < 0 || __builtin_mul_overflow(n, uint64_t(d), &n);
  overflow |= __builtin_mul_overflow(n, uint64_t(elem_size), &bytes);
  // Every element lives in the file, deflated at most about 1032:1 (zlib's limit); a dataspace claiming more
  // than that is corrupt, and allocating it first would exhaust memory before HDF5 noticed.
  Handle d(H5Dopen2(f_.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
  XV_CHECK(d.valid(), "{}: not a dataset", where(name));
  const uint64_t stored = H5Dget_storage_size(d.get());
  XV_CHECK(!overflow && bytes / 1100 <= stored, "{}: claims {} elements{}, but the file stores {} bytes of it (corrupt?)",
           where(name), n, overflow ? " (overflowing)" : "", stored);
  return size_t(n);
}

std::string File::read_bytes(const std::string& name) const {
  check_dtype(name, DType::U8);
  std::string out(claimed_count(name, shape(name, 1), 1), '\0');
  if (!out.empty()) read_raw(name, DType::U8, out.data(), {}, {});
  return out;
}

void File::write_raw(const std::string& name, DType dt, const void* data, int64_t n, int64_t cols,
                     const WriteOptions& o) {
  const int rank = cols > 0 ? 2 : 1;
  hsize_t dims[2] = {hsize_t(cols > 0 ? n / cols : n), hsize_t(cols)};
  Handle space(H5Screate_simple(rank, dims, nullptr), H5Sclose);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl.get(), 1);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (dims[0] > 0) {
    // Chunks of about chunk_bytes, whole rows: a sequential reader decompresses each chunk once.
    const int64_t row_bytes = int64_t(dtype_size(dt)) * (cols > 0 ? cols : 1);
    hsize_t chunk[2] = {hsize_t(std::clamp<int64_t>(o.chunk_bytes / row_bytes, 1, int64_t(dims[0]))), dims[1]};
    H5Pset_chunk(dcpl.get(), rank, chunk);
    if (o.deflate > 0) {
      if (dtype_size(dt) > 1) H5Pset_shuffle(dcpl.get());
      H5Pset_deflate(dcpl.get(), unsigned(o.deflate));
    }
  }
  Handle d(H5Dcreate2(f_.get(), name.c_str(), file_type(dt), space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
           H5Dclose);
  XV_CHECK(d.valid(), "{}: cannot create dataset", where(name));
  if (dims[0] > 0)
    XV_CHECK(H5Dwrite(d.get(), mem_type(dt), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0, "{}: write failed",
             where(name));
}

bool File::has_attr(const std::string& obj, const std::string& attr) const {
  if (!exists(obj)) return false;
  return H5Aexists_by_name(f_.get(), obj.c_str(), attr.c_str(), H5P_DEFAULT) > 0;
}

std::string File::read_string_attr(const std::string& obj, const std::string& attr) const {
  XV_CHECK(has_attr(obj, attr), "{}: attribute '{}' missing", where(obj), attr);
  Handle a(H5Aopen_by_name(f_.get(), obj.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  Handle t(H5Aget_type(a.get()), H5Tclose);
  XV_CHECK(H5Tget_class(t.get()) == H5T_STRING, "{}: attribute '{}': expected a string, found {}", where(obj), attr,
           describe_type(t.get()));
  Handle s(H5Aget_space(a.get()), H5Sclose);
  XV_CHECK(H5Sget_simple_extent_npoints(s.get()) == 1, "{}: attribute '{}': expected one string", where(obj), attr);
  if (H5Tis_variable_str(t.get()) > 0) {
    Handle mt(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mt.get(), H5T_VARIABLE);
    // HDF5 converts no string between character sets: read in the stored one (UTF-8 or ASCII; both are bytes).
    H5Tset_cset(mt.get(), H5Tget_cset(t.get()));
    char* p = nullptr;
    XV_CHECK(H5Aread(a.get(), mt.get(), &p) >= 0, "{}: attribute '{}': read failed", where(obj), attr);
    std::string out = p ? p : "";
    H5free_memory(p);
    return out;
  }
  const size_t n = H5Tget_size(t.get());
  XV_CHECK(n <= H5Aget_storage_size(a.get()), "{}: attribute '{}': a string of {} bytes, {} stored (corrupt?)",
           where(obj), attr, n, H5Aget_storage_size(a.get()));
  std::string out(n, '\0');
  Handle mt(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(mt.get(), n);
  H5Tset_cset(mt.get(), H5Tget_cset(t.get()));
  H5Tset_strpad(mt.get(), H5T_STR_NULLPAD);
  XV_CHECK(H5Aread(a.get(), mt.get(), out.data()) >= 0, "{}: attribute '{}': read failed", where(obj), attr);
  out.resize(std::strlen(out.c_str()));
  return out;
}

int64_t File::read_int_attr(const std::string& obj, const std::string& attr) const {
  XV_CHECK(has_attr(obj, attr), "{}: attribute '{}' missing", where(obj), attr);
  Handle a(H5Aopen_by_name(f_.get(), obj.c_str(), attr.c_str(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  Handle t(H5Aget_type(a.get()), H5Tclose);
  XV_CHECK(H5Tget_class(t.get()) == H5T_INTEGER, "{}: attribute '{}': expected an integer, found {}", where(obj),
           attr, describe_type(t.get()));
  Handle s(H5Aget_space(a.get()), H5Sclose);
  XV_CHECK(H5Sget_simple_extent_npoints(s.get()) == 1, "{}: attribute '{}': expected one integer", where(obj), attr);
  int64_t v = 0;
  XV_CHECK(H5Aread(a.get(), H5T_NATIVE_INT64, &v) >= 0, "{}: attribute '{}': read failed", where(obj), attr);
  return v;
}

void File::write_attr(const std::string& obj, const std::string& attr, const std::string& value) {
  Handle o = open_obj(obj);
  if (H5Aexists(o.get(), attr.c_str()) > 0) H5Adelete(o.get(), attr.c_str());
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  Handle s(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(o.get(), attr.c_str(), t.get(), s.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* p = value.c_str();
  XV_CHECK(a.valid() && H5Awrite(a.get(), t.get(), &p) >= 0, "{}: cannot write attribute '{}'", where(obj), attr);
}

void File::write_attr(const std::string& obj, const std::string& attr, int64_t value) {
  Handle o = open_obj(obj);
  if (H5Aexists(o.get(), attr.c_str()) > 0) H5Adelete(o.get(), attr.c_str());
  Handle s(H5Screate(H5S_SCALAR), H5Sclose);
  Handle a(H5Acreate2(o.get(), attr.c_str(), H5T_STD_I64LE, s.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  XV_CHECK(a.valid() && H5Awrite(a.get(), H5T_NATIVE_INT64, &value) >= 0, "{}: cannot write attribute '{}'",
           where(obj), attr);
}

}  // namespace xv::h5
