#include "loaders/idx.h"

#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>

#include "engine/error.h"

namespace ipna {

const char* const kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

namespace {

// Largest IDX payload accepted: 4 GiB (Fashion-MNIST's training set is 47 MB).
constexpr uint64_t kMaxIdxBytes = uint64_t(1) << 32;

// A gzipped (or plain) file read in pieces, so a header that lies about the
// size costs no more memory than the file really holds.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), f_(gzopen(path.c_str(), "rb")) {
    if (!f_) throw Error("cannot open '" + path + "'");
  }
  ~GzFile() { gzclose(f_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Appends up to `bytes` bytes to out; returns how many came.
  uint64_t read(uint64_t bytes, std::vector<uint8_t>& out) {
    uint8_t buf[1 << 16];
    uint64_t got = 0;
    while (got < bytes) {
      const unsigned want = static_cast<unsigned>(std::min<uint64_t>(sizeof buf, bytes - got));
      const int n = gzread(f_, buf, want);
      int err = Z_OK;
      const char* msg = gzerror(f_, &err);  // owned by f_: copied into the message before it closes
      // A gzip stream cut short reads as data, then end of file with Z_BUF_ERROR.
      if (n < 0 || (err != Z_OK && err != Z_STREAM_END))
        throw Error(path_ + ": cannot read (" + std::string(msg && *msg ? msg : "read error") +
                    "; a truncated or corrupt download?)");
      if (n == 0) break;
      out.insert(out.end(), buf, buf + n);
      got += static_cast<uint64_t>(n);
    }
    return got;
  }

 private:
  std::string path_;
  gzFile f_;
};

uint32_t be32(const std::vector<uint8_t>& d, size_t at) {
  return (uint32_t(d[at]) << 24) | (uint32_t(d[at + 1]) << 16) | (uint32_t(d[at + 2]) << 8) | d[at + 3];
}

// Reads the header of `words` 32-bit big-endian values (magic first) and the
// payload of prod(dims) bytes that follows it.
std::vector<uint8_t> read_idx(const std::string& path, uint32_t magic, int words, const char* kind,
                              std::vector<uint32_t>& dims) {
  GzFile f(path);
  std::vector<uint8_t> head;
  const uint64_t header_bytes = 4u * static_cast<uint64_t>(words);
  if (f.read(header_bytes, head) < 4 || be32(head, 0) != magic) {
    char want[16];
    std::snprintf(want, sizeof want, "0x%08x", magic);
    throw Error(path + ": not an IDX " + kind + " file (magic " + want + " expected)");
  }
  if (head.size() < header_bytes) throw Error(path + ": truncated IDX header");
  uint64_t need = 1;
  for (int i = 1; i < words; ++i) {
    dims.push_back(be32(head, 4u * i));
    need *= dims.back();
    if (need > kMaxIdxBytes)
      throw Error(path + ": the IDX header announces more than " + std::to_string(kMaxIdxBytes >> 30) +
                  " GiB of data (a corrupt header?)");
  }
  std::vector<uint8_t> data;
  data.reserve(static_cast<size_t>(std::min<uint64_t>(need, uint64_t(64) << 20)));
  const uint64_t got = f.read(need, data);
  if (got < need)
    throw Error(path + ": truncated IDX file: " + std::to_string(got) + " of the " + std::to_string(need) +
                " bytes its header announces");
  return data;
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  std::vector<uint32_t> dims;
  IdxImages im;
  im.pixels = read_idx(path, 0x00000803, 4, "image", dims);
  if (dims[1] == 0 || dims[2] == 0 || dims[1] > 65535 || dims[2] > 65535)
    throw Error(path + ": image size " + std::to_string(dims[1]) + "x" + std::to_string(dims[2]) +
                " is not supported (1..65535 per side)");
  if (dims[0] > INT_MAX) throw Error(path + ": " + std::to_string(dims[0]) + " images is more than supported");
  im.count = static_cast<int>(dims[0]);
  im.rows = static_cast<int>(dims[1]);
  im.cols = static_cast<int>(dims[2]);
  return im;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  std::vector<uint32_t> dims;
  return read_idx(path, 0x00000801, 2, "label", dims);
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
  if (static_cast<int64_t>(ds.labels.size()) != ds.images.count)
    throw Error(folder + ": " + std::to_string(ds.images.count) + " images but " + std::to_string(ds.labels.size()) +
                " labels");
  return ds;
}

}  // namespace ipna
