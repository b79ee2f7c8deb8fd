// Winograd F(2x2, 3x3) for the CPU backend's 3x3 stride-1 convolutions: 16
// multiplies per 2x2 output tile instead of 36, as 16 GEMMs over the channels.
// Backward data of such a conv is again one (flipped, transposed weights,
// padding 2 - p), so both directions use it.
#pragma once
#include <vector>

#include "engine/backend.h"

namespace ipna::cpu {

// 3x3, stride 1, dilation 1, one group, pads <= 2, and enough channels that
// the GEMMs beat im2col's.
bool winograd_applies(const ConvDesc& d);

// U[16][out][in] from weight[cout][cin][3][3]; `for_backward` transposes and
// rotates it into the backward-data conv's weights. The backend caches U per
// weight buffer: weights do not change while a plan lives.
template <typename T>
std::vector<T> winograd_weights(const T* weight, int cout, int cin, bool for_backward);
// The geometry of the forward conv that computes conv d's input gradient.
ConvDesc winograd_backward_geometry(const ConvDesc& d);
// y (+)= conv(x) for forward geometry d and transformed weights U.
template <typename T>
void winograd_conv(const ConvDesc& d, const T* U, const T* bias, const T* x, T* y, int n, bool accumulate);

}  // namespace ipna::cpu
