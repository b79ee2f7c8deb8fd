#include "loaders/image.h"

#include <jpeglib.h>
// jpeglib.h first: jerror.h needs its types.
#include <jerror.h>
#include <stb_image.h>
#include <stb_image_write.h>
#include <zlib.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "engine/error.h"

namespace ipna {

namespace {

// The size from the header, checked before any pixel is decoded (a 600-byte
// JPEG can claim 20000x20000 pixels). PIL refuses images above 179 Mpx.
void check_size(const std::string& path, int64_t w, int64_t h, int64_t max_pixels) {
  if (w < 1 || h < 1) throw Error(path + ": empty image");
  if (w * h > max_pixels)
    throw Error(path + ": " + std::to_string(w) + "x" + std::to_string(h) + " pixels is more than the " +
                std::to_string(max_pixels) + " pixels accepted (downscale it first)");
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

// JPEG through libjpeg-turbo, the decoder PIL uses, so pixels match torchvision
// exactly (stb_image's decoder differs from it by a level here and there).
// A truncated file is an error, as in PIL; libjpeg itself would only warn and
// fill the rest of the image with gray.
Image decode_jpeg(FILE* f, const std::string& path, int64_t max_pixels) {
  jpeg_decompress_struct cinfo;
  JpegError err;
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = [](j_common_ptr c) {
    auto* e = reinterpret_cast<JpegError*>(c->err);
    c->err->format_message(c, e->message);
    std::longjmp(e->jump, 1);
  };
  err.mgr.emit_message = [](j_common_ptr c, int level) {
    if (level < 0 && c->err->msg_code == JWRN_JPEG_EOF) c->err->error_exit(c);  // premature end of data
  };
  Image img;
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(path + ": cannot decode JPEG (" + std::string(err.message) + ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
    jpeg_destroy_decompress(&cinfo);
    throw Error(path + ": CMYK JPEGs are not supported; convert the image to RGB first");
  }
  try {
    check_size(path, cinfo.image_width, cinfo.image_height, max_pixels);
  } catch (...) {
    jpeg_destroy_decompress(&cinfo);
    throw;
  }
  cinfo.out_color_space = JCS_RGB;  // grayscale JPEGs are expanded to RGB
  jpeg_start_decompress(&cinfo);
  img.width = static_cast<int>(cinfo.output_width);
  img.height = static_cast<int>(cinfo.output_height);
  img.channels = 3;
  img.pixels.resize(static_cast<size_t>(img.width) * img.height * 3);
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = &img.pixels[static_cast<size_t>(cinfo.output_scanline) * img.width * 3];
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  return img;
}

// Bytes of filtered scanlines a PNG of this header inflates to (Adam7: the seven passes' rows).
int64_t png_raw_bytes(int64_t w, int64_t h, int bits_per_pixel, bool interlaced) {
  auto rows = [&](int64_t pw, int64_t ph) { return pw > 0 && ph > 0 ? ph * (1 + (pw * bits_per_pixel + 7) / 8) : 0; };
  if (!interlaced) return rows(w, h);
  static const int pass[7][4] = {{0, 0, 8, 8}, {4, 0, 8, 8}, {0, 4, 4, 8}, {2, 0, 4, 4},
                                 {0, 2, 2, 4}, {1, 0, 2, 2}, {0, 1, 1, 2}};  // x0, y0, dx, dy
  int64_t raw = 0;
  for (const auto& p : pass) raw += rows((w - p[0] + p[2] - 1) / p[2], (h - p[1] + p[3] - 1) / p[3]);
  return raw;
}

// What stb_image would allocate for, checked first. Every chunk must fit in the file: it grows its
// buffer to a chunk's claimed length before reading it (a 196-byte PNG whose second IDAT claimed 1.3 GB
// made it allocate 2 GiB). And the image data must not inflate past twice what the header's size needs:
// it inflates all of it before looking (a deflate stream grows up to a thousandfold, so a few megabytes
// could ask for gigabytes); here it is inflated into a small buffer and counted.
void check_png_chunks(FILE* f, const std::string& path, int64_t max_pixels) {
  std::fseek(f, 0, SEEK_END);
  const int64_t size = std::ftell(f);
  int64_t at = 8;  // after the signature
  int64_t limit = -1, inflated = 0;  // limit: from IHDR, when its size is within max_pixels
  z_stream z{};
  bool inflating = false, done = false;
  struct End {
    z_stream* z;
    bool* on;
    ~End() {
      if (*on) inflateEnd(z);
    }
  } end{&z, &inflating};
  std::vector<unsigned char> in(1 << 16), out(1 << 16);
  unsigned char head[8];
  while (at + 8 <= size && std::fseek(f, static_cast<long>(at), SEEK_SET) == 0 && std::fread(head, 1, 8, f) == 8) {
    const int64_t length = (int64_t(head[0]) << 24) | (int64_t(head[1]) << 16) | (int64_t(head[2]) << 8) | head[3];
    std::string type(reinterpret_cast<const char*>(head + 4), 4);
    for (char& c : type)
      if (!std::isalpha(static_cast<unsigned char>(c))) c = '?';
    if (length + 12 > size - at)
      throw Error(path + ": corrupt PNG: chunk '" + type + "' at byte " + std::to_string(at) + " claims " +
                  std::to_string(length) + " bytes, the file has " +
                  std::to_string(std::max<int64_t>(0, size - at - 12)) + " left for it");
    if (type == "IHDR" && length == 13 && std::fread(in.data(), 1, 13, f) == 13) {
      const unsigned char* d = in.data();
      const int64_t w = (int64_t(d[0]) << 24) | (d[1] << 16) | (d[2] << 8) | d[3];
      const int64_t h = (int64_t(d[4]) << 24) | (d[5] << 16) | (d[6] << 8) | d[7];
      static const int channels[7] = {1, 0, 3, 1, 2, 0, 4};  // by color type
      const int depth = d[8], color = d[9];
      if (w > 0 && h > 0 && w <= max_pixels && h <= max_pixels && w * h <= max_pixels && color <= 6 &&
          channels[color] > 0)
        limit = 2 * png_raw_bytes(w, h, channels[color] * depth, d[12] == 1) + (1 << 16);
    } else if (type == "IDAT" && limit >= 0 && !done) {
      if (!inflating) {
        if (inflateInit(&z) != Z_OK) throw Error(path + ": cannot start inflating the PNG's data");
        inflating = true;
      }
      for (int64_t left = length; left > 0 && !done;) {
        const size_t take = static_cast<size_t>(std::min<int64_t>(left, static_cast<int64_t>(in.size())));
        if (std::fread(in.data(), 1, take, f) != take) break;
        left -= static_cast<int64_t>(take);
        z.next_in = in.data();
        z.avail_in = static_cast<uInt>(take);
        while (z.avail_in > 0 && !done) {
          z.next_out = out.data();
          z.avail_out = static_cast<uInt>(out.size());
          const int rc = inflate(&z, Z_NO_FLUSH);
          inflated += static_cast<int64_t>(out.size() - z.avail_out);
          if (inflated > limit)
            throw Error(path + ": corrupt PNG: its image data inflates past " + std::to_string(limit) +
                        " bytes, twice what its size needs");
          if (rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR)) done = true;  // the decoder judges the rest
          if (rc == Z_BUF_ERROR && z.avail_out > 0) break;
        }
      }
    }
    if (type == "IEND") break;
    at += 12 + length;  // length, type, data, CRC
  }
  std::rewind(f);
}

// PNG through stb_image, which is given only files that start with PNG's signature.
Image decode_png(FILE* f, const std::string& path, int64_t max_pixels) {
  check_png_chunks(f, path, max_pixels);
  int w = 0, h = 0, n = 0;
  if (!stbi_info_from_file(f, &w, &h, &n))
    throw Error(path + ": cannot decode PNG (" + std::string(stbi_failure_reason()) + ")");
  check_size(path, w, h, max_pixels);
  // Asking for 3 channels replicates gray and drops alpha (as PIL's
  // convert("RGB")); 16-bit inputs come back as 8-bit.
  stbi_uc* data = stbi_load_from_file(f, &w, &h, &n, 3);
  if (!data) throw Error(path + ": cannot decode PNG (" + std::string(stbi_failure_reason()) + ")");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = 3;
  img.pixels.assign(data, data + static_cast<size_t>(w) * h * 3);
  stbi_image_free(data);
  return img;
}

}  // namespace

Image load_image_rgb(const std::string& path, int64_t max_pixels) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw Error("cannot open image '" + path + "': " + std::strerror(errno));
  unsigned char magic[8] = {0};
  const size_t got = std::fread(magic, 1, sizeof magic, f);
  std::rewind(f);
  const bool jpeg = got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF;
  const bool png = got == 8 && std::memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0;
  try {
    if (!jpeg && !png) throw Error(path + ": not a JPEG or PNG image (the only formats read; convert it to PNG)");
    Image img = jpeg ? decode_jpeg(f, path, max_pixels) : decode_png(f, path, max_pixels);
    std::fclose(f);
    return img;
  } catch (...) {
    std::fclose(f);
    throw;
  }
}

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

struct Coeffs {
  int ksize;
  std::vector<int> bounds;  // per output: first input index, count
  std::vector<int> k;       // per output: ksize fixed-point weights
};

// PIL's precompute_coeffs + normalize_coeffs_8bpc for the bilinear (triangle) filter.
Coeffs precompute(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = 1.0 * filterscale;
  Coeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.bounds.resize(2 * out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> pre(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale, ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0;
    for (int x = 0; x < xmax; ++x) {
      double t = std::abs((x + xmin - center + 0.5) * ss);
      pre[x] = t < 1.0 ? 1.0 - t : 0.0;
      ww += pre[x];
    }
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? pre[x] / ww : pre[x];
      c.k[static_cast<size_t>(xx) * c.ksize + x] =
          static_cast<int>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int64_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

}  // namespace

Image resize_bilinear_antialias(const Image& in, int width, int height) {
  if (width < 1 || height < 1) throw Error("resize to an empty image");
  const int ch = in.channels;
  // Horizontal pass.
  Image tmp = in;
  if (width != in.width) {
    Coeffs c = precompute(in.width, width);
    tmp.width = width;
    tmp.pixels.assign(static_cast<size_t>(width) * in.height * ch, 0);
    for (int y = 0; y < in.height; ++y)
      for (int x = 0; x < width; ++x) {
        const int x0 = c.bounds[2 * x], n = c.bounds[2 * x + 1];
        const int* k = &c.k[static_cast<size_t>(x) * c.ksize];
        for (int z = 0; z < ch; ++z) {
          int64_t ss = int64_t(1) << (kPrecisionBits - 1);
          for (int i = 0; i < n; ++i) ss += static_cast<int64_t>(in.at(y, x0 + i, z)) * k[i];
          tmp.pixels[(static_cast<size_t>(y) * width + x) * ch + z] = clip8(ss);
        }
      }
  }
  if (height == in.height) return tmp;
  // Vertical pass.
  Coeffs c = precompute(in.height, height);
  Image out;
  out.width = width;
  out.height = height;
  out.channels = ch;
  out.pixels.assign(static_cast<size_t>(width) * height * ch, 0);
  for (int y = 0; y < height; ++y) {
    const int y0 = c.bounds[2 * y], n = c.bounds[2 * y + 1];
    const int* k = &c.k[static_cast<size_t>(y) * c.ksize];
    for (int x = 0; x < width; ++x)
      for (int z = 0; z < ch; ++z) {
        int64_t ss = int64_t(1) << (kPrecisionBits - 1);
        for (int i = 0; i < n; ++i) ss += static_cast<int64_t>(tmp.at(y0 + i, x, z)) * k[i];
        out.pixels[(static_cast<size_t>(y) * width + x) * ch + z] = clip8(ss);
      }
  }
  return out;
}

Image resize_shorter_side(const Image& in, int size) {
  const int64_t shorter = std::min(in.width, in.height), longer = std::max(in.width, in.height);
  if (shorter < 1) throw Error("cannot resize an empty image");
  // A sliver (a 1-pixel-high strip) would grow to size x (size * its length) pixels: gigabytes.
  if (longer > kMaxAspectRatio * shorter)
    throw Error("image of " + std::to_string(in.width) + "x" + std::to_string(in.height) +
                " pixels is more than " + std::to_string(kMaxAspectRatio) + " times longer than wide; " +
                "resizing its shorter side to " + std::to_string(size) + " is refused");
  const int other = static_cast<int>(size * longer / shorter);
  return in.width <= in.height ? resize_bilinear_antialias(in, size, other)
                               : resize_bilinear_antialias(in, other, size);
}

Image center_crop(const Image& in, int size) {
  if (in.width < size || in.height < size)
    throw Error("image of " + std::to_string(in.width) + "x" + std::to_string(in.height) + " is smaller than the " +
                std::to_string(size) + "x" + std::to_string(size) + " crop");
  auto offset = [](int extra) { return static_cast<int>(std::nearbyint(extra / 2.0)); };  // half to even
  const int top = offset(in.height - size), left = offset(in.width - size);
  Image out;
  out.width = out.height = size;
  out.channels = in.channels;
  out.pixels.resize(static_cast<size_t>(size) * size * in.channels);
  for (int r = 0; r < size; ++r)
    std::memcpy(&out.pixels[static_cast<size_t>(r) * size * in.channels],
                &in.pixels[(static_cast<size_t>(r + top) * in.width + left) * in.channels],
                static_cast<size_t>(size) * in.channels);
  return out;
}

std::vector<double> to_chw(const Image& img, const std::vector<double>& mean, const std::vector<double>& std) {
  std::vector<double> out(static_cast<size_t>(img.channels) * img.width * img.height);
  const size_t plane = static_cast<size_t>(img.width) * img.height;
  for (int c = 0; c < img.channels; ++c)
    for (size_t i = 0; i < plane; ++i)
      out[c * plane + i] = (img.pixels[i * img.channels + c] / 255.0 - mean[c]) / std[c];
  return out;
}

std::vector<double> imagenet_preprocess(const Image& img, Image* crop) {
  Image c = center_crop(resize_shorter_side(img, 256), 224);
  std::vector<double> x = to_chw(c, kImagenetMean, kImagenetStd);
  if (crop) *crop = std::move(c);
  return x;
}

void write_png(const std::string& path, const Image& img) {
  const std::string tmp = path + ".tmp";
  if (!stbi_write_png(tmp.c_str(), img.width, img.height, img.channels, img.pixels.data(), img.width * img.channels)) {
    std::remove(tmp.c_str());
    throw Error("cannot write PNG '" + path + "'");
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace ipna
