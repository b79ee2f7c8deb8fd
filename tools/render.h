// Pictures: the IG maps of SPEC.md "Drawing IG", boxes, panel grids and line
// charts (text through stb_easy_font), all as 8-bit RGB images.
#pragma once
#include <string>
#include <vector>

#include "engine/backend.h"
#include "loaders/image.h"

namespace ipna::render {

struct Rgb {
  uint8_t r, g, b;
};
inline constexpr Rgb kYellow{255, 255, 0}, kBlue{0, 114, 189}, kOrange{217, 83, 25}, kGold{237, 177, 32},
    kGreen{119, 172, 48}, kPurple{126, 47, 142}, kGray{128, 128, 128}, kBlack{0, 0, 0}, kWhite{255, 255, 255};

// Channel-mean IG map A (HxW); P = max(A,0), N = max(-A,0); each mapped from
// its [0.85, 0.9999] quantiles to [0,1]. Maps after pruning reuse the scale
// of the map before, so the two compare.
struct IgScale {
  double pos_low = 0, pos_high = 1, neg_low = 0, neg_high = 1;
};
IgScale ig_scale(const std::vector<double>& ig, const Shape& shape);
struct IgPictures {
  Image positive, negative;  // green = P, red = N, on black
  Image overlay;             // 0.5 P (green) + 0.5 N (red) + 0.5 gray(background)
};
// background: the un-normalised image (HxW RGB) or null for black.
IgPictures draw_ig(const std::vector<double>& ig, const Shape& shape, const IgScale& scale, const Image* background);

void draw_box(Image& img, const Box& box, Rgb color);
Image blank(int width, int height, Rgb color = kWhite);
// Nearest-neighbour upscale by an integer factor (Fashion-MNIST's 28x28).
Image upscale(const Image& img, int factor);
void text(Image& img, int x, int y, const std::string& s, Rgb color, int scale = 2);
int text_width(const std::string& s, int scale = 2);
// Panels side by side in rows of `cols`, each with a caption under it.
Image grid(const std::vector<Image>& panels, const std::vector<std::string>& captions, int cols);

// A rows x cols map of signed values as cells of `cell` pixels: green for
// positive, red for negative, brightness |v| / scale (clipped at 1).
Image heatmap(const std::vector<double>& values, int rows, int cols, int cell, double scale);

struct Series {
  std::string label;
  std::vector<double> x, y;
  std::vector<double> spread;  // optional: a band y +- spread
  Rgb color;
};
struct Panel {
  std::string title, xlabel, ylabel;
  std::vector<Series> series;
};
// Panels side by side with shared legend (from the first panel's series).
Image plot(const std::vector<Panel>& panels, int panel_width = 420, int panel_height = 300);

}  // namespace ipna::render
