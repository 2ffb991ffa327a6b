// Per-frame data movement around AMIL's selection: gathering the K selected frames of every
// sample into a contiguous batch, and the gated copy of their encoder tokens.
//
// Math and layouts (row-major; R = elements of one frame: 3*H*W pixels or M*D tokens)
//   frame_gather        out (B, K, R) = in[b, topk[b, k]]         in (B, F, R), topk (B, K)
//   gate_scale_forward  z (B, K, R) = gates[b, k] * x (B, K, R)
//   gate_scale_backward dx (B, K, R) = gates[b, k] * dz              (written)
//                       dg (B, K)    = sum_r dz[b, k, r] x[b, k, r]  (written)
//   topk_scatter        out (B, F) = v[b, k] at f = topk[b, k], 0 elsewhere
// With amil_detach_scores the model re-encodes only the selected frames (frame_gather on the
// pixels) and builds AMIL's output Z from them with gate_scale_forward; gate_scale_backward
// gives the encoder's input gradient and dg, the gates' gradient, which AMIL turns into the
// score gradient.
//
// Launch shapes
//   frame_gather, gate_scale_forward: grid-stride, block 256, one element per thread-step.
//   gate_scale_backward: grid (B*K), block 256: the block of frame (b, k) writes dx and
//     reduces dg in a fixed order (per-thread strided sums, then device_common.hpp's
//     block_sum tree over the block, 1 KB of shared memory): no atomics, bit-identical in any
//     thread order.
// Minimum bytes moved (s = sizeof(T)): frame_gather 2*B*K*R*s; gate_scale_forward
//   2*B*K*R*s; gate_scale_backward 3*B*K*R*s (read dz, x; write dx).
#pragma once

#include <cstdint>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kFramesThreads = 256;

template <class T>
__global__ void frame_gather_kernel(T* out, const T* in, const std::int32_t* topk, int frames,
                                    int k, std::int64_t per_frame, std::int64_t total) {
  for (std::int64_t e = global_thread_index(); e < total; e += grid_thread_count()) {
    const std::int64_t slot = e / per_frame;  // b * k + j
    const std::int64_t b = slot / k;
    const std::int64_t f = topk[slot];
    out[e] = in[(b * frames + f) * per_frame + e % per_frame];
  }
}

template <class T>
__global__ void gate_scale_forward_kernel(T* z, const T* x, const float* gates,
                                          std::int64_t per_frame, std::int64_t total) {
  for (std::int64_t e = global_thread_index(); e < total; e += grid_thread_count())
    z[e] = from_float<T>(gates[e / per_frame] * to_float(x[e]));
}

template <class T>
__global__ void gate_scale_backward_kernel(T* dx, float* dg, const T* dz, const T* x,
                                           const float* gates, std::int64_t per_frame) {
  MILMER_SHARED(float, partial, [kFramesThreads]);
  const std::int64_t slot = blockIdx.x;
  const float g = gates[slot];
  const T* dz_f = dz + slot * per_frame;
  const T* x_f = x + slot * per_frame;
  T* dx_f = dx + slot * per_frame;
  float sum = 0.0f;
  for (std::int64_t r = threadIdx.x; r < per_frame; r += blockDim.x) {
    const float d = to_float(dz_f[r]);
    dx_f[r] = from_float<T>(g * d);
    sum += d * to_float(x_f[r]);
  }
  sum = block_sum(sum, partial);
  if (threadIdx.x == 0) dg[slot] = sum;
}

// out[b, f] = v[b, k] where topk[b, k] == f, else 0 (each f is selected at most once).
MILMER_KERNEL void topk_scatter_kernel(float* out, const float* v, const std::int32_t* topk,
                                       int frames, int k, std::int64_t total) {
  for (std::int64_t e = global_thread_index(); e < total; e += grid_thread_count()) {
    const std::int64_t b = e / frames;
    const int f = static_cast<int>(e % frames);
    float value = 0.0f;
    for (int j = 0; j < k; ++j)
      if (topk[b * k + j] == f) value = v[b * k + j];
    out[e] = value;
  }
}

}  // namespace milmer::kernels

namespace milmer {

// out (B, K, R) = in[b, topk[b, k]] for in (B, F, R). topk values must lie in [0, F): they
// come from amil_select_forward, which guarantees it.
template <class T>
void frame_gather(Context& ctx, TensorView<T> out, InView<T> in,
                  TensorView<const std::int32_t> topk) {
  constexpr const char* op = "frame_gather";
  expect(in, op, "in", {-1, -1, -1});
  expect(topk, op, "topk", {in.dim(0), -1});
  MILMER_CHECK(topk.dim(1) <= in.dim(1), op, "topk",
               str("at most ", in.dim(1), " frames per sample"), str(topk.dim(1)));
  expect(out, op, "out", {in.dim(0), topk.dim(1), in.dim(2)});
  detail::launch_grid_stride(ctx, out.numel(), kernels::frame_gather_kernel<T>, out.data, in.data,
                             topk.data, static_cast<int>(in.dim(1)), static_cast<int>(topk.dim(1)),
                             in.dim(2), out.numel());
}

// out (B, F) = v (B, K) scattered to the selected frames topk (B, K); 0 elsewhere.
inline void topk_scatter(Context& ctx, TensorView<float> out, TensorView<const float> v,
                         TensorView<const std::int32_t> topk) {
  constexpr const char* op = "topk_scatter";
  expect(v, op, "v", {-1, -1});
  expect(topk, op, "topk", {v.dim(0), v.dim(1)});
  expect(out, op, "out", {v.dim(0), -1});
  MILMER_CHECK(v.dim(1) <= out.dim(1), op, "out", str("at least ", v.dim(1), " frames"),
               str(out.dim(1)));
  detail::launch_grid_stride(ctx, out.numel(), kernels::topk_scatter_kernel, out.data, v.data,
                             topk.data, static_cast<int>(out.dim(1)), static_cast<int>(v.dim(1)),
                             out.numel());
}

// z (B, K, R) = gates (B, K) * x (B, K, R).
template <class T>
void gate_scale_forward(Context& ctx, TensorView<T> z, InView<T> x, TensorView<const float> gates) {
  constexpr const char* op = "gate_scale_forward";
  expect(x, op, "x", {-1, -1, -1});
  expect(gates, op, "gates", {x.dim(0), x.dim(1)});
  expect(z, op, "z", {x.dim(0), x.dim(1), x.dim(2)});
  detail::launch_grid_stride(ctx, z.numel(), kernels::gate_scale_forward_kernel<T>, z.data, x.data,
                             gates.data, x.dim(2), z.numel());
}

// dx (B, K, R) = gates * dz (written); dg (B, K) = sum_r dz * x (written).
template <class T>
void gate_scale_backward(Context& ctx, TensorView<T> dx, TensorView<float> dg, InView<T> dz,
                         InView<T> x, TensorView<const float> gates) {
  constexpr const char* op = "gate_scale_backward";
  expect(x, op, "x", {-1, -1, -1});
  expect(dz, op, "dz", {x.dim(0), x.dim(1), x.dim(2)});
  expect(dx, op, "dx", {x.dim(0), x.dim(1), x.dim(2)});
  expect(gates, op, "gates", {x.dim(0), x.dim(1)});
  expect(dg, op, "dg", {x.dim(0), x.dim(1)});
  launch(kernels::gate_scale_backward_kernel<T>, dim3(static_cast<unsigned>(x.dim(0) * x.dim(1))),
         dim3(kernels::kFramesThreads), 0, ctx.stream(), dx.data, dg.data, dz.data, x.data,
         gates.data, x.dim(2));
}

}  // namespace milmer
