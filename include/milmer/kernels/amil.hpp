// AMIL top-K frame selection (docs/model.md §3; attention-based multiple-instance
// learning, Ilse et al.): score each frame of a sample, keep the K best, gate them.
//
// Math, per sample b with frames f < F, tokens m < M, width D, hidden L:
//   e_f   = (1/M) sum_m X[b, f, m]                         amil_pool_forward     (B, F, D)
//   h_f   = tanh(V e_f + b_V)                              amil_scores_forward   (B, F, L)
//   s_f   = w . h_f + b_w                                                        (B, F)
//   a     = softmax_f(s)                                   amil_select_forward   (B, F)
//   T     = indices of the K largest a, by descending a, ties: lower f first     (B, K) int32
//   g_k   = a_{T_k} / mean_j a_{T_j}                                             (B, K)
//   Z[b, k*M + m] = g_k X[b, T_k, m]                                             (B, K*M, D)
// V is L x D (PyTorch Linear layout), b_V (L), w (1, L), b_w (1).
//
// Backward from dZ (the top-K choice is piecewise constant and has no gradient):
//   dX[b, T_k] = g_k dZ_k (written); unselected frames get dX = 0 (written): with
//       amil_detach_scores they need no Swin backward at all, and their activations need
//       not be kept.
//   dg_k  = sum_{m,d} dZ_k X[b, T_k]
//   The gates depend on the scores only through the selected ones: g_k = a_{T_k} / mean_j
//   a_{T_j} = K exp(s_{T_k}) / sum_j exp(s_{T_j}) = K softmax(s_T)_k. So (the chain through
//   a = softmax(s) collapses; da_f - sum_j a_j da_j vanishes off T and equals da_f on T):
//   ds_{T_k} = g_k (dg_k - (1/K) sum_j g_j dg_j),  ds_f = 0 for frames not selected
//   dpre  = ds_f w (1 - h_f^2);  dw += sum_f ds_f h_f
//   db_w: no gradient. Adding a constant to every score changes neither a's order nor the
//       gates, so dL/db_w = sum_f ds_f = 0 exactly (sum_k g_k = K); backward does not touch
//       db_w rather than add the fp32 rounding residue of that sum (eps * sum |ds|).
//   dV += dpre^T e;  db_V += sum_f dpre_f;  de = dpre V     (linear_backward, cuBLAS)
//   dX[b, f, m] += de_f / M    only when the scores are not detached (amil_detach_scores
//                              false); then every frame gets a gradient.
// Parameter gradients accumulate (+=); dX, ds, dpre and de are written.
//
// Storage: X, Z, dX, dZ have the storage type T (the large tensors); the small scoring
// tensors (e, h, s, a, gates and their gradients) and the parameters are fp32, as the
// scoring GEMMs go to cublasSgemm through gemm.hpp's linear_forward / linear_backward.
//
// Kernels, launch shapes and minimum traffic (B*F*M*D = 21 M elements at paper size):
//   amil_pool_forward_kernel      grid (ceil(D/256), B*F), block 256: a thread owns column d
//                                 of one frame and walks its M tokens (coalesced rows).
//                                 Reads B*F*M*D, writes B*F*D.
//   amil_score_kernel             after the GEMM pre = e V^T + b_V: h = tanh(pre) in place
//                                 and s = w . h + b_w, one warp per frame row; grid
//                                 ceil(B*F/4), block 128. Reads/writes 2 B*F*L.
//   amil_select_forward_kernel    grid (chunks, B), block 256: every block recomputes its
//                                 sample's softmax, top-K (BlockTopK, topk.hpp) and gates in
//                                 shared memory (F <= 512, a few hundred flops), block 0
//                                 stores them; then the blocks share the gated gather.
//                                 Reads B*K*M*D (+ B*F), writes B*K*M*D.
//   amil_select_backward_kernel   grid (F, B), block 256: frame f of sample b writes its dX
//                                 (g_k dZ_k or zeros) and, if selected, reduces dg_k in a
//                                 fixed order (no atomics). Reads 2 B*K*M*D, writes B*F*M*D.
//   amil_gate_backward_kernel     grid B, block 32: dg -> ds for one sample.
//   amil_scores_backward_kernel   grid ceil(L/128), block 128: a thread owns hidden unit l,
//                                 walks the B*F rows: dpre, dw[l].
//   amil_pool_backward_kernel     grid-stride over B*F*M*D, block 256: dX += de / M.
#pragma once

#include <cstdint>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/kernels/topk.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kAmilThreads = 256;
inline constexpr int kAmilMaxFrames = 512;
using AmilTopK = BlockTopK<kAmilThreads, kAmilMaxFrames / kAmilThreads>;

template <class T>
__global__ void __launch_bounds__(kAmilThreads)
    amil_pool_forward_kernel(float* e, const T* x, int tokens, int dim) {
  const int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= dim) return;
  const std::int64_t frame = blockIdx.y;
  const T* src = x + frame * tokens * dim + d;
  float sum = 0.0f;
  for (int m = 0; m < tokens; ++m) sum += to_float(src[static_cast<std::int64_t>(m) * dim]);
  e[frame * dim + d] = sum / static_cast<float>(tokens);
}

// h holds pre = e V^T + b_V on entry and tanh(pre) on exit.
MILMER_KERNEL void __launch_bounds__(128)
    amil_score_kernel(float* s, float* h, const float* w, const float* bw, int rows, int hidden) {
  const int row = blockIdx.x * 4 + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= rows) return;  // warp-uniform
  float* hr = h + static_cast<std::int64_t>(row) * hidden;
  float part = 0.0f;
  for (int l = lane; l < hidden; l += 32) {
    const float t = tanhf(hr[l]);
    hr[l] = t;
    part += w[l] * t;
  }
  part = warp_sum(part);
  if (lane == 0) s[row] = part + bw[0];
}

template <class T>
__global__ void __launch_bounds__(kAmilThreads)
    amil_select_forward_kernel(T* z, float* a, int* topk, float* gates, const float* s, const T* x,
                               int frames, int tokens, int dim, int k) {
  MILMER_SHARED(float, a_s, [kAmilMaxFrames]);
  MILMER_SHARED(int, top_s, [kAmilMaxFrames]);
  MILMER_SHARED(float, gate_s, [kAmilMaxFrames]);
  MILMER_SHARED(typename AmilTopK::TempStorage, temp, );
  const int b = blockIdx.y, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float* sb = s + static_cast<std::int64_t>(b) * frames;
  if (warp == 0) {  // softmax over the frames, by one warp (F is small)
    float mx = -INFINITY;
    for (int f = lane; f < frames; f += 32) mx = fmaxf(mx, sb[f]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int f = lane; f < frames; f += 32) sum += (a_s[f] = expf(sb[f] - mx));
    const float inv = 1.0f / warp_sum(sum);
    for (int f = lane; f < frames; f += 32) a_s[f] *= inv;
  }
  __syncthreads();
  AmilTopK::select(temp, a_s, frames, k, top_s);
  __syncthreads();
  if (warp == 0) {
    float sel = 0.0f;
    for (int j = lane; j < k; j += 32) sel += a_s[top_s[j]];
    const float mean = warp_sum(sel) / static_cast<float>(k);
    for (int j = lane; j < k; j += 32) gate_s[j] = a_s[top_s[j]] / mean;
  }
  __syncthreads();
  if (blockIdx.x == 0) {
    for (int f = threadIdx.x; f < frames; f += blockDim.x)
      a[static_cast<std::int64_t>(b) * frames + f] = a_s[f];
    for (int j = threadIdx.x; j < k; j += blockDim.x) {
      topk[static_cast<std::int64_t>(b) * k + j] = top_s[j];
      gates[static_cast<std::int64_t>(b) * k + j] = gate_s[j];
    }
  }
  const std::int64_t frame_size = static_cast<std::int64_t>(tokens) * dim;
  const std::int64_t total = k * frame_size;
  const T* xb = x + static_cast<std::int64_t>(b) * frames * frame_size;
  T* zb = z + b * total;
  for (std::int64_t i = global_thread_index(); i < total; i += grid_thread_count()) {
    const int j = static_cast<int>(i / frame_size);
    const std::int64_t within = i - j * frame_size;
    zb[i] = from_float<T>(gate_s[j] * to_float(xb[top_s[j] * frame_size + within]));
  }
}

// Frame f of sample b: dX = g_k dZ_k if f = T_k (and dg_by_frame[b, f] = dg_k), else dX = 0
// (and dg_by_frame[b, f] = 0).
template <class T>
__global__ void __launch_bounds__(kAmilThreads)
    amil_select_backward_kernel(T* dx, float* dg_by_frame, const T* dz, const T* x, const int* topk,
                                const float* gates, int frames, int tokens, int dim, int k) {
  MILMER_SHARED(float, scratch, [kAmilThreads]);
  const int f = blockIdx.x, b = blockIdx.y;
  int slot = -1;
  for (int j = 0; j < k; ++j)
    if (topk[static_cast<std::int64_t>(b) * k + j] == f) slot = j;
  const std::int64_t frame_size = static_cast<std::int64_t>(tokens) * dim;
  const std::int64_t frame = static_cast<std::int64_t>(b) * frames + f;
  T* dxf = dx + frame * frame_size;
  if (slot < 0) {
    for (std::int64_t i = threadIdx.x; i < frame_size; i += blockDim.x)
      dxf[i] = from_float<T>(0.0f);
    if (threadIdx.x == 0) dg_by_frame[frame] = 0.0f;
    return;  // block-uniform
  }
  const float g = gates[static_cast<std::int64_t>(b) * k + slot];
  const T* dzk = dz + (static_cast<std::int64_t>(b) * k + slot) * frame_size;
  const T* xf = x + frame * frame_size;
  float part = 0.0f;
  for (std::int64_t i = threadIdx.x; i < frame_size; i += blockDim.x) {
    const float grad = to_float(dzk[i]);
    dxf[i] = from_float<T>(g * grad);
    part += grad * to_float(xf[i]);
  }
  const float dg = block_sum(part, scratch);
  if (threadIdx.x == 0) dg_by_frame[frame] = dg;
}

// ds holds dg by frame on entry (0 for unselected frames) and ds on exit. One warp per sample.
MILMER_KERNEL void __launch_bounds__(32)
    amil_gate_backward_kernel(float* ds, const int* topk, const float* gates, int frames, int k) {
  MILMER_SHARED(float, dg_s, [kAmilMaxFrames]);  // dg by slot k
  const int b = blockIdx.x, lane = threadIdx.x;
  float* dsb = ds + static_cast<std::int64_t>(b) * frames;
  const int* tb = topk + static_cast<std::int64_t>(b) * k;
  const float* gb = gates + static_cast<std::int64_t>(b) * k;
  float gdg = 0.0f;
  for (int j = lane; j < k; j += 32) {
    dg_s[j] = dsb[tb[j]];
    gdg += gb[j] * dg_s[j];
  }
  const float c = warp_sum(gdg) / static_cast<float>(k);  // also orders the reads above
  for (int f = lane; f < frames; f += 32) dsb[f] = 0.0f;
  __syncwarp();
  for (int j = lane; j < k; j += 32) dsb[tb[j]] = gb[j] * (dg_s[j] - c);
}

MILMER_KERNEL void __launch_bounds__(128)
    amil_scores_backward_kernel(float* dpre, float* dw, const float* ds, const float* h,
                                const float* w, int rows, int hidden) {
  const int l = blockIdx.x * blockDim.x + threadIdx.x;
  if (l >= hidden) return;
  const float wl = w[l];
  float acc = 0.0f;
  for (int r = 0; r < rows; ++r) {
    const std::int64_t at = static_cast<std::int64_t>(r) * hidden + l;
    const float hv = h[at];
    dpre[at] = ds[r] * wl * (1.0f - hv * hv);
    acc += ds[r] * hv;
  }
  dw[l] += acc;
}

template <class T>
__global__ void __launch_bounds__(kAmilThreads)
    amil_pool_backward_kernel(T* dx, const float* de, std::int64_t frames_total, int tokens,
                              int dim) {
  const std::int64_t total = frames_total * tokens * dim;
  const float inv = 1.0f / static_cast<float>(tokens);
  for (std::int64_t i = global_thread_index(); i < total; i += grid_thread_count()) {
    const std::int64_t frame = i / (static_cast<std::int64_t>(tokens) * dim);
    const int d = static_cast<int>(i % dim);
    dx[i] = from_float<T>(to_float(dx[i]) + de[frame * dim + d] * inv);
  }
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

inline void amil_check_k(const char* op, int k, std::int64_t frames) {
  MILMER_CHECK(k >= 1 && k <= frames, op, "k", str("1 <= k <= F = ", frames), std::to_string(k));
}

inline void amil_check_frames(const char* op, std::int64_t frames) {
  MILMER_CHECK(frames <= kernels::kAmilMaxFrames, op, "x",
               str("at most ", kernels::kAmilMaxFrames, " frames per sample"),
               std::to_string(frames));
}

struct AmilSizes {
  std::int64_t batch, frames, tokens, dim;
};
// x (B, F, M, D) of the selection ops: at most kAmilMaxFrames frames, B <= 65535.
template <class T>
AmilSizes amil_x_sizes(const char* op, const TensorView<T>& x) {
  expect(x, op, "x", {-1, -1, -1, -1});
  const AmilSizes z{x.dim(0), x.dim(1), x.dim(2), x.dim(3)};
  amil_check_frames(op, z.frames);
  MILMER_CHECK(z.batch <= 65535, op, "x", "B <= 65535", std::to_string(z.batch));
  return z;
}

struct AmilScoreSizes {
  std::int64_t batch, frames, dim, hidden;
};
// e (B, F, D) and V (L, D) of the scoring ops.
inline AmilScoreSizes amil_score_sizes(const char* op, const TensorView<const float>& e,
                                       const TensorView<const float>& v_weight) {
  expect(e, op, "e", {-1, -1, -1});
  expect(v_weight, op, "V", {-1, e.dim(2)});
  return {e.dim(0), e.dim(1), e.dim(2), v_weight.dim(0)};
}

}  // namespace detail

// e (B, F, D) = mean over the M tokens of x (B, F, M, D).
template <class T>
void amil_pool_forward(Context& ctx, TensorView<float> e, TensorView<const T> x) {
  constexpr const char* op = "amil_pool_forward";
  expect(x, op, "x", {-1, -1, -1, -1});
  const std::int64_t batch = x.dim(0), frames = x.dim(1), tokens = x.dim(2), dim = x.dim(3);
  expect(e, op, "e", {batch, frames, dim});
  MILMER_CHECK(batch * frames <= 65535, op, "x", "B * F <= 65535", std::to_string(batch * frames));
  launch(kernels::amil_pool_forward_kernel<T>,
         dim3(detail::grid_stride_blocks(dim, kernels::kAmilThreads, 1 << 30),
              static_cast<unsigned>(batch * frames)),
         dim3(kernels::kAmilThreads), 0, ctx.stream(), e.data, x.data, static_cast<int>(tokens),
         static_cast<int>(dim));
}

// s (B, F) = w . tanh(V e + b_V) + b_w; h (B, F, L) receives tanh(V e + b_V) (backward needs
// it). V (L, D), b_V (L), w (1, L), b_w (1).
inline void amil_scores_forward(Context& ctx, TensorView<float> s, TensorView<float> h,
                                TensorView<const float> e, TensorView<const float> v_weight,
                                TensorView<const float> v_bias, TensorView<const float> w_weight,
                                TensorView<const float> w_bias) {
  constexpr const char* op = "amil_scores_forward";
  const auto [batch, frames, dim, hidden] = detail::amil_score_sizes(op, e, v_weight);
  expect(v_bias, op, "b_V", {hidden});
  expect(w_weight, op, "w", {1, hidden});
  expect(w_bias, op, "b_w", {1});
  expect(h, op, "h", {batch, frames, hidden});
  expect(s, op, "s", {batch, frames});
  const std::int64_t rows = batch * frames;
  linear_forward<float>(ctx, view(h.data, {rows, hidden}),
                        view(static_cast<const float*>(e.data), {rows, dim}), v_weight, v_bias);
  launch(kernels::amil_score_kernel, dim3(detail::grid_stride_blocks(rows, 4, 1 << 30)), dim3(128),
         0, ctx.stream(), s.data, h.data, w_weight.data, w_bias.data, static_cast<int>(rows),
         static_cast<int>(hidden));
}

// a (B, F) = softmax_f(s); topk (B, k) = frame indices by descending a (ties: lower index
// first); gates (B, k) = a_T / mean(a_T); z (B, k*M, D) = gated gather of x (B, F, M, D).
template <class T>
void amil_select_forward(Context& ctx, TensorView<T> z, TensorView<float> a,
                         TensorView<std::int32_t> topk, TensorView<float> gates,
                         TensorView<const float> s, TensorView<const T> x, int k) {
  constexpr const char* op = "amil_select_forward";
  const auto [batch, frames, tokens, dim] = detail::amil_x_sizes(op, x);
  detail::amil_check_k(op, k, frames);
  expect(s, op, "s", {batch, frames});
  expect(z, op, "z", {batch, k * tokens, dim});
  expect(a, op, "a", {batch, frames});
  expect(topk, op, "topk", {batch, k});
  expect(gates, op, "gates", {batch, k});
  const std::int64_t per_sample = k * tokens * dim;
  launch(kernels::amil_select_forward_kernel<T>,
         dim3(detail::grid_stride_blocks(per_sample, kernels::kAmilThreads * 8, 4096),
              static_cast<unsigned>(batch)),
         dim3(kernels::kAmilThreads), 0, ctx.stream(), z.data, a.data, topk.data, gates.data,
         s.data, x.data, static_cast<int>(frames), static_cast<int>(tokens), static_cast<int>(dim),
         k);
}

// The whole forward: e, h, s, a, topk, gates are written (backward needs e, h, topk, gates).
template <class T>
void amil_forward(Context& ctx, TensorView<T> z, TensorView<float> a, TensorView<std::int32_t> topk,
                  TensorView<float> gates, TensorView<float> s, TensorView<float> h,
                  TensorView<float> e, TensorView<const T> x, TensorView<const float> v_weight,
                  TensorView<const float> v_bias, TensorView<const float> w_weight,
                  TensorView<const float> w_bias, int k) {
  amil_pool_forward<T>(ctx, e, x);
  amil_scores_forward(ctx, s, h, e, v_weight, v_bias, w_weight, w_bias);
  amil_select_forward<T>(ctx, z, a, topk, gates, s, x, k);
}

// ds (B, F): on entry dg_k at frame T_k and 0 at the other frames, on exit the gradient of
// the scores (g_k (dg_k - mean_j g_j dg_j) at T_k, 0 elsewhere). For callers that compute dg
// themselves (e.g. from re-encoded selected frames) and scatter it by frame.
inline void amil_gate_backward(Context& ctx, TensorView<float> ds,
                               TensorView<const std::int32_t> topk, TensorView<const float> gates) {
  constexpr const char* op = "amil_gate_backward";
  expect(ds, op, "ds", {-1, -1});
  const std::int64_t batch = ds.dim(0), frames = ds.dim(1);
  detail::amil_check_frames(op, frames);
  MILMER_CHECK(batch <= 65535, op, "ds", "B <= 65535", std::to_string(batch));
  expect(topk, op, "topk", {batch, -1});
  const std::int64_t k = topk.dim(1);
  detail::amil_check_k(op, static_cast<int>(k), frames);
  expect(gates, op, "gates", {batch, k});
  launch(kernels::amil_gate_backward_kernel, dim3(static_cast<unsigned>(batch)), dim3(32), 0,
         ctx.stream(), ds.data, topk.data, gates.data, static_cast<int>(frames),
         static_cast<int>(k));
}

// dx (B, F, M, D) written: g_k dZ_k on the selected frames, 0 on the others; ds (B, F)
// written: the gradient of the scores s through the gates (0 for frames not selected).
template <class T>
void amil_select_backward(Context& ctx, TensorView<T> dx, TensorView<float> ds,
                          TensorView<const T> dz, TensorView<const T> x,
                          TensorView<const std::int32_t> topk, TensorView<const float> gates) {
  constexpr const char* op = "amil_select_backward";
  const auto [batch, frames, tokens, dim] = detail::amil_x_sizes(op, x);
  expect(topk, op, "topk", {batch, -1});
  const std::int64_t k = topk.dim(1);
  detail::amil_check_k(op, static_cast<int>(k), frames);
  expect(dx, op, "dx", {batch, frames, tokens, dim});
  expect(ds, op, "ds", {batch, frames});
  expect(dz, op, "dz", {batch, k * tokens, dim});
  expect(gates, op, "gates", {batch, k});
  launch(kernels::amil_select_backward_kernel<T>,
         dim3(static_cast<unsigned>(frames), static_cast<unsigned>(batch)),
         dim3(kernels::kAmilThreads), 0, ctx.stream(), dx.data, ds.data, dz.data, x.data, topk.data,
         gates.data, static_cast<int>(frames), static_cast<int>(tokens), static_cast<int>(dim),
         static_cast<int>(k));
  amil_gate_backward(ctx, ds, topk, gates);
}

// From ds (B, F): dV (L, D) +=, db_V (L) +=, dw (1, L) +=; dpre (B, F, L)
// written (the gradient of V e + b_V); de (B, F, D) written unless it is an empty view (the
// detached-scores case, where nothing flows back into the frames through e).
inline void amil_scores_backward(Context& ctx, TensorView<float> de, TensorView<float> dv_weight,
                                 TensorView<float> dv_bias, TensorView<float> dw_weight,
                                 TensorView<float> dpre, TensorView<const float> ds,
                                 TensorView<const float> h, TensorView<const float> e,
                                 TensorView<const float> v_weight,
                                 TensorView<const float> w_weight) {
  constexpr const char* op = "amil_scores_backward";
  const auto [batch, frames, dim, hidden] = detail::amil_score_sizes(op, e, v_weight);
  expect(w_weight, op, "w", {1, hidden});
  expect(ds, op, "ds", {batch, frames});
  expect(h, op, "h", {batch, frames, hidden});
  expect(dpre, op, "dpre", {batch, frames, hidden});
  expect(dv_weight, op, "dV", {hidden, dim});
  expect(dv_bias, op, "db_V", {hidden});
  expect(dw_weight, op, "dw", {1, hidden});
  if (de.data != nullptr) expect(de, op, "de", {batch, frames, dim});
  const std::int64_t rows = batch * frames;
  launch(kernels::amil_scores_backward_kernel,
         dim3(detail::grid_stride_blocks(hidden, 128, 1 << 30)), dim3(128), 0, ctx.stream(),
         dpre.data, dw_weight.data, ds.data, h.data, w_weight.data, static_cast<int>(rows),
         static_cast<int>(hidden));
  TensorView<float> de_rows;
  if (de.data != nullptr) de_rows = view(de.data, {rows, dim});
  linear_backward<float>(ctx, de_rows, dv_weight, dv_bias,
                         view(static_cast<const float*>(dpre.data), {rows, hidden}),
                         view(e.data, {rows, dim}), v_weight);
}

// dx (B, F, M, D) += de / M broadcast over the tokens (the mean-pool's backward).
template <class T>
void amil_pool_backward(Context& ctx, TensorView<T> dx, TensorView<const float> de) {
  constexpr const char* op = "amil_pool_backward";
  expect(dx, op, "dx", {-1, -1, -1, -1});
  expect(de, op, "de", {dx.dim(0), dx.dim(1), dx.dim(3)});
  const std::int64_t frames_total = dx.dim(0) * dx.dim(1);
  launch(kernels::amil_pool_backward_kernel<T>,
         dim3(detail::grid_stride_blocks(dx.numel(), kernels::kAmilThreads * 4)),
         dim3(kernels::kAmilThreads), 0, ctx.stream(), dx.data, de.data, frames_total,
         static_cast<int>(dx.dim(2)), static_cast<int>(dx.dim(3)));
}

// The whole backward. dx is written (see amil_select_backward; plus de / M on every frame
// when detach_scores is false); parameter gradients accumulate (b_w has none: see the top). ds (B,
// F), dpre (B, F, L) and de (B, F, D) are scratch the caller provides (nothing is allocated here);
// de may be an empty view when detach_scores is true.
template <class T>
void amil_backward(Context& ctx, TensorView<T> dx, TensorView<float> dv_weight,
                   TensorView<float> dv_bias, TensorView<float> dw_weight, TensorView<float> ds,
                   TensorView<float> dpre, TensorView<float> de, TensorView<const T> dz,
                   TensorView<const T> x, TensorView<const float> e, TensorView<const float> h,
                   TensorView<const std::int32_t> topk, TensorView<const float> gates,
                   TensorView<const float> v_weight, TensorView<const float> w_weight,
                   bool detach_scores) {
  if (!detach_scores)
    MILMER_CHECK(de.data != nullptr, "amil_backward", "de",
                 "a (B, F, D) buffer when scores are not detached", "an empty view");
  amil_select_backward<T>(ctx, dx, ds, dz, x, topk, gates);
  amil_scores_backward(ctx, detach_scores ? TensorView<float>{} : de, dv_weight, dv_bias, dw_weight,
                       dpre, ds, h, e, v_weight, w_weight);
  if (!detach_scores) amil_pool_backward<T>(ctx, dx, de);
}

}  // namespace milmer
