// The host emulator's device-side vocabulary: what CUDA kernel code may use, given a CPU body.
//
// threadIdx / blockIdx / blockDim / gridDim, warpSize, __syncthreads, the warp operations
// (__syncwarp, __shfl*_sync with width and partial masks, __ballot_sync, __any_sync,
// __all_sync), atomics on global and shared memory (real atomics), static shared memory
// (MILMER_SHARED: one copy per block, from an arena of the OS thread running the block) and
// the math intrinsics the library's kernels use. Types (__half, __nv_bfloat16, dim3,
// float4...) come from the CUDA toolkit's own headers, which compile with g++.
#pragma once

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "milmer/emu/scheduler.hpp"

// Static shared memory has exactly one form, MILMER_SHARED(T, name, extents) (below), so the
// emulator can give every block its own poisoned copy and count its size. host_defines.h
// (from the toolkit) defines __shared__ as nothing for a host compiler; here it is an error.
#undef __shared__
#define __shared__ \
  static_assert(false, "declare static shared memory with MILMER_SHARED(T, name, extents)");
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#define threadIdx (::milmer::emu::tls_thread_idx)
#define blockIdx (::milmer::emu::tls_block_idx)
#define blockDim (::milmer::emu::tls_block_dim)
#define gridDim (::milmer::emu::tls_grid_dim)
inline constexpr int warpSize = 32;

inline void __syncthreads(const std::source_location loc = std::source_location::current()) {
  ::milmer::emu::syncthreads(loc);
}

namespace milmer::emu::detail {
template <class T>
std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>,
                "warp shuffles move values of at most 8 bytes");
  std::uint64_t b = 0;
  std::memcpy(&b, &v, sizeof(T));
  return b;
}
template <class T>
T from_bits(std::uint64_t b) {
  T v;
  std::memcpy(&v, &b, sizeof(T));
  return v;
}
template <class T>
T shfl(WarpKind k, unsigned mask, T var, int param, int width) {
  return from_bits<T>(warp_op(k, mask, to_bits(var), param, width));
}
}  // namespace milmer::emu::detail

inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::milmer::emu::warp_op(::milmer::emu::detail::WarpKind::sync, mask, 0, 0, 32);
}
template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize) {
  return ::milmer::emu::detail::shfl(::milmer::emu::detail::WarpKind::shfl_idx, mask, var, src_lane,
                                     width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return ::milmer::emu::detail::shfl(::milmer::emu::detail::WarpKind::shfl_up, mask, var,
                                     static_cast<int>(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
  return ::milmer::emu::detail::shfl(::milmer::emu::detail::WarpKind::shfl_down, mask, var,
                                     static_cast<int>(delta), width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize) {
  return ::milmer::emu::detail::shfl(::milmer::emu::detail::WarpKind::shfl_xor, mask, var,
                                     lane_mask, width);
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
  return static_cast<unsigned>(
      ::milmer::emu::warp_op(::milmer::emu::detail::WarpKind::ballot, mask, predicate != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int predicate) {
  return static_cast<int>(
      ::milmer::emu::warp_op(::milmer::emu::detail::WarpKind::any, mask, predicate != 0, 0, 32));
}
inline int __all_sync(unsigned mask, int predicate) {
  return static_cast<int>(
      ::milmer::emu::warp_op(::milmer::emu::detail::WarpKind::all, mask, predicate != 0, 0, 32));
}

// Atomics: real atomics through std::atomic_ref, so blocks on different OS threads and
// fibers of one block see the semantics the hardware gives (relaxed order).
template <class T>
T atomicAdd(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_add(val, std::memory_order_relaxed);
}
template <class T>
T atomicSub(T* address, T val) {
  return std::atomic_ref<T>(*address).fetch_sub(val, std::memory_order_relaxed);
}
template <class T>
T atomicExch(T* address, T val) {
  return std::atomic_ref<T>(*address).exchange(val, std::memory_order_relaxed);
}
template <class T>
T atomicCAS(T* address, T compare, T val) {
  std::atomic_ref<T>(*address).compare_exchange_strong(compare, val, std::memory_order_relaxed);
  return compare;
}
namespace milmer::emu::detail {
// Replaces *address by val while `better(val, current)`; returns the value it replaced.
template <class T, class Better>
T atomic_replace_if(T* address, T val, Better better) {
  std::atomic_ref<T> a(*address);
  T old = a.load(std::memory_order_relaxed);
  while (better(val, old) && !a.compare_exchange_weak(old, val, std::memory_order_relaxed)) {
  }
  return old;
}
}  // namespace milmer::emu::detail
template <class T>
T atomicMax(T* address, T val) {
  return ::milmer::emu::detail::atomic_replace_if(address, val, [](T v, T old) { return old < v; });
}
template <class T>
T atomicMin(T* address, T val) {
  return ::milmer::emu::detail::atomic_replace_if(address, val, [](T v, T old) { return v < old; });
}
inline void __threadfence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}
inline void __threadfence_block() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

// Math intrinsics with their CUDA names. The fast forms are computed exactly here; the
// library's kernels use them only where CUDA's documented error bounds are acceptable.
inline float rsqrtf(float x) {
  return 1.0f / std::sqrt(x);
}
inline double rsqrt(double x) {
  return 1.0 / std::sqrt(x);
}
inline float __expf(float x) {
  return std::exp(x);
}
inline float __logf(float x) {
  return std::log(x);
}
inline float __tanhf(float x) {
  return std::tanh(x);
}
inline float __fdividef(float a, float b) {
  return a / b;
}
inline float __frcp_rn(float x) {
  return 1.0f / x;
}
inline float __saturatef(float x) {
  return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
}
inline float __int_as_float(int x) {
  return std::bit_cast<float>(x);
}
inline int __float_as_int(float x) {
  return std::bit_cast<int>(x);
}
inline unsigned __float_as_uint(float x) {
  return std::bit_cast<unsigned>(x);
}
inline float __uint_as_float(unsigned x) {
  return std::bit_cast<float>(x);
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}
inline int __clz(int x) {
  return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x));
}
template <class T>
T __ldg(const T* p) {
  return *p;
}

// The one form of static shared memory: MILMER_SHARED(float, tile, [32][33]); declares
// `float tile[32][33]` in shared memory (__shared__ on the cuda target). T must not contain
// a comma (use an alias); extents may be empty. On the host each block gets its own copy,
// placed when the block first reaches the declaration and, in strict mode, filled with 0xff
// bytes.
#define MILMER_SHARED(T, name, extents)                                            \
  static thread_local ::milmer::emu::SharedSlot milmer_shared_slot_##name;         \
  std::type_identity_t<T extents>& name =                                          \
      *static_cast<std::type_identity_t<T extents>*>(::milmer::emu::static_shared( \
          milmer_shared_slot_##name, sizeof(T extents), alignof(T extents)))

// The one form of dynamic shared memory: MILMER_DYNAMIC_SHARED(float, smem); declares
// `float* smem` over the launch's shared_bytes (extern __shared__ on the cuda target).
#define MILMER_DYNAMIC_SHARED(T, name) \
  T* name = reinterpret_cast<T*>(::milmer::emu::tls_dynamic_shared)
