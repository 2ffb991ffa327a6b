// The shared vocabulary of the kernels: what more than one kernel family needs, defined once.
// Every kernel header includes this one; nothing here launches a kernel of its own.
//
// Device side (namespace milmer::kernels)
//   to_float / from_float     the storage-type conversions: kernels compute in float and
//                             read and write T only through these (a bf16 storage type is a
//                             specialization here, not an edit of every kernel)
//   Pack<T>, load_pack,       16 bytes of T (4 floats, 8 halves): one vector load or store
//   store_pack
//   global_thread_index,      the 64-bit thread index of a 1-D grid and the thread count of
//   grid_thread_count         the grid (the step of a grid-stride loop)
//   warp_sum, warp_max        xor butterflies over the 32 lanes: every lane gets the same
//                             bits, and the sum adds the same pairs as a pairwise tree over
//                             lane indices (lane l + lane l + 16, ...)
//   block_sum, block_sum_of   THE block reduction: one fixed pairwise tree over thread
//                             indices (see block_sum); every block-wide sum of one value
//                             goes through it (the LayerNorm backward's two-value
//                             block_sum2, layernorm.hpp, keeps its own order: warp sums, then
//                             the warp totals in warp order)
//   Identity, Relu, Gelu      the activation functors (forward and backward), used
//                             by the activation kernels and by the GEMM epilogues alike
//   map_packs, map_elements   the one element-wise map, y = fn(flat index, x...), by 16-byte
//                             packs or by elements: the body of every bias-free element-wise
//                             kernel (residual add, activations, dropout, drop-path)
// Host side (namespace milmer::detail)
//   grid_stride_blocks        blocks of a grid-stride loop: ceil(items / per_block), clamped
//                             to [1, 65535 * 8] (or a smaller cap)
//   launch_grid_stride        launches a grid-stride kernel with those blocks of 256 threads
//   blocks_for                blocks of an exact one-item-per-thread grid, checked to fit
//   packable                  whether pointers and a length allow the packed path
//   launch_map                launches an element-wise kernel pair, packed when allowed
//   dispatch_head_chunks      a runtime head_dim as a compile-time count of 32-wide chunks
//
// Reduction order is part of each kernel's contract (results bit-identical under every
// schedule and run), so the helpers here fix their order and say it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "milmer/context.hpp"
#include "milmer/error.hpp"
#include "milmer/platform.hpp"

namespace milmer::kernels {

// ---- storage conversions ------------------------------------------------------------------

template <class T>
MILMER_HD inline float to_float(T v) {
  return static_cast<float>(v);
}
template <class T>
MILMER_HD inline T from_float(float v) {
  return static_cast<T>(v);
}

// ---- packed vector access -----------------------------------------------------------------

// 16 bytes of T: one vector load or store (float4 for float, 8 halves for bf16).
template <class T>
struct alignas(16) Pack {
  static constexpr int kWidth = 16 / static_cast<int>(sizeof(T));
  T v[kWidth];
};

// Pack number `pack` of base (base 16-byte aligned).
template <class T>
__device__ inline Pack<T> load_pack(const T* base, std::int64_t pack) {
  return reinterpret_cast<const Pack<T>*>(base)[pack];
}
template <class T>
__device__ inline void store_pack(T* base, std::int64_t pack, const Pack<T>& value) {
  reinterpret_cast<Pack<T>*>(base)[pack] = value;
}

// ---- thread indexing ----------------------------------------------------------------------

__device__ inline std::int64_t global_thread_index() {
  return static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline std::int64_t grid_thread_count() {
  return static_cast<std::int64_t>(gridDim.x) * blockDim.x;
}

// ---- warp and block reductions ------------------------------------------------------------

inline constexpr unsigned kFullWarpMask = 0xffffffffu;

// Sum over the warp by an xor butterfly (offsets 16, 8, 4, 2, 1). Lane l first adds lane
// l ^ 16, and so on: the pairs of a pairwise tree over lane indices, so every lane ends with
// the bits the tree would give lane 0. All 32 lanes must call it.
__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullWarpMask, v, offset);
  return v;
}
// Maximum over the warp, the same butterfly; every lane gets it.
__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset /= 2)
    v = fmaxf(v, __shfl_xor_sync(kFullWarpMask, v, offset));
  return v;
}

// The block reduction: the sum of v over the threads of a 1-D block whose size n is a power
// of two from 32 to 1024, in one fixed order, a pairwise tree over thread indices: at each
// level half = n/2, n/4, ..., 1, index t < half adds index t + half. The levels with
// half >= 32 go through `scratch` (n floats of shared memory), the last five are warp 0's
// warp_sum, which adds the same pairs. The result is in every lane of warp 0 (the other
// warps get 0). Every thread of the block must call it; it ends without a barrier, so a
// second call with the same scratch needs a __syncthreads() first.
__device__ inline float block_sum(float v, float* scratch) {
  const int t = static_cast<int>(threadIdx.x);
  scratch[t] = v;
  __syncthreads();
  for (int half = static_cast<int>(blockDim.x) / 2; half >= 32; half /= 2) {
    if (t < half) scratch[t] += scratch[t + half];
    __syncthreads();
  }
  return t < 32 ? warp_sum(scratch[t]) : 0.0f;
}

// block_sum of the per-thread sums x[t] + x[t + n] + x[t + 2n] + ... (n the block size), each
// added in that order: the fixed-order sum of `count` floats by one block.
__device__ inline float block_sum_of(const float* x, std::int64_t count, float* scratch) {
  float sum = 0.0f;
  for (std::int64_t i = threadIdx.x; i < count; i += blockDim.x) sum += x[i];
  return block_sum(sum, scratch);
}

// ---- activation functors ------------------------------------------------------------------
// forward(x) = f(x); backward(x, dy) = dy * f'(x), x the forward's input.

struct Identity {
  static MILMER_HD inline float forward(float x) { return x; }
  static MILMER_HD inline float backward(float, float dy) { return dy; }
};

// relu'(0) = 0, as PyTorch.
struct Relu {
  static MILMER_HD inline float forward(float x) { return x > 0.0f ? x : 0.0f; }
  static MILMER_HD inline float backward(float x, float dy) { return x > 0.0f ? dy : 0.0f; }
};

// Exact GELU (erf form, PyTorch's default) and its derivative, in the operation order of
// PyTorch's CUDA kernels (GeluCUDAKernelImpl / GeluBackwardCUDAKernelImpl,
// approximate='none'): gelu(x) = x * 0.5 * (1 + erf(x / sqrt 2)),
// gelu'(x) = Phi(x) + x * phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi).
struct Gelu {
  static constexpr float kAlpha = 0.70710678118654752440f;  // 1 / sqrt(2)
  static constexpr float kBeta = 0.39894228040143267794f;   // 1 / sqrt(2 pi)
  static MILMER_HD inline float forward(float x) { return x * 0.5f * (1.0f + erff(x * kAlpha)); }
  static MILMER_HD inline float derivative(float x) {
    const float cdf = 0.5f * (1.0f + erff(x * kAlpha));
    const float pdf = expf(-0.5f * x * x) * kBeta;
    return cdf + x * pdf;
  }
  static MILMER_HD inline float backward(float x, float dy) { return dy * derivative(x); }
};

// ---- the element-wise map ------------------------------------------------------------------
// out(i) = fn(i, {x_0(i), x_1(i), ...}) in float, for flat indices i; fn is a functor with
// `float operator()(std::int64_t index, const float (&x)[N]) const`, N the input count.
// Inputs are read before out is written, by the same thread, so out may be an input. These
// are the bodies of the element-wise kernels (add_packed, activation_forward_scalar, ...):
// each kernel is one call, with its name saying which op and which path ran.

// One 16-byte pack per thread: pack i of every input, then pack i of out.
template <class Fn, class T, class... In>
__device__ inline void map_packs(T* out, std::int64_t packs, Fn fn, const In*... in) {
  static_assert((std::is_same_v<In, T> && ...), "map inputs have the output's storage type");
  constexpr int N = sizeof...(In), W = Pack<T>::kWidth;
  const std::int64_t i = global_thread_index();
  if (i >= packs) return;
  const Pack<T> x[N] = {load_pack(in, i)...};
  Pack<T> y;
  for (int k = 0; k < W; ++k) {
    float v[N];
    for (int a = 0; a < N; ++a) v[a] = to_float(x[a].v[k]);
    y.v[k] = from_float<T>(fn(i * W + k, v));
  }
  store_pack(out, i, y);
}

// One element per thread.
template <class Fn, class T, class... In>
__device__ inline void map_elements(T* out, std::int64_t n, Fn fn, const In*... in) {
  constexpr int N = sizeof...(In);
  const std::int64_t i = global_thread_index();
  if (i >= n) return;
  const float v[N] = {to_float(in[i])...};
  out[i] = from_float<T>(fn(i, v));
}

inline constexpr int kElementwiseThreads = 256;

}  // namespace milmer::kernels

namespace milmer::detail {

// ---- grid sizes ---------------------------------------------------------------------------

inline constexpr std::int64_t kMaxGridStrideBlocks = 65535 * 8;

// Blocks of a grid-stride loop over `items` work items, `per_block` per block and pass:
// ceil(items / per_block) clamped to [1, cap].
inline unsigned grid_stride_blocks(std::int64_t items, std::int64_t per_block,
                                   std::int64_t cap = kMaxGridStrideBlocks) {
  return static_cast<unsigned>(
      std::clamp<std::int64_t>((items + per_block - 1) / per_block, 1, cap));
}

// Launches a grid-stride kernel over `items` work items: block 256, grid_stride_blocks(items,
// 256) blocks, no dynamic shared memory.
template <class... Params, class... Args>
void launch_grid_stride(Context& ctx, std::int64_t items, void (*kernel)(Params...),
                        const Args&... args) {
  constexpr int threads = kernels::kElementwiseThreads;
  launch(kernel, dim3(grid_stride_blocks(items, threads)), dim3(threads), 0, ctx.stream(), args...);
}

// Blocks of a grid of one item per thread: ceil(items / threads), which must fit an int.
inline unsigned blocks_for(std::int64_t items, int threads, const char* op) {
  const std::int64_t blocks = (items + threads - 1) / threads;
  MILMER_CHECK(
      blocks <= std::numeric_limits<int>::max(), op, "size",
      str("at most ", std::int64_t{std::numeric_limits<int>::max()} * threads, " work items"),
      str(items));
  return static_cast<unsigned>(blocks);
}

// Whether every pointer allows 16-byte vector access and n fills whole packs.
template <class T, class... P>
bool packable(std::int64_t n, const P*... ptrs) {
  const bool aligned = ((reinterpret_cast<std::uintptr_t>(ptrs) % 16 == 0) && ...);
  return aligned && n % kernels::Pack<T>::kWidth == 0;
}

// Launches an element-wise pair of kernels (dst, count, args...): `packed` over the n / width
// packs when use_packs, else `scalar` over the n elements; block 256, one per thread.
template <class T, class... Params, class... Args>
void launch_map(Context& ctx, const char* op, bool use_packs, std::int64_t n,
                void (*packed)(Params...), void (*scalar)(Params...), T* dst, const Args&... args) {
  constexpr int threads = kernels::kElementwiseThreads;
  const std::int64_t count = use_packs ? n / kernels::Pack<T>::kWidth : n;
  launch(use_packs ? packed : scalar, dim3(blocks_for(count, threads, op)), dim3(threads), 0,
         ctx.stream(), dst, count, args...);
}

// Calls f(std::integral_constant<int, C>{}) with C the number of 32-wide chunks of a head's
// dims a lane covers: 1 for head_dim <= 32, 2 for <= 64, 4 otherwise (<= 128).
template <class F>
void dispatch_head_chunks(int head_dim, F&& f) {
  if (head_dim <= 32)
    f(std::integral_constant<int, 1>{});
  else if (head_dim <= 64)
    f(std::integral_constant<int, 2>{});
  else
    f(std::integral_constant<int, 4>{});
}

}  // namespace milmer::detail
