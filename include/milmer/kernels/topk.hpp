// Block-wide top-K selection: the indices of the k largest of n floats, ordered by
// descending value, ties broken by lower index first (a stable descending order).
//
// Order: values are compared through topk_order_key(), a monotone map of float to uint32
// (-0.0 and +0.0 map to the same key; NaNs sort by their bits: positive NaNs above +inf,
// negative NaNs below -inf). Both implementations below sort those same keys, so they give
// identical results for every input.
//
//   cuda target: cub::BlockRadixSort<uint32 key, int index> in descending order. It is
//                stable, and element e sits at blocked position e, so equal keys keep
//                lower index first. Padding slots (e >= n) get key 0 and the largest
//                indices, so they sort after every real element.
//   host target: the rank of element e is #{j : key_j > key_e or (key_j == key_e and j < e)},
//                counted by the thread that owns e; O(n^2 / threads) work, no barriers
//                inside, deterministic in any thread order.
//
// select_by_rank() is compiled on both targets (so nvcc checks it too); select() is the
// one kernels call. Usage, from every thread of a 1-D block of kThreads threads:
//   using TopK = BlockTopK<256, 2>;
//   MILMER_SHARED(typename TopK::TempStorage, temp, );
//   TopK::select(temp, values, n, k, top_index);                 // n <= 512, 1 <= k <= n
//   __syncthreads();                                              // before reading top_index
// `values` (n floats) must be readable by every thread (shared or global memory, written
// before a __syncthreads()); top_index (k ints) may be shared or global memory.
#pragma once

#include <cstring>

#include "milmer/platform.hpp"

#if MILMER_TARGET_CUDA
#include <cub/block/block_radix_sort.cuh>
#endif

namespace milmer {

// A key whose unsigned order is the float order (with -0.0 == +0.0).
MILMER_HD inline unsigned topk_order_key(float v) {
  unsigned bits = 0;
  if (v != 0.0f) memcpy(&bits, &v, sizeof bits);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

}  // namespace milmer

namespace milmer::kernels {

template <int kThreads, int kItemsPerThread>
struct BlockTopK {
  static constexpr int kCapacity = kThreads * kItemsPerThread;
#if MILMER_TARGET_CUDA
  using Sort = cub::BlockRadixSort<unsigned, kThreads, kItemsPerThread, int>;
  using TempStorage = typename Sort::TempStorage;
#else
  struct TempStorage {};
#endif

  __device__ static void select_by_rank(const float* values, int n, int k, int* top_index) {
    for (int e = threadIdx.x; e < n; e += kThreads) {
      const unsigned key = topk_order_key(values[e]);
      int rank = 0;
      for (int j = 0; j < n; ++j) {
        const unsigned other = topk_order_key(values[j]);
        rank += other > key || (other == key && j < e);
      }
      if (rank < k) top_index[rank] = e;
    }
  }

  __device__ static void select(TempStorage& temp, const float* values, int n, int k,
                                int* top_index) {
#if MILMER_TARGET_CUDA
    unsigned keys[kItemsPerThread];
    int index[kItemsPerThread];
    for (int i = 0; i < kItemsPerThread; ++i) {
      const int e = threadIdx.x * kItemsPerThread + i;
      keys[i] = e < n ? topk_order_key(values[e]) : 0u;
      index[i] = e;
    }
    Sort(temp).SortDescending(keys, index);
    for (int i = 0; i < kItemsPerThread; ++i) {
      const int rank = threadIdx.x * kItemsPerThread + i;
      if (rank < k) top_index[rank] = index[i];
    }
#else
    (void)temp;
    select_by_rank(values, n, k, top_index);
#endif
  }
};

}  // namespace milmer::kernels
