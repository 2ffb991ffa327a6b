// LayerNorm over the last dimension, forward and backward.
//
// Math (per row r of width W; biased variance, as torch.nn.LayerNorm)
//   mean_r = sum_c x / W
//   rstd_r = 1 / sqrt(sum_c (x - mean_r)^2 / W + eps)
//   xhat   = (x - mean_r) * rstd_r,   out = xhat * weight + bias
// Backward (g = dout * weight):
//   dinp    = rstd_r * (g - mean_c(g) - xhat * mean_c(g * xhat))   (= or +=, accumulate_dinp)
//   dweight += sum_r dout * xhat,   dbias += sum_r dout
//
// Layouts: inp, out, dout, dinp (rows, W) row-major; weight, bias, dweight, dbias (W);
// mean, rstd (rows), always float (the statistics forward saves for backward).
//
// Statistics: two passes over the row (the mean first, then the sum of squared deviations),
// float accumulation. One pass of sum and sum of squares cancels catastrophically when
// |mean| >> std; Welford avoids that too but costs a division per element and a more
// involved warp merge. The second pass re-reads the row, which is at most a few KB and
// still in L1/L2, so DRAM traffic stays one read of the row.
//
// Launch shapes
//   forward: one warp per row, block 256 (8 rows), grid ceil(rows / 8), no shared memory.
//     Each lane sums columns lane, lane+32, ... in order; the warp combines the 32 sums with
//     an xor butterfly, whose result is the same bits on every lane and every run.
//   backward, kernel 1 (layernorm_backward_rows): grid P (row parts, see
//     layernorm_backward_parts), block min(256, W rounded up to 32), one block per row at a
//     time over its part's contiguous rows. Thread t owns columns t, t + blockDim, ... for the
//     whole part, so it accumulates that part's dweight / dbias partials for its columns
//     without any atomics: in dynamic shared memory (2*W floats) when W <= 6144, otherwise
//     directly in its block's slice of the scratch buffer. The part's partials are then
//     written to scratch (P, 2, W). The two row sums dinp needs are reduced per warp with an
//     xor butterfly and across warps in warp order through 64 bytes of static shared memory.
//   backward, kernel 2 (sum_partials, elementwise.hpp): grid (ceil(W / 256), 2), block 256,
//     adds the P partials in order 0..P-1 and += into dweight and dbias.
//   P depends only on (rows, W), never on the device or schedule, so dweight and dbias are
//   bit-identical under every schedule, on every run and on every GPU.
//
// Minimum bytes moved (s = sizeof(T), R rows, W width)
//   forward:  2*R*W*s + 2*W*s + 8*R        read x, weight, bias; write out, mean, rstd
//   backward: 3*R*W*s + 5*W*s + 8*R        read dout, x, weight, mean, rstd; write dinp;
//             (+ R*W*s with accumulate_dinp: dinp is read too)   read + write dweight, dbias
//   The scratch partials (2*P*W floats written and read back) are overhead beyond this.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kLayerNormForwardThreads = 256;  // 8 warps, one row each
inline constexpr int kLayerNormBackwardMaxThreads = 256;
inline constexpr int kLayerNormSharedPartialsMaxWidth = 6144;  // 2*W floats <= 48 KB

// The part of a warp-per-row LayerNorm forward after the row's values x are in place: from
// this lane's partial sum of x (columns lane, lane+32, ... in order) it forms the mean, the
// rstd by a second pass over x, writes y = xhat * weight + bias and, from lane 0, the row's
// mean and rstd. layernorm_forward_rows and residual_layernorm_forward_rows (whose x is the
// pre-norm sum) share it, which keeps their results the same bits.
template <class T>
__device__ inline void warp_normalize_row(T* y, float* mean, float* rstd, const T* x,
                                          const T* weight, const T* bias, int row, int width,
                                          float lane_sum, float eps) {
  const int lane = threadIdx.x % 32;
  const float row_mean = warp_sum(lane_sum) / static_cast<float>(width);

  float squares = 0.0f;
  for (int c = lane; c < width; c += 32) {
    const float d = to_float(x[c]) - row_mean;
    squares += d * d;
  }
  const float row_rstd = rsqrtf(warp_sum(squares) / static_cast<float>(width) + eps);

  for (int c = lane; c < width; c += 32) {
    const float xhat = (to_float(x[c]) - row_mean) * row_rstd;
    y[c] = from_float<T>(xhat * to_float(weight[c]) + to_float(bias[c]));
  }
  if (lane == 0) {
    mean[row] = row_mean;
    rstd[row] = row_rstd;
  }
}

template <class T>
__global__ void layernorm_forward_rows(T* out, float* mean, float* rstd, const T* inp,
                                       const T* weight, const T* bias, int rows, int width,
                                       float eps) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp leaves together, so its shuffles stay complete
  const T* x = inp + static_cast<std::int64_t>(row) * width;

  float sum = 0.0f;
  for (int c = lane; c < width; c += 32) sum += to_float(x[c]);
  warp_normalize_row(out + static_cast<std::int64_t>(row) * width, mean, rstd, x, weight, bias, row,
                     width, sum, eps);
}

// Sums a and b over the block (blockDim.x a multiple of 32, at most 256); every thread gets
// the same bits: warps reduce with an xor butterfly, then each thread adds the warp totals
// in warp order.
__device__ inline void block_sum2(float& a, float& b, float2* warp_totals) {
  a = warp_sum(a);
  b = warp_sum(b);
  const int warps = blockDim.x / 32;
  if (threadIdx.x % 32 == 0) warp_totals[threadIdx.x / 32] = make_float2(a, b);
  __syncthreads();
  a = 0.0f;
  b = 0.0f;
  for (int w = 0; w < warps; ++w) {
    a += warp_totals[w].x;
    b += warp_totals[w].y;
  }
  __syncthreads();  // warp_totals is rewritten by the next call
}

// Zeroes `arrays` accumulator arrays of `width` floats laid out back to back at acc and
// returns acc. Each thread zeroes only the columns it owns (c = threadIdx.x + k * blockDim.x
// in every array), the ones it later accumulates into, so no barrier is needed before use.
__device__ inline float* zeroed_accumulators(float* acc, int arrays, int width) {
  for (int c = threadIdx.x; c < width; c += blockDim.x)
    for (int a = 0; a < arrays; ++a) acc[a * width + c] = 0.0f;
  return acc;
}

// One past the last row of the part starting at row_begin (the last part may be shorter).
__device__ inline int part_row_end(int row_begin, int rows, int rows_per_part) {
  return rows - row_begin < rows_per_part ? rows : row_begin + rows_per_part;
}

// The first backward pass over one row, shared by layernorm_backward_rows and
// residual_layernorm_backward_rows (x is the normalized input, the pre-norm sum there): adds
// dy * xhat and dy to this thread's columns of the dweight / dbias accumulators and returns
// (mean_c(g), mean_c(g * xhat)), g = dy * weight, the same bits on every thread of the block.
template <class T>
__device__ inline float2 layernorm_backward_row_means(float* dweight_acc, float* dbias_acc,
                                                      float2* warp_totals, const T* dy, const T* x,
                                                      const T* weight, int width, float row_mean,
                                                      float row_rstd, float inv_width) {
  float sum_g = 0.0f, sum_g_xhat = 0.0f;
  for (int c = threadIdx.x; c < width; c += blockDim.x) {
    const float d = to_float(dy[c]);
    const float xhat = (to_float(x[c]) - row_mean) * row_rstd;
    const float g = d * to_float(weight[c]);
    sum_g += g;
    sum_g_xhat += g * xhat;
    dweight_acc[c] += d * xhat;
    dbias_acc[c] += d;
  }
  block_sum2(sum_g, sum_g_xhat, warp_totals);
  return make_float2(sum_g * inv_width, sum_g_xhat * inv_width);
}

// dL/dx of one element: rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)), with `means` from
// layernorm_backward_row_means.
template <class T>
__device__ inline float layernorm_input_grad(T dy, T x, T weight, float row_mean, float row_rstd,
                                             float2 means) {
  const float xhat = (to_float(x) - row_mean) * row_rstd;
  const float g = to_float(dy) * to_float(weight);
  return row_rstd * (g - means.x - xhat * means.y);
}

// The frame of both row-parts backward kernels (layernorm_backward_rows,
// residual_layernorm_backward_rows): for each row of part blockIdx.x in order, the first pass
// (layernorm_backward_row_means, into accumulator rows 0 and 1: dweight, dbias) and then
// element_grad(base, c, dx, acc) for this thread's columns c, dx = dL/dx of element (row, c)
// and base = row * width. The part's kArrays accumulator rows of W floats live in dynamic
// shared memory when partials_in_shared, else in its slice of partials; either way they end
// in partials[blockIdx.x] = (kArrays, W).
template <int kArrays, class T, class ElementGrad>
__device__ inline void layernorm_backward_part(float* partials, float* shared_partials,
                                               float2* warp_totals, const T* dout, const T* inp,
                                               const T* weight, const float* mean,
                                               const float* rstd, int rows, int width,
                                               int rows_per_part, bool partials_in_shared,
                                               ElementGrad&& element_grad) {
  float* const part_partials = partials + static_cast<std::int64_t>(blockIdx.x) * kArrays * width;
  float* const acc =
      zeroed_accumulators(partials_in_shared ? shared_partials : part_partials, kArrays, width);
  const int row_begin = blockIdx.x * rows_per_part;
  const int row_end = part_row_end(row_begin, rows, rows_per_part);
  const float inv_width = 1.0f / static_cast<float>(width);
  for (int row = row_begin; row < row_end; ++row) {
    const std::int64_t base = static_cast<std::int64_t>(row) * width;
    const T* dy = dout + base;
    const T* x = inp + base;
    const float row_mean = mean[row], row_rstd = rstd[row];
    const float2 means = layernorm_backward_row_means(acc, acc + width, warp_totals, dy, x, weight,
                                                      width, row_mean, row_rstd, inv_width);
    for (int c = threadIdx.x; c < width; c += blockDim.x)
      element_grad(base, c, layernorm_input_grad(dy[c], x[c], weight[c], row_mean, row_rstd, means),
                   acc);
  }
  // The copy below moves other threads' columns (c >= width), and element_grad may have
  // written accumulators after block_sum2's barriers.
  __syncthreads();
  if (partials_in_shared)
    for (int c = threadIdx.x; c < kArrays * width; c += blockDim.x)
      part_partials[c] = shared_partials[c];
}

// Writes (or adds to) dinp for the rows of part blockIdx.x and writes that part's dweight
// and dbias partials to partials[blockIdx.x] = (2, W) (see the file comment).
template <class T>
__global__ void layernorm_backward_rows(T* dinp, float* partials, const T* dout, const T* inp,
                                        const T* weight, const float* mean, const float* rstd,
                                        int rows, int width, int rows_per_part,
                                        bool accumulate_dinp, bool partials_in_shared) {
  MILMER_DYNAMIC_SHARED(float, shared_partials);
  MILMER_SHARED(float2, warp_totals, [kLayerNormBackwardMaxThreads / 32]);
  layernorm_backward_part<2>(partials, shared_partials, warp_totals, dout, inp, weight, mean, rstd,
                             rows, width, rows_per_part, partials_in_shared,
                             [&](std::int64_t base, int c, float grad, float*) {
                               T* dx = dinp + base;
                               if (accumulate_dinp) grad += to_float(dx[c]);
                               dx[c] = from_float<T>(grad);
                             });
}

}  // namespace milmer::kernels

namespace milmer {

// At most how many row parts layernorm_backward splits rows into: enough blocks to fill a GPU
// (up to 1024) while keeping the scratch partials (2*P*W floats) near 2^21 floats for wide rows.
inline std::int64_t layernorm_backward_max_parts(std::int64_t rows, std::int64_t width) {
  const std::int64_t target = std::clamp<std::int64_t>((std::int64_t{1} << 20) / width, 64, 1024);
  return std::clamp<std::int64_t>(rows, 1, target);
}
// How many row parts layernorm_backward splits rows into: equal parts of ceil(rows / max)
// rows, the last one shorter. A function of (rows, width) only, so the dweight / dbias
// summation order never changes. Not monotonic in rows (at width 768, 1024 rows take 1024
// parts and 1025 rows take 513).
inline int layernorm_backward_parts(std::int64_t rows, std::int64_t width) {
  const std::int64_t wanted = layernorm_backward_max_parts(rows, width);
  const std::int64_t rows_per_part = (rows + wanted - 1) / wanted;
  return static_cast<int>((rows + rows_per_part - 1) / rows_per_part);
}
namespace detail {

inline void expect_layernorm_eps(float eps, const char* op) {
  MILMER_CHECK(eps > 0.0f && eps < 1e30f, op, "eps", "a finite value > 0", str(eps));
}

// The launch shape of a row-parts backward kernel (layernorm_backward_rows,
// residual_layernorm_backward_rows): one block per part of rows_per_part contiguous rows,
// min(256, W rounded up to 32) threads, and the part's `arrays` accumulator rows of W floats
// in dynamic shared memory when W <= max_shared_width (else in the scratch buffer).
struct RowPartsShape {
  int parts, rows_per_part, threads;
  bool partials_in_shared;
  std::size_t shared_bytes;
};
inline RowPartsShape row_parts_shape(int parts, std::int64_t rows, std::int64_t width, int arrays,
                                     std::int64_t max_shared_width) {
  RowPartsShape r{};
  r.parts = parts;
  r.rows_per_part = static_cast<int>((rows + parts - 1) / parts);
  r.threads = static_cast<int>(
      std::min<std::int64_t>(kernels::kLayerNormBackwardMaxThreads, (width + 31) / 32 * 32));
  r.partials_in_shared = width <= max_shared_width;
  r.shared_bytes =
      r.partials_in_shared ? static_cast<std::size_t>(arrays * width) * sizeof(float) : 0;
  return r;
}

}  // namespace detail

// Scratch (floats) for layernorm_backward on any row count up to `rows`: a (2, W) partial per
// row part, for the most parts any such row count takes (rows' = min(rows, max parts) takes
// one part per row). Monotonic in rows, so a buffer sized for a batch capacity serves every
// smaller batch.
inline std::int64_t layernorm_backward_scratch_elements(std::int64_t rows, std::int64_t width) {
  return layernorm_backward_max_parts(rows, width) * 2 * width;
}

// out = LayerNorm(inp) * weight + bias over the last dim; saves per-row mean and rstd.
template <class T>
void layernorm_forward(Context& ctx, TensorView<T> out, TensorView<float> mean,
                       TensorView<float> rstd, InView<T> inp, InView<T> weight, InView<T> bias,
                       float eps) {
  constexpr const char* op = "layernorm_forward";
  const auto [rows, width] = detail::expect_rows(inp, op, "inp");
  expect(out, op, "out", {rows, width});
  detail::expect_each(op, {rows}, detail::named(mean, "mean"), detail::named(rstd, "rstd"));
  detail::expect_each(op, {width}, detail::named(weight, "weight"), detail::named(bias, "bias"));
  detail::expect_layernorm_eps(eps, op);
  constexpr int rows_per_block = kernels::kLayerNormForwardThreads / 32;
  launch(kernels::layernorm_forward_rows<T>, dim3(detail::blocks_for(rows, rows_per_block, op)),
         dim3(kernels::kLayerNormForwardThreads), 0, ctx.stream(), out.data, mean.data, rstd.data,
         inp.data, weight.data, bias.data, static_cast<int>(rows), static_cast<int>(width), eps);
}

// Backward of layernorm_forward: dinp written (or added to, accumulate_dinp, for residual
// streams); dweight and dbias accumulated (+=). mean and rstd are forward's. scratch holds at
// least layernorm_backward_scratch_elements(rows, width) floats and is overwritten.
template <class T>
void layernorm_backward(Context& ctx, TensorView<T> dinp, TensorView<T> dweight,
                        TensorView<T> dbias, TensorView<float> scratch, InView<T> dout,
                        InView<T> inp, InView<T> weight, TensorView<const float> mean,
                        TensorView<const float> rstd, bool accumulate_dinp) {
  constexpr const char* op = "layernorm_backward";
  const auto [rows, width] = detail::expect_rows(inp, op, "inp");
  detail::expect_each(op, {rows, width}, detail::named(dinp, "dinp"), detail::named(dout, "dout"));
  detail::expect_each(op, {width}, detail::named(dweight, "dweight"), detail::named(dbias, "dbias"),
                      detail::named(weight, "weight"));
  detail::expect_each(op, {rows}, detail::named(mean, "mean"), detail::named(rstd, "rstd"));
  detail::expect_scratch(scratch, op, layernorm_backward_scratch_elements(rows, width));

  const auto shape = detail::row_parts_shape(layernorm_backward_parts(rows, width), rows, width, 2,
                                             kernels::kLayerNormSharedPartialsMaxWidth);
  launch(kernels::layernorm_backward_rows<T>, dim3(static_cast<unsigned>(shape.parts)),
         dim3(shape.threads), shape.shared_bytes, ctx.stream(), dinp.data, scratch.data, dout.data,
         inp.data, weight.data, mean.data, rstd.data, static_cast<int>(rows),
         static_cast<int>(width), shape.rows_per_part, accumulate_dinp, shape.partials_in_shared);
  detail::launch_sum_partials<T>(ctx, op, dweight.data, dbias.data, nullptr, scratch.data,
                                 shape.parts, width, 2);
}

}  // namespace milmer
