// The float64 reference of GELU (erf form) and ReLU (include/milmer/kernels/activation.hpp, and
// the epilogues of include/milmer/kernels/gemm.hpp): plain functions templated on the scalar
// type (double: the reference; float: the plain fp32 baseline of check.hpp's rule).
#pragma once

#include <cmath>
#include <cstddef>
#include <vector>

namespace milmer::reference {

enum class Activation { relu, gelu };

template <class S>
S activation(Activation a, S x) {
  if (a == Activation::relu) return x > S(0) ? x : S(0);
  return S(0.5) * x * (S(1) + std::erf(x / std::sqrt(S(2))));
}

// d activation(x) / dx; ReLU's derivative at its kink is 0, as PyTorch's.
template <class S>
S activation_derivative(Activation a, S x) {
  if (a == Activation::relu) return x > S(0) ? S(1) : S(0);
  const S pi = S(3.14159265358979323846);
  const S cdf = S(0.5) * (S(1) + std::erf(x / std::sqrt(S(2))));
  const S pdf = std::exp(-x * x / S(2)) / std::sqrt(S(2) * pi);
  return cdf + x * pdf;
}

template <class S>
std::vector<S> activation_forward(Activation a, const std::vector<S>& x) {
  std::vector<S> y(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) y[i] = activation(a, x[i]);
  return y;
}

// dinp = dout * activation'(inp).
template <class S>
std::vector<S> activation_backward(Activation a, const std::vector<S>& inp,
                                   const std::vector<S>& dout) {
  std::vector<S> dinp(inp.size());
  for (std::size_t i = 0; i < inp.size(); ++i) dinp[i] = dout[i] * activation_derivative(a, inp[i]);
  return dinp;
}

}  // namespace milmer::reference
