// GEMM: row-major matrix products over cuBLAS / cuBLASLt, the Linear layer (forward and
// backward, with fused bias and activation epilogues), and the two kernels around them.
//
// Math (row-major, PyTorch Linear semantics; weight is out x in):
//   linear_forward:   pre = inp @ weight^T + bias          out = act(pre)
//                     inp (M, K), weight (N, K), bias (N) optional, out (M, N);
//                     act = none | relu | gelu (exact erf form, 0.5 x (1 + erf(x / sqrt 2))).
//   linear_backward:  dpre = dout * act'(saved)            (dout itself when act = none)
//                     dweight (N, K) += dpre^T @ inp       (beta = 1: accumulates)
//                     dbias (N)      += column sums of dpre (deterministic, no atomics)
//                     dinp (M, K)     = dpre @ weight      (written; optional)
//   gemm:             C = alpha op(A) op(B) + beta C, op(X) = X or X^T, all row-major;
//   gemm_strided_batched: the same for `batch` matrices at fixed element strides.
//
// Row-major through a column-major library: a row-major (r x c) matrix with row stride ld is
// the column-major (c x r) matrix with leading dimension ld, its transpose. So C = A B is
// computed as C^T = B^T A^T: cuBLAS gets (B, A) swapped, m = N, n = M, and each operand's
// transpose flag unchanged. Every product accumulates in fp32 (CUBLAS_COMPUTE_32F, default
// math mode: no TF32).
//
// Epilogues. cuBLASLt's GELU epilogues (CUBLASLT_EPILOGUE_GELU*, GELU_AUX_BIAS) compute the
// tanh approximation of GELU, not the erf form this model uses (Swin MLP, torch's default
// nn.GELU), so GELU is never done by cuBLASLt: on both targets it is cublasSgemm followed by
// bias_activation_forward_kernel below (bias + erf GELU in one pass, optionally also storing
// the pre-activation). Bias and ReLU: cuBLASLt fuses them into the GEMM
// (CUBLASLT_EPILOGUE_BIAS, _RELU, _RELU_BIAS), on the host target through the emulator's
// cuBLASLt (emu/cublaslt.hpp: the same calls, the fp32 GEMM result plus the bias in fp32,
// then max(0, .)).
//
// What backward needs from forward: relu needs only the sign of the pre-activation, which is
// the sign of the output, so pass the forward output; gelu needs the pre-activation, which
// linear_forward writes to its optional `pre_activation` argument (cost: one extra M x N
// store). The activation's backward writes dpre into a caller-provided (M, N) buffer; it is an
// element-wise map, so that buffer may be the memory of dout or of the saved tensor when the
// caller no longer needs them.
//
// Kernels (both element-wise / reduction helpers of the GEMMs):
//   bias_activation_forward_kernel  y = x + bias[col]; pre = y (optional); out = act(y),
//       act one of device_common.hpp's functors (Identity, Relu, Gelu: the same GELU as
//       gelu_forward). grid-stride over M*N, block 256, grid min(ceil(M*N / 256), 65535 * 8)
//       (detail::grid_stride_blocks); no shared. Minimum traffic: read M*N (+ N), write M*N
//       (2 M*N with pre).
//   dpre = dout * act'(saved) is activation.hpp's gelu / relu backward kernel (the
//       element-wise map of device_common.hpp). Minimum traffic: read 2 M*N, write M*N.
//   bias_grad_kernel                dbias[c] += sum_r dpre[r, c], fixed summation order.
//       grid ceil(N / 32), block (32, 32): 32 columns per block (one coalesced 128-byte row
//       segment per warp), the 32 threads of a column stride over rows, then a fixed-order
//       pairwise tree over those 32 partial sums (through shared memory, 32 x 33 floats,
//       then one warp_sum per column). Minimum traffic:
//       read M*N, read+write N. Its parallelism is N / 32 blocks, so for narrow layers with
//       very many rows it uses few SMs; the result is bit-reproducible run to run.
//
// GEMM minimum traffic and work: 2 M N K flops; bytes (M K + N K + M N) * 4 (+ M N with beta).
#pragma once

#include <climits>
#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/error.hpp"
#include "milmer/kernels/activation.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer {

enum class Epilogue { none, relu, gelu };
enum class MatOp { N, T };  // operand used as stored (N) or transposed (T)

inline const char* epilogue_name(Epilogue e) {
  switch (e) {
    case Epilogue::none:
      return "none";
    case Epilogue::relu:
      return "relu";
    case Epilogue::gelu:
      return "gelu";
  }
  return "?";
}

// A row-major matrix view with row stride `ld` (>= cols), for operands that live inside a
// larger tensor (a head's slice of a packed q|k|v projection, say).
template <class T>
TensorView<T> matrix_view(T* p, std::int64_t rows, std::int64_t cols, std::int64_t ld) {
  TensorView<T> v(p, {rows, cols});
  v.strides[0] = ld;
  return v;
}
// `batch` row-major matrices with row stride `ld`, the i-th starting at p + i * batch_stride.
template <class T>
TensorView<T> batched_matrix_view(T* p, std::int64_t batch, std::int64_t rows, std::int64_t cols,
                                  std::int64_t ld, std::int64_t batch_stride) {
  TensorView<T> v(p, {batch, rows, cols});
  v.strides[1] = ld;
  v.strides[0] = batch_stride;
  return v;
}

}  // namespace milmer

namespace milmer::kernels {

// x is the GEMM result (M x N, row-major). Writes pre = x + bias (when pre is not null) and
// out = Act::forward(x + bias), Act one of device_common.hpp's activation functors. bias may
// be null. Element-wise (each element read before it is written), so x may be the memory of
// out or of pre.
template <class T, class Act>
__global__ void bias_activation_forward_kernel(T* out, T* pre, const T* x, const T* bias,
                                               std::int64_t total, int cols) {
  for (std::int64_t i = global_thread_index(); i < total; i += grid_thread_count()) {
    float y = to_float(x[i]);
    if (bias != nullptr) y += to_float(bias[i % cols]);
    if (pre != nullptr) pre[i] = from_float<T>(y);
    out[i] = from_float<T>(Act::forward(y));
  }
}

inline constexpr int kBiasGradColumns = 32;     // columns per block = blockDim.x
inline constexpr int kBiasGradRowThreads = 32;  // threads per column = blockDim.y

// dbias[c] += sum over rows of grad[r, c]. Block (32, 32); see the file comment.
template <class T>
__global__ void bias_grad_kernel(T* dbias, const T* grad, std::int64_t rows, int cols) {
  static_assert(kBiasGradRowThreads == 32, "a column's partial sums are one warp's lanes");
  MILMER_SHARED(float, partial, [kBiasGradRowThreads][kBiasGradColumns + 1]);
  const int col = blockIdx.x * kBiasGradColumns + threadIdx.x;
  float sum = 0.0f;
  if (col < cols)
    for (std::int64_t r = threadIdx.y; r < rows; r += kBiasGradRowThreads)
      sum += to_float(grad[r * cols + col]);
  partial[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  // Warp y sums column y's 32 partials (lane l holds row thread l's), a pairwise tree over
  // the row threads.
  const int lane = threadIdx.x, column = threadIdx.y;
  const float total = warp_sum(partial[lane][column]);
  const int out_col = blockIdx.x * kBiasGradColumns + column;
  if (lane == 0 && out_col < cols) dbias[out_col] = from_float<T>(to_float(dbias[out_col]) + total);
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

inline void check_int(std::int64_t v, const char* op, const char* name, const char* what) {
  MILMER_CHECK(v <= INT_MAX, op, name, str(what, " at most ", INT_MAX, " (cuBLAS int)"), str(v));
}

// A rank-`rank` matrix operand: non-null, no zero dims, unit column stride, row stride >=
// cols (the leading dimension), and (batched) a batch stride that is >= 0; outputs must not
// overlap between batches.
template <class T>
void expect_matrix(const TensorView<T>& t, const char* op, const char* name, int rank,
                   bool is_output) {
  MILMER_CHECK(t.rank == rank, op, name, str("a rank-", rank, " matrix view"),
               str("rank ", t.rank, " shape ", t.shape_string()));
  for (int i = 0; i < rank; ++i)
    MILMER_CHECK(t.shape[i] >= 1, op, name, "no zero-sized dimension",
                 str("shape ", t.shape_string()));
  MILMER_CHECK(t.data != nullptr, op, name, "a non-null pointer", "nullptr");
  const std::int64_t rows = t.shape[rank - 2], cols = t.shape[rank - 1];
  const std::int64_t ld = t.strides[rank - 2];
  MILMER_CHECK(t.strides[rank - 1] == 1 || cols == 1, op, name, "unit column stride",
               str("column stride ", t.strides[rank - 1]));
  MILMER_CHECK(ld >= cols || rows == 1, op, name, str("row stride (ld) >= ", cols),
               str("row stride ", ld));
  check_int(rows, op, name, "rows");
  check_int(cols, op, name, "cols");
  check_int(ld, op, name, "row stride");
  if (rank == 3) {
    const std::int64_t batch_stride = t.strides[0];
    const std::int64_t extent = (rows - 1) * (ld > cols ? ld : cols) + cols;
    MILMER_CHECK(batch_stride >= 0, op, name, "batch stride >= 0", str(batch_stride));
    if (is_output && t.shape[0] > 1)
      MILMER_CHECK(batch_stride >= extent, op, name,
                   str("batch stride >= ", extent, " (output batches must not overlap)"),
                   str(batch_stride));
  }
}

inline cublasOperation_t cublas_op(MatOp o) {
  return o == MatOp::N ? CUBLAS_OP_N : CUBLAS_OP_T;
}

// Leading dimension cuBLAS wants: the row stride, or cols for a one-row matrix whose row
// stride is meaningless.
template <class T>
int leading_dim(const TensorView<T>& t, int rank) {
  const std::int64_t rows = t.shape[rank - 2], cols = t.shape[rank - 1];
  const std::int64_t ld = rows == 1 ? cols : t.strides[rank - 2];
  return static_cast<int>(ld < cols ? cols : ld);
}

struct GemmShape {
  std::int64_t m, n, k;
};

// Checks op(A) (M x K), op(B) (K x N), C (M x N) agree; returns (M, N, K).
template <class TC, class TA, class TB>
GemmShape gemm_shape(const char* op, const TensorView<TC>& c, const TensorView<TA>& a, MatOp op_a,
                     const TensorView<TB>& b, MatOp op_b, int rank) {
  const int r = rank - 2;
  const std::int64_t m = c.shape[r], n = c.shape[r + 1];
  const std::int64_t a_rows = op_a == MatOp::N ? a.shape[r] : a.shape[r + 1];
  const std::int64_t k = op_a == MatOp::N ? a.shape[r + 1] : a.shape[r];
  const std::int64_t b_rows = op_b == MatOp::N ? b.shape[r] : b.shape[r + 1];
  const std::int64_t b_cols = op_b == MatOp::N ? b.shape[r + 1] : b.shape[r];
  MILMER_CHECK(a_rows == m, op, "A", str("op(A) with ", m, " rows (C's rows)"),
               str("op(A) with ", a_rows, " rows, A shape ", a.shape_string()));
  MILMER_CHECK(b_rows == k, op, "B", str("op(B) with ", k, " rows (op(A)'s columns)"),
               str("op(B) with ", b_rows, " rows, B shape ", b.shape_string()));
  MILMER_CHECK(b_cols == n, op, "B", str("op(B) with ", n, " columns (C's columns)"),
               str("op(B) with ", b_cols, " columns, B shape ", b.shape_string()));
  check_int(k, op, "A", "inner dimension K");
  return {m, n, k};
}

template <class T>
void launch_bias_activation(Context& ctx, Epilogue act, T* out, T* pre, const T* x, const T* bias,
                            std::int64_t total, int cols) {
  constexpr int threads = kernels::kElementwiseThreads;
  auto run = [&](auto kernel) {
    launch(kernel, dim3(grid_stride_blocks(total, threads)), dim3(threads), 0, ctx.stream(), out,
           pre, x, bias, total, cols);
  };
  switch (act) {
    case Epilogue::none:
      run(kernels::bias_activation_forward_kernel<T, kernels::Identity>);
      break;
    case Epilogue::relu:
      run(kernels::bias_activation_forward_kernel<T, kernels::Relu>);
      break;
    case Epilogue::gelu:
      run(kernels::bias_activation_forward_kernel<T, kernels::Gelu>);
      break;
  }
}

// The alignment cuBLASLt's preferences speak of (device_limits.hpp, shared with the emulator).
using milmer::pointer_alignment;

// out (M x N) = inp (M x K) @ weight^T (+ bias) (relu), one cuBLASLt call with the epilogue
// fused (CUBLASLT_EPILOGUE_BIAS / RELU / RELU_BIAS). Column-major view: D^T (N x M) =
// op_T(weight as K x N) * (inp as K x M).
inline void lt_linear_forward(Context& ctx, float* out, const float* inp, const float* weight,
                              const float* bias, int m, int n, int k, bool relu) {
  struct Descs {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    ~Descs() {
      if (pref) cublasLtMatmulPreferenceDestroy(pref);
      if (d) cublasLtMatrixLayoutDestroy(d);
      if (b) cublasLtMatrixLayoutDestroy(b);
      if (a) cublasLtMatrixLayoutDestroy(a);
      if (op) cublasLtMatmulDescDestroy(op);
    }
  } s;
  MILMER_CUBLAS_CHECK(cublasLtMatmulDescCreate(&s.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  MILMER_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  MILMER_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  const uint32_t epilogue = bias ? (relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS)
                                 : (relu ? CUBLASLT_EPILOGUE_RELU : CUBLASLT_EPILOGUE_DEFAULT);
  MILMER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                                     sizeof(epilogue)));
  if (bias) {
    const void* bias_ptr = bias;
    MILMER_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(s.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                       &bias_ptr, sizeof(bias_ptr)));
  }
  MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s.a, CUDA_R_32F, k, n, k));
  MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s.b, CUDA_R_32F, k, m, k));
  MILMER_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&s.d, CUDA_R_32F, n, m, n));
  MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&s.pref));
  const uint64_t workspace_bytes = Context::kWorkspaceBytes;
  MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      s.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes, sizeof(workspace_bytes)));
  // The real alignments of the operands: weights in the parameter arena are 16-byte aligned
  // and operands can be offsets into a packed weight, while an unset preference lets the
  // heuristic pick a kernel that assumes 256-byte alignment.
  const std::uint32_t align_a = pointer_alignment(weight), align_b = pointer_alignment(inp),
                      align_cd = pointer_alignment(out);
  MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      s.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a, sizeof(align_a)));
  MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      s.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b, sizeof(align_b)));
  MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      s.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_cd, sizeof(align_cd)));
  MILMER_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      s.pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_cd, sizeof(align_cd)));
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  MILMER_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(ctx.lt(), s.op, s.a, s.b, s.d, s.d, s.pref, 1,
                                                     &heuristic, &found));
  MILMER_CHECK(found > 0, "linear_forward", "cublasLt", "an algorithm for this shape and epilogue",
               str("none for M=", m, " N=", n, " K=", k));
  const float one = 1.0f, zero = 0.0f;
  MILMER_CUBLAS_CHECK(cublasLtMatmul(ctx.lt(), s.op, &one, weight, s.a, inp, s.b, &zero, out, s.d,
                                     out, s.d, &heuristic.algo, ctx.workspace(),
                                     Context::kWorkspaceBytes, ctx.stream()));
}

}  // namespace detail

// C = alpha * op_a(A) @ op_b(B) + beta * C, all row-major 2-D views (unit column stride, any
// row stride >= cols: see matrix_view). op(A) is M x K, op(B) is K x N, C is M x N.
template <class T>
void gemm(Context& ctx, TensorView<T> c, InView<T> a, MatOp op_a, InView<T> b, MatOp op_b,
          float alpha = 1.0f, float beta = 0.0f) {
  static_assert(std::is_same_v<T, float>, "gemm: only float storage is wired to cuBLAS so far");
  constexpr const char* op = "gemm";
  detail::expect_matrix(c, op, "C", 2, true);
  detail::expect_matrix(a, op, "A", 2, false);
  detail::expect_matrix(b, op, "B", 2, false);
  const auto s = detail::gemm_shape(op, c, a, op_a, b, op_b, 2);
  MILMER_CUBLAS_CHECK(cublasSgemm(
      ctx.blas(), detail::cublas_op(op_b), detail::cublas_op(op_a), static_cast<int>(s.n),
      static_cast<int>(s.m), static_cast<int>(s.k), &alpha, b.data, detail::leading_dim(b, 2),
      a.data, detail::leading_dim(a, 2), &beta, c.data, detail::leading_dim(c, 2)));
}

// For each i < batch: C[i] = alpha * op_a(A[i]) @ op_b(B[i]) + beta * C[i]. Views are rank 3
// (batch, rows, cols) with unit column stride, any row stride >= cols and any batch stride
// (see batched_matrix_view); an input with batch stride 0 is the same matrix for every i.
// Example, attention scores per (sample, head) with q, k packed as (B*H, T, d):
//   gemm_strided_batched(ctx, scores (B*H, T, T), q, MatOp::N, k, MatOp::T, 1 / sqrt(d)).
template <class T>
void gemm_strided_batched(Context& ctx, TensorView<T> c, InView<T> a, MatOp op_a, InView<T> b,
                          MatOp op_b, float alpha = 1.0f, float beta = 0.0f) {
  static_assert(std::is_same_v<T, float>,
                "gemm_strided_batched: only float storage is wired to cuBLAS so far");
  constexpr const char* op = "gemm_strided_batched";
  detail::expect_matrix(c, op, "C", 3, true);
  detail::expect_matrix(a, op, "A", 3, false);
  detail::expect_matrix(b, op, "B", 3, false);
  const std::int64_t batch = c.shape[0];
  MILMER_CHECK(a.shape[0] == batch, op, "A", str("batch ", batch, " (C's batch)"),
               str("batch ", a.shape[0]));
  MILMER_CHECK(b.shape[0] == batch, op, "B", str("batch ", batch, " (C's batch)"),
               str("batch ", b.shape[0]));
  detail::check_int(batch, op, "C", "batch");
  const auto s = detail::gemm_shape(op, c, a, op_a, b, op_b, 3);
  MILMER_CUBLAS_CHECK(cublasSgemmStridedBatched(
      ctx.blas(), detail::cublas_op(op_b), detail::cublas_op(op_a), static_cast<int>(s.n),
      static_cast<int>(s.m), static_cast<int>(s.k), &alpha, b.data, detail::leading_dim(b, 3),
      b.strides[0], a.data, detail::leading_dim(a, 3), a.strides[0], &beta, c.data,
      detail::leading_dim(c, 3), c.strides[0], static_cast<int>(batch)));
}

// out (M, N) = act(inp (M, K) @ weight (N, K)^T + bias (N)). bias may be an empty view (no
// bias). pre_activation (M, N), optional (empty view: not stored), receives inp @ weight^T +
// bias; it is what linear_backward needs for gelu and is refused for the other epilogues
// (relu's backward takes the output, none needs nothing).
template <class T>
void linear_forward(Context& ctx, TensorView<T> out, InView<T> inp, InView<T> weight,
                    InView<T> bias = {}, Epilogue epilogue = Epilogue::none,
                    TensorView<T> pre_activation = {}) {
  static_assert(std::is_same_v<T, float>,
                "linear_forward: only float storage is wired to cuBLAS so far");
  constexpr const char* op = "linear_forward";
  expect(inp, op, "inp", {-1, -1});
  const std::int64_t m = inp.shape[0], k = inp.shape[1];
  expect(weight, op, "weight", {-1, k});
  const std::int64_t n = weight.shape[0];
  expect(out, op, "out", {m, n});
  const bool has_bias = bias.data != nullptr;
  if (has_bias) expect(bias, op, "bias", {n});
  const bool store_pre = pre_activation.data != nullptr;
  if (store_pre) {
    MILMER_CHECK(epilogue == Epilogue::gelu, op, "pre_activation",
                 "an empty view unless epilogue is gelu (relu's backward uses the output)",
                 str("a tensor with epilogue ", epilogue_name(epilogue)));
    expect(pre_activation, op, "pre_activation", {m, n});
  }
  detail::check_int(m, op, "inp", "rows");
  detail::check_int(n, op, "weight", "rows");
  detail::check_int(k, op, "inp", "columns");
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
  if (epilogue != Epilogue::gelu) {
    detail::lt_linear_forward(ctx, out.data, inp.data, weight.data, has_bias ? bias.data : nullptr,
                              mi, ni, ki, epilogue == Epilogue::relu);
    return;
  }
  // GEMM into the buffer the epilogue reads (pre_activation when stored, else out), then one
  // element-wise pass for bias + activation.
  T* gemm_out = store_pre ? pre_activation.data : out.data;
  const float one = 1.0f, zero = 0.0f;
  MILMER_CUBLAS_CHECK(cublasSgemm(ctx.blas(), CUBLAS_OP_T, CUBLAS_OP_N, ni, mi, ki, &one,
                                  weight.data, ki, inp.data, ki, &zero, gemm_out, ni));
  if (epilogue == Epilogue::none && !has_bias) return;
  detail::launch_bias_activation<T>(ctx, epilogue, out.data, store_pre ? gemm_out : nullptr,
                                    gemm_out, has_bias ? bias.data : nullptr, m * n, ni);
}

// Backward of linear_forward. With dpre = dout * act'(saved) (dout itself for Epilogue::none):
//   dweight (N, K) += dpre^T @ inp          dbias (N) += column sums of dpre (optional)
//   dinp (M, K)     = dpre @ weight          (optional: an empty view skips it, e.g. for a
//                                             first layer whose input needs no gradient)
// For relu / gelu, `saved` (M, N) is the forward output (relu) or the forward's
// pre_activation (gelu), and `dpre` (M, N) receives the activation's gradient; dpre may be
// the memory of dout or of saved. The weight and bias gradients are computed before dinp,
// so dinp may be the memory of inp.
template <class T>
void linear_backward(Context& ctx, TensorView<T> dinp, TensorView<T> dweight, TensorView<T> dbias,
                     InView<T> dout, InView<T> inp, InView<T> weight,
                     Epilogue epilogue = Epilogue::none, InView<T> saved = {},
                     TensorView<T> dpre = {}) {
  static_assert(std::is_same_v<T, float>,
                "linear_backward: only float storage is wired to cuBLAS so far");
  constexpr const char* op = "linear_backward";
  expect(dout, op, "dout", {-1, -1});
  const std::int64_t m = dout.shape[0], n = dout.shape[1];
  expect(inp, op, "inp", {m, -1});
  const std::int64_t k = inp.shape[1];
  expect(weight, op, "weight", {n, k});
  expect(dweight, op, "dweight", {n, k});
  const bool has_dinp = dinp.data != nullptr, has_dbias = dbias.data != nullptr;
  if (has_dinp) expect(dinp, op, "dinp", {m, k});
  if (has_dbias) expect(dbias, op, "dbias", {n});
  if (epilogue != Epilogue::none) {
    expect(saved, op, "saved", {m, n});
    expect(dpre, op, "dpre", {m, n});
  } else {
    MILMER_CHECK(saved.data == nullptr && dpre.data == nullptr, op, "saved",
                 "empty 'saved' and 'dpre' views for epilogue none", "a tensor");
  }
  detail::check_int(m, op, "dout", "rows");
  detail::check_int(n, op, "dout", "columns");
  detail::check_int(k, op, "inp", "columns");
  const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);

  const T* grad = dout.data;
  if (epilogue != Epilogue::none) {
    if (epilogue == Epilogue::relu)
      detail::launch_activation_backward<kernels::Relu>(ctx, op, dpre.data, dout.data, saved.data,
                                                        m * n);
    else
      detail::launch_activation_backward<kernels::Gelu>(ctx, op, dpre.data, dout.data, saved.data,
                                                        m * n);
    grad = dpre.data;
  }
  // Column-major view: dweight^T (K x N) += inp^T (K x M, stored as-is) * grad (M x N, stored
  // transposed).
  const float one = 1.0f, zero = 0.0f;
  MILMER_CUBLAS_CHECK(cublasSgemm(ctx.blas(), CUBLAS_OP_N, CUBLAS_OP_T, ki, ni, mi, &one, inp.data,
                                  ki, grad, ni, &one, dweight.data, ki));
  if (has_dbias)
    launch(kernels::bias_grad_kernel<T>,
           dim3(static_cast<unsigned>((n + kernels::kBiasGradColumns - 1) /
                                      kernels::kBiasGradColumns)),
           dim3(kernels::kBiasGradColumns, kernels::kBiasGradRowThreads), 0, ctx.stream(),
           dbias.data, grad, m, ni);
  // dinp^T (K x M) = weight^T (K x N, stored as-is) * grad^T (N x M, stored as-is).
  if (has_dinp)
    MILMER_CUBLAS_CHECK(cublasSgemm(ctx.blas(), CUBLAS_OP_N, CUBLAS_OP_N, ki, mi, ni, &one,
                                    weight.data, ki, grad, ni, &zero, dinp.data, ki));
}

}  // namespace milmer
