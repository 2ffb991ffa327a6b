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
// draws its own Philox value by its flat index (drop-path: by its sample index), so the two
// paths give the same mask. The kernels are device_common.hpp's element-wise map with the
// MaskedScale functor.
//
// Minimum bytes moved (s = sizeof(T)): 2*n*s for each of the four ops (read the input or
// dout, write out or dinp); the mask costs no memory traffic.
#pragma once

#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/rng.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

// Dropout and drop-path as one map functor: out(i) = keep ? x(i) * scale : 0 with
// keep = philox_uniform(seed, offset, i / per_sample) >= p (dropout: per_sample = 1, each
// element its own draw).
struct MaskedScale {
  float p, scale;
  std::uint64_t seed, offset;
  std::int64_t per_sample;
  // Drop-path's last draw: a thread's pack lies in one sample, so it draws once per pack.
  mutable std::int64_t drawn_sample = -1;
  mutable bool sample_kept = false;

  MILMER_HD float operator()(std::int64_t i, const float (&x)[1]) const {
    bool keep;
    if (per_sample == 1) {
      keep = philox_uniform(seed, offset, static_cast<std::uint64_t>(i)) >= p;
    } else {
      const std::int64_t sample = i / per_sample;
      if (sample != drawn_sample) {
        drawn_sample = sample;
        sample_kept = philox_uniform(seed, offset, static_cast<std::uint64_t>(sample)) >= p;
      }
      keep = sample_kept;
    }
    return keep ? x[0] * scale : 0.0f;
  }
};

// Forward and backward of both ops: dst = src * mask * scale (dst may be src).
template <class T>
__global__ void masked_scale_packed(T* dst, std::int64_t packs, MaskedScale mask, const T* src) {
  map_packs(dst, packs, mask, src);
}
template <class T>
__global__ void masked_scale_scalar(T* dst, std::int64_t n, MaskedScale mask, const T* src) {
  map_elements(dst, n, mask, src);
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

inline void expect_drop_probability(float p, const char* op) {
  MILMER_CHECK(p >= 0.0f && p < 1.0f, op, "p", "a drop probability in [0, 1)", str(p));
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

// Checks dst and src and applies the mask of (p, seed, offset) drawn once per per_sample
// elements. Packs must not straddle two samples, whose masks differ, so the packed path needs
// per_sample (not just n) to fill whole packs.
template <class T>
void masked_scale_apply(Context& ctx, const char* op, const char* dst_name, const char* src_name,
                        TensorView<T> dst, TensorView<const T> src, float p, std::uint64_t seed,
                        std::uint64_t offset, bool per_sample_mask) {
  const float scale = expect_masked_scale_args(op, dst_name, src_name, dst, src, p);
  const std::int64_t n = dst.numel();
  const std::int64_t per_sample = per_sample_mask ? n / dst.dim(0) : 1;
  const bool use_packs = packable<T>(per_sample_mask ? per_sample : n, dst.data, src.data);
  launch_map(ctx, op, use_packs, n, kernels::masked_scale_packed<T>,
             kernels::masked_scale_scalar<T>, dst.data,
             kernels::MaskedScale{p, scale, seed, offset, per_sample}, src.data);
}

}  // namespace detail

// out = dropout(inp) with the mask of (seed, offset); out may be inp.
template <class T>
void dropout_forward(Context& ctx, TensorView<T> out, InView<T> inp, float p, std::uint64_t seed,
                     std::uint64_t offset) {
  detail::masked_scale_apply<T>(ctx, "dropout_forward", "out", "inp", out, inp, p, seed, offset,
                                false);
}
// dinp = dout * mask * scale with the forward's (p, seed, offset); written; dinp may be dout.
template <class T>
void dropout_backward(Context& ctx, TensorView<T> dinp, InView<T> dout, float p, std::uint64_t seed,
                      std::uint64_t offset) {
  detail::masked_scale_apply<T>(ctx, "dropout_backward", "dinp", "dout", dinp, dout, p, seed,
                                offset, false);
}
// out = drop_path(inp): each sample (dim 0) kept whole with probability 1 - p and scaled by
// 1 / (1 - p), or zeroed; out may be inp.
template <class T>
void drop_path_forward(Context& ctx, TensorView<T> out, InView<T> inp, float p, std::uint64_t seed,
                       std::uint64_t offset) {
  detail::masked_scale_apply<T>(ctx, "drop_path_forward", "out", "inp", out, inp, p, seed, offset,
                                true);
}
// dinp = dout with the forward's per-sample mask and scale; written; dinp may be dout.
template <class T>
void drop_path_backward(Context& ctx, TensorView<T> dinp, InView<T> dout, float p,
                        std::uint64_t seed, std::uint64_t offset) {
  detail::masked_scale_apply<T>(ctx, "drop_path_backward", "dinp", "dout", dinp, dout, p, seed,
                                offset, true);
}

}  // namespace milmer
