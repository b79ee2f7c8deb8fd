// ImageNet's per-channel normalisation (torchvision's), the one definition the
// image preprocessing and the black baseline share.
#pragma once
#include <vector>

namespace ipna {

inline const std::vector<double> kImagenetMean{0.485, 0.456, 0.406};
inline const std::vector<double> kImagenetStd{0.229, 0.224, 0.225};

}  // namespace ipna
