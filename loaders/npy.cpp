#include "loaders/npy.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "engine/error.h"
#include "engine/shape.h"

namespace ipna {

namespace {

// NumPy itself refuses headers above 10000 bytes unless asked; ours are far smaller.
constexpr uint32_t kMaxHeaderBytes = 65536;
constexpr int64_t kMaxNpyElements = int64_t(1) << 31;

// The header is a Python dict literal: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 224, 224), }
// Parsed strictly: string keys, and values that are strings, True/False or tuples of integers.
class HeaderParser {
 public:
  HeaderParser(const std::string& text, const std::string& path) : s_(text), path_(path) {}

  struct Fields {
    std::string descr;
    bool fortran = false;
    std::vector<int64_t> shape;
  };

  Fields parse() {
    Fields f;
    bool have_descr = false, have_order = false, have_shape = false;
    expect('{');
    while (true) {
      skip_space();
      if (peek() == '}') break;
      const std::string key = quoted();
      expect(':');
      skip_space();
      if (key == "descr") {
        f.descr = quoted();
        have_descr = true;
      } else if (key == "fortran_order") {
        f.fortran = boolean();
        have_order = true;
      } else if (key == "shape") {
        f.shape = tuple();
        have_shape = true;
      } else {
        fail("unknown key '" + key + "'");
      }
      skip_space();
      if (peek() == ',') {
        ++at_;
        continue;
      }
      skip_space();
      if (peek() != '}') fail("expected ',' or '}'");
    }
    if (!have_descr || !have_order || !have_shape) fail("needs the keys 'descr', 'fortran_order' and 'shape'");
    return f;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw Error(path_ + ": malformed .npy header (" + why + " at character " + std::to_string(at_) + ")");
  }
  char peek() const { return at_ < s_.size() ? s_[at_] : '\0'; }
  void skip_space() {
    while (at_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[at_]))) ++at_;
  }
  void expect(char c) {
    skip_space();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++at_;
  }
  std::string quoted() {
    skip_space();
    const char q = peek();
    if (q != '\'' && q != '"') fail("expected a quoted string");
    const size_t end = s_.find(q, at_ + 1);
    if (end == std::string::npos) fail("unterminated string");
    std::string v = s_.substr(at_ + 1, end - at_ - 1);
    at_ = end + 1;
    return v;
  }
  bool boolean() {
    for (const char* word : {"True", "False"})
      if (s_.compare(at_, std::strlen(word), word) == 0) {
        at_ += std::strlen(word);
        return word[0] == 'T';
      }
    fail("expected True or False");
  }
  std::vector<int64_t> tuple() {
    expect('(');
    std::vector<int64_t> v;
    while (true) {
      skip_space();
      if (peek() == ')') break;
      if (!std::isdigit(static_cast<unsigned char>(peek()))) fail("a shape entry must be a non-negative integer");
      int64_t d = 0;
      while (std::isdigit(static_cast<unsigned char>(peek()))) {
        d = d * 10 + (s_[at_++] - '0');
        if (d > kMaxNpyElements) fail("a shape entry is too large");
      }
      v.push_back(d);
      if (v.size() > 32) fail("more than 32 dimensions");
      skip_space();
      if (peek() == ',') ++at_;
      else if (peek() != ')') fail("expected ',' or ')' in the shape");
    }
    ++at_;
    return v;
  }

  const std::string& s_;
  const std::string& path_;
  size_t at_ = 0;
};

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::error_code ec;
  const uintmax_t file_bytes = std::filesystem::file_size(path, ec);
  std::ifstream f(path, std::ios::binary);
  if (ec || !f) throw Error("cannot open '" + path + "': " + (ec ? ec.message() : std::strerror(errno)));
  unsigned char pre[8];
  if (!f.read(reinterpret_cast<char*>(pre), 8) || std::memcmp(pre, "\x93NUMPY", 6) != 0)
    throw Error(path + ": not a .npy file (NumPy's magic string is missing)");
  const int major = pre[6];
  if (major < 1 || major > 3) throw Error(path + ": .npy format version " + std::to_string(major) + " is not supported");
  uint32_t hlen = 0;
  unsigned char len[4] = {0, 0, 0, 0};
  const int len_bytes = major == 1 ? 2 : 4;
  if (!f.read(reinterpret_cast<char*>(len), len_bytes)) throw Error(path + ": truncated .npy header");
  for (int i = len_bytes - 1; i >= 0; --i) hlen = (hlen << 8) | len[i];
  const uint64_t data_at = 8 + len_bytes + static_cast<uint64_t>(hlen);
  if (hlen > kMaxHeaderBytes) throw Error(path + ": .npy header of " + std::to_string(hlen) + " bytes is implausibly large");
  if (data_at > file_bytes) throw Error(path + ": truncated .npy header");
  std::string header(hlen, ' ');
  if (!f.read(header.data(), hlen)) throw Error(path + ": truncated .npy header");
  const HeaderParser::Fields h = HeaderParser(header, path).parse();
  if (h.fortran) throw Error(path + ": Fortran-ordered arrays are not supported (save with np.ascontiguousarray)");
  size_t item = 0;
  if (h.descr == "<f8") item = 8;
  if (h.descr == "<f4") item = 4;
  if (!item)
    throw Error(path + ": dtype '" + h.descr + "' is not supported (little-endian float32 '<f4' or float64 '<f8')");

  NpyArray a;
  a.shape = h.shape;
  int64_t count = 1;
  for (int64_t d : a.shape) {
    if (d && count > kMaxNpyElements / d) throw Error(path + ": the shape holds more than 2^31 elements");
    count *= d;
  }
  const uint64_t need = static_cast<uint64_t>(count) * item, have = file_bytes - data_at;
  if (have != need)
    throw Error(path + ": " + (have < need ? "truncated" : "has extra bytes") + ": shape " + Shape(a.shape).str() +
                " of " + h.descr + " needs " + std::to_string(need) + " bytes of data, the file has " +
                std::to_string(have));
  a.data.resize(static_cast<size_t>(count));
  if (item == 8) {
    if (count && !f.read(reinterpret_cast<char*>(a.data.data()), static_cast<std::streamsize>(need)))
      throw Error(path + ": read error");
  } else {
    std::vector<float> v(static_cast<size_t>(count));
    if (count && !f.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(need)))
      throw Error(path + ": read error");
    a.data.assign(v.begin(), v.end());
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
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error("cannot write '" + path + "': " + ec.message());
  }
}

}  // namespace ipna
