// The float64 reference of the GEMM family (include/milmer/kernels/gemm.hpp): gemm on strided
// row-major matrices and the Linear layer with its epilogues, as plain loops templated on the
// scalar type (double: the reference; float: the plain fp32 baseline of check.hpp's rule).
#pragma once

#include <cstddef>
#include <vector>

#include "milmer/kernels/gemm.hpp"
#include "milmer/reference/activation.hpp"

namespace milmer::reference {

// C = alpha op(A) op(B) + beta C on strided row-major matrices (leading dimensions lda, ldb,
// ldc); returns all M x ldc elements of C, the padding columns as they were.
template <class S, class In>
std::vector<S> gemm(int M, int N, int K, const In* a, int lda, MatOp op_a, const In* b, int ldb,
                    MatOp op_b, const In* c, int ldc, S alpha, S beta) {
  std::vector<S> out(std::size_t(M) * ldc);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < ldc; ++n) out[std::size_t(m) * ldc + n] = S(c[std::size_t(m) * ldc + n]);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      S acc = 0;
      for (int k = 0; k < K; ++k) {
        const S av =
            S(op_a == MatOp::N ? a[std::size_t(m) * lda + k] : a[std::size_t(k) * lda + m]);
        const S bv =
            S(op_b == MatOp::N ? b[std::size_t(k) * ldb + n] : b[std::size_t(n) * ldb + k]);
        acc += av * bv;
      }
      out[std::size_t(m) * ldc + n] = alpha * acc + beta * S(c[std::size_t(m) * ldc + n]);
    }
  return out;
}

// The activation of an epilogue (none: the identity).
template <class S>
S epilogue(Epilogue e, S x) {
  if (e == Epilogue::none) return x;
  return activation(e == Epilogue::relu ? Activation::relu : Activation::gelu, x);
}

// pre[m][n] = sum_k inp[m][k] w[n][k] + bias[n]: inp (M, K), w (N, K), bias (N) or none.
template <class S>
std::vector<S> linear_pre_activation(int M, int N, int K, const std::vector<S>& inp,
                                     const std::vector<S>& w, const std::vector<S>* bias) {
  std::vector<S> pre(std::size_t(M) * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      S acc = 0;
      for (int k = 0; k < K; ++k) acc += inp[std::size_t(m) * K + k] * w[std::size_t(n) * K + k];
      if (bias) acc += (*bias)[n];
      pre[std::size_t(m) * N + n] = acc;
    }
  return pre;
}

// out = epilogue(pre) of linear_pre_activation.
template <class S>
std::vector<S> linear_forward(int M, int N, int K, const std::vector<S>& inp,
                              const std::vector<S>& w, const std::vector<S>* bias, Epilogue e) {
  auto out = linear_pre_activation(M, N, K, inp, w, bias);
  for (auto& x : out) x = epilogue(e, x);
  return out;
}

template <class S>
struct LinearBackward {
  std::vector<S> dinp, dweight, dbias;  // (M, K), (N, K), (N), each from zero
};

// Gradients of sum(dout * epilogue(inp w^T + bias)) given what forward saved: the
// pre-activation for gelu, the output for relu (its sign is the pre-activation's), nothing
// read for none.
template <class S>
LinearBackward<S> linear_backward(int M, int N, int K, const std::vector<S>& dout,
                                  const std::vector<S>& inp, const std::vector<S>& w,
                                  const std::vector<S>& saved, Epilogue e) {
  std::vector<S> dpre(std::size_t(M) * N);
  for (std::size_t i = 0; i < dpre.size(); ++i)
    dpre[i] =
        e == Epilogue::none
            ? dout[i]
            : dout[i] * activation_derivative(
                            e == Epilogue::relu ? Activation::relu : Activation::gelu, saved[i]);
  LinearBackward<S> r{std::vector<S>(std::size_t(M) * K), std::vector<S>(std::size_t(N) * K),
                      std::vector<S>(N)};
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      S acc = 0;
      for (int m = 0; m < M; ++m) acc += dpre[std::size_t(m) * N + n] * inp[std::size_t(m) * K + k];
      r.dweight[std::size_t(n) * K + k] = acc;
    }
  for (int n = 0; n < N; ++n) {
    S acc = 0;
    for (int m = 0; m < M; ++m) acc += dpre[std::size_t(m) * N + n];
    r.dbias[n] = acc;
  }
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) {
      S acc = 0;
      for (int n = 0; n < N; ++n) acc += dpre[std::size_t(m) * N + n] * w[std::size_t(n) * K + k];
      r.dinp[std::size_t(m) * K + k] = acc;
    }
  return r;
}

}  // namespace milmer::reference
