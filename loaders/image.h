// Images: decoding (JPEG through libjpeg-turbo, as PIL does, so pixels match
// torchvision exactly; PNG through stb_image), the torchvision/PIL
// preprocessing of SPEC.md, and PNG writing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/imagenet.h"

namespace ipna {

// 8-bit interleaved pixels, 1 or 3 channels.
struct Image {
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;
  uint8_t at(int r, int c, int ch) const { return pixels[(static_cast<size_t>(r) * width + c) * channels + ch]; }
};

// Decodes a JPEG or PNG (recognised by their signatures; no other format) to
// 8-bit RGB. Grayscale is replicated to RGB, an alpha channel is dropped (as
// PIL's convert("RGB")), 16-bit PNGs are reduced to 8 bits. Images above
// `max_pixels` are refused from their header, truncated JPEGs are refused (as
// PIL does); anything else wrong is an ipna::Error naming the file.
constexpr int64_t kMaxImagePixels = 100'000'000;
Image load_image_rgb(const std::string& path, int64_t max_pixels = kMaxImagePixels);

// PIL's antialiased bilinear resize (Image.resize(..., BILINEAR)), bit-exact:
// horizontal then vertical pass, 22-bit fixed-point weights, 8-bit between passes.
Image resize_bilinear_antialias(const Image& in, int width, int height);
// torchvision Resize(256): the shorter side to `size`, the other scaled (truncated), as torchvision does.
// Images whose longer side exceeds kMaxAspectRatio times the shorter are refused.
constexpr int64_t kMaxAspectRatio = 256;
Image resize_shorter_side(const Image& in, int size);
// torchvision CenterCrop(size): offsets rounded half to even, as Python's round().
Image center_crop(const Image& in, int size);

// To C,H,W floats: (pixel / 255 - mean[c]) / std[c].
std::vector<double> to_chw(const Image& img, const std::vector<double>& mean, const std::vector<double>& std);

// The ImageNet preprocessing of SPEC.md: shorter side 256, center crop 224,
// [0,1], ImageNet mean/std. Also returns the 224x224 crop (for drawing).
std::vector<double> imagenet_preprocess(const Image& img, Image* crop = nullptr);

// PNG through stb_image_write, atomically (temporary file, then rename).
void write_png(const std::string& path, const Image& img);

}  // namespace ipna
