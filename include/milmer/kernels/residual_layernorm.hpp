// The end of a post-LN transformer sublayer in one kernel, forward and backward:
//   y = LayerNorm(x + Dropout(branch + branch_bias))
// as in torch.nn.TransformerEncoderLayer(norm_first=False), where `branch` is the raw output
// of the sublayer's last GEMM (attention out-projection or linear2) run WITHOUT its bias.
//
// Math (row r of width W; p drop probability in [0, 1), scale = 1 / (1 - p) in float)
//   keep(i) = philox_uniform(seed, offset, i) >= p, i = r * W + c the flat element index
//             (dropout.hpp's convention, so the masks are the same as dropout_forward's;
//             p = 0 keeps every element and draws nothing)
//   s       = x + (keep ? (branch + branch_bias) * scale : 0)         the pre-norm sum
//   mean_r  = sum_c s / W,  rstd_r = 1 / sqrt(sum_c (s - mean_r)^2 / W + eps)
//   shat    = (s - mean_r) * rstd_r,  y = shat * norm_weight + norm_bias
// Backward (g = dy * norm_weight):
//   ds            = rstd_r * (g - mean_c(g) - shat * mean_c(g * shat))
//   dx            = ds                         (written: the residual input's gradient)
//   dbranch       = keep ? ds * scale : 0      (written; the mask regenerated from Philox)
//   dnorm_weight += sum_r dy * shat,  dnorm_bias += sum_r dy,  dbranch_bias += sum_r dbranch
//
// Saved for backward: s (rows, W) in T, mean and rstd (rows) in float. Saving s rather than
// recomputing it from x and branch costs the same traffic over a step (forward writes s,
// backward reads s instead of x and branch) and keeps backward free of the forward's inputs;
// `sum` may be the branch buffer (or the residual one), so s needs no memory of its own.
// The kernels read and write each element from one thread, reads before writes, so `out`
// may also be `residual` or `branch`, and either `dresidual` or `dbranch` may be `dout`.
//
// Layouts: residual, branch, out, sum, dout, dresidual, dbranch (rows, W) row-major;
// branch_bias, norm_weight, norm_bias and their gradients (W); mean, rstd (rows) float.
//
// Launch shapes
//   forward (residual_layernorm_forward_rows): one warp per row, block 256 (8 rows), grid
//     ceil(rows / 8), no shared memory. Pass 1 forms s, stores it and sums it; passes 2 and 3
//     (variance, output) re-read s from the thread's own stores (L1/L2, not DRAM). Each lane
//     walks columns lane, lane+32, ... in order and the warp combines with an xor butterfly,
//     exactly as layernorm_forward_rows does, so for float storage y, mean and rstd are the
//     bits of bias_add_forward + dropout_forward + add_forward + layernorm_forward.
//   backward, two kernels:
//   (1) residual_layernorm_backward_rows: grid P (row parts, residual_layernorm_backward_parts),
//     block min(256, W rounded up to 32), one block per row at a time over the part's
//     contiguous rows. Thread t owns columns t, t + blockDim, ... for the whole part and
//     accumulates its dnorm_weight / dnorm_bias / dbranch_bias partials without atomics, in
//     dynamic shared memory (3*W floats) when W <= 4000, else in its part's scratch slice;
//     then writes the part's partials to scratch (P, 3, W). The two row sums are reduced with
//     layernorm.hpp's block_sum2 (warp butterflies, then warp totals in warp order).
//   (2) sum_partials (elementwise.hpp): grid (ceil(W / 256), 3), block 256, adds the P
//     partials in order 0..P-1 and += into the three parameter gradients.
//   P depends only on (rows, W), never on the device or schedule: every gradient is
//   bit-identical under every schedule, on every run and on every GPU.
//
// Minimum bytes moved (s = sizeof(T), R rows, W width)
//   forward:  4*R*W*s + 3*W*s + 8*R    read x, branch, three vectors; write y, s, mean, rstd
//   backward: 4*R*W*s + 7*W*s + 8*R    read dy, s, norm_weight, mean, rstd; write dx,
//                                      dbranch; read + write the three parameter gradients
//   (the unfused composition moves 9*R*W*s forward and 6*R*W*s backward). The scratch
//   partials (3*P*W floats written and read back) are overhead beyond this; P keeps at least
//   8 rows per part so they stay under 3/32 of the row traffic.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/dropout.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/platform.hpp"
#include "milmer/rng.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kResidualLayerNormForwardThreads = 256;  // 8 warps, one row each
// detail::row_parts_shape (layernorm.hpp) caps both backward kernels at this many threads.
inline constexpr int kResidualLayerNormBackwardMaxThreads = kLayerNormBackwardMaxThreads;
// 3*W floats of partials plus block_sum2's warp totals stay within the 48 KB a block gets
// without opting in to more shared memory (which would cost occupancy).
inline constexpr int kResidualLayerNormSharedPartialsMaxWidth = 4000;

// Whether dropout keeps flat element `index`; with p == 0 every element is kept and no
// Philox value is drawn (philox_uniform >= 0 always holds, so this is the same mask).
__device__ inline bool residual_dropout_keeps(float p, std::uint64_t seed, std::uint64_t offset,
                                              std::int64_t index) {
  return p <= 0.0f || philox_uniform(seed, offset, static_cast<std::uint64_t>(index)) >= p;
}

template <class T>
__global__ void residual_layernorm_forward_rows(T* out, T* sum, float* mean, float* rstd,
                                                const T* residual, const T* branch,
                                                const T* branch_bias, const T* norm_weight,
                                                const T* norm_bias, int rows, int width, float eps,
                                                float p, float scale, std::uint64_t seed,
                                                std::uint64_t offset) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
  if (row >= rows) return;  // the whole warp leaves together, so its shuffles stay complete
  const std::int64_t base = static_cast<std::int64_t>(row) * width;
  const T* x = residual + base;
  const T* h = branch + base;
  T* s = sum + base;

  float total = 0.0f;
  for (int c = lane; c < width; c += 32) {
    const float pre = to_float(h[c]) + to_float(branch_bias[c]);
    const float dropped = residual_dropout_keeps(p, seed, offset, base + c) ? pre * scale : 0.0f;
    const T value = from_float<T>(to_float(x[c]) + dropped);
    s[c] = value;
    total += to_float(value);
  }
  warp_normalize_row(out + base, mean, rstd, s, norm_weight, norm_bias, row, width, total, eps);
}

// Writes dresidual and dbranch for the rows of part blockIdx.x and that part's parameter
// gradient partials to partials[blockIdx.x] = (3, W): dnorm_weight, dnorm_bias, dbranch_bias.
template <class T>
__global__ void residual_layernorm_backward_rows(T* dresidual, T* dbranch, float* partials,
                                                 const T* dout, const T* sum, const T* norm_weight,
                                                 const float* mean, const float* rstd, int rows,
                                                 int width, int rows_per_part, float p, float scale,
                                                 std::uint64_t seed, std::uint64_t offset,
                                                 bool partials_in_shared) {
  MILMER_DYNAMIC_SHARED(float, shared_partials);
  MILMER_SHARED(float2, warp_totals, [kResidualLayerNormBackwardMaxThreads / 32]);
  // Accumulator rows: dnorm_weight, dnorm_bias (the LayerNorm's), dbranch_bias.
  layernorm_backward_part<3>(
      partials, shared_partials, warp_totals, dout, sum, norm_weight, mean, rstd, rows, width,
      rows_per_part, partials_in_shared, [&](std::int64_t base, int c, float ds, float* acc) {
        const float dpre = residual_dropout_keeps(p, seed, offset, base + c) ? ds * scale : 0.0f;
        dresidual[base + c] = from_float<T>(ds);
        dbranch[base + c] = from_float<T>(dpre);
        acc[2 * width + c] += dpre;
      });
}

}  // namespace milmer::kernels

namespace milmer {

inline constexpr int kResidualLayerNormMinRowsPerPart = 8;

// At most how many row parts residual_layernorm_backward splits rows into: at least 8 rows
// per part (so the 3*W partials of a part cost little next to its rows), at most 1024 parts,
// fewer for wide rows so the scratch stays near 3 * 2^20 floats.
inline std::int64_t residual_layernorm_backward_max_parts(std::int64_t rows, std::int64_t width) {
  const std::int64_t max_parts =
      std::clamp<std::int64_t>((std::int64_t{1} << 20) / width, 64, 1024);
  return std::clamp<std::int64_t>(rows / kResidualLayerNormMinRowsPerPart, 1, max_parts);
}
// How many row parts residual_layernorm_backward splits rows into: equal parts of
// ceil(rows / max) rows, the last one shorter. A function of (rows, width) only, so the
// summation order of the parameter gradients never changes. Not monotonic in rows (at width
// 768, 88 rows take 11 parts and 90 rows take 10).
inline int residual_layernorm_backward_parts(std::int64_t rows, std::int64_t width) {
  const std::int64_t wanted = residual_layernorm_backward_max_parts(rows, width);
  const std::int64_t rows_per_part = (rows + wanted - 1) / wanted;
  return static_cast<int>((rows + rows_per_part - 1) / rows_per_part);
}
// Scratch (floats) for residual_layernorm_backward on any row count up to `rows`: a (3, W)
// partial per row part, for the most parts any such row count takes (a multiple of 8 rows
// takes one part per 8 rows). Monotonic in rows, so a buffer sized for a batch capacity
// serves every smaller batch.
inline std::int64_t residual_layernorm_backward_scratch_elements(std::int64_t rows,
                                                                 std::int64_t width) {
  return residual_layernorm_backward_max_parts(rows, width) * 3 * width;
}

// out = LayerNorm(residual + Dropout(branch + branch_bias)) * norm_weight + norm_bias over the
// last dim, dropout with probability p and the Philox mask of (seed, offset). Saves the
// pre-norm sum (`sum`) and the per-row mean and rstd for backward. `sum` and `out` may be the
// residual or branch buffers.
template <class T>
void residual_layernorm_forward(Context& ctx, TensorView<T> out, TensorView<T> sum,
                                TensorView<float> mean, TensorView<float> rstd, InView<T> residual,
                                InView<T> branch, InView<T> branch_bias, InView<T> norm_weight,
                                InView<T> norm_bias, float eps, float p, std::uint64_t seed,
                                std::uint64_t offset) {
  constexpr const char* op = "residual_layernorm_forward";
  const auto [rows, width] = detail::expect_rows(residual, op, "residual");
  detail::expect_each(op, {rows, width}, detail::named(branch, "branch"), detail::named(out, "out"),
                      detail::named(sum, "sum"));
  detail::expect_each(op, {rows}, detail::named(mean, "mean"), detail::named(rstd, "rstd"));
  detail::expect_each(op, {width}, detail::named(branch_bias, "branch_bias"),
                      detail::named(norm_weight, "norm_weight"),
                      detail::named(norm_bias, "norm_bias"));
  detail::expect_layernorm_eps(eps, op);
  detail::expect_drop_probability(p, op);
  const float scale = 1.0f / (1.0f - p);
  constexpr int rows_per_block = kernels::kResidualLayerNormForwardThreads / 32;
  launch(kernels::residual_layernorm_forward_rows<T>,
         dim3(detail::blocks_for(rows, rows_per_block, op)),
         dim3(kernels::kResidualLayerNormForwardThreads), 0, ctx.stream(), out.data, sum.data,
         mean.data, rstd.data, residual.data, branch.data, branch_bias.data, norm_weight.data,
         norm_bias.data, static_cast<int>(rows), static_cast<int>(width), eps, p, scale, seed,
         offset);
}

// Backward of residual_layernorm_forward (the same p, seed, offset): dresidual and dbranch
// written; dnorm_weight, dnorm_bias and dbranch_bias accumulated (+=). sum, mean and rstd
// are the forward's. Either dresidual or dbranch may be dout. scratch holds at least
// residual_layernorm_backward_scratch_elements(rows, width) floats and is overwritten.
template <class T>
void residual_layernorm_backward(Context& ctx, TensorView<T> dresidual, TensorView<T> dbranch,
                                 TensorView<T> dnorm_weight, TensorView<T> dnorm_bias,
                                 TensorView<T> dbranch_bias, TensorView<float> scratch,
                                 InView<T> dout, InView<T> sum, InView<T> norm_weight,
                                 TensorView<const float> mean, TensorView<const float> rstd,
                                 float p, std::uint64_t seed, std::uint64_t offset) {
  constexpr const char* op = "residual_layernorm_backward";
  const auto [rows, width] = detail::expect_rows(dout, op, "dout");
  detail::expect_each(op, {rows, width}, detail::named(sum, "sum"),
                      detail::named(dresidual, "dresidual"), detail::named(dbranch, "dbranch"));
  MILMER_CHECK(dbranch.data != dresidual.data, op, "dbranch", "a buffer apart from dresidual",
               "the dresidual buffer");
  detail::expect_each(op, {width}, detail::named(dnorm_weight, "dnorm_weight"),
                      detail::named(dnorm_bias, "dnorm_bias"),
                      detail::named(dbranch_bias, "dbranch_bias"),
                      detail::named(norm_weight, "norm_weight"));
  detail::expect_each(op, {rows}, detail::named(mean, "mean"), detail::named(rstd, "rstd"));
  detail::expect_drop_probability(p, op);
  detail::expect_scratch(scratch, op, residual_layernorm_backward_scratch_elements(rows, width));

  const float scale = 1.0f / (1.0f - p);
  const auto shape =
      detail::row_parts_shape(residual_layernorm_backward_parts(rows, width), rows, width, 3,
                              kernels::kResidualLayerNormSharedPartialsMaxWidth);
  launch(kernels::residual_layernorm_backward_rows<T>, dim3(static_cast<unsigned>(shape.parts)),
         dim3(shape.threads), shape.shared_bytes, ctx.stream(), dresidual.data, dbranch.data,
         scratch.data, dout.data, sum.data, norm_weight.data, mean.data, rstd.data,
         static_cast<int>(rows), static_cast<int>(width), shape.rows_per_part, p, scale, seed,
         offset, shape.partials_in_shared);
  detail::launch_sum_partials<T>(ctx, op, dnorm_weight.data, dnorm_bias.data, dbranch_bias.data,
                                 scratch.data, shape.parts, width, 3);
}

}  // namespace milmer
