// Element-wise building blocks: bias add, residual add, and the deterministic column-sum
// finisher (sum_partials) the LayerNorm backward shares. Packs, conversions and the
// element-wise map are device_common.hpp's; the flat-tensor checks are tensor.hpp's.
//
// Math
//   bias_add_forward    out(r, c) += bias(c)                 (in place on the GEMM output)
//   bias_add_backward   dbias(c)  += sum_r dout(r, c)        (deterministic: see below)
//   add_forward         out = a + b                          (the residual add)
//   add_backward        da = db = dout: the identity, so there is no kernel; the residual
//                       stream's gradient flows on unchanged and each branch's gradient is
//                       ADDED to it with add_inplace.
//   add_inplace         dst += src
//
// Layouts: row-major; bias ops take out/dout as (rows, cols) and bias/dbias as (cols); add
// and add_inplace take tensors of any rank and identical shape, treated as flat arrays.
//
// Launch shapes
//   packed element-wise kernels: one 16-byte pack (4 floats) per thread, block 256,
//     grid ceil(packs / 256); used when every pointer is 16-byte aligned and the element
//     count (cols for bias add) is a multiple of the pack width. Otherwise the scalar
//     kernels: one element per thread, block 256, grid ceil(n / 256). add_packed and
//     add_scalar are device_common.hpp's element-wise map with the AddOp functor.
//   bias_add_backward: (1) column_partial_sums: grid (ceil(cols / 32), parts), block (32, 8),
//     1056 bytes of static shared memory; block (x, p) sums rows [p*R, (p+1)*R) of 32
//     columns and WRITES one partial row to scratch(parts, cols); (2) sum_partials: grid
//     ceil(cols / 256), block 256, adds the parts in order 0..parts-1 and += into dbias.
//     No float atomics anywhere: every sum has one fixed order, so dbias is bit-identical
//     under every schedule and every run. parts depends only on rows (see
//     bias_add_backward_parts), never on the device.
//
// Minimum bytes moved (s = sizeof(T), n = element count, R x C for bias ops)
//   bias_add_forward   2*R*C*s + C*s            (read + write out, read bias)
//   bias_add_backward  R*C*s + 2*C*s            (read dout, read + write dbias)
//   add_forward        3*n*s                    (read a, b; write out)
//   add_inplace        3*n*s                    (read dst, src; write dst)
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

// ---- bias add ---------------------------------------------------------------------------

template <class T>
__global__ void bias_add_forward_packed(T* out, const T* bias, std::int64_t packs, int cols) {
  const std::int64_t i = global_thread_index();
  if (i >= packs) return;
  constexpr int W = Pack<T>::kWidth;
  const int col = static_cast<int>((i * W) % cols);
  Pack<T> o = load_pack(out, i);
  const Pack<T> b = load_pack(bias + col, 0);
  for (int k = 0; k < W; ++k) o.v[k] = from_float<T>(to_float(o.v[k]) + to_float(b.v[k]));
  store_pack(out, i, o);
}

template <class T>
__global__ void bias_add_forward_scalar(T* out, const T* bias, std::int64_t n, int cols) {
  const std::int64_t i = global_thread_index();
  if (i >= n) return;
  out[i] = from_float<T>(to_float(out[i]) + to_float(bias[i % cols]));
}

inline constexpr int kPartialColumns = 32;  // columns per block of column_partial_sums
inline constexpr int kPartialRowLanes = 8;  // threads that split a block's rows

// partials(p, c) = sum of src(r, c) over rows r of part p, in a fixed order: thread (x, y)
// adds rows y, y+8, ... of the part in sequence, then the 8 lane sums are added y = 0..7.
template <class T>
__global__ void column_partial_sums(float* partials, const T* src, int rows, int cols,
                                    int rows_per_part) {
  MILMER_SHARED(float, lane_sums, [kPartialRowLanes][kPartialColumns + 1]);
  const int col = blockIdx.x * kPartialColumns + threadIdx.x;
  const int row_begin = blockIdx.y * rows_per_part;
  const int row_end = rows - row_begin < rows_per_part ? rows : row_begin + rows_per_part;
  float sum = 0.0f;
  if (col < cols)
    for (int r = row_begin + threadIdx.y; r < row_end; r += kPartialRowLanes)
      sum += to_float(src[static_cast<std::int64_t>(r) * cols + col]);
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && col < cols) {
    float total = 0.0f;
    for (int y = 0; y < kPartialRowLanes; ++y) total += lane_sums[y][threadIdx.x];
    partials[static_cast<std::int64_t>(blockIdx.y) * cols + col] = total;
  }
}

// dst_j(c) += sum over p = 0..parts-1 of partials[p * part_stride + j * cols + c], for the
// outputs j = blockIdx.y (0: dst0, 1: dst1, 2: dst2). The fixed order makes the result
// deterministic.
template <class T>
__global__ void sum_partials(T* dst0, T* dst1, T* dst2, const float* partials, int parts, int cols,
                             std::int64_t part_stride) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x;
  if (col >= cols) return;
  T* dst = blockIdx.y == 0 ? dst0 : (blockIdx.y == 1 ? dst1 : dst2);
  const float* p = partials + static_cast<std::int64_t>(blockIdx.y) * cols + col;
  float sum = 0.0f;
  for (int k = 0; k < parts; ++k) sum += p[k * part_stride];
  dst[col] = from_float<T>(to_float(dst[col]) + sum);
}

// ---- residual add -----------------------------------------------------------------------

// The residual add as a map functor: a + b.
struct AddOp {
  MILMER_HD float operator()(std::int64_t, const float (&x)[2]) const { return x[0] + x[1]; }
};

// out = a + b; out may be a or b.
template <class T>
__global__ void add_packed(T* out, std::int64_t packs, const T* a, const T* b) {
  map_packs(out, packs, AddOp{}, a, b);
}
template <class T>
__global__ void add_scalar(T* out, std::int64_t n, const T* a, const T* b) {
  map_elements(out, n, AddOp{}, a, b);
}

}  // namespace milmer::kernels

namespace milmer {

// ---- bias add ---------------------------------------------------------------------------

// out(rows, cols) += bias(cols).
template <class T>
void bias_add_forward(Context& ctx, TensorView<T> out, InView<T> bias) {
  constexpr const char* op = "bias_add_forward";
  expect(out, op, "out", {-1, -1});
  const std::int64_t rows = out.dim(0), cols = out.dim(1);
  detail::expect_int_range(cols, op, "out columns");
  expect(bias, op, "bias", {cols});
  const std::int64_t n = rows * cols;
  const int threads = kernels::kElementwiseThreads;
  if (detail::packable<T>(cols, out.data, bias.data)) {
    const std::int64_t packs = n / kernels::Pack<T>::kWidth;
    launch(kernels::bias_add_forward_packed<T>, dim3(detail::blocks_for(packs, threads, op)),
           dim3(threads), 0, ctx.stream(), out.data, bias.data, packs, static_cast<int>(cols));
  } else {
    launch(kernels::bias_add_forward_scalar<T>, dim3(detail::blocks_for(n, threads, op)),
           dim3(threads), 0, ctx.stream(), out.data, bias.data, n, static_cast<int>(cols));
  }
}

namespace detail {
// sum_partials over the (parts, outputs, cols) partials: dst[j](c) += the parts' partials in
// order, for the `outputs` (1 to 3) non-null destinations dst.
template <class T>
void launch_sum_partials(Context& ctx, const char* op, T* dst0, T* dst1, T* dst2,
                         const float* partials, int parts, std::int64_t cols, int outputs) {
  const int threads = kernels::kElementwiseThreads;
  launch(kernels::sum_partials<T>,
         dim3(blocks_for(cols, threads, op), static_cast<unsigned>(outputs)), dim3(threads), 0,
         ctx.stream(), dst0, dst1, dst2, partials, parts, static_cast<int>(cols), outputs * cols);
}
}  // namespace detail

// How many row parts bias_add_backward splits `rows` into (a function of rows only, so the
// summation order, and with it every bit of dbias, is the same on every device).
inline int bias_add_backward_parts(std::int64_t rows) {
  constexpr std::int64_t kMinRowsPerPart = 32, kMaxParts = 128;
  return static_cast<int>(std::clamp<std::int64_t>(rows / kMinRowsPerPart, 1, kMaxParts));
}
// Scratch (floats) bias_add_backward needs: one partial row per part.
inline std::int64_t bias_add_backward_scratch_elements(std::int64_t rows, std::int64_t cols) {
  return std::int64_t{bias_add_backward_parts(rows)} * cols;
}

// dbias(cols) += column sums of dout(rows, cols); scratch holds at least
// bias_add_backward_scratch_elements(rows, cols) floats and is overwritten.
template <class T>
void bias_add_backward(Context& ctx, TensorView<T> dbias, InView<T> dout,
                       TensorView<float> scratch) {
  constexpr const char* op = "bias_add_backward";
  const auto [rows, cols] = detail::expect_rows(dout, op, "dout", " columns");
  expect(dbias, op, "dbias", {cols});
  detail::expect_scratch(scratch, op, bias_add_backward_scratch_elements(rows, cols));
  const int parts_wanted = bias_add_backward_parts(rows);
  const int rows_per_part = static_cast<int>((rows + parts_wanted - 1) / parts_wanted);
  const int parts = static_cast<int>((rows + rows_per_part - 1) / rows_per_part);
  MILMER_CHECK(parts <= 65535, op, "dout rows", "at most 65535 row parts", str(parts));
  const dim3 grid(
      static_cast<unsigned>((cols + kernels::kPartialColumns - 1) / kernels::kPartialColumns),
      static_cast<unsigned>(parts));
  launch(kernels::column_partial_sums<T>, grid,
         dim3(kernels::kPartialColumns, kernels::kPartialRowLanes), 0, ctx.stream(), scratch.data,
         dout.data, static_cast<int>(rows), static_cast<int>(cols), rows_per_part);
  detail::launch_sum_partials<T>(ctx, op, dbias.data, nullptr, nullptr, scratch.data, parts, cols,
                                 1);
}

// ---- residual add -----------------------------------------------------------------------

// out = a + b (all the same shape; out may be a or b).
template <class T>
void add_forward(Context& ctx, TensorView<T> out, InView<T> a, InView<T> b) {
  constexpr const char* op = "add_forward";
  detail::expect_flat(out, op, "out");
  detail::expect_flat(a, op, "a");
  detail::expect_flat(b, op, "b");
  detail::expect_same_shape(a, out, op, "a");
  detail::expect_same_shape(b, out, op, "b");
  const std::int64_t n = out.numel();
  detail::launch_map(ctx, op, detail::packable<T>(n, out.data, a.data, b.data), n,
                     kernels::add_packed<T>, kernels::add_scalar<T>, out.data, a.data, b.data);
}

// dst += src: how a branch's gradient joins the residual stream's (the backward of
// add_forward is the identity for both inputs).
template <class T>
void add_inplace(Context& ctx, TensorView<T> dst, InView<T> src) {
  constexpr const char* op = "add_inplace";
  detail::expect_flat(dst, op, "dst");
  detail::expect_flat(src, op, "src");
  detail::expect_same_shape(src, dst, op, "src");
  const std::int64_t n = dst.numel();
  detail::launch_map(ctx, op, detail::packable<T>(n, dst.data, src.data), n, kernels::add_packed<T>,
                     kernels::add_scalar<T>, dst.data, static_cast<const T*>(dst.data), src.data);
}

}  // namespace milmer
