// Activations: GELU (exact erf form, PyTorch's `gelu` default) and ReLU, forward and backward.
//
// Math (x: the activation's input, saved by forward's caller; dy: gradient of its output)
//   gelu(x)   = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
//   gelu'(x)  = Phi(x) + x * phi(x),   phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
//   relu(x)   = max(x, 0)
//   relu'(x)  = 1 if x > 0 else 0      (0 at x = 0, as PyTorch)
//   backward writes dinp = dy * f'(x) (=, not +=); dinp may be the dout buffer.
//
// Layout: any contiguous tensor, treated as n flat elements; out / dinp have inp's shape.
//
// Launch shape: block 256, one element per thread (scalar kernels, grid ceil(n / 256)) or,
// when every pointer is 16-byte aligned and n is a multiple of the pack width (4 floats),
// one 16-byte pack per thread (packed kernels, grid ceil(n / 4 / 256)). No shared memory.
// Both paths compute each element with the same float expression, so they agree bit for bit.
//
// Minimum bytes moved (s = sizeof(T)): forward 2*n*s (read x, write y); backward 3*n*s
// (read x and dy, write dx).
#pragma once

#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

struct Gelu {
  static __device__ inline float forward(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
  }
  static __device__ inline float backward(float x, float dy) {
    const float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    return dy * (cdf + x * pdf);
  }
};

struct Relu {
  static __device__ inline float forward(float x) { return x > 0.0f ? x : 0.0f; }
  static __device__ inline float backward(float x, float dy) { return x > 0.0f ? dy : 0.0f; }
};

template <class Op, class T>
__global__ void activation_forward_packed(T* out, const T* inp, std::int64_t packs) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= packs) return;
  const Pack<T> x = reinterpret_cast<const Pack<T>*>(inp)[i];
  Pack<T> y;
  for (int k = 0; k < Pack<T>::kWidth; ++k) y.v[k] = from_float<T>(Op::forward(to_float(x.v[k])));
  reinterpret_cast<Pack<T>*>(out)[i] = y;
}

template <class Op, class T>
__global__ void activation_forward_scalar(T* out, const T* inp, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = from_float<T>(Op::forward(to_float(inp[i])));
}

template <class Op, class T>
__global__ void activation_backward_packed(T* dinp, const T* dout, const T* inp,
                                           std::int64_t packs) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= packs) return;
  const Pack<T> x = reinterpret_cast<const Pack<T>*>(inp)[i];
  const Pack<T> dy = reinterpret_cast<const Pack<T>*>(dout)[i];
  Pack<T> dx;
  for (int k = 0; k < Pack<T>::kWidth; ++k)
    dx.v[k] = from_float<T>(Op::backward(to_float(x.v[k]), to_float(dy.v[k])));
  reinterpret_cast<Pack<T>*>(dinp)[i] = dx;
}

template <class Op, class T>
__global__ void activation_backward_scalar(T* dinp, const T* dout, const T* inp, std::int64_t n) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  dinp[i] = from_float<T>(Op::backward(to_float(inp[i]), to_float(dout[i])));
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

template <class Op, class T>
void activation_forward(Context& ctx, const char* op, TensorView<T> out, TensorView<const T> inp) {
  expect_flat(out, op, "out");
  expect_flat(inp, op, "inp");
  expect_same_shape(inp, out, op, "inp");
  const std::int64_t n = out.numel();
  const int threads = kernels::kElementwiseThreads;
  if (packable<T>(n, out.data, inp.data)) {
    const std::int64_t packs = n / kernels::Pack<T>::kWidth;
    launch(kernels::activation_forward_packed<Op, T>, dim3(blocks_for(packs, threads, op)),
           dim3(threads), 0, ctx.stream(), out.data, inp.data, packs);
  } else {
    launch(kernels::activation_forward_scalar<Op, T>, dim3(blocks_for(n, threads, op)),
           dim3(threads), 0, ctx.stream(), out.data, inp.data, n);
  }
}

template <class Op, class T>
void activation_backward(Context& ctx, const char* op, TensorView<T> dinp, TensorView<const T> dout,
                         TensorView<const T> inp) {
  expect_flat(dinp, op, "dinp");
  expect_flat(dout, op, "dout");
  expect_flat(inp, op, "inp");
  expect_same_shape(dout, dinp, op, "dout");
  expect_same_shape(inp, dinp, op, "inp");
  const std::int64_t n = dinp.numel();
  const int threads = kernels::kElementwiseThreads;
  if (packable<T>(n, dinp.data, dout.data, inp.data)) {
    const std::int64_t packs = n / kernels::Pack<T>::kWidth;
    launch(kernels::activation_backward_packed<Op, T>, dim3(blocks_for(packs, threads, op)),
           dim3(threads), 0, ctx.stream(), dinp.data, dout.data, inp.data, packs);
  } else {
    launch(kernels::activation_backward_scalar<Op, T>, dim3(blocks_for(n, threads, op)),
           dim3(threads), 0, ctx.stream(), dinp.data, dout.data, inp.data, n);
  }
}

}  // namespace detail

// out = gelu(inp), exact erf form.
template <class T>
void gelu_forward(Context& ctx, TensorView<T> out, TensorView<const std::type_identity_t<T>> inp) {
  detail::activation_forward<kernels::Gelu, T>(ctx, "gelu_forward", out, inp);
}
// dinp = dout * gelu'(inp), written.
template <class T>
void gelu_backward(Context& ctx, TensorView<T> dinp, TensorView<const std::type_identity_t<T>> dout,
                   TensorView<const std::type_identity_t<T>> inp) {
  detail::activation_backward<kernels::Gelu, T>(ctx, "gelu_backward", dinp, dout, inp);
}
// out = max(inp, 0).
template <class T>
void relu_forward(Context& ctx, TensorView<T> out, TensorView<const std::type_identity_t<T>> inp) {
  detail::activation_forward<kernels::Relu, T>(ctx, "relu_forward", out, inp);
}
// dinp = dout where inp > 0, else 0; written.
template <class T>
void relu_backward(Context& ctx, TensorView<T> dinp, TensorView<const std::type_identity_t<T>> dout,
                   TensorView<const std::type_identity_t<T>> inp) {
  detail::activation_backward<kernels::Relu, T>(ctx, "relu_backward", dinp, dout, inp);
}

}  // namespace milmer
