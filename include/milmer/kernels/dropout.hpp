// Dropout (per element) and drop-path (stochastic depth, per sample), forward and backward,
// with masks drawn from Philox and never stored.
//
// Math (p: drop probability in [0, 1); scale = 1 / (1 - p), computed in float)
//   dropout:    keep(i) = philox_uniform(seed, offset, i) >= p, i = flat element index
//               out(i)  = keep(i) ? x(i) * scale : 0
//               dx(i)   = keep(i) ? dy(i) * scale : 0
//   drop_path:  x is (batch, per_sample...); keep(b) = philox_uniform(seed, offset, b) >= p
//               out(b, j) = keep(b) ? x(b, j) * scale : 0, dx likewise from dy
//   Backward regenerates the mask from the same (seed, offset) the forward used, so it is the
//   forward's mask exactly; nothing is saved between them. p = 0 keeps everything with scale
//   1: an exact copy. The caller advances `offset` for every new mask (one per layer and
//   step); the same offset with the same seed gives the same mask.
//   Forward and backward are the same element-wise map (multiply by keep * scale), so they
//   share one kernel; out may be the input buffer, dinp may be the dout buffer.
//
// Layout: any contiguous tensor; drop-path takes dim 0 as the sample (batch) dimension and
// the rest of each sample as one contiguous run of per_sample = numel / batch elements.
//
// Launch shape: block 256, one element per thread, grid ceil(n / 256); or, when both pointers
// are 16-byte aligned and n (drop-path: per_sample) is a multiple of the pack width (4
// floats), one 16-byte pack per thread, grid ceil(n / 4 / 256). No shared memory. Each element
// draws its own Philox value by its flat index, so the two paths give the same mask.
//
// Minimum bytes moved (s = sizeof(T)): 2*n*s for each of the four ops (read the input or
// dout, write out or dinp); the mask costs no memory traffic.
#pragma once

#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/platform.hpp"
#include "milmer/rng.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

// out(i) = keep(i) ? src(i) * scale : 0, keep(i) = philox_uniform(seed, offset, i) >= p.
template <class T>
__global__ void dropout_apply_packed(T* out, const T* src, std::int64_t packs, float p, float scale,
                                     std::uint64_t seed, std::uint64_t offset) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= packs) return;
  constexpr int W = Pack<T>::kWidth;
  const Pack<T> x = reinterpret_cast<const Pack<T>*>(src)[i];
  Pack<T> y;
  for (int k = 0; k < W; ++k) {
    const auto index = static_cast<std::uint64_t>(i * W + k);
    const bool keep = philox_uniform(seed, offset, index) >= p;
    y.v[k] = from_float<T>(keep ? to_float(x.v[k]) * scale : 0.0f);
  }
  reinterpret_cast<Pack<T>*>(out)[i] = y;
}

template <class T>
__global__ void dropout_apply_scalar(T* out, const T* src, std::int64_t n, float p, float scale,
                                     std::uint64_t seed, std::uint64_t offset) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool keep = philox_uniform(seed, offset, static_cast<std::uint64_t>(i)) >= p;
  out[i] = from_float<T>(keep ? to_float(src[i]) * scale : 0.0f);
}

// out(b, j) = keep(b) ? src(b, j) * scale : 0, keep(b) = philox_uniform(seed, offset, b) >= p.
template <class T>
__global__ void drop_path_apply_packed(T* out, const T* src, std::int64_t packs,
                                       std::int64_t per_sample, float p, float scale,
                                       std::uint64_t seed, std::uint64_t offset) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= packs) return;
  constexpr int W = Pack<T>::kWidth;
  const auto sample = static_cast<std::uint64_t>(i * W / per_sample);
  const bool keep = philox_uniform(seed, offset, sample) >= p;
  const Pack<T> x = reinterpret_cast<const Pack<T>*>(src)[i];
  Pack<T> y;
  for (int k = 0; k < W; ++k) y.v[k] = from_float<T>(keep ? to_float(x.v[k]) * scale : 0.0f);
  reinterpret_cast<Pack<T>*>(out)[i] = y;
}

template <class T>
__global__ void drop_path_apply_scalar(T* out, const T* src, std::int64_t n,
                                       std::int64_t per_sample, float p, float scale,
                                       std::uint64_t seed, std::uint64_t offset) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const bool keep = philox_uniform(seed, offset, static_cast<std::uint64_t>(i / per_sample)) >= p;
  out[i] = from_float<T>(keep ? to_float(src[i]) * scale : 0.0f);
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

inline void expect_drop_probability(float p, const char* op) {
  check(p >= 0.0f && p < 1.0f, op, "p", "a drop probability in [0, 1)", str(p));
}

// The argument checks dropout and drop-path share; returns the kept elements' scale
// 1 / (1 - p).
template <class T>
float expect_masked_scale_args(const char* op, const char* dst_name, const char* src_name,
                               const TensorView<T>& dst, const TensorView<const T>& src, float p) {
  expect_drop_probability(p, op);
  expect_flat(dst, op, dst_name);
  expect_flat(src, op, src_name);
  expect_same_shape(src, dst, op, src_name);
  return 1.0f / (1.0f - p);
}

// Launches `packed` over the n / pack-width packs of dst when use_packs, else `scalar` over its
// n elements; both kernels take (dst, src, count, mask arguments...).
template <class T, class... Params, class... MaskArgs>
void launch_masked_scale(Context& ctx, const char* op, bool use_packs, void (*packed)(Params...),
                         void (*scalar)(Params...), T* dst, const T* src, std::int64_t n,
                         const MaskArgs&... mask_args) {
  const int threads = kernels::kElementwiseThreads;
  const std::int64_t count = use_packs ? n / kernels::Pack<T>::kWidth : n;
  launch(use_packs ? packed : scalar, dim3(blocks_for(count, threads, op)), dim3(threads), 0,
         ctx.stream(), dst, src, count, mask_args...);
}

template <class T>
void dropout_apply(Context& ctx, const char* op, const char* dst_name, const char* src_name,
                   TensorView<T> dst, TensorView<const T> src, float p, std::uint64_t seed,
                   std::uint64_t offset) {
  const float scale = expect_masked_scale_args(op, dst_name, src_name, dst, src, p);
  const std::int64_t n = dst.numel();
  launch_masked_scale(ctx, op, packable<T>(n, dst.data, src.data), kernels::dropout_apply_packed<T>,
                      kernels::dropout_apply_scalar<T>, dst.data, src.data, n, p, scale, seed,
                      offset);
}

template <class T>
void drop_path_apply(Context& ctx, const char* op, const char* dst_name, const char* src_name,
                     TensorView<T> dst, TensorView<const T> src, float p, std::uint64_t seed,
                     std::uint64_t offset) {
  const float scale = expect_masked_scale_args(op, dst_name, src_name, dst, src, p);
  const std::int64_t n = dst.numel();
  const std::int64_t per_sample = n / dst.dim(0);
  // Packs must not straddle two samples, whose masks differ.
  launch_masked_scale(ctx, op, packable<T>(per_sample, dst.data, src.data),
                      kernels::drop_path_apply_packed<T>, kernels::drop_path_apply_scalar<T>,
                      dst.data, src.data, n, per_sample, p, scale, seed, offset);
}

}  // namespace detail

// out = dropout(inp) with the mask of (seed, offset); out may be inp.
template <class T>
void dropout_forward(Context& ctx, TensorView<T> out, TensorView<const std::type_identity_t<T>> inp,
                     float p, std::uint64_t seed, std::uint64_t offset) {
  detail::dropout_apply<T>(ctx, "dropout_forward", "out", "inp", out, inp, p, seed, offset);
}
// dinp = dout * mask * scale with the forward's (p, seed, offset); written; dinp may be dout.
template <class T>
void dropout_backward(Context& ctx, TensorView<T> dinp,
                      TensorView<const std::type_identity_t<T>> dout, float p, std::uint64_t seed,
                      std::uint64_t offset) {
  detail::dropout_apply<T>(ctx, "dropout_backward", "dinp", "dout", dinp, dout, p, seed, offset);
}
// out = drop_path(inp): each sample (dim 0) kept whole with probability 1 - p and scaled by
// 1 / (1 - p), or zeroed; out may be inp.
template <class T>
void drop_path_forward(Context& ctx, TensorView<T> out,
                       TensorView<const std::type_identity_t<T>> inp, float p, std::uint64_t seed,
                       std::uint64_t offset) {
  detail::drop_path_apply<T>(ctx, "drop_path_forward", "out", "inp", out, inp, p, seed, offset);
}
// dinp = dout with the forward's per-sample mask and scale; written; dinp may be dout.
template <class T>
void drop_path_backward(Context& ctx, TensorView<T> dinp,
                        TensorView<const std::type_identity_t<T>> dout, float p, std::uint64_t seed,
                        std::uint64_t offset) {
  detail::drop_path_apply<T>(ctx, "drop_path_backward", "dinp", "dout", dinp, dout, p, seed,
                             offset);
}

}  // namespace milmer
