// Launchers of our CUDA kernels (kernels/*.cu). The CUDA backend
// (engine/cuda/cuda_backend.cpp) calls these; convolutions and GEMMs go to
// cuDNN and cuBLAS there. All pointers are device memory, float32, laid out
// as in engine/backend.h (sample-major NCHW batches, Clip masks bit-packed
// per engine/window_math.h, MaxPool argmax as a flat index into the plane).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/op_desc.h"

namespace ipna::kernels {

// pointwise.cu
void clip_forward(int64_t count, float lo, float hi, const float* x, float* y, uint32_t* mask, cudaStream_t s);
void clip_backward(int64_t count, const uint32_t* mask, const float* dy, float* dx, bool accumulate, cudaStream_t s);
void clip_tangent_window(int n, int c, int h, int w, PlaneWindow win, const uint32_t* mask, const float* tx, float* ty,
                         cudaStream_t s);
void clip_difference_window(int n, int c, int h, int w, PlaneWindow win, float lo, float hi, const float* base,
                            const float* change, float* y, cudaStream_t s);
void affine_forward(int c, int64_t plane, int n, const float* scale, const float* shift, const float* x, float* y,
                    cudaStream_t s);
void affine_backward(int c, int64_t plane, int n, const float* scale, const float* dy, float* dx, bool accumulate,
                     cudaStream_t s);
void add(int64_t count, const float* a, const float* b, float* y, cudaStream_t s);
void subtract(int64_t count, const float* a, const float* b, float* y, cudaStream_t s);
void accumulate(int64_t count, const float* src, float* dst, bool accumulate, cudaStream_t s);
void scale_by_mask(int64_t per_sample, int n, const float* mask, float* x, cudaStream_t s);
void channel_bias(int c, int64_t plane, int n, const float* bias, float* y, cudaStream_t s);  // y += bias[c]
void row_bias(int out, int n, const float* bias, float* y, cudaStream_t s);                   // y[b, o] = bias[o]
// Asymmetric padding, which cuDNN lacks: copy into a zero-padded buffer, and
// add the interior of a padded gradient back.
void pad2d(int n, int c, int h, int w, int top, int left, int hp, int wp, const float* x, float* xp, cudaStream_t s);
void crop_add(int n, int c, int h, int w, int top, int left, int hp, int wp, const float* gp, float* dx,
              bool accumulate, cudaStream_t s);

// pool.cu
void maxpool_forward(const PoolDesc& d, int n, const float* x, float* y, int32_t* argmax, cudaStream_t s);
void maxpool_backward(const PoolDesc& d, int n, const int32_t* argmax, const float* dy, float* dx, bool accumulate,
                      cudaStream_t s);
void avgpool_forward(const PoolDesc& d, int n, const float* x, float* y, cudaStream_t s);
void avgpool_backward(const PoolDesc& d, int n, const float* dy, float* dx, bool accumulate, cudaStream_t s);
void maxpool_tangent(const PoolDesc& d, int n, const int32_t* argmax, const float* tx, float* ty, cudaStream_t s);
void maxpool_tangent_window(const PoolDesc& d, int n, const int32_t* argmax, PlaneWindow in, const float* tx,
                            PlaneWindow out, float* ty, cudaStream_t s);
void maxpool_difference_window(const PoolDesc& d, int n, PlaneWindow in, PlaneWindow out, const float* base,
                               bool clip_base, float lo, float hi, const float* change, float* y, cudaStream_t s);

// secant.cu (the secant rule, engine/backend.h). pair_mean reads v and writes out, which must not
// overlap: each sample reads the one before it.
void secant_slopes(int64_t per_sample, int n, const float* z, const float* y, float* slope, bool smooth,
                   cudaStream_t s);
void maxpool_secant_weights(const PoolDesc& d, int n, const int32_t* argmax, const float* x, float* w, cudaStream_t s);
void maxpool_backward_secant(const PoolDesc& d, int n, const int32_t* argmax, const float* w, const float* dy,
                             float* dx, bool accumulate, cudaStream_t s);
void maxpool_tangent_secant(const PoolDesc& d, int n, const int32_t* argmax, const float* w, const float* tx, float* ty,
                            cudaStream_t s);
void pair_mean(int64_t per_sample, int n, const float* v, float* out, cudaStream_t s);

// channels.cu
void copy_channels(int n, int64_t plane, int channels, const float* src, int src_c, int src_c0, float* dst, int dst_c,
                   int dst_c0, bool accumulate, cudaStream_t s);
void channel_shuffle(int n, int c, int64_t plane, const int32_t* perm, const float* x, float* y, bool inverse,
                     bool accumulate, cudaStream_t s);
void channel_mean_forward(int n, int c, int64_t plane, const float* x, float* y, cudaStream_t s);
void channel_mean_backward(int n, int c, int64_t plane, const float* dy, float* dx, bool accumulate, cudaStream_t s);
void copy_window(int n, int channels, const float* src, int src_h, int src_w, int src_r, int src_c, float* dst,
                 int dst_h, int dst_w, int dst_r, int dst_c, int h, int w, cudaStream_t s);

// activation.cu
void activation_forward(ActivationFn f, int64_t count, float alpha, float beta, const float* x, float* y,
                        float* derivative, cudaStream_t s);
void mul_forward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b, float* y,
                 bool accumulate, cudaStream_t s);
void mul_backward(int n, int c, int64_t plane, bool b_per_channel, const float* a, const float* b, const float* dy,
                  float* da, bool accumulate_a, float* db, bool accumulate_b, cudaStream_t s);

// layernorm.cu
void layernorm_forward(int n, int c, int64_t plane, float eps, const float* gamma, const float* beta, const float* x,
                       float* y, float* xhat, float* rstd, cudaStream_t s);
void layernorm_backward(int n, int c, int64_t plane, const float* gamma, const float* xhat, const float* rstd,
                        const float* dy, float* dx, bool accumulate, cudaStream_t s);
void layernorm_tangent(int n, int c, int64_t plane, const float* gamma, const float* xhat, const float* rstd,
                       const float* tx, float* ty, cudaStream_t s);

// path.cu
struct DeviceBox {
  int r0, c0, r1, c1;
};
// out[b] = x0 + k[b] * d (+ scale[b] * d inside boxes[box_index[b]] when >= 0; scale null: 1);
// k, scale, box_index, boxes on the device.
void make_points(int c, int h, int w, int n, const float* x0, const float* d, const float* k, const float* scale,
                 const int* box_index, const DeviceBox* boxes, float* out, cudaStream_t s);
void target_forward_backward(bool logit, int classes, int y, int n, const float* logits, float* value,
                             float* dlogits, cudaStream_t s);
// acc[j] += sum_b w[b] * x[b, j]; w null: all 1.
void sum_batch(int64_t per_sample, int n, const float* x, const float* w, float* acc, cudaStream_t s);
void accumulate_path_product(int64_t per_sample, int n, const float* g, const float* a, const float* b, float* acc,
                             cudaStream_t s);

// Throws ipna::Error naming the call on a CUDA error (kernels/launch.h launches with it).
void check(cudaError_t e, const char* what);

}  // namespace ipna::kernels
