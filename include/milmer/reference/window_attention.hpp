// The float64 reference of Swin shifted-window attention
// (include/milmer/kernels/window_attention.hpp): the unfused composition that the tests, the
// lab and a user embedding the kernel check it against.
//
// Plain loops, templated on the scalar type (double: the reference; float: the error of a
// straightforward fp32 implementation). Each step is one of transformers' steps.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

namespace milmer::reference {

struct WindowAttentionSizes {
  int batch, height, width, heads, head_dim, window, shift;
  int padded_height() const { return (height + window - 1) / window * window; }
  int padded_width() const { return (width + window - 1) / window * window; }
  int channels() const { return heads * head_dim; }
  int tokens() const { return window * window; }
  int windows() const { return (padded_height() / window) * (padded_width() / window); }
  int table_rows() const { return (2 * window - 1) * (2 * window - 1); }
};

// Pad: the projection of a zero-padded token is the projection's bias, so the padded qkv map
// is the unpadded one with `qkv_bias` (3C) at every added token.
template <class Scalar>
std::vector<Scalar> window_attention_pad(const std::vector<Scalar>& qkv,
                                         const std::vector<Scalar>& qkv_bias,
                                         const WindowAttentionSizes& z) {
  const int Hp = z.padded_height(), Wp = z.padded_width(), K = 3 * z.channels();
  std::vector<Scalar> padded(static_cast<std::size_t>(z.batch) * Hp * Wp * K);
  for (int b = 0; b < z.batch; ++b)
    for (int y = 0; y < Hp; ++y)
      for (int x = 0; x < Wp; ++x)
        for (int c = 0; c < K; ++c)
          padded[((static_cast<std::size_t>(b) * Hp + y) * Wp + x) * K + c] =
              y < z.height && x < z.width
                  ? qkv[((static_cast<std::size_t>(b) * z.height + y) * z.width + x) * K + c]
                  : qkv_bias[c];
  return padded;
}

// torch.roll over the two map dimensions of (B, Hm, Wm, K): out[y][x] = in[y - s][x - s].
template <class Scalar>
std::vector<Scalar> window_attention_roll(const std::vector<Scalar>& map, int batch, int Hm, int Wm,
                                          int K, int shift) {
  std::vector<Scalar> out(map.size());
  for (int b = 0; b < batch; ++b)
    for (int y = 0; y < Hm; ++y)
      for (int x = 0; x < Wm; ++x) {
        const int ys = ((y - shift) % Hm + Hm) % Hm, xs = ((x - shift) % Wm + Wm) % Wm;
        for (int c = 0; c < K; ++c)
          out[((static_cast<std::size_t>(b) * Hm + y) * Wm + x) * K + c] =
              map[((static_cast<std::size_t>(b) * Hm + ys) * Wm + xs) * K + c];
      }
  return out;
}

// window_partition (forward = true: map -> windows) and window_reverse (false): windows are
// (B * windows, N, K) with window (wr, wc) at b * windows + wr * (Wm / W) + wc.
template <class Scalar>
void window_attention_partition(std::vector<Scalar>& map, std::vector<Scalar>& windows, int batch,
                                int Hm, int Wm, int K, int W, bool forward) {
  const int per_row = Wm / W, per_map = (Hm / W) * per_row;
  for (int b = 0; b < batch; ++b)
    for (int y = 0; y < Hm; ++y)
      for (int x = 0; x < Wm; ++x) {
        const std::size_t w = static_cast<std::size_t>(b) * per_map + (y / W) * per_row + x / W;
        const int n = (y % W) * W + x % W;
        for (int c = 0; c < K; ++c) {
          Scalar& m = map[((static_cast<std::size_t>(b) * Hm + y) * Wm + x) * K + c];
          Scalar& t = windows[(w * W * W + n) * K + c];
          if (forward)
            t = m;
          else
            m = t;
        }
      }
}

// roll(-s, -s), then window_partition of a (B, Hp, Wp, K) map: (B * windows, N, K).
template <class Scalar>
std::vector<Scalar> window_attention_shifted_windows(const std::vector<Scalar>& map,
                                                     const WindowAttentionSizes& z, int K) {
  const int Hp = z.padded_height(), Wp = z.padded_width();
  std::vector<Scalar> shifted = window_attention_roll(map, z.batch, Hp, Wp, K, -z.shift);
  std::vector<Scalar> windows(shifted.size());
  window_attention_partition(shifted, windows, z.batch, Hp, Wp, K, z.window, true);
  return windows;
}

// get_attn_mask: region labels of the shifted padded map, partitioned; (windows, N, N).
template <class Scalar>
std::vector<Scalar> window_attention_shift_mask(const WindowAttentionSizes& z) {
  const int Hp = z.padded_height(), Wp = z.padded_width(), W = z.window, s = z.shift, N = W * W;
  std::vector<Scalar> mask(static_cast<std::size_t>(z.windows()) * N * N, Scalar(0));
  if (s == 0) return mask;
  std::vector<Scalar> labels(static_cast<std::size_t>(Hp) * Wp);
  for (int y = 0; y < Hp; ++y)
    for (int x = 0; x < Wp; ++x) {
      const int ry = (y >= Hp - W) + (y >= Hp - s), rx = (x >= Wp - W) + (x >= Wp - s);
      labels[static_cast<std::size_t>(y) * Wp + x] = Scalar(ry * 3 + rx);
    }
  std::vector<Scalar> label_windows(static_cast<std::size_t>(z.windows()) * N);
  window_attention_partition(labels, label_windows, 1, Hp, Wp, 1, W, true);
  for (int w = 0; w < z.windows(); ++w)
    for (int i = 0; i < N; ++i)
      for (int j = 0; j < N; ++j)
        if (label_windows[static_cast<std::size_t>(w) * N + j] !=
            label_windows[static_cast<std::size_t>(w) * N + i])
          mask[(static_cast<std::size_t>(w) * N + i) * N + j] = Scalar(-100);
  return mask;
}

// relative_position_index (N, N), built from coordinate differences as transformers does.
inline std::vector<int> window_attention_relative_index(int W) {
  const int N = W * W;
  std::vector<int> index(static_cast<std::size_t>(N) * N);
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) {
      const int dh = i / W - j / W + W - 1, dw = i % W - j % W + W - 1;
      index[static_cast<std::size_t>(i) * N + j] = dh * (2 * W - 1) + dw;
    }
  return index;
}

template <class Scalar>
struct WindowAttentionForwardResult {
  std::vector<Scalar> out;  // (B, H, W, C)
  std::vector<Scalar> lse;  // (B, heads, windows, N)
};

// Attention probabilities of window-batch wb, head h from the windowed qkv: P (N, N), and
// the row logsumexp when `lse` is given.
template <class Scalar>
std::vector<Scalar> window_attention_probabilities(const std::vector<Scalar>& qkv_windows,
                                                   const std::vector<Scalar>& table,
                                                   const std::vector<Scalar>& mask,
                                                   const std::vector<int>& index,
                                                   const WindowAttentionSizes& z, int wb, int h,
                                                   Scalar* lse) {
  const int N = z.tokens(), D = z.head_dim, C = z.channels(), w = wb % z.windows();
  const Scalar scale = Scalar(1) / std::sqrt(Scalar(D));
  std::vector<Scalar> p(static_cast<std::size_t>(N) * N);
  for (int i = 0; i < N; ++i) {
    const Scalar* q = &qkv_windows[(static_cast<std::size_t>(wb) * N + i) * 3 * C + h * D];
    Scalar row_max = -INFINITY;
    for (int j = 0; j < N; ++j) {
      const Scalar* k = &qkv_windows[(static_cast<std::size_t>(wb) * N + j) * 3 * C + C + h * D];
      Scalar dot = 0;
      for (int d = 0; d < D; ++d) dot += q[d] * k[d];
      const std::size_t ij = static_cast<std::size_t>(i) * N + j;
      p[ij] = dot * scale + (table[static_cast<std::size_t>(index[ij]) * z.heads + h] +
                             mask[static_cast<std::size_t>(w) * N * N + ij]);
      row_max = std::max(row_max, p[ij]);
    }
    Scalar sum = 0;
    for (int j = 0; j < N; ++j) sum += p[i * N + j] = std::exp(p[i * N + j] - row_max);
    for (int j = 0; j < N; ++j) p[i * N + j] /= sum;
    if (lse) lse[i] = row_max + std::log(sum);
  }
  return p;
}

template <class Scalar>
WindowAttentionForwardResult<Scalar> window_attention_forward(const std::vector<Scalar>& qkv_padded,
                                                              const std::vector<Scalar>& table,
                                                              const WindowAttentionSizes& z) {
  const int Hp = z.padded_height(), Wp = z.padded_width(), C = z.channels(), N = z.tokens();
  const int D = z.head_dim, windows = z.windows(), batch_windows = z.batch * windows;
  const auto qkv_windows = window_attention_shifted_windows(qkv_padded, z, 3 * C);
  const auto mask = window_attention_shift_mask<Scalar>(z);
  const auto index = window_attention_relative_index(z.window);

  WindowAttentionForwardResult<Scalar> r;
  r.lse.resize(static_cast<std::size_t>(batch_windows) * z.heads * N);
  std::vector<Scalar> out_windows(static_cast<std::size_t>(batch_windows) * N * C);
  for (int wb = 0; wb < batch_windows; ++wb)
    for (int h = 0; h < z.heads; ++h) {
      const int b = wb / windows, w = wb % windows;
      Scalar* lse = &r.lse[((static_cast<std::size_t>(b) * z.heads + h) * windows + w) * N];
      const auto p = window_attention_probabilities(qkv_windows, table, mask, index, z, wb, h, lse);
      for (int i = 0; i < N; ++i)
        for (int d = 0; d < D; ++d) {
          Scalar acc = 0;
          for (int j = 0; j < N; ++j)
            acc += p[static_cast<std::size_t>(i) * N + j] *
                   qkv_windows[(static_cast<std::size_t>(wb) * N + j) * 3 * C + 2 * C + h * D + d];
          out_windows[(static_cast<std::size_t>(wb) * N + i) * C + h * D + d] = acc;
        }
    }
  std::vector<Scalar> merged(static_cast<std::size_t>(z.batch) * Hp * Wp * C);
  window_attention_partition(merged, out_windows, z.batch, Hp, Wp, C, z.window, false);
  const auto unshifted = window_attention_roll(merged, z.batch, Hp, Wp, C, z.shift);
  r.out.resize(static_cast<std::size_t>(z.batch) * z.height * z.width * C);
  for (int b = 0; b < z.batch; ++b)
    for (int y = 0; y < z.height; ++y)
      for (int x = 0; x < z.width; ++x)
        for (int c = 0; c < C; ++c)
          r.out[((static_cast<std::size_t>(b) * z.height + y) * z.width + x) * C + c] =
              unshifted[((static_cast<std::size_t>(b) * Hp + y) * Wp + x) * C + c];
  return r;
}

template <class Scalar>
struct WindowAttentionBackwardResult {
  std::vector<Scalar> dqkv;     // (B, Hp, Wp, 3C)
  std::vector<Scalar> d_table;  // ((2W-1)^2, heads), this call's gradient alone
};

// The chain rule through the same steps in reverse: crop -> zero-pad, roll back -> roll,
// merge -> partition, attention (standard softmax backward), partition -> merge, roll -> roll.
template <class Scalar>
WindowAttentionBackwardResult<Scalar> window_attention_backward(
    const std::vector<Scalar>& dout, const std::vector<Scalar>& qkv_padded,
    const std::vector<Scalar>& table, const WindowAttentionSizes& z) {
  const int Hp = z.padded_height(), Wp = z.padded_width(), C = z.channels(), N = z.tokens();
  const int D = z.head_dim, windows = z.windows(), batch_windows = z.batch * windows;
  const Scalar scale = Scalar(1) / std::sqrt(Scalar(D));
  std::vector<Scalar> dout_padded(static_cast<std::size_t>(z.batch) * Hp * Wp * C, Scalar(0));
  for (int b = 0; b < z.batch; ++b)
    for (int y = 0; y < z.height; ++y)
      for (int x = 0; x < z.width; ++x)
        for (int c = 0; c < C; ++c)
          dout_padded[((static_cast<std::size_t>(b) * Hp + y) * Wp + x) * C + c] =
              dout[((static_cast<std::size_t>(b) * z.height + y) * z.width + x) * C + c];
  auto dout_windows = window_attention_shifted_windows(dout_padded, z, C);
  auto qkv_windows = window_attention_shifted_windows(qkv_padded, z, 3 * C);
  const auto mask = window_attention_shift_mask<Scalar>(z);
  const auto index = window_attention_relative_index(z.window);

  WindowAttentionBackwardResult<Scalar> r;
  r.d_table.assign(table.size(), Scalar(0));
  std::vector<Scalar> dqkv_windows(qkv_windows.size(), Scalar(0));
  auto at = [&](std::vector<Scalar>& v, int wb, int n, int c, int width) -> Scalar& {
    return v[(static_cast<std::size_t>(wb) * N + n) * width + c];
  };
  for (int wb = 0; wb < batch_windows; ++wb)
    for (int h = 0; h < z.heads; ++h) {
      const auto p = window_attention_probabilities(qkv_windows, table, mask, index, z, wb, h,
                                                    static_cast<Scalar*>(nullptr));
      std::vector<Scalar> ds(static_cast<std::size_t>(N) * N);
      for (int i = 0; i < N; ++i) {
        Scalar row_dot = 0;
        for (int j = 0; j < N; ++j) {
          Scalar dp = 0;
          for (int d = 0; d < D; ++d)
            dp += at(dout_windows, wb, i, h * D + d, C) *
                  at(qkv_windows, wb, j, 2 * C + h * D + d, 3 * C);
          ds[i * N + j] = dp;
          row_dot += p[i * N + j] * dp;
        }
        for (int j = 0; j < N; ++j) ds[i * N + j] = p[i * N + j] * (ds[i * N + j] - row_dot);
      }
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
          const std::size_t ij = static_cast<std::size_t>(i) * N + j;
          r.d_table[static_cast<std::size_t>(index[ij]) * z.heads + h] += ds[ij];
          for (int d = 0; d < D; ++d) {
            at(dqkv_windows, wb, i, h * D + d, 3 * C) +=
                scale * ds[ij] * at(qkv_windows, wb, j, C + h * D + d, 3 * C);
            at(dqkv_windows, wb, j, C + h * D + d, 3 * C) +=
                scale * ds[ij] * at(qkv_windows, wb, i, h * D + d, 3 * C);
            at(dqkv_windows, wb, j, 2 * C + h * D + d, 3 * C) +=
                p[ij] * at(dout_windows, wb, i, h * D + d, C);
          }
        }
    }
  std::vector<Scalar> dshifted(qkv_padded.size());
  window_attention_partition(dshifted, dqkv_windows, z.batch, Hp, Wp, 3 * C, z.window, false);
  r.dqkv = window_attention_roll(dshifted, z.batch, Hp, Wp, 3 * C, z.shift);
  return r;
}

}  // namespace milmer::reference
