// The image pipeline against torchvision (Resize(256), CenterCrop(224),
// ToTensor on PIL images) on the seed's JPEG and on images the fixture script
// makes. PNGs (stb_image) and JPEGs (libjpeg-turbo, PIL's decoder) must match
// exactly: same pixels in, and the resize reproduces PIL's fixed-point arithmetic.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "engine/error.h"
#include "loaders/image.h"
#include "tests/fixtures.h"

namespace ipna::test {
namespace {

std::vector<double> crop_01(const std::string& path) {
  Image c = center_crop(resize_shorter_side(load_image_rgb(path), 256), 224);
  return to_chw(c, {0, 0, 0}, {1, 1, 1});
}

TEST(ImageReference, MatchesTorchvision) {
  if (!fixtures_present()) return;
  auto files = read_json(fixture_dir() + "/images/files.json");
  for (auto& [name, path] : files.items()) {
    std::vector<double> ours = crop_01(path.get<std::string>());
    std::vector<double> ref = npy(fixture_dir() + "/images/" + name + ".npy");
    ASSERT_EQ(ours.size(), ref.size()) << name;
    for (int c = 0; c < 3; ++c) {
      double worst = 0;
      for (size_t i = 0; i < 224 * 224; ++i) worst = std::max(worst, std::abs(ours[c * 224 * 224 + i] - ref[c * 224 * 224 + i]));
      std::printf("%-20s channel %d: max |ours - torchvision| = %.0f/255\n", name.c_str(), c, std::round(worst * 255));
      EXPECT_LE(worst, 1e-12) << name << " channel " << c;
    }
  }
}

TEST(ImageReference, SixteenBitPngIsReducedToEightBits) {
  if (!fixtures_present()) return;
  Image a = load_image_rgb(fixture_dir() + "/images/gray16.png"), b = load_image_rgb(fixture_dir() + "/images/gray.png");
  EXPECT_EQ(a.pixels, b.pixels);
}

TEST(Image, NotAnImageIsRefused) {
  try {
    load_image_rgb("/etc/hostname");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a JPEG or PNG"), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_image_rgb("/nonexistent.png"), Error);
}

TEST(Image, TooSmallForTheCropIsRefused) {
  Image tiny;
  tiny.width = tiny.height = 100;
  tiny.channels = 3;
  tiny.pixels.assign(100 * 100 * 3, 7);
  EXPECT_THROW(center_crop(tiny, 224), Error);
  // Resize brings it up first, as torchvision does.
  EXPECT_EQ(center_crop(resize_shorter_side(tiny, 256), 224).width, 224);
}

// A fuzz finding: a 196-byte PNG whose second IDAT chunk claimed 1.3 GB made the decoder allocate 2 GiB
// before reading it. Every chunk must fit in the file.
TEST(Image, PngChunksLongerThanTheFileAreRefused) {
  std::string png("\x89PNG\r\n\x1a\n", 8);
  auto chunk = [&](const char* type, const std::string& data, uint32_t claimed) {
    for (int shift : {24, 16, 8, 0}) png.push_back(static_cast<char>((claimed >> shift) & 0xff));
    png += type;
    png += data;
    png += std::string(4, '\0');  // CRC, not checked before the lengths
  };
  const std::string ihdr("\0\0\0\x08\0\0\0\x06\x08\0\0\0\0", 13);  // 8x6, 8-bit gray
  chunk("IHDR", ihdr, 13);
  chunk("IDAT", "xyz", 0x0f385000);
  const std::string path = ::testing::TempDir() + "/claims.png";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(png.data(), 1, png.size(), f);
    std::fclose(f);
  }
  try {
    load_image_rgb(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("chunk 'IDAT' at byte 33 claims 255348736 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find(path), std::string::npos) << m;
  }
  std::remove(path.c_str());
}

// A deflate stream grows up to a thousandfold: 10 MB of zeros in a PNG claiming 8x8 gray pixels (72 bytes of
// scanlines) is refused before the decoder inflates it all.
TEST(Image, PngDataInflatingPastItsSizeIsRefused) {
  std::vector<unsigned char> zeros(10 << 20, 0), packed(compressBound(zeros.size()));
  uLongf packed_size = packed.size();
  ASSERT_EQ(compress(packed.data(), &packed_size, zeros.data(), zeros.size()), Z_OK);
  std::string png("\x89PNG\r\n\x1a\n", 8);
  auto chunk = [&](const char* type, const std::string& data) {
    for (int shift : {24, 16, 8, 0}) png.push_back(static_cast<char>((data.size() >> shift) & 0xff));
    png += type;
    png += data;
    png += std::string(4, '\0');
  };
  chunk("IHDR", std::string("\0\0\0\x08\0\0\0\x08\x08\0\0\0\0", 13));
  chunk("IDAT", std::string(reinterpret_cast<const char*>(packed.data()), packed_size));
  chunk("IEND", "");
  const std::string path = ::testing::TempDir() + "/bomb.png";
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fwrite(png.data(), 1, png.size(), f);
    std::fclose(f);
  }
  EXPECT_LT(png.size(), 20000u);
  try {
    load_image_rgb(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("inflates past 65680 bytes"), std::string::npos) << e.what();
  }
  std::remove(path.c_str());
}

// A fuzz finding: a 1-pixel-high strip within the pixel cap grew to gigabytes on resize.
TEST(Image, SliversAreRefusedBeforeTheResize) {
  Image strip;
  strip.width = 300;
  strip.height = 1;
  strip.channels = 3;
  strip.pixels.assign(300 * 3, 9);
  try {
    resize_shorter_side(strip, 256);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("300x1"), std::string::npos) << e.what();
  }
  strip.width = 256;  // at the limit: 65536 x 256
  strip.pixels.resize(256 * 3);
  const Image wide = resize_shorter_side(strip, 256);
  EXPECT_EQ(wide.width, 65536);
  EXPECT_EQ(wide.height, 256);
  EXPECT_EQ(wide.pixels[12345], 9);
}

}  // namespace
}  // namespace ipna::test
