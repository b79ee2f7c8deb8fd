// Model inputs from files: a preprocessed tensor (.npy), an image with the
// ImageNet preprocessing of SPEC.md, 8-bit grayscale pixels, and the baselines.
// Shared by the experiments and the command line, so each rule is checked once.
#pragma once
#include <string>
#include <vector>

#include "engine/shape.h"
#include "loaders/image.h"

namespace ipna {

// Per-channel normalisation x = (pixel / 255 - mean[c]) / std[c].
struct Normalization {
  std::vector<double> mean, std;
};
// Checks mean/std against the input's channels. Both empty: ImageNet's for 3
// channels, identity (0, 1) otherwise.
Normalization normalization_for(const Shape& input_shape, std::vector<double> mean = {}, std::vector<double> std = {});

// A .npy holding one sample of `shape`: exactly that shape, or with a leading
// batch of 1. `role` names it in errors ("the input", "the baseline").
std::vector<double> read_sample(const std::string& path, const Shape& shape, const char* role);

// An image file for a 3x224x224 model: shorter side 256, center crop 224,
// normalised. `crop` (optional) receives the 224x224 crop.
std::vector<double> image_input(const std::string& path, const Shape& shape, const Normalization& n,
                                Image* crop = nullptr);
// The same for an image already decoded from `path` (named in errors).
std::vector<double> image_input(const std::string& path, const Image& decoded, const Shape& shape,
                                const Normalization& n, Image* crop = nullptr);

// The baselines by name: "black" (the black image, normalised like the input),
// "zeros", or a .npy file.
std::vector<double> baseline_input(const std::string& kind, const Shape& shape, const Normalization& n);
bool is_baseline_kind(const std::string& kind);

}  // namespace ipna
