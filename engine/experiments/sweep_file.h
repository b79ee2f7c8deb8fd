// The sweep's HDF5 files (libhdf5). One layout for the batch files a running
// sweep commits, the file of a shard and a merged file, so finishing a shard
// and merging shards are the same operation: concatenating files row by row.
//
// Layout (every dataset's first dimension is the item; N items per file):
//   /items/index            int64 [N]      position in the dataset (after any limit)
//   /items/source           string [N]     file, or FOLDER#i for IDX images
//   /items/label            int32 [N]      the dataset's class, -1 if none
//   /items/class            int32 [N]      the class attributed (given, the label, or predicted)
//   /items/predicted        int32 [N]      argmax of the model's output at x
//   /items/ok               int8  [N]      0: failed (error says why; numbers are NaN, maps NaN)
//   /items/error            string [N]
//   /items/f_input, f_baseline, ig_sum, ig_gap, conductance_sum, conductance_gap   float64 [N]
//   /items/steps            int32 [N]      m of the path;  /items/evaluations int64 [N]
//   /items/seconds          float64 [N]    wall time of the item
//   /items/boxes            int32 [N,B,4]  X1 Y1 X2 Y2 of each box (B > 0)
//   /items/ipna_sum, ig_inside, ig_outside, ipna_gap   float64 [N,B]
//   /items/pruned_confidence, pruned_ig_inside, pruned_ig_total   float64 [N,L] (L pruning levels)
//   /maps/ig                [N, input...]     float32 or float16, chunked per item, shuffle + deflate
//   /maps/conductance       [N, split...]
//   /maps/ipna              [N, B, split...]  chunked per item and box
// Root attributes: format ("ipna-fast sweep 1"), config (JSON: everything the
// numbers depend on), versions (JSON), first_index, items, dataset_items,
// shard ("I/N"), failed.
#pragma once
#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/shape.h"

namespace ipna {

inline constexpr const char* kSweepFormat = "ipna-fast sweep 1";

enum class MapStorage { None, Float32, Float16 };

struct SweepLayout {
  Shape input, split;
  int boxes = 0, prune_levels = 0;
  bool ig = false, conductance = false;
  MapStorage maps = MapStorage::Float32;
};

struct SweepRecord {
  int64_t index = 0;
  std::string source, error;
  int label = -1, cls = -1, predicted = -1;
  bool ok = false;
  double f_input = NAN, f_baseline = NAN, ig_sum = NAN, ig_gap = NAN, conductance_sum = NAN, conductance_gap = NAN;
  int steps = 0;
  int64_t evaluations = 0;
  double seconds = 0;
  std::vector<std::array<int, 4>> boxes;                              // B
  std::vector<double> ipna_sum, ig_inside, ig_outside, ipna_gap;      // B
  std::vector<double> pruned_confidence, pruned_ig_inside, pruned_ig_total;  // L
  std::vector<float> ig, conductance, ipna;  // maps (ipna: B split maps end to end); empty: NaN
};

struct SweepFileInfo {
  nlohmann::json config, versions;
  int64_t first_index = 0, items = 0, dataset_items = 0, failed = 0;
  std::string shard = "0/1";
};

// Writes a new file (the caller renames it into place).
void write_sweep_file(const std::string& path, const SweepLayout& layout, const SweepFileInfo& info,
                      const std::vector<SweepRecord>& records);
// The root attributes; throws Error if the file is not a sweep file.
SweepFileInfo read_sweep_info(const std::string& path);
// Rows of `inputs`, in the given order, into a new file `out` with the root
// attributes of `info` (items and failed are summed from the inputs). Every
// input must have the same datasets, types and per-item shapes.
void concat_sweep_files(const std::vector<std::string>& inputs, const std::string& out, SweepFileInfo info);
// A dataset of a sweep file ("items/ig_sum", "maps/ipna"): numbers as float64
// (float16 and integers converted), its shape in `shape`; strings as they are.
std::vector<double> read_sweep_numbers(const std::string& path, const std::string& name,
                                       std::vector<int64_t>* shape = nullptr);
std::vector<std::string> read_sweep_strings(const std::string& path, const std::string& name);
// The library's version of HDF5, "1.10.8".
std::string hdf5_version();

}  // namespace ipna
