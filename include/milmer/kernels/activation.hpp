// Activations: GELU (exact erf form, PyTorch's `gelu` default) and ReLU, forward and backward.
// The functors (kernels::Gelu, kernels::Relu) are device_common.hpp's, shared with the GEMM
// epilogues; the kernels are its element-wise map.
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
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

// An activation's forward and backward as map functors; Op is one of device_common.hpp's
// activation functors (Gelu, Relu).
template <class Op>
struct ActivationForward {
  MILMER_HD float operator()(std::int64_t, const float (&x)[1]) const { return Op::forward(x[0]); }
};
// Inputs (x, dy).
template <class Op>
struct ActivationBackward {
  MILMER_HD float operator()(std::int64_t, const float (&x)[2]) const {
    return Op::backward(x[0], x[1]);
  }
};

template <class Op, class T>
__global__ void activation_forward_packed(T* out, std::int64_t packs, const T* inp) {
  map_packs(out, packs, ActivationForward<Op>{}, inp);
}
template <class Op, class T>
__global__ void activation_forward_scalar(T* out, std::int64_t n, const T* inp) {
  map_elements(out, n, ActivationForward<Op>{}, inp);
}
template <class Op, class T>
__global__ void activation_backward_packed(T* dinp, std::int64_t packs, const T* inp,
                                           const T* dout) {
  map_packs(dinp, packs, ActivationBackward<Op>{}, inp, dout);
}
template <class Op, class T>
__global__ void activation_backward_scalar(T* dinp, std::int64_t n, const T* inp, const T* dout) {
  map_elements(dinp, n, ActivationBackward<Op>{}, inp, dout);
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

// The launches alone, for callers that have checked their tensors (linear_backward).
template <class Op, class T>
void launch_activation_forward(Context& ctx, const char* op, T* out, const T* inp, std::int64_t n) {
  launch_map(ctx, op, packable<T>(n, out, inp), n, kernels::activation_forward_packed<Op, T>,
             kernels::activation_forward_scalar<Op, T>, out, inp);
}
template <class Op, class T>
void launch_activation_backward(Context& ctx, const char* op, T* dinp, const T* dout, const T* inp,
                                std::int64_t n) {
  launch_map(ctx, op, packable<T>(n, dinp, dout, inp), n,
             kernels::activation_backward_packed<Op, T>, kernels::activation_backward_scalar<Op, T>,
             dinp, inp, dout);
}

template <class Op, class T>
void activation_forward(Context& ctx, const char* op, TensorView<T> out, TensorView<const T> inp) {
  expect_flat(out, op, "out");
  expect_flat(inp, op, "inp");
  expect_same_shape(inp, out, op, "inp");
  launch_activation_forward<Op>(ctx, op, out.data, inp.data, out.numel());
}

template <class Op, class T>
void activation_backward(Context& ctx, const char* op, TensorView<T> dinp, TensorView<const T> dout,
                         TensorView<const T> inp) {
  expect_flat(dinp, op, "dinp");
  expect_flat(dout, op, "dout");
  expect_flat(inp, op, "inp");
  expect_same_shape(dout, dinp, op, "dout");
  expect_same_shape(inp, dinp, op, "inp");
  launch_activation_backward<Op>(ctx, op, dinp.data, dout.data, inp.data, dinp.numel());
}

}  // namespace detail

// out = gelu(inp), exact erf form.
template <class T>
void gelu_forward(Context& ctx, TensorView<T> out, InView<T> inp) {
  detail::activation_forward<kernels::Gelu, T>(ctx, "gelu_forward", out, inp);
}
// dinp = dout * gelu'(inp), written.
template <class T>
void gelu_backward(Context& ctx, TensorView<T> dinp, InView<T> dout, InView<T> inp) {
  detail::activation_backward<kernels::Gelu, T>(ctx, "gelu_backward", dinp, dout, inp);
}
// out = max(inp, 0).
template <class T>
void relu_forward(Context& ctx, TensorView<T> out, InView<T> inp) {
  detail::activation_forward<kernels::Relu, T>(ctx, "relu_forward", out, inp);
}
// dinp = dout where inp > 0, else 0; written.
template <class T>
void relu_backward(Context& ctx, TensorView<T> dinp, InView<T> dout, InView<T> inp) {
  detail::activation_backward<kernels::Relu, T>(ctx, "relu_backward", dinp, dout, inp);
}

}  // namespace milmer
