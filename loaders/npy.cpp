#include "loaders/npy.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/error.h"

namespace ipna {

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot open '" + path + "': " + std::strerror(errno));
  char magic[8];
  if (!f.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw Error(path + ": not a .npy file");
  uint32_t hlen = 0;
  if (magic[6] == 1) {
    uint16_t h16;
    f.read(reinterpret_cast<char*>(&h16), 2);
    hlen = h16;
  } else {
    f.read(reinterpret_cast<char*>(&hlen), 4);
  }
  std::string header(hlen, ' ');
  if (!f.read(header.data(), hlen)) throw Error(path + ": truncated .npy header");
  auto field = [&](const std::string& key) {
    auto at = header.find("'" + key + "'");
    if (at == std::string::npos) throw Error(path + ": .npy header lacks " + key);
    return header.substr(header.find(':', at) + 1);
  };
  std::string descr = field("descr");
  descr = descr.substr(descr.find('\'') + 1);
  descr = descr.substr(0, descr.find('\''));
  if (field("fortran_order").find("True") < field("fortran_order").find(','))
    throw Error(path + ": Fortran-ordered arrays are not supported");
  std::string shp = field("shape");
  shp = shp.substr(shp.find('(') + 1, shp.find(')') - shp.find('(') - 1);
  NpyArray a;
  int64_t count = 1;
  for (size_t p = 0; p < shp.size();) {
    size_t q = shp.find(',', p);
    std::string tok = shp.substr(p, q == std::string::npos ? std::string::npos : q - p);
    if (tok.find_first_of("0123456789") != std::string::npos) {
      a.shape.push_back(std::stoll(tok));
      count *= a.shape.back();
    }
    if (q == std::string::npos) break;
    p = q + 1;
  }
  a.data.resize(count);
  if (descr == "<f8") {
    if (!f.read(reinterpret_cast<char*>(a.data.data()), count * 8)) throw Error(path + ": truncated .npy data");
  } else if (descr == "<f4") {
    std::vector<float> v(count);
    if (!f.read(reinterpret_cast<char*>(v.data()), count * 4)) throw Error(path + ": truncated .npy data");
    a.data.assign(v.begin(), v.end());
  } else {
    throw Error(path + ": dtype " + descr + " is not supported (float32 or float64 expected)");
  }
  return a;
}

void write_npy(const std::string& path, const std::vector<double>& data, const std::vector<int64_t>& shape,
               bool as_float32) {
  std::string dims;
  for (auto d : shape) dims += std::to_string(d) + ",";
  if (shape.size() > 1) dims.pop_back();
  std::string header = std::string("{'descr': '") + (as_float32 ? "<f4" : "<f8") +
                       "', 'fortran_order': False, 'shape': (" + dims + "), }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error("cannot write '" + path + "': " + std::strerror(errno));
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t hl = static_cast<uint16_t>(header.size());
    f.write(reinterpret_cast<const char*>(&hl), 2);
    f.write(header.data(), header.size());
    if (as_float32) {
      std::vector<float> v(data.begin(), data.end());
      f.write(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    } else {
      f.write(reinterpret_cast<const char*>(data.data()), data.size() * 8);
    }
    if (!f) {
      std::remove(tmp.c_str());
      throw Error("failed writing '" + path + "'");
    }
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace ipna
