// Swin shifted-window multi-head attention, fused: forward and backward.
//
// Math (transformers SwinLayer + SwinAttention between LayerNorm-1 and the output projection).
// The input is the packed q|k|v projection of the zero-padded normalised token map; the
// kernel does, with no N x N matrix in global memory:
//   roll the map by (-s, -s), partition it into W x W windows (row-major tokens, N = W*W),
//   per window and head h (head_dim D, scale = 1/sqrt(D)):
//     S_ij = scale * q_i . k_j + (table[index(i, j), h] + mask_ij)
//     P    = softmax_j(S),  O_i = sum_j P_ij v_j
//   merge the windows, roll back by (+s, +s), crop the padding -> out.
//   index(i, j) = (r_i - r_j + W-1) * (2W-1) + (c_i - c_j + W-1)   (standard Swin index)
//   mask_ij = -100 when s > 0 and tokens i, j lie in different regions of the shifted padded
//   map, 0 otherwise; the region of a shifted row y is (y >= Hp-W) + (y >= Hp-s), the same
//   for columns, label = 3 * row region + column region (transformers' get_attn_mask).
// Backward, per window and head, with P recomputed from the saved row logsumexp:
//   P_ij = exp(S_ij - lse_i), dV = P^T dO, dP = dO V^T, D_i = sum_j P_ij dP_ij,
//   dS = P * (dP - D), dQ = scale * dS K, dK = scale * dS^T Q, dtable[index(i, j), h] += dS_ij
//   (summed over i, j, windows and batch).
//
// Layouts (row-major; C = heads * head_dim; Hp, Wp = H, W rounded up to multiples of W)
//   qkv   (B, Hp, Wp, 3C)  token (y, x) holds [q | k | v], head h at channels h*D .. h*D+D-1 of
//         each third: the output of ONE GEMM with the three HF Linears stacked (weight rows
//         q_proj; k_proj; v_proj) on the normalised map zero-padded to (Hp, Wp). Padded
//         tokens therefore hold the biases (transformers pads before projecting); when H and W
//         are multiples of W there is no padding and no copy.
//   table ((2W-1)^2, heads)  the relative_position_bias_table parameter
//   out   (B, H, W, C)     original token order, cropped: the output projection's input
//   lse   (B, heads, windows, N) float, windows = (Hp/W) * (Wp/W) in row-major window order:
//         the per-row logsumexp forward saves for backward
//   dout  (B, H, W, C);  dqkv (B, Hp, Wp, 3C) WRITTEN (every element, padded tokens
//         included, so the projection GEMM's backward sees the padded tokens' gradients);
//         d_table ((2W-1)^2, heads) ACCUMULATED (+=)
//   workspace (heads, (2W-1)^2, B * windows) float: per-window table-gradient partials
//
// Launch shapes
//   window_attention_forward_kernel / _backward_kernel: grid (windows, heads, B), block 128
//     (4 warps), dynamic shared memory (float): q, k, v (backward also dO) tiles of N x (D+1)
//     (the +1 keeps column walks over tokens bank-conflict free), one N x N score tile, the
//     head's table column, per-token map offsets and region labels. Window 7, head_dim 32:
//     forward 29.4 KB, backward 35.9 KB. Limits: window <= 8 (each lane holds at most two
//     score columns of a row), head_dim <= 64 (at both limits forward 66.1 KB, backward
//     82.6 KB; launch opts in above 48 KB).
//   window_attention_table_grad_reduce: grid ((2W-1)^2, heads), block 128, 512 bytes static
//     shared; adds the B * windows partials of one table entry in a fixed order (a strided
//     per-thread sum, then device_common.hpp's block_sum tree) and += into d_table. No float
//     atomics anywhere, so every output is bit-identical under every schedule and thread count.
//
// Minimum bytes moved (s = sizeof(T), tokens Tp = B*Hp*Wp, T0 = B*H*W, R = (2W-1)^2)
//   forward   3*Tp*C*s + R*heads*s + T0*C*s            (read qkv, table; write out; the lab's
//                                                      GB/s counts these), and the saved lse,
//             B*heads*windows*N*4                      (1/D of out's size for float)
//   backward  3*Tp*C*s + T0*C*s + B*heads*windows*N*4  (read qkv, dout, lse)
//             + 3*Tp*C*s + 3*R*heads*s                 (write dqkv; read table, read + write
//                                                      d_table)
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kWindowAttentionThreads = 128;
inline constexpr int kWindowAttentionMaxWindow = 8;
inline constexpr int kWindowAttentionMaxHeadDim = 64;
// Score columns a lane holds in registers for one row: ceil(max N / 32).
inline constexpr int kWindowAttentionColumnsPerLane =
    (kWindowAttentionMaxWindow * kWindowAttentionMaxWindow + 31) / 32;
inline constexpr float kWindowAttentionMaskValue = -100.0f;

// The sizes of one call, passed to the kernels by value.
struct WindowAttentionShape {
  int batch, height, width;         // the unpadded map (out, dout)
  int padded_height, padded_width;  // the qkv map: multiples of window
  int heads, head_dim, window, shift;
  float scale;  // 1/sqrt(head_dim), rounded once on the host

  MILMER_HD int channels() const { return heads * head_dim; }
  MILMER_HD int tokens() const { return window * window; }
  MILMER_HD int windows_per_row() const { return padded_width / window; }
  MILMER_HD int windows() const { return (padded_height / window) * windows_per_row(); }
  MILMER_HD int table_rows() const { return (2 * window - 1) * (2 * window - 1); }
  MILMER_HD int tile_stride() const { return head_dim + 1; }
};

// Dynamic shared memory of the forward (tiles = 3: q, k, v) and backward (tiles = 4: q, k, v,
// dO, plus the block's N saved logsumexps) kernels: the tiles, the N x N tile, the table
// column, then two ints per token (map pixel and region label).
inline std::size_t window_attention_shared_bytes(const WindowAttentionShape& s, int tiles) {
  const std::size_t n = static_cast<std::size_t>(s.tokens());
  const std::size_t floats =
      tiles * n * s.tile_stride() + n * n + s.table_rows() + (tiles == 4 ? n : 0);
  return floats * sizeof(float) + 2 * n * sizeof(int);
}

// The shift-mask region (0, 1, 2) of a row or column of the shifted, padded map.
MILMER_HD inline int window_shift_region(int coord, int extent, int window, int shift) {
  return (coord >= extent - window ? 1 : 0) + (coord >= extent - shift ? 1 : 0);
}

// Row of relative_position_bias_table for tokens i, j of a window (row-major in the window).
MILMER_HD inline int window_relative_position_index(int i, int j, int window) {
  const int dr = i / window - j / window + window - 1;
  const int dc = i % window - j % window + window - 1;
  return dr * (2 * window - 1) + dc;
}

// Fills, for each token n of window `win`, its pixel (y * Wp + x) in the unshifted padded map
// and its shift-mask region label. The token sits at (y', x') of the shifted map; roll(-s)
// put the pixel ((y' + s) mod Hp, (x' + s) mod Wp) there, and roll(+s) takes the output back.
__device__ inline void window_attention_token_table(const WindowAttentionShape& s, int win,
                                                    int* pixel, int* region) {
  const int first_row = (win / s.windows_per_row()) * s.window;
  const int first_col = (win % s.windows_per_row()) * s.window;
  for (int n = threadIdx.x; n < s.tokens(); n += blockDim.x) {
    const int ys = first_row + n / s.window, xs = first_col + n % s.window;
    const int y = (ys + s.shift) % s.padded_height, x = (xs + s.shift) % s.padded_width;
    pixel[n] = y * s.padded_width + x;
    region[n] = 3 * window_shift_region(ys, s.padded_height, s.window, s.shift) +
                window_shift_region(xs, s.padded_width, s.window, s.shift);
  }
}

// Index of token `pixel`'s channel 0 in out / dout, or -1 when it lies in the padding.
__device__ inline std::int64_t window_attention_out_offset(const WindowAttentionShape& s, int b,
                                                           int pixel) {
  const int y = pixel / s.padded_width, x = pixel % s.padded_width;
  if (y >= s.height || x >= s.width) return -1;
  return ((static_cast<std::int64_t>(b) * s.height + y) * s.width + x) * s.channels();
}

__device__ inline std::int64_t window_attention_qkv_offset(const WindowAttentionShape& s, int b,
                                                           int pixel) {
  return (static_cast<std::int64_t>(b) * s.padded_height * s.padded_width + pixel) * 3 *
         s.channels();
}

// The logit S_ij from the shared tiles: scale * q_i . k_j + (bias + mask).
__device__ inline float window_attention_logit(const WindowAttentionShape& s, const float* q_tile,
                                               const float* k_tile, const float* bias,
                                               const int* region, int i, int j) {
  const int ld = s.tile_stride();
  float dot = 0.0f;
  for (int d = 0; d < s.head_dim; ++d) dot += q_tile[i * ld + d] * k_tile[j * ld + d];
  float mask = 0.0f;
  if (s.shift > 0 && region[i] != region[j]) mask = kWindowAttentionMaskValue;
  return dot * s.scale + (bias[window_relative_position_index(i, j, s.window)] + mask);
}

// Loads the token offsets, region labels and the head's table column into shared memory and
// the head's slices of qkv (q, k, v at channel offsets 0, C, 2C) into N x (D+1) tiles.
template <class T>
__device__ void window_attention_load(const WindowAttentionShape& s, const T* qkv, const T* table,
                                      int b, int win, int h, int* pixel, int* region, float* bias,
                                      float* q_tile, float* k_tile, float* v_tile) {
  window_attention_token_table(s, win, pixel, region);
  for (int r = threadIdx.x; r < s.table_rows(); r += blockDim.x)
    bias[r] = to_float(table[static_cast<std::int64_t>(r) * s.heads + h]);
  __syncthreads();
  const int n_tokens = s.tokens(), D = s.head_dim, ld = s.tile_stride(), C = s.channels();
  for (int e = threadIdx.x; e < n_tokens * D; e += blockDim.x) {
    const int n = e / D, d = e % D;
    const T* src = qkv + window_attention_qkv_offset(s, b, pixel[n]) + h * D + d;
    q_tile[n * ld + d] = to_float(src[0]);
    k_tile[n * ld + d] = to_float(src[C]);
    v_tile[n * ld + d] = to_float(src[2 * C]);
  }
}

template <class T>
__global__ void __launch_bounds__(kWindowAttentionThreads)
    window_attention_forward_kernel(T* out, float* lse, const T* qkv, const T* table,
                                    WindowAttentionShape s) {
  MILMER_DYNAMIC_SHARED(float, smem);
  const int win = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int N = s.tokens(), D = s.head_dim, ld = s.tile_stride();
  float* q_tile = smem;
  float* k_tile = q_tile + N * ld;
  float* v_tile = k_tile + N * ld;
  float* p_tile = v_tile + N * ld;  // N x N
  float* bias = p_tile + N * N;
  int* pixel = reinterpret_cast<int*>(bias + s.table_rows());
  int* region = pixel + N;

  window_attention_load(s, qkv, table, b, win, h, pixel, region, bias, q_tile, k_tile, v_tile);
  __syncthreads();

  // One warp per query row: the row's logits stay in registers (two columns per lane), the
  // max and the sum are warp reductions, and only the normalised row goes to shared memory.
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  float* lse_rows = lse + ((static_cast<std::int64_t>(b) * s.heads + h) * s.windows() + win) * N;
  for (int i = threadIdx.x / 32; i < N; i += warps) {
    float logit[kWindowAttentionColumnsPerLane];
    float row_max = -INFINITY;
    for (int t = 0; t < kWindowAttentionColumnsPerLane; ++t) {
      const int j = lane + 32 * t;
      logit[t] = j < N ? window_attention_logit(s, q_tile, k_tile, bias, region, i, j) : -INFINITY;
      row_max = fmaxf(row_max, logit[t]);
    }
    row_max = warp_max(row_max);
    float row_sum = 0.0f;
    for (int t = 0; t < kWindowAttentionColumnsPerLane; ++t) {
      logit[t] = lane + 32 * t < N ? expf(logit[t] - row_max) : 0.0f;
      row_sum += logit[t];
    }
    row_sum = warp_sum(row_sum);
    for (int t = 0; t < kWindowAttentionColumnsPerLane; ++t)
      if (lane + 32 * t < N) p_tile[i * N + lane + 32 * t] = logit[t] / row_sum;
    if (lane == 0) lse_rows[i] = row_max + logf(row_sum);
  }
  __syncthreads();

  // O = P V, one output element per thread; padded tokens are cropped here.
  for (int e = threadIdx.x; e < N * D; e += blockDim.x) {
    const int i = e / D, d = e % D;
    const std::int64_t dst = window_attention_out_offset(s, b, pixel[i]);
    if (dst < 0) continue;
    float acc = 0.0f;
    for (int j = 0; j < N; ++j) acc += p_tile[i * N + j] * v_tile[j * ld + d];
    out[dst + h * D + d] = from_float<T>(acc);
  }
}

template <class T>
__global__ void __launch_bounds__(kWindowAttentionThreads)
    window_attention_backward_kernel(T* dqkv, float* table_partial, const T* dout, const T* qkv,
                                     const T* table, const float* lse, WindowAttentionShape s) {
  MILMER_DYNAMIC_SHARED(float, smem);
  const int win = blockIdx.x, h = blockIdx.y, b = blockIdx.z;
  const int N = s.tokens(), D = s.head_dim, ld = s.tile_stride(), C = s.channels();
  float* q_tile = smem;
  float* k_tile = q_tile + N * ld;
  float* v_tile = k_tile + N * ld;
  float* do_tile = v_tile + N * ld;
  float* p_tile = do_tile + N * ld;  // N x N: P, then dS in place
  float* bias = p_tile + N * N;
  float* lse_row = bias + s.table_rows();
  int* pixel = reinterpret_cast<int*>(lse_row + N);
  int* region = pixel + N;

  window_attention_load(s, qkv, table, b, win, h, pixel, region, bias, q_tile, k_tile, v_tile);
  const float* lse_rows =
      lse + ((static_cast<std::int64_t>(b) * s.heads + h) * s.windows() + win) * N;
  for (int i = threadIdx.x; i < N; i += blockDim.x) lse_row[i] = lse_rows[i];
  // Padded tokens were cropped from the output: their dO is zero, so are their dS rows.
  for (int e = threadIdx.x; e < N * D; e += blockDim.x) {
    const int n = e / D, d = e % D;
    const std::int64_t src = window_attention_out_offset(s, b, pixel[n]);
    do_tile[n * ld + d] = src < 0 ? 0.0f : to_float(dout[src + h * D + d]);
  }
  __syncthreads();

  // P recomputed from the logits and the saved logsumexp.
  for (int e = threadIdx.x; e < N * N; e += blockDim.x) {
    const int i = e / N, j = e % N;
    p_tile[e] = expf(window_attention_logit(s, q_tile, k_tile, bias, region, i, j) - lse_row[i]);
  }
  __syncthreads();

  // dV = P^T dO, written before P is overwritten by dS.
  for (int e = threadIdx.x; e < N * D; e += blockDim.x) {
    const int j = e / D, d = e % D;
    float acc = 0.0f;
    for (int i = 0; i < N; ++i) acc += p_tile[i * N + j] * do_tile[i * ld + d];
    dqkv[window_attention_qkv_offset(s, b, pixel[j]) + 2 * C + h * D + d] = from_float<T>(acc);
  }
  __syncthreads();

  // dS = P * (dP - D) one warp per row: dP_ij = dO_i . v_j in registers, D_i a warp sum.
  const int lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int i = threadIdx.x / 32; i < N; i += warps) {
    float p[kWindowAttentionColumnsPerLane], dp[kWindowAttentionColumnsPerLane];
    float row_dot = 0.0f;
    for (int t = 0; t < kWindowAttentionColumnsPerLane; ++t) {
      const int j = lane + 32 * t;
      p[t] = 0.0f;
      dp[t] = 0.0f;
      if (j < N) {
        p[t] = p_tile[i * N + j];
        for (int d = 0; d < D; ++d) dp[t] += do_tile[i * ld + d] * v_tile[j * ld + d];
      }
      row_dot += p[t] * dp[t];
    }
    row_dot = warp_sum(row_dot);
    for (int t = 0; t < kWindowAttentionColumnsPerLane; ++t)
      if (lane + 32 * t < N) p_tile[i * N + lane + 32 * t] = p[t] * (dp[t] - row_dot);
  }
  __syncthreads();

  // dQ = scale * dS K and dK = scale * dS^T Q.
  for (int e = threadIdx.x; e < N * D; e += blockDim.x) {
    const int n = e / D, d = e % D;
    float dq = 0.0f, dk = 0.0f;
    for (int m = 0; m < N; ++m) {
      dq += p_tile[n * N + m] * k_tile[m * ld + d];
      dk += p_tile[m * N + n] * q_tile[m * ld + d];
    }
    T* dst = dqkv + window_attention_qkv_offset(s, b, pixel[n]) + h * D + d;
    dst[0] = from_float<T>(dq * s.scale);
    dst[C] = from_float<T>(dk * s.scale);
  }

  // This window's table gradient: for each relative offset, the sum of dS over the token
  // pairs at that offset, in row order of i. Written to its own slot (no atomics).
  const int W = s.window, R = s.table_rows();
  const std::int64_t slots = static_cast<std::int64_t>(s.batch) * s.windows();
  for (int r = threadIdx.x; r < R; r += blockDim.x) {
    const int dr = r / (2 * W - 1) - (W - 1), dc = r % (2 * W - 1) - (W - 1);
    float acc = 0.0f;
    for (int ri = (dr > 0 ? dr : 0); ri < (dr < 0 ? W + dr : W); ++ri)
      for (int ci = (dc > 0 ? dc : 0); ci < (dc < 0 ? W + dc : W); ++ci)
        acc += p_tile[(ri * W + ci) * N + (ri - dr) * W + (ci - dc)];
    table_partial[(static_cast<std::int64_t>(h) * R + r) * slots +
                  static_cast<std::int64_t>(b) * s.windows() + win] = acc;
  }
}

// d_table[r, h] += sum over the slots of partial[h, r, :], in a fixed order.
template <class T>
__global__ void __launch_bounds__(kWindowAttentionThreads)
    window_attention_table_grad_reduce(T* d_table, const float* table_partial, int slots) {
  MILMER_SHARED(float, sums, [kWindowAttentionThreads]);
  const int r = blockIdx.x, h = blockIdx.y, rows = gridDim.x, heads = gridDim.y;
  const float* src = table_partial + (static_cast<std::int64_t>(h) * rows + r) * slots;
  const float total = block_sum_of(src, slots, sums);
  if (threadIdx.x == 0) {
    T& dst = d_table[static_cast<std::int64_t>(r) * heads + h];
    dst = from_float<T>(to_float(dst) + total);
  }
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

// Validates the arguments both directions share and returns the call's sizes. `out` is out
// (forward) or dout (backward).
template <class A, class B, class Table>
kernels::WindowAttentionShape window_attention_check(const char* op, const TensorView<A>& out,
                                                     const TensorView<B>& qkv,
                                                     const TensorView<Table>& table, int heads,
                                                     int window, int shift, const char* out_name) {
  MILMER_CHECK(window >= 1 && window <= kernels::kWindowAttentionMaxWindow, op, "window",
               str("1 to ", kernels::kWindowAttentionMaxWindow), std::to_string(window));
  MILMER_CHECK(shift >= 0 && shift < window, op, "shift", str("0 <= shift < window (", window, ")"),
               std::to_string(shift));
  MILMER_CHECK(heads >= 1, op, "heads", "at least 1", std::to_string(heads));
  expect(out, op, out_name, {-1, -1, -1, -1});
  const std::int64_t channels = out.dim(3);
  MILMER_CHECK(channels % heads == 0, op, out_name,
               str("channels divisible by heads (", heads, ")"), str(channels, " channels"));
  const std::int64_t head_dim = channels / heads;
  MILMER_CHECK(head_dim <= kernels::kWindowAttentionMaxHeadDim, op, out_name,
               str("head_dim (channels / heads) at most ", kernels::kWindowAttentionMaxHeadDim),
               str("head_dim ", head_dim));
  const std::int64_t padded_height = (out.dim(1) + window - 1) / window * window;
  const std::int64_t padded_width = (out.dim(2) + window - 1) / window * window;
  expect(qkv, op, "qkv", {out.dim(0), padded_height, padded_width, 3 * channels});
  const std::int64_t rows = (2 * window - 1) * (2 * window - 1);
  expect(table, op, "table", {rows, heads});
  MILMER_CHECK(out.dim(0) <= 65535, op, out_name, "a batch of at most 65535", str(out.dim(0)));
  MILMER_CHECK(padded_height * padded_width < (std::int64_t{1} << 30), op, "qkv",
               "a map of fewer than 2^30 tokens", qkv.shape_string());
  kernels::WindowAttentionShape s{};
  s.batch = static_cast<int>(out.dim(0));
  s.height = static_cast<int>(out.dim(1));
  s.width = static_cast<int>(out.dim(2));
  s.padded_height = static_cast<int>(padded_height);
  s.padded_width = static_cast<int>(padded_width);
  s.heads = heads;
  s.head_dim = static_cast<int>(head_dim);
  s.window = window;
  s.shift = shift;
  s.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
  return s;
}

}  // namespace detail

// The number of windows of a height x width map: the third dimension of the saved logsumexp
// (B, heads, windows, W*W); the backward workspace is (heads, (2W-1)^2, B * windows).
inline std::int64_t window_attention_windows(std::int64_t height, std::int64_t width, int window) {
  return ((height + window - 1) / window) * ((width + window - 1) / window);
}

// out = shifted-window attention of qkv (see the top of this file); lse saved for backward.
template <class T>
void window_attention_forward(Context& ctx, TensorView<T> out, TensorView<float> lse,
                              TensorView<const T> qkv, TensorView<const T> table, int heads,
                              int window, int shift) {
  const char* op = "window_attention_forward";
  const auto s = detail::window_attention_check(op, out, qkv, table, heads, window, shift, "out");
  expect(lse, op, "lse", {s.batch, heads, s.windows(), s.tokens()});
  const std::size_t shared = kernels::window_attention_shared_bytes(s, 3);
  launch(kernels::window_attention_forward_kernel<T>,
         dim3(static_cast<unsigned>(s.windows()), static_cast<unsigned>(heads),
              static_cast<unsigned>(s.batch)),
         dim3(kernels::kWindowAttentionThreads), shared, ctx.stream(), out.data, lse.data, qkv.data,
         table.data, s);
}

// dqkv = d(loss)/d(qkv) (written), d_table += d(loss)/d(table); workspace is scratch.
template <class T>
void window_attention_backward(Context& ctx, TensorView<T> dqkv, TensorView<T> d_table,
                               TensorView<float> workspace, TensorView<const T> dout,
                               TensorView<const T> qkv, TensorView<const T> table,
                               TensorView<const float> lse, int heads, int window, int shift) {
  const char* op = "window_attention_backward";
  const auto s = detail::window_attention_check(op, dout, qkv, table, heads, window, shift, "dout");
  expect(lse, op, "lse", {s.batch, heads, s.windows(), s.tokens()});
  expect(dqkv, op, "dqkv", {s.batch, s.padded_height, s.padded_width, 3 * s.channels()});
  expect(d_table, op, "d_table", {s.table_rows(), heads});
  const std::int64_t slots = static_cast<std::int64_t>(s.batch) * s.windows();
  expect(workspace, op, "workspace", {heads, s.table_rows(), slots});
  const std::size_t shared = kernels::window_attention_shared_bytes(s, 4);
  launch(kernels::window_attention_backward_kernel<T>,
         dim3(static_cast<unsigned>(s.windows()), static_cast<unsigned>(heads),
              static_cast<unsigned>(s.batch)),
         dim3(kernels::kWindowAttentionThreads), shared, ctx.stream(), dqkv.data, workspace.data,
         dout.data, qkv.data, table.data, lse.data, s);
  launch(kernels::window_attention_table_grad_reduce<T>,
         dim3(static_cast<unsigned>(s.table_rows()), static_cast<unsigned>(heads)),
         dim3(kernels::kWindowAttentionThreads), 0, ctx.stream(), d_table.data,
         static_cast<const float*>(workspace.data), static_cast<int>(slots));
}

}  // namespace milmer

// The unfused float64 reference the kernels are checked against:
// include/milmer/reference/window_attention.hpp.
