#include "loaders/idx.h"

#include <zlib.h>

#include <filesystem>

#include "engine/error.h"

namespace ipna {

const char* const kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

namespace {

std::vector<uint8_t> read_all(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (!f) throw Error("cannot open '" + path + "'");
  std::vector<uint8_t> data;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof buf)) > 0) data.insert(data.end(), buf, buf + n);
  int err = 0;
  const char* msg = gzerror(f, &err);
  gzclose(f);
  if (n < 0 || (err != Z_OK && err != Z_STREAM_END)) throw Error(path + ": " + (msg ? msg : "read error"));
  return data;
}

uint32_t be32(const std::vector<uint8_t>& d, size_t at) {
  return (uint32_t(d[at]) << 24) | (uint32_t(d[at + 1]) << 16) | (uint32_t(d[at + 2]) << 8) | d[at + 3];
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  std::vector<uint8_t> d = read_all(path);
  if (d.size() < 16 || be32(d, 0) != 0x00000803) throw Error(path + ": not an IDX image file (magic 0x803)");
  IdxImages im;
  im.count = static_cast<int>(be32(d, 4));
  im.rows = static_cast<int>(be32(d, 8));
  im.cols = static_cast<int>(be32(d, 12));
  const size_t need = static_cast<size_t>(im.count) * im.rows * im.cols;
  if (d.size() - 16 < need) throw Error(path + ": truncated IDX file");
  im.pixels.assign(d.begin() + 16, d.begin() + 16 + need);
  return im;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  std::vector<uint8_t> d = read_all(path);
  if (d.size() < 8 || be32(d, 0) != 0x00000801) throw Error(path + ": not an IDX label file (magic 0x801)");
  const size_t n = be32(d, 4);
  if (d.size() - 8 < n) throw Error(path + ": truncated IDX file");
  return {d.begin() + 8, d.begin() + 8 + n};
}

IdxDataset read_idx_dataset(const std::string& folder, const std::string& split) {
  const std::string stem = split == "train" ? "train" : "t10k";
  auto pick = [&](const std::string& name) {
    for (const std::string& cand : {folder + "/" + name + ".gz", folder + "/" + name})
      if (std::filesystem::exists(cand)) return cand;
    throw Error("dataset folder '" + folder + "' has no " + name + "(.gz)" +
                (folder == kFashionMnistDir ? " (apt-get install dataset-fashion-mnist)" : ""));
  };
  IdxDataset ds;
  ds.images = read_idx_images(pick(stem + "-images-idx3-ubyte"));
  ds.labels = read_idx_labels(pick(stem + "-labels-idx1-ubyte"));
  if (static_cast<int>(ds.labels.size()) != ds.images.count)
    throw Error(folder + ": " + std::to_string(ds.images.count) + " images but " + std::to_string(ds.labels.size()) +
                " labels");
  return ds;
}

}  // namespace ipna
