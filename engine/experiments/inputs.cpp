#include "engine/experiments/inputs.h"

#include "engine/attribution.h"
#include "engine/error.h"
#include "engine/imagenet.h"
#include "loaders/npy.h"

namespace ipna {

Normalization normalization_for(const Shape& shape, std::vector<double> mean, std::vector<double> std) {
  if (mean.empty() != std.empty()) throw Error("give both a normalisation mean and std, or neither");
  const int64_t c = shape.channels();
  if (mean.empty()) {
    if (c == 3) return {kImagenetMean, kImagenetStd};
    return {std::vector<double>(c, 0.0), std::vector<double>(c, 1.0)};
  }
  if (static_cast<int64_t>(mean.size()) != c || static_cast<int64_t>(std.size()) != c)
    throw Error("the normalisation mean and std need one value per input channel (" + std::to_string(c) + "), got " +
                std::to_string(mean.size()) + " and " + std::to_string(std.size()));
  for (double v : std)
    if (!(v > 0)) throw Error("the normalisation std values must be positive, got " + std::to_string(v));
  return {std::move(mean), std::move(std)};
}

std::vector<double> read_sample(const std::string& path, const Shape& shape, const char* role) {
  NpyArray a = read_npy(path);
  std::vector<int64_t> dims = a.shape;
  if (dims.size() == shape.rank() + 1 && dims[0] == 1) dims.erase(dims.begin());
  if (dims != shape.dims) {
    std::string hint;
    if (shape.rank() == 3 && a.shape.size() >= 3 && a.shape.back() == shape.dims[0])
      hint = "; a channels-last (H,W,C) array needs np.transpose(a, (2, 0, 1)) first";
    throw Error(path + " (" + role + "): shape " + Shape(a.shape).str() + " does not match the model input: expected " +
                shape.str() + " or [1," + shape.str().substr(1) + hint);
  }
  return std::move(a.data);
}

namespace {
void check_imagenet_shape(const std::string& path, const Shape& shape) {
  if (shape != Shape{3, 224, 224})
    throw Error(path + ": an image needs a model with a 3x224x224 input (ImageNet preprocessing); this model takes " +
                shape.str() + ": give a preprocessed tensor (.npy) instead");
}
// Errors of the image pipeline name the file.
template <class F>
auto naming(const std::string& path, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    const std::string what = e.what();
    throw Error(what.find(path) == std::string::npos ? "'" + path + "': " + what : what);
  }
}
}  // namespace

std::vector<double> image_input(const std::string& path, const Image& decoded, const Shape& shape,
                                const Normalization& n, Image* crop) {
  check_imagenet_shape(path, shape);
  Image c = naming(path, [&] { return center_crop(resize_shorter_side(decoded, 256), 224); });
  std::vector<double> x = to_chw(c, n.mean, n.std);
  if (crop) *crop = std::move(c);
  return x;
}

std::vector<double> image_input(const std::string& path, const Shape& shape, const Normalization& n, Image* crop) {
  check_imagenet_shape(path, shape);
  return image_input(path, naming(path, [&] { return load_image_rgb(path); }), shape, n, crop);
}

bool is_baseline_kind(const std::string& kind) {
  return kind == "black" || kind == "zeros" || (kind.size() > 4 && kind.substr(kind.size() - 4) == ".npy");
}

std::vector<double> baseline_input(const std::string& kind, const Shape& shape, const Normalization& n) {
  if (kind == "black") return black_baseline(shape, n.mean, n.std);
  if (kind == "zeros") return std::vector<double>(shape.numel(), 0.0);
  if (!is_baseline_kind(kind)) throw Error("baseline: expected black, zeros or a .npy file, got '" + kind + "'");
  return read_sample(kind, shape, "the baseline");
}

}  // namespace ipna
