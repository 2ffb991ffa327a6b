// Token assembly for the fusion transformer, and the CLS gather for the classification head,
// forward and backward.
//
// Math (b sample, i visual token, j EEG token, c channel; N visual, C EEG tokens, width D,
// sequence length S = 1 + N + C)
//   token_assembly_forward:
//     X[b, 0]         = cls                                   (no type or position embedding)
//     X[b, 1 + i]     = (V[b, i] + type_embed[0]) + pos_visual[i]
//     X[b, 1 + N + j] = (E[b, j] + type_embed[1]) + pos_eeg[j]
//     (the additions in this order, as tools/milmer_reference.py's Fusion.forward writes
//     `visual + types[0] + self.pos_visual`; its CLS is `self.cls.expand(b, 1, -1)` alone)
//   token_assembly_backward (dX given):
//     dV[b, i] = dX[b, 1 + i],  dE[b, j] = dX[b, 1 + N + j]              (written)
//     dpos_visual[i] += sum_b dX[b, 1 + i],  dpos_eeg[j] += sum_b dX[b, 1 + N + j]
//     dcls += sum_b dX[b, 0]
//     dtype_embed[0] += sum_i (sum_b dX[b, 1 + i]),  dtype_embed[1] += sum_j (sum_b ...)
//   cls_gather:       out[b] = X[b, 0]               (the head's input)
//   cls_scatter_add:  dX[b, 0] += dcls[b]            (its backward; ADDS, so the head's
//                     gradient joins whatever the caller already holds in dX: zero dX first
//                     when the head is the fusion output's only consumer)
//
// Layouts (row-major): V (B, N, D), E (B, C, D), X / dX (B, S, D); cls (D), type_embed (2, D)
// (row 0 visual, row 1 EEG), pos_visual (N, D), pos_eeg (C, D); cls_gather's out (B, D).
//
// Launch shapes (no shared memory anywhere)
//   token_assembly_forward: one element of X per thread, block 256, grid ceil(B*S*D / 256).
//   token_assembly_backward, two kernels:
//   (1) token_assembly_backward_tokens: one (token t, channel c) per thread, block 256, grid
//       ceil(S*D / 256). The thread walks b = 0..B-1 in order, copies dX[b, t, c] into dV or
//       dE and sums it; it adds the sum into dcls or dpos and, for visual and EEG tokens,
//       writes it to scratch (N + C, D) floats.
//   (2) token_assembly_backward_types: grid (ceil(D / 256), 2), block 256; column c of type
//       row k adds its N (or C) token sums from scratch in token order and += into
//       dtype_embed[k, c].
//   Every sum has one fixed order and no atomics: the gradients are bit-identical under every
//   schedule and on every run. Consecutive threads take consecutive channels, so every
//   global access of a warp is one contiguous run.
//   cls_gather, cls_scatter_add (cls_slot_elements): one (b, c) per thread, block 256, grid
//   ceil(B*D / 256).
//
// Minimum bytes moved (s = sizeof(T), P = (3 + N + C) * D parameter elements)
//   token_assembly_forward:  B*(N+C)*D*s + P*s + B*S*D*s     read V, E, parameters; write X
//   token_assembly_backward: B*S*D*s + B*(N+C)*D*s + 2*P*s   read dX; write dV, dE;
//                                                            read + write the parameter grads
//     (+ the (N + C)*D float token sums written and read back by kernel 2)
//   cls_gather:       2*B*D*s                                read X[:, 0], write out
//   cls_scatter_add:  3*B*D*s                                read dX[:, 0], dcls; write
#pragma once

#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kTokenThreads = 256;

template <class T>
__global__ void token_assembly_forward_elements(T* tokens, const T* visual, const T* eeg,
                                                const T* cls, const T* type_embed,
                                                const T* pos_visual, const T* pos_eeg,
                                                std::int64_t n, int visual_tokens, int eeg_tokens,
                                                int width) {
  const std::int64_t i = global_thread_index();
  if (i >= n) return;
  const int sequence = 1 + visual_tokens + eeg_tokens;
  const int c = static_cast<int>(i % width);
  const std::int64_t row = i / width;
  const int t = static_cast<int>(row % sequence);
  const std::int64_t b = row / sequence;
  if (t == 0) {
    tokens[i] = cls[c];
  } else if (t <= visual_tokens) {
    const int k = t - 1;
    const float v = to_float(visual[(b * visual_tokens + k) * width + c]);
    tokens[i] = from_float<T>((v + to_float(type_embed[c])) +
                              to_float(pos_visual[static_cast<std::int64_t>(k) * width + c]));
  } else {
    const int k = t - 1 - visual_tokens;
    const float e = to_float(eeg[(b * eeg_tokens + k) * width + c]);
    tokens[i] = from_float<T>((e + to_float(type_embed[width + c])) +
                              to_float(pos_eeg[static_cast<std::int64_t>(k) * width + c]));
  }
}

// Kernel (1) of token_assembly_backward (see the file comment); token_sums is (N + C, D).
template <class T>
__global__ void token_assembly_backward_tokens(T* dvisual, T* deeg, T* dcls, T* dpos_visual,
                                               T* dpos_eeg, float* token_sums, const T* dtokens,
                                               int batch, int visual_tokens, int eeg_tokens,
                                               int width) {
  const std::int64_t i = global_thread_index();
  const int sequence = 1 + visual_tokens + eeg_tokens;
  if (i >= static_cast<std::int64_t>(sequence) * width) return;
  const int t = static_cast<int>(i / width);
  const int c = static_cast<int>(i % width);
  const bool is_visual = t >= 1 && t <= visual_tokens;
  // Where token t of sample b lands in dV or dE (unused for the CLS token).
  T* const dst = is_visual ? dvisual : deeg;
  const int dst_tokens = is_visual ? visual_tokens : eeg_tokens;
  const int dst_token = is_visual ? t - 1 : t - 1 - visual_tokens;

  float total = 0.0f;
  for (int b = 0; b < batch; ++b) {
    const T g = dtokens[(static_cast<std::int64_t>(b) * sequence + t) * width + c];
    total += to_float(g);
    if (t > 0) dst[(static_cast<std::int64_t>(b) * dst_tokens + dst_token) * width + c] = g;
  }
  if (t == 0) {
    dcls[c] = from_float<T>(to_float(dcls[c]) + total);
    return;
  }
  T* const dpos =
      (is_visual ? dpos_visual : dpos_eeg) + static_cast<std::int64_t>(dst_token) * width + c;
  *dpos = from_float<T>(to_float(*dpos) + total);
  token_sums[static_cast<std::int64_t>(t - 1) * width + c] = total;
}

// Kernel (2): dtype_embed[k, c] += the token sums of modality k (0 visual, 1 EEG) in order.
template <class T>
__global__ void token_assembly_backward_types(T* dtype_embed, const float* token_sums,
                                              int visual_tokens, int eeg_tokens, int width) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= width) return;
  const int k = blockIdx.y;
  const int first = k == 0 ? 0 : visual_tokens;
  const int count = k == 0 ? visual_tokens : eeg_tokens;
  float total = 0.0f;
  for (int t = first; t < first + count; ++t)
    total += token_sums[static_cast<std::int64_t>(t) * width + c];
  T* const dst = dtype_embed + static_cast<std::int64_t>(k) * width + c;
  *dst = from_float<T>(to_float(*dst) + total);
}

// The CLS slot of sample b = i / width, channel i % width, in (B, S, D) tokens: cls_gather
// (kScatterAdd false: dst (B, D) = tokens[:, 0, :]) and its backward cls_scatter_add
// (kScatterAdd true: tokens[:, 0, :] += src (B, D)), one (b, c) per thread.
template <class T, bool kScatterAdd>
__global__ void cls_slot_elements(T* dst, const T* src, std::int64_t n, int sequence, int width) {
  const std::int64_t i = global_thread_index();
  if (i >= n) return;
  const std::int64_t slot = i / width * sequence * width + i % width;
  if constexpr (kScatterAdd)
    dst[slot] = from_float<T>(to_float(dst[slot]) + to_float(src[i]));
  else
    dst[i] = src[slot];
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

struct TokenSizes {
  std::int64_t batch, visual_tokens, eeg_tokens, width;
  std::int64_t sequence() const { return 1 + visual_tokens + eeg_tokens; }
};

// Takes B, N, D from visual (B, N, D) and C from eeg (B, C, D); checks both.
template <class T>
TokenSizes token_sizes(const TensorView<T>& visual, const char* visual_name,
                       const TensorView<T>& eeg, const char* eeg_name, const char* op) {
  expect(visual, op, visual_name, {-1, -1, -1});
  const std::int64_t batch = visual.dim(0), width = visual.dim(2);
  expect(eeg, op, eeg_name, {batch, -1, width});
  const TokenSizes z{batch, visual.dim(1), eeg.dim(1), width};
  expect_int_range(z.batch, op, visual_name, " batch");
  expect_int_range(z.sequence(), op, "tokens per sample");
  expect_int_range(z.sequence() * z.width, op, "tokens per sample x width");
  return z;
}

// The token tensor (B, S, D) and the four parameters (or their gradients) of token
// assembly, checked in that order; names: tokens, cls, type_embed, pos_visual, pos_eeg.
template <class T, class P>
void expect_token_tensors(const char* op, const TokenSizes& z, const char* const (&names)[5],
                          const TensorView<T>& tokens, const TensorView<P>& cls,
                          const TensorView<P>& type_embed, const TensorView<P>& pos_visual,
                          const TensorView<P>& pos_eeg) {
  expect(tokens, op, names[0], {z.batch, z.sequence(), z.width});
  expect(cls, op, names[1], {z.width});
  expect(type_embed, op, names[2], {2, z.width});
  expect(pos_visual, op, names[3], {z.visual_tokens, z.width});
  expect(pos_eeg, op, names[4], {z.eeg_tokens, z.width});
}

}  // namespace detail

// Scratch (floats) token_assembly_backward needs: the per-token batch sums (N + C, D).
inline std::int64_t token_assembly_backward_scratch_elements(std::int64_t visual_tokens,
                                                             std::int64_t eeg_tokens,
                                                             std::int64_t width) {
  return (visual_tokens + eeg_tokens) * width;
}

// tokens (B, 1 + N + C, D) = [cls; visual + type_embed[0] + pos_visual;
//                              eeg + type_embed[1] + pos_eeg] per sample.
template <class T>
void token_assembly_forward(Context& ctx, TensorView<T> tokens, InView<T> visual, InView<T> eeg,
                            InView<T> cls, InView<T> type_embed, InView<T> pos_visual,
                            InView<T> pos_eeg) {
  constexpr const char* op = "token_assembly_forward";
  const auto z = detail::token_sizes(visual, "visual", eeg, "eeg", op);
  detail::expect_token_tensors(op, z, {"tokens", "cls", "type_embed", "pos_visual", "pos_eeg"},
                               tokens, cls, type_embed, pos_visual, pos_eeg);
  const std::int64_t n = tokens.numel();
  const int threads = kernels::kTokenThreads;
  launch(kernels::token_assembly_forward_elements<T>, dim3(detail::blocks_for(n, threads, op)),
         dim3(threads), 0, ctx.stream(), tokens.data, visual.data, eeg.data, cls.data,
         type_embed.data, pos_visual.data, pos_eeg.data, n, static_cast<int>(z.visual_tokens),
         static_cast<int>(z.eeg_tokens), static_cast<int>(z.width));
}

// Backward of token_assembly_forward: dvisual and deeg written; dcls, dtype_embed,
// dpos_visual and dpos_eeg accumulated (+=). scratch holds at least
// token_assembly_backward_scratch_elements(N, C, D) floats and is overwritten.
template <class T>
void token_assembly_backward(Context& ctx, TensorView<T> dvisual, TensorView<T> deeg,
                             TensorView<T> dcls, TensorView<T> dtype_embed,
                             TensorView<T> dpos_visual, TensorView<T> dpos_eeg,
                             TensorView<float> scratch, InView<T> dtokens) {
  constexpr const char* op = "token_assembly_backward";
  const auto z = detail::token_sizes(dvisual, "dvisual", deeg, "deeg", op);
  detail::expect_token_tensors(op, z, {"dtokens", "dcls", "dtype_embed", "dpos_visual", "dpos_eeg"},
                               dtokens, dcls, dtype_embed, dpos_visual, dpos_eeg);
  detail::expect_scratch(
      scratch, op,
      token_assembly_backward_scratch_elements(z.visual_tokens, z.eeg_tokens, z.width));
  const int threads = kernels::kTokenThreads;
  launch(kernels::token_assembly_backward_tokens<T>,
         dim3(detail::blocks_for(z.sequence() * z.width, threads, op)), dim3(threads), 0,
         ctx.stream(), dvisual.data, deeg.data, dcls.data, dpos_visual.data, dpos_eeg.data,
         scratch.data, dtokens.data, static_cast<int>(z.batch), static_cast<int>(z.visual_tokens),
         static_cast<int>(z.eeg_tokens), static_cast<int>(z.width));
  launch(
      kernels::token_assembly_backward_types<T>, dim3(detail::blocks_for(z.width, threads, op), 2),
      dim3(threads), 0, ctx.stream(), dtype_embed.data, static_cast<const float*>(scratch.data),
      static_cast<int>(z.visual_tokens), static_cast<int>(z.eeg_tokens), static_cast<int>(z.width));
}

namespace detail {
// The shared part of cls_gather and cls_scatter_add: `tokens` (B, S, D) and `cls` (B, D)
// checked, then `kernel` launched over the B * D elements of cls as (dst, src, n, S, D).
template <class T, class Kernel>
void cls_launch(Context& ctx, const char* op, Kernel kernel, T* dst, const T* src,
                const TensorView<const T>& tokens, const char* tokens_name,
                const TensorView<const T>& cls, const char* cls_name) {
  expect(tokens, op, tokens_name, {-1, -1, -1});
  const std::int64_t sequence = tokens.dim(1), width = tokens.dim(2);
  expect_int_range(sequence * width, op, "tokens per sample x width");
  expect(cls, op, cls_name, {tokens.dim(0), width});
  const std::int64_t n = cls.numel();
  const int threads = kernels::kTokenThreads;
  launch(kernel, dim3(blocks_for(n, threads, op)), dim3(threads), 0, ctx.stream(), dst, src, n,
         static_cast<int>(sequence), static_cast<int>(width));
}
}  // namespace detail

// out (B, D) = tokens[:, 0, :]: the CLS token of each sample, for the head.
template <class T>
void cls_gather(Context& ctx, TensorView<T> out, InView<T> tokens) {
  detail::cls_launch(ctx, "cls_gather", kernels::cls_slot_elements<T, false>, out.data, tokens.data,
                     tokens, "tokens", TensorView<const T>(out), "out");
}

// dtokens[:, 0, :] += dcls (B, D): the backward of cls_gather, added into the fusion
// output's gradient (the other tokens are left as they are).
template <class T>
void cls_scatter_add(Context& ctx, TensorView<T> dtokens, InView<T> dcls) {
  detail::cls_launch(ctx, "cls_scatter_add", kernels::cls_slot_elements<T, true>, dtokens.data,
                     dcls.data, TensorView<const T>(dtokens), "dtokens", dcls, "dcls");
}

}  // namespace milmer
