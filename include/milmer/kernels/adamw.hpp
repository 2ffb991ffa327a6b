// AdamW over the flat parameter arena, plus the global gradient norm and in-place scaling
// used for optional clipping by global norm.
//
// Math (torch.optim.AdamW: decoupled decay on every parameter), for step t = 1, 2, ...:
//   p <- p * (1 - lr wd)
//   m <- b1 m + (1 - b1) g             v <- b2 v + (1 - b2) g^2
//   p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The element-wise operations follow PyTorch's single-tensor path (foreach=False, fused=False)
// as its CUDA kernels execute it, so a float result agrees with PyTorch on a GPU to the last
// bit or so rather than to a tolerance. The scalars are computed on the host in double exactly
// as the Python code does (1 - lr*wd, 1 - b1, 1 - b2, lr / (1 - b1**t), (1 - b2**t)**0.5) and
// rounded to float once, as ATen does when a Python float meets a float tensor. Per element:
//   p = p * decay                                  param.mul_(1 - lr*wd)
//   m = fma(w1, g - m, m)                          exp_avg.lerp_(g, 1 - b1)   (w1 < 0.5; else
//                                                  fma(-(g - m), 1 - w1, g), ATen's lerp)
//   v = fma(w2, g * g, v * b2)                     exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2)
//   d = (sqrt(v) * (1 / bc2_sqrt)) + eps           (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps):
//                                                  a tensor divided by a host scalar is a
//                                                  multiplication by its float reciprocal
//   p = fma(-step_size, m / d, p)                  param.addcdiv_(m, d, value=-step_size)
// The fmas are where nvcc contracts PyTorch's `a + b * c` expressions; they are written
// explicitly here (fmaf) so both targets round the same, and the one product that must NOT be
// fused (sqrt(v) * (1 / bc2_sqrt), a separate kernel in PyTorch) is guarded by mul_rn.
//
// Layouts: params, grads (n) of the storage type T; m, v (n) float; all flat and contiguous
// (the model's arenas). global_grad_norm: grads (n), scratch (kGradNormMaxBlocks) float,
// norm (1) float on device.
//
// Launch shape and minimum traffic:
//   adamw_kernel: grid-stride, block 256, grid min(ceil(n / 256), 65535 * 8); no shared
//     memory. Reads p, g, m, v and writes p, m, v: 7 n values (28 n bytes for float).
//   sum_squares_partial_kernel: grid B = min(ceil(n / 256), kGradNormMaxBlocks), block 256,
//     static shared 256 floats. Thread i of the grid sums x[i], x[i + 256 B], ... in order,
//     block_sum (device_common.hpp's fixed pairwise tree) adds the block's 256 sums; one
//     partial per block. Reads n values.
//   grad_norm_finish_kernel: one block of 256 threads adds the B partials the same way and
//     writes sqrt(total). The partition depends only on n, so the norm is bit-reproducible.
//   scale_kernel / clip_by_norm_kernel: grid-stride, block 256; read and write n values.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/error.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer {

// torch.optim.AdamW's hyper-parameters, in double as Python holds them (defaults: the
// model's training recipe, docs/model.md §7).
struct AdamWConfig {
  double lr = 1e-4;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;
};

}  // namespace milmer

namespace milmer::kernels {

// The per-step scalars, each rounded to float once on the host (see the file comment).
struct AdamWScalars {
  float decay;          // 1 - lr * wd
  float w1;             // 1 - beta1 (lerp weight)
  float one_minus_w1;   // 1 - w1 in float, ATen lerp's second branch
  float beta2;          // beta2
  float w2;             // 1 - beta2
  float inv_bc2_sqrt;   // 1 / float(sqrt(1 - beta2^t))
  float eps;            // eps
  float neg_step_size;  // -lr / (1 - beta1^t)
};

// a * b rounded once and never fused into a following addition.
MILMER_HD inline float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  // A volatile store rounds the product and hides it from the compiler's contraction.
  volatile float product = a * b;
  return product;
#endif
}

template <class T>
__global__ void adamw_kernel(T* params, float* m, float* v, const T* grads, std::int64_t n,
                             AdamWScalars s) {
  for (std::int64_t i = global_thread_index(); i < n; i += grid_thread_count()) {
    const float g = to_float(grads[i]);
    float p = to_float(params[i]) * s.decay;
    float mi = m[i];
    const float diff = g - mi;
    mi = s.w1 < 0.5f ? fmaf(s.w1, diff, mi) : fmaf(-diff, s.one_minus_w1, g);
    const float vi = fmaf(s.w2, g * g, v[i] * s.beta2);
    const float denom = mul_rn(sqrtf(vi), s.inv_bc2_sqrt) + s.eps;
    p = fmaf(s.neg_step_size, mi / denom, p);
    params[i] = from_float<T>(p);
    m[i] = mi;
    v[i] = vi;
  }
}

inline constexpr int kGradNormThreads = 256;
inline constexpr int kGradNormMaxBlocks = 1024;

template <class T>
__global__ void sum_squares_partial_kernel(float* partials, const T* x, std::int64_t n) {
  MILMER_SHARED(float, sums, [kGradNormThreads]);
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * kGradNormThreads;
  float sum = 0.0f;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * kGradNormThreads + threadIdx.x;
       i < n; i += stride) {
    const float xi = to_float(x[i]);
    sum = fmaf(xi, xi, sum);
  }
  sum = block_sum(sum, sums);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

template <int kThreads>
__global__ void grad_norm_finish_kernel(float* norm, const float* partials, int count) {
  MILMER_SHARED(float, sums, [kThreads]);
  const float total = block_sum_of(partials, count, sums);
  if (threadIdx.x == 0) norm[0] = sqrtf(total);
}

template <class T>
__global__ void scale_kernel(T* x, std::int64_t n, float scale) {
  for (std::int64_t i = global_thread_index(); i < n; i += grid_thread_count())
    x[i] = from_float<T>(to_float(x[i]) * scale);
}

// torch.nn.utils.clip_grad_norm_: coef = min(max_norm / (norm + 1e-6), 1); x *= coef. The norm
// is read on the device, so clipping needs no host synchronisation.
template <class T>
__global__ void clip_by_norm_kernel(T* x, std::int64_t n, const float* norm, float max_norm) {
  const float coef = fminf(max_norm / (norm[0] + 1e-6f), 1.0f);
  for (std::int64_t i = global_thread_index(); i < n; i += grid_thread_count())
    x[i] = from_float<T>(to_float(x[i]) * coef);
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

inline void check_hyper(bool ok, const char* name, const char* expected, double got) {
  MILMER_CHECK(ok, "adamw_update", name, expected, str(got));
}

}  // namespace detail

// The host-side scalars of step `step` (1-based), as PyTorch computes them.
inline kernels::AdamWScalars adamw_scalars(const AdamWConfig& c, int step) {
  const double bias_correction1 = 1.0 - std::pow(c.beta1, step);
  const double bias_correction2 = 1.0 - std::pow(c.beta2, step);
  const double step_size = c.lr / bias_correction1;
  const double bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
  kernels::AdamWScalars s{};
  s.decay = static_cast<float>(1.0 - c.lr * c.weight_decay);
  s.w1 = static_cast<float>(1.0 - c.beta1);
  s.one_minus_w1 = 1.0f - s.w1;
  s.beta2 = static_cast<float>(c.beta2);
  s.w2 = static_cast<float>(1.0 - c.beta2);
  s.inv_bc2_sqrt = 1.0f / static_cast<float>(bias_correction2_sqrt);
  s.eps = static_cast<float>(c.eps);
  s.neg_step_size = static_cast<float>(-step_size);
  return s;
}

// One AdamW step over flat arenas: params (n), m (n), v (n) updated in place from grads (n).
// step is the 1-based step count after this update (PyTorch's state['step']).
template <class T>
void adamw_update(Context& ctx, TensorView<T> params, TensorView<float> m, TensorView<float> v,
                  InView<T> grads, int step, const AdamWConfig& config) {
  constexpr const char* op = "adamw_update";
  expect(params, op, "params", {-1});
  const std::int64_t n = params.shape[0];
  expect(m, op, "m", {n});
  expect(v, op, "v", {n});
  expect(grads, op, "grads", {n});
  MILMER_CHECK(step >= 1, op, "step", "a 1-based step count >= 1", str(step));
  detail::check_hyper(config.lr >= 0.0 && std::isfinite(config.lr), "lr", "a finite value >= 0",
                      config.lr);
  detail::check_hyper(config.beta1 >= 0.0 && config.beta1 < 1.0, "beta1", "0 <= beta1 < 1",
                      config.beta1);
  detail::check_hyper(config.beta2 >= 0.0 && config.beta2 < 1.0, "beta2", "0 <= beta2 < 1",
                      config.beta2);
  detail::check_hyper(config.eps >= 0.0 && std::isfinite(config.eps), "eps", "a finite value >= 0",
                      config.eps);
  detail::check_hyper(config.weight_decay >= 0.0 && std::isfinite(config.weight_decay),
                      "weight_decay", "a finite value >= 0", config.weight_decay);
  detail::launch_grid_stride(ctx, n, kernels::adamw_kernel<T>, params.data, m.data, v.data,
                             grads.data, n, adamw_scalars(config, step));
}

// norm (1, device) = sqrt(sum of grads^2) over the flat gradient arena, deterministic: two
// launches and no atomics. scratch holds one partial per block: kGradNormMaxBlocks floats.
// grads may be a view of const or mutable elements.
template <class G>
void global_grad_norm(Context& ctx, TensorView<float> norm, TensorView<float> scratch,
                      TensorView<G> grads) {
  using T = std::remove_const_t<G>;
  constexpr const char* op = "global_grad_norm";
  expect(grads, op, "grads", {-1});
  expect(norm, op, "norm", {1});
  expect(scratch, op, "scratch", {kernels::kGradNormMaxBlocks});
  const std::int64_t n = grads.shape[0];
  const int blocks = static_cast<int>(
      detail::grid_stride_blocks(n, kernels::kGradNormThreads, kernels::kGradNormMaxBlocks));
  launch(kernels::sum_squares_partial_kernel<T>, dim3(blocks), dim3(kernels::kGradNormThreads), 0,
         ctx.stream(), scratch.data, static_cast<const T*>(grads.data), n);
  launch(kernels::grad_norm_finish_kernel<kernels::kGradNormThreads>, dim3(1),
         dim3(kernels::kGradNormThreads), 0, ctx.stream(), norm.data,
         static_cast<const float*>(scratch.data), blocks);
}

// x *= scale, in place.
template <class T>
void scale_inplace(Context& ctx, TensorView<T> x, float scale) {
  constexpr const char* op = "scale_inplace";
  expect(x, op, "x", {-1});
  MILMER_CHECK(std::isfinite(scale), op, "scale", "a finite value", str(scale));
  detail::launch_grid_stride(ctx, x.shape[0], kernels::scale_kernel<T>, x.data, x.shape[0], scale);
}

// Clipping by global norm, as torch.nn.utils.clip_grad_norm_: grads *= min(max_norm / (norm +
// 1e-6), 1), with norm the device scalar global_grad_norm wrote (no host round trip).
template <class T>
void clip_grad_norm_inplace(Context& ctx, TensorView<T> grads, TensorView<const float> norm,
                            float max_norm) {
  constexpr const char* op = "clip_grad_norm_inplace";
  expect(grads, op, "grads", {-1});
  expect(norm, op, "norm", {1});
  MILMER_CHECK(max_norm > 0.0f && std::isfinite(max_norm), op, "max_norm", "a finite value > 0",
               str(max_norm));
  detail::launch_grid_stride(ctx, grads.shape[0], kernels::clip_by_norm_kernel<T>, grads.data,
                             grads.shape[0], norm.data, max_norm);
}

}  // namespace milmer
