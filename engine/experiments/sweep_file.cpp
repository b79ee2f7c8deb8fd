#include "engine/experiments/sweep_file.h"

#include <hdf5.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>

#include "engine/error.h"

namespace ipna {

namespace {

// An HDF5 identifier closed on scope exit; construction checks it.
class H5 {
 public:
  H5() = default;
  H5(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
    if (id < 0) throw Error(what);
  }
  H5(H5&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  H5& operator=(H5&& o) noexcept {
    std::swap(id_, o.id_);
    std::swap(close_, o.close_);
    return *this;
  }
  ~H5() {
    if (id_ >= 0 && close_) close_(id_);
  }
  operator hid_t() const { return id_; }

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

void check(herr_t status, const std::string& what) {
  if (status < 0) throw Error(what);
}

// Errors are reported as ipna::Error naming the file; HDF5's own stack print is off.
struct QuietHdf5 {
  QuietHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};
const QuietHdf5 quiet_hdf5;

H5 string_type() {
  H5 t(H5Tcopy(H5T_C_S1), H5Tclose, "HDF5: string type");
  check(H5Tset_size(t, H5T_VARIABLE), "HDF5: string type");
  check(H5Tset_cset(t, H5T_CSET_UTF8), "HDF5: string type");
  return t;
}

// IEEE half precision as h5py and NumPy read it (float16).
H5 half_type() {
  H5 t(H5Tcopy(H5T_IEEE_F32LE), H5Tclose, "HDF5: float16 type");
  check(H5Tset_fields(t, 15, 10, 5, 0, 10), "HDF5: float16 type");
  check(H5Tset_size(t, 2), "HDF5: float16 type");
  check(H5Tset_ebias(t, 15), "HDF5: float16 type");
  return t;
}

// The item dimension of a chunked dataset is extendible: a chunk of several items must fit
// even where a file holds fewer (an empty shard).
H5 item_space(const std::vector<hsize_t>& dims, bool chunked, const std::string& what) {
  std::vector<hsize_t> max = dims;
  if (chunked) max[0] = H5S_UNLIMITED;
  return H5(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), max.data()), H5Sclose, what);
}

struct Writer {
  std::string path;
  hid_t file;
  int64_t n;

  // dims excludes the item dimension. Maps are chunked, shuffled and deflated.
  void write(hid_t group, const char* name, hid_t mem_type, hid_t file_type, std::vector<hsize_t> dims,
             const void* data, bool chunked, bool by_box = false) {
    dims.insert(dims.begin(), static_cast<hsize_t>(n));
    H5 space = item_space(dims, chunked, path + ": cannot describe dataset " + name);
    H5 dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, path + ": dataset properties");
    if (chunked) {
      // Chunks of about kChunkBytes: several items of small maps (few chunks to index), one item
      // (or one item's box, where `by_box`) of large ones, so reading one map reads little else.
      constexpr hsize_t kChunkBytes = 1 << 20;
      std::vector<hsize_t> chunk = dims;
      hsize_t row = sizeof(float);
      for (size_t i = 1; i < dims.size(); ++i) row *= dims[i];
      chunk[0] = std::clamp<hsize_t>(kChunkBytes / row, 1, std::max<hsize_t>(dims[0], 1));
      if (row > kChunkBytes && by_box) chunk[1] = 1;
      check(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), path + ": chunking " + name);
      check(H5Pset_shuffle(dcpl), path + ": shuffle filter");
      check(H5Pset_deflate(dcpl, 1), path + ": deflate filter");
    }
    H5 d(H5Dcreate2(group, name, file_type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose,
         path + ": cannot create dataset " + name);
    if (n > 0) check(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), path + ": cannot write " + name);
  }
};

void write_string_attr(hid_t obj, const char* name, const std::string& value, const std::string& path) {
  H5 t = string_type();
  H5 space(H5Screate(H5S_SCALAR), H5Sclose, path + ": attribute space");
  H5 a(H5Acreate2(obj, name, t, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose, path + ": cannot create attribute " + name);
  const char* p = value.c_str();
  check(H5Awrite(a, t, &p), path + ": cannot write attribute " + name);
}
void write_int_attr(hid_t obj, const char* name, int64_t value, const std::string& path) {
  H5 space(H5Screate(H5S_SCALAR), H5Sclose, path + ": attribute space");
  H5 a(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
       path + ": cannot create attribute " + name);
  check(H5Awrite(a, H5T_NATIVE_INT64, &value), path + ": cannot write attribute " + name);
}
std::string read_string_attr(hid_t obj, const char* name, const std::string& path) {
  H5 a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, path + ": not an ipna-fast sweep file (no attribute " + name + ")");
  H5 ft(H5Aget_type(a), H5Tclose, path + ": attribute " + name);
  if (H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) <= 0)
    throw Error(path + ": attribute " + name + " is not a string");
  H5 t = string_type();
  char* p = nullptr;
  check(H5Aread(a, t, &p), path + ": cannot read attribute " + name);
  std::string s = p ? p : "";
  H5free_memory(p);
  return s;
}
int64_t read_int_attr(hid_t obj, const char* name, const std::string& path) {
  H5 a(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose, path + ": not an ipna-fast sweep file (no attribute " + name + ")");
  int64_t v = 0;
  check(H5Aread(a, H5T_NATIVE_INT64, &v), path + ": cannot read attribute " + name);
  return v;
}

void write_info(hid_t file, const SweepFileInfo& info, const std::string& path) {
  write_string_attr(file, "format", kSweepFormat, path);
  write_string_attr(file, "config", info.config.dump(), path);
  write_string_attr(file, "versions", info.versions.dump(), path);
  write_string_attr(file, "shard", info.shard, path);
  write_int_attr(file, "first_index", info.first_index, path);
  write_int_attr(file, "items", info.items, path);
  write_int_attr(file, "dataset_items", info.dataset_items, path);
  write_int_attr(file, "failed", info.failed, path);
}

H5 create_file(const std::string& path) {
  return H5(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT), H5Fclose,
            path + ": cannot create the file (is the folder writable?)");
}
H5 create_group(hid_t file, const char* name, const std::string& path) {
  return H5(H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, path + ": cannot create " + name);
}

// float32 to IEEE half, rounding to nearest even. HDF5 1.10's own conversion to a
// user-defined 16-bit float loses the carry when rounding reaches the next
// power of two (0.0019530 becomes 0.0009766), so the bits are made here.
uint16_t to_half(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u);  // NaN, Inf
  if (abs >= 0x477ff000u) return sign | 0x7c00u;                                  // rounds past 65504
  if (abs < 0x38800000u) {                                                        // subnormal half (or 0)
    if (abs < 0x33000000u) return sign;                                           // under half the least subnormal
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(abs >> 23);                          // 14..24
    uint32_t h = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1), halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (h & 1u))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  uint32_t h = ((abs >> 23) - 112) << 10 | ((abs >> 13) & 0x3ffu);
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is right
  return sign | static_cast<uint16_t>(h);
}

template <class T, class F>
std::vector<T> gather(const std::vector<SweepRecord>& rs, size_t per, F field, T fill) {
  std::vector<T> out;
  out.reserve(rs.size() * per);
  for (const SweepRecord& r : rs) {
    const auto& v = field(r);
    for (size_t i = 0; i < per; ++i) out.push_back(i < v.size() ? static_cast<T>(v[i]) : fill);
  }
  return out;
}

}  // namespace

std::string hdf5_version() {
  unsigned maj = 0, min = 0, rel = 0;
  H5get_libversion(&maj, &min, &rel);
  return std::to_string(maj) + "." + std::to_string(min) + "." + std::to_string(rel);
}

void write_sweep_file(const std::string& path, const SweepLayout& L, const SweepFileInfo& info,
                      const std::vector<SweepRecord>& rs) {
  H5 file = create_file(path);
  Writer w{path, file, static_cast<int64_t>(rs.size())};
  {
    H5 g = create_group(file, "items", path);
    auto col_i64 = [&](const char* name, auto field) {
      std::vector<int64_t> v;
      for (const auto& r : rs) v.push_back(field(r));
      w.write(g, name, H5T_NATIVE_INT64, H5T_STD_I64LE, {}, v.data(), false);
    };
    auto col_i32 = [&](const char* name, auto field) {
      std::vector<int32_t> v;
      for (const auto& r : rs) v.push_back(field(r));
      w.write(g, name, H5T_NATIVE_INT32, H5T_STD_I32LE, {}, v.data(), false);
    };
    auto col_f64 = [&](const char* name, auto field) {
      std::vector<double> v;
      for (const auto& r : rs) v.push_back(field(r));
      w.write(g, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {}, v.data(), false);
    };
    auto col_str = [&](const char* name, auto field) {
      std::vector<const char*> v;
      for (const auto& r : rs) v.push_back(field(r).c_str());
      H5 t = string_type();
      w.write(g, name, t, t, {}, v.data(), false);
    };
    col_i64("index", [](const SweepRecord& r) { return r.index; });
    col_str("source", [](const SweepRecord& r) -> const std::string& { return r.source; });
    col_i32("label", [](const SweepRecord& r) { return r.label; });
    col_i32("class", [](const SweepRecord& r) { return r.cls; });
    col_i32("predicted", [](const SweepRecord& r) { return r.predicted; });
    {
      std::vector<int8_t> v;
      for (const auto& r : rs) v.push_back(r.ok ? 1 : 0);
      w.write(g, "ok", H5T_NATIVE_INT8, H5T_STD_I8LE, {}, v.data(), false);
    }
    col_str("error", [](const SweepRecord& r) -> const std::string& { return r.error; });
    col_f64("f_input", [](const SweepRecord& r) { return r.f_input; });
    col_f64("f_baseline", [](const SweepRecord& r) { return r.f_baseline; });
    col_f64("ig_sum", [](const SweepRecord& r) { return r.ig_sum; });
    col_f64("ig_gap", [](const SweepRecord& r) { return r.ig_gap; });
    col_f64("conductance_sum", [](const SweepRecord& r) { return r.conductance_sum; });
    col_f64("conductance_gap", [](const SweepRecord& r) { return r.conductance_gap; });
    col_i32("steps", [](const SweepRecord& r) { return r.steps; });
    col_i64("evaluations", [](const SweepRecord& r) { return r.evaluations; });
    col_f64("seconds", [](const SweepRecord& r) { return r.seconds; });
    const size_t B = L.boxes;
    if (B) {
      std::vector<int32_t> boxes;
      for (const auto& r : rs)
        for (size_t b = 0; b < B; ++b)
          for (int k = 0; k < 4; ++k) boxes.push_back(b < r.boxes.size() ? r.boxes[b][k] : -1);
      w.write(g, "boxes", H5T_NATIVE_INT32, H5T_STD_I32LE, {B, 4}, boxes.data(), false);
      auto per_box = [&](const char* name, auto field) {
        auto v = gather<double>(rs, B, field, NAN);
        w.write(g, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {B}, v.data(), false);
      };
      per_box("ipna_sum", [](const SweepRecord& r) -> const std::vector<double>& { return r.ipna_sum; });
      per_box("ig_inside", [](const SweepRecord& r) -> const std::vector<double>& { return r.ig_inside; });
      per_box("ig_outside", [](const SweepRecord& r) -> const std::vector<double>& { return r.ig_outside; });
      per_box("ipna_gap", [](const SweepRecord& r) -> const std::vector<double>& { return r.ipna_gap; });
    }
    const size_t Lv = L.prune_levels;
    if (Lv) {
      auto per_level = [&](const char* name, auto field) {
        auto v = gather<double>(rs, Lv, field, NAN);
        w.write(g, name, H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, {Lv}, v.data(), false);
      };
      per_level("pruned_confidence", [](const SweepRecord& r) -> const std::vector<double>& { return r.pruned_confidence; });
      per_level("pruned_ig_inside", [](const SweepRecord& r) -> const std::vector<double>& { return r.pruned_ig_inside; });
      per_level("pruned_ig_total", [](const SweepRecord& r) -> const std::vector<double>& { return r.pruned_ig_total; });
    }
  }
  if (L.maps != MapStorage::None && (L.ig || L.conductance || L.boxes)) {
    H5 g = create_group(file, "maps", path);
    H5 half = half_type();
    const bool f16 = L.maps == MapStorage::Float16;
    auto map = [&](const char* name, std::vector<int64_t> shape, auto field) {
      size_t per = 1;
      for (auto d : shape) per *= static_cast<size_t>(d);
      auto v = gather<float>(rs, per, field, NAN);
      const std::vector<hsize_t> dims(shape.begin(), shape.end());
      const bool by_box = std::string(name) == "ipna";
      if (f16) {
        std::vector<uint16_t> h(v.size());
        std::transform(v.begin(), v.end(), h.begin(), to_half);
        w.write(g, name, half, half, dims, h.data(), true, by_box);
      } else {
        w.write(g, name, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, dims, v.data(), true, by_box);
      }
    };
    if (L.ig) map("ig", L.input.dims, [](const SweepRecord& r) -> const std::vector<float>& { return r.ig; });
    if (L.conductance)
      map("conductance", L.split.dims, [](const SweepRecord& r) -> const std::vector<float>& { return r.conductance; });
    if (L.boxes) {
      std::vector<int64_t> s = L.split.dims;
      s.insert(s.begin(), L.boxes);
      map("ipna", s, [](const SweepRecord& r) -> const std::vector<float>& { return r.ipna; });
    }
  }
  write_info(file, info, path);
  check(H5Fflush(file, H5F_SCOPE_GLOBAL), path + ": cannot flush");
}

SweepFileInfo read_sweep_info(const std::string& path) {
  H5 file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose,
          path + ": cannot open as HDF5 (missing, unreadable, or not an HDF5 file)");
  if (read_string_attr(file, "format", path) != kSweepFormat)
    throw Error(path + ": not a sweep file of this version (format is not '" + std::string(kSweepFormat) + "')");
  SweepFileInfo info;
  try {
    info.config = nlohmann::json::parse(read_string_attr(file, "config", path));
    info.versions = nlohmann::json::parse(read_string_attr(file, "versions", path));
  } catch (const nlohmann::json::exception&) {
    throw Error(path + ": the config or versions attribute is not JSON");
  }
  info.shard = read_string_attr(file, "shard", path);
  info.first_index = read_int_attr(file, "first_index", path);
  info.items = read_int_attr(file, "items", path);
  info.dataset_items = read_int_attr(file, "dataset_items", path);
  info.failed = read_int_attr(file, "failed", path);
  return info;
}

namespace {
struct OpenDataset {
  H5 file, set, space;
  std::vector<hsize_t> dims;
  hsize_t count = 1;
};
OpenDataset open_dataset(const std::string& path, const std::string& name) {
  OpenDataset d;
  d.file = H5(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, path + ": cannot open as HDF5");
  d.set = H5(H5Dopen2(d.file, name.c_str(), H5P_DEFAULT), H5Dclose, path + ": no dataset " + name);
  d.space = H5(H5Dget_space(d.set), H5Sclose, path + ": shape of " + name);
  d.dims.resize(std::max(0, H5Sget_simple_extent_ndims(d.space)));
  H5Sget_simple_extent_dims(d.space, d.dims.data(), nullptr);
  for (hsize_t v : d.dims) d.count *= v;
  return d;
}
}  // namespace

std::vector<double> read_sweep_numbers(const std::string& path, const std::string& name, std::vector<int64_t>* shape) {
  OpenDataset d = open_dataset(path, name);
  std::vector<double> out(d.count);
  if (d.count) check(H5Dread(d.set, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()),
                     path + ": cannot read " + name + " as numbers");
  if (shape) shape->assign(d.dims.begin(), d.dims.end());
  return out;
}

std::vector<std::string> read_sweep_strings(const std::string& path, const std::string& name) {
  OpenDataset d = open_dataset(path, name);
  H5 t = string_type();
  std::vector<char*> p(d.count, nullptr);
  if (d.count) check(H5Dread(d.set, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, p.data()), path + ": cannot read " + name + " as text");
  std::vector<std::string> out;
  for (char* c : p) out.push_back(c ? c : "");
  if (d.count) H5Dvlen_reclaim(t, d.space, H5P_DEFAULT, p.data());
  return out;
}

namespace {
// Names of the datasets in a group, sorted.
std::vector<std::string> dataset_names(hid_t group) {
  std::vector<std::string> names;
  H5Literate(group, H5_INDEX_NAME, H5_ITER_INC, nullptr,
             [](hid_t, const char* name, const H5L_info_t*, void* out) -> herr_t {
               static_cast<std::vector<std::string>*>(out)->push_back(name);
               return 0;
             },
             &names);
  return names;
}
}  // namespace

void concat_sweep_files(const std::vector<std::string>& inputs, const std::string& out, SweepFileInfo info) {
  if (inputs.empty()) throw Error("nothing to concatenate");
  std::vector<H5> files;
  info.items = info.failed = 0;
  for (const auto& p : inputs) {
    const SweepFileInfo i = read_sweep_info(p);
    info.items += i.items;
    info.failed += i.failed;
    files.emplace_back(H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose, p + ": cannot open");
  }
  H5 of = create_file(out);
  for (const char* group : {"items", "maps"}) {
    const htri_t has = H5Lexists(files[0], group, H5P_DEFAULT);
    for (size_t f = 1; f < files.size(); ++f)
      if (H5Lexists(files[f], group, H5P_DEFAULT) != has)
        throw Error(inputs[f] + ": has " + (has > 0 ? "no" : "a") + " /" + group + " group, unlike " + inputs[0]);
    if (has <= 0) continue;
    H5 g0(H5Gopen2(files[0], group, H5P_DEFAULT), H5Gclose, inputs[0] + ": cannot open /" + group);
    const std::vector<std::string> names = dataset_names(g0);
    H5 og = create_group(of, group, out);
    for (const std::string& name : names) {
      const std::string full = std::string("/") + group + "/" + name;
      std::vector<H5> ds;
      std::vector<hsize_t> rest;
      hsize_t total = 0;
      H5 type;
      for (size_t f = 0; f < files.size(); ++f) {
        ds.emplace_back(H5Dopen2(files[f], full.c_str(), H5P_DEFAULT), H5Dclose, inputs[f] + ": no dataset " + full);
        H5 t(H5Dget_type(ds[f]), H5Tclose, inputs[f] + ": type of " + full);
        H5 s(H5Dget_space(ds[f]), H5Sclose, inputs[f] + ": shape of " + full);
        const int rank = H5Sget_simple_extent_ndims(s);
        if (rank < 1) throw Error(inputs[f] + ": " + full + " has no item dimension");
        std::vector<hsize_t> d(rank);
        H5Sget_simple_extent_dims(s, d.data(), nullptr);
        std::vector<hsize_t> r(d.begin() + 1, d.end());
        if (f == 0) {
          rest = r;
          type = std::move(t);
        } else if (r != rest || H5Tequal(t, type) <= 0) {
          throw Error(inputs[f] + ": " + full + " differs in type or shape from " + inputs[0]);
        }
        total += d[0];
      }
      std::vector<hsize_t> dims{total};
      dims.insert(dims.end(), rest.begin(), rest.end());
      H5 dcpl(H5Dget_create_plist(ds[0]), H5Pclose, inputs[0] + ": properties of " + full);
      H5 space = item_space(dims, H5Pget_layout(dcpl) == H5D_CHUNKED, out + ": space");
      H5 od(H5Dcreate2(og, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), H5Dclose,
            out + ": cannot create " + full);
      const size_t row_bytes = [&] {
        size_t b = H5Tget_size(type);
        for (hsize_t v : rest) b *= v;
        return std::max<size_t>(b, 1);
      }();
      const hsize_t block = std::max<hsize_t>(1, (64u << 20) / row_bytes);
      const bool vlen = H5Tis_variable_str(type) > 0;
      std::vector<char> buf;
      hsize_t at = 0;
      for (size_t f = 0; f < files.size(); ++f) {
        H5 s(H5Dget_space(ds[f]), H5Sclose, inputs[f] + ": shape of " + full);
        hsize_t rows = 0;
        {
          std::vector<hsize_t> d(dims.size());
          H5Sget_simple_extent_dims(s, d.data(), nullptr);
          rows = d[0];
        }
        for (hsize_t r0 = 0; r0 < rows; r0 += block) {
          const hsize_t n = std::min(block, rows - r0);
          std::vector<hsize_t> start(dims.size(), 0), count = dims;
          count[0] = n;
          start[0] = r0;
          H5 mem(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose, "HDF5: space");
          check(H5Sselect_hyperslab(s, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), "HDF5: select");
          buf.resize(n * row_bytes);
          check(H5Dread(ds[f], type, mem, s, H5P_DEFAULT, buf.data()), inputs[f] + ": cannot read " + full);
          H5 os(H5Dget_space(od), H5Sclose, out + ": space");
          start[0] = at;
          check(H5Sselect_hyperslab(os, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), "HDF5: select");
          const herr_t wrote = H5Dwrite(od, type, mem, os, H5P_DEFAULT, buf.data());
          if (vlen) H5Dvlen_reclaim(type, mem, H5P_DEFAULT, buf.data());
          check(wrote, out + ": cannot write " + full);
          at += n;
        }
      }
    }
  }
  write_info(of, info, out);
  check(H5Fflush(of, H5F_SCOPE_GLOBAL), out + ": cannot flush");
}

}  // namespace ipna
