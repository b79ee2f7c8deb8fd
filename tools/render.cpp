#include "tools/render.h"

#include <stb_easy_font.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace ipna::render {

namespace {
// numpy.quantile's default (linear interpolation between order statistics).
double quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q * (v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}
std::vector<double> channel_mean(const std::vector<double>& ig, const Shape& s) {
  const int64_t c = s.channels(), plane = s.plane();
  std::vector<double> a(plane, 0.0);
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t i = 0; i < plane; ++i) a[i] += ig[ch * plane + i] / c;
  return a;
}
double unit(double v, double lo, double hi) {
  const double span = hi - lo;
  if (!(span > 0)) return v > lo ? 1.0 : 0.0;
  return std::clamp((v - lo) / span, 0.0, 1.0);
}
uint8_t byte(double v) { return static_cast<uint8_t>(std::lround(std::clamp(v, 0.0, 1.0) * 255)); }
void put(Image& img, int x, int y, Rgb c) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  uint8_t* p = &img.pixels[(static_cast<size_t>(y) * img.width + x) * 3];
  p[0] = c.r;
  p[1] = c.g;
  p[2] = c.b;
}
void fill(Image& img, int x0, int y0, int x1, int y1, Rgb c) {
  for (int y = std::max(0, y0); y < std::min(img.height, y1); ++y)
    for (int x = std::max(0, x0); x < std::min(img.width, x1); ++x) put(img, x, y, c);
}
void line(Image& img, double x0, double y0, double x1, double y1, Rgb c, int thick) {
  const int steps = static_cast<int>(std::max(std::abs(x1 - x0), std::abs(y1 - y0))) + 1;
  for (int i = 0; i <= steps; ++i) {
    const double t = static_cast<double>(i) / steps;
    const int x = static_cast<int>(std::lround(x0 + (x1 - x0) * t)), y = static_cast<int>(std::lround(y0 + (y1 - y0) * t));
    fill(img, x - thick / 2, y - thick / 2, x - thick / 2 + thick, y - thick / 2 + thick, c);
  }
}
Rgb lighten(Rgb c) { return {static_cast<uint8_t>((c.r + 3 * 255) / 4), static_cast<uint8_t>((c.g + 3 * 255) / 4),
                             static_cast<uint8_t>((c.b + 3 * 255) / 4)}; }
// Round tick positions: steps of 1, 2, 2.5 or 5 times a power of ten.
std::vector<double> nice_ticks(double lo, double hi) {
  const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + 1e-9 * step; v += step) t.push_back(v);
  return t;
}
std::string tick_label(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", std::abs(v) < 1e-12 ? 0.0 : v);
  return b;
}
}  // namespace

IgScale ig_scale(const std::vector<double>& ig, const Shape& shape) {
  std::vector<double> a = channel_mean(ig, shape), p(a.size()), n(a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    p[i] = std::max(a[i], 0.0);
    n[i] = std::max(-a[i], 0.0);
  }
  return {quantile(p, 0.85), quantile(p, 0.9999), quantile(n, 0.85), quantile(n, 0.9999)};
}

IgPictures draw_ig(const std::vector<double>& ig, const Shape& shape, const IgScale& s, const Image* background) {
  const int h = static_cast<int>(shape.height()), w = static_cast<int>(shape.width());
  std::vector<double> a = channel_mean(ig, shape);
  IgPictures out{blank(w, h, kBlack), blank(w, h, kBlack), blank(w, h, kBlack)};
  for (int r = 0; r < h; ++r)
    for (int c = 0; c < w; ++c) {
      const double v = a[static_cast<size_t>(r) * w + c];
      const double P = unit(std::max(v, 0.0), s.pos_low, s.pos_high), N = unit(std::max(-v, 0.0), s.neg_low, s.neg_high);
      double gray = 0;
      if (background)
        gray = (background->at(r, c, 0) + background->at(r, c, 1) + background->at(r, c, 2)) / (3.0 * 255);
      put(out.positive, c, r, {0, byte(P), 0});
      put(out.negative, c, r, {byte(N), 0, 0});
      put(out.overlay, c, r, {byte(0.5 * N + 0.5 * gray), byte(0.5 * P + 0.5 * gray), byte(0.5 * gray)});
    }
  return out;
}

void draw_box(Image& img, const Box& b, Rgb color) {
  for (int c = b.c0; c < b.c1; ++c) {
    put(img, c, b.r0, color);
    put(img, c, b.r1 - 1, color);
  }
  for (int r = b.r0; r < b.r1; ++r) {
    put(img, b.c0, r, color);
    put(img, b.c1 - 1, r, color);
  }
}

Image blank(int width, int height, Rgb color) {
  Image img;
  img.width = width;
  img.height = height;
  img.channels = 3;
  img.pixels.resize(static_cast<size_t>(width) * height * 3);
  for (size_t i = 0; i < img.pixels.size(); i += 3) {
    img.pixels[i] = color.r;
    img.pixels[i + 1] = color.g;
    img.pixels[i + 2] = color.b;
  }
  return img;
}

Image upscale(const Image& img, int f) {
  Image out = blank(img.width * f, img.height * f);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x)
      for (int ch = 0; ch < 3; ++ch)
        out.pixels[(static_cast<size_t>(y) * out.width + x) * 3 + ch] = img.at(y / f, x / f, img.channels == 3 ? ch : 0);
  return out;
}

void text(Image& img, int x, int y, const std::string& s, Rgb color, int scale) {
  static char buffer[200000];
  std::string copy = s;
  unsigned char col[4] = {255, 255, 255, 255};
  const int quads = stb_easy_font_print(0, 0, copy.data(), col, buffer, sizeof buffer);
  struct Vertex {
    float x, y, z;
    unsigned char c[4];
  };
  const auto* v = reinterpret_cast<const Vertex*>(buffer);
  for (int q = 0; q < quads; ++q) {
    const Vertex* a = v + 4 * q;
    fill(img, x + static_cast<int>(a[0].x * scale), y + static_cast<int>(a[0].y * scale),
         x + static_cast<int>(a[2].x * scale), y + static_cast<int>(a[2].y * scale), color);
  }
}

int text_width(const std::string& s, int scale) {
  std::string copy = s;
  return stb_easy_font_width(copy.data()) * scale;
}

Image heatmap(const std::vector<double>& values, int rows, int cols, int cell, double scale) {
  Image out = blank(cols * cell, rows * cell, kBlack);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) {
      const double v = values[static_cast<size_t>(i) * cols + j];
      const auto level = static_cast<uint8_t>(std::lround(255 * std::min(1.0, std::abs(v) / (scale > 0 ? scale : 1))));
      const Rgb c = v >= 0 ? Rgb{0, level, 0} : Rgb{level, 0, 0};
      for (int y = i * cell; y < (i + 1) * cell - 1; ++y)  // a one-pixel black seam between cells
        for (int x = j * cell; x < (j + 1) * cell - 1; ++x) put(out, x, y, c);
    }
  return out;
}

Image grid(const std::vector<Image>& panels, const std::vector<std::string>& captions, int cols) {
  int cw = 0, ch = 0;
  for (const Image& p : panels) {
    cw = std::max(cw, p.width);
    ch = std::max(ch, p.height);
  }
  const int pad = 12, cap = 30, rows = (static_cast<int>(panels.size()) + cols - 1) / cols;
  Image out = blank(cols * (cw + pad) + pad, rows * (ch + cap + pad) + pad);
  for (size_t i = 0; i < panels.size(); ++i) {
    const int x0 = pad + static_cast<int>(i % cols) * (cw + pad), y0 = pad + static_cast<int>(i / cols) * (ch + cap + pad);
    const Image& p = panels[i];
    for (int y = 0; y < p.height; ++y)
      for (int x = 0; x < p.width; ++x)
        put(out, x0 + x, y0 + y, {p.at(y, x, 0), p.at(y, x, p.channels == 3 ? 1 : 0), p.at(y, x, p.channels == 3 ? 2 : 0)});
    if (i < captions.size()) {
      const int scale = text_width(captions[i]) <= cw ? 2 : 1;  // long captions in the small font
      text(out, x0 + (cw - text_width(captions[i], scale)) / 2, y0 + ch + 8, captions[i], kBlack, scale);
    }
  }
  return out;
}

Image plot(const std::vector<Panel>& panels, int pw, int ph) {
  const int left = 84, right = 20, top = 52, bottom = 60, legend_h = 24;
  const int W = static_cast<int>(panels.size()) * (pw + left + right), H = ph + top + bottom + legend_h;
  Image img = blank(W, H);
  for (size_t pi = 0; pi < panels.size(); ++pi) {
    const Panel& p = panels[pi];
    const int ox = static_cast<int>(pi) * (pw + left + right) + left, oy = top;
    double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
    for (const Series& s : p.series)
      for (size_t i = 0; i < s.x.size(); ++i) {
        const double sp = i < s.spread.size() ? s.spread[i] : 0.0;
        xmin = std::min(xmin, s.x[i]);
        xmax = std::max(xmax, s.x[i]);
        ymin = std::min(ymin, s.y[i] - sp);
        ymax = std::max(ymax, s.y[i] + sp);
      }
    if (!(xmax > xmin)) xmax = xmin + 1;
    if (!(ymax > ymin)) {
      ymin -= 1;
      ymax += 1;
    }
    const double ypad = 0.06 * (ymax - ymin);
    ymin -= ypad;
    ymax += ypad;
    auto X = [&](double v) { return ox + (v - xmin) / (xmax - xmin) * pw; };
    auto Y = [&](double v) { return oy + ph - (v - ymin) / (ymax - ymin) * ph; };
    // Grid, ticks and labels.
    for (double xv : nice_ticks(xmin, xmax)) {
      line(img, X(xv), oy, X(xv), oy + ph, {232, 232, 232}, 1);
      const std::string xl = tick_label(xv);
      text(img, static_cast<int>(X(xv)) - text_width(xl) / 2, oy + ph + 8, xl, kBlack);
    }
    for (double yv : nice_ticks(ymin, ymax)) {
      line(img, ox, Y(yv), ox + pw, Y(yv), {232, 232, 232}, 1);
      const std::string yl = tick_label(yv);
      text(img, ox - 8 - text_width(yl), static_cast<int>(Y(yv)) - 6, yl, kBlack);
    }
    for (const Series& s : p.series)
      if (!s.spread.empty())
        for (size_t i = 0; i + 1 < s.x.size(); ++i)
          for (double t = 0; t <= 1; t += 1.0 / std::max(1.0, X(s.x[i + 1]) - X(s.x[i]))) {
            const double xv = s.x[i] + t * (s.x[i + 1] - s.x[i]);
            const double yv = s.y[i] + t * (s.y[i + 1] - s.y[i]), sv = s.spread[i] + t * (s.spread[i + 1] - s.spread[i]);
            line(img, X(xv), Y(yv - sv), X(xv), Y(yv + sv), lighten(s.color), 1);
          }
    if (ymin < 0 && ymax > 0) line(img, ox, Y(0), ox + pw, Y(0), kGray, 1);
    for (const Series& s : p.series)
      for (size_t i = 0; i + 1 < s.x.size(); ++i) line(img, X(s.x[i]), Y(s.y[i]), X(s.x[i + 1]), Y(s.y[i + 1]), s.color, 3);
    // Frame, title, axis labels.
    line(img, ox, oy, ox + pw, oy, kBlack, 1);
    line(img, ox, oy + ph, ox + pw, oy + ph, kBlack, 1);
    line(img, ox, oy, ox, oy + ph, kBlack, 1);
    line(img, ox + pw, oy, ox + pw, oy + ph, kBlack, 1);
    text(img, ox + (pw - text_width(p.title)) / 2, 8, p.title, kBlack);
    text(img, ox + (pw - text_width(p.xlabel)) / 2, oy + ph + 30, p.xlabel, kBlack);
    text(img, ox - text_width(p.ylabel) / 2, oy - 22, p.ylabel, kBlack);
  }
  // Legend along the bottom, from the first panel.
  int lx = left;
  if (!panels.empty())
    for (const Series& s : panels[0].series) {
      fill(img, lx, H - 18, lx + 24, H - 12, s.color);
      text(img, lx + 30, H - 22, s.label, kBlack);
      lx += 30 + text_width(s.label) + 30;
    }
  return img;
}

}  // namespace ipna::render
