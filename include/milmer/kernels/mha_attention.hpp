// Multi-head attention core for short sequences (flash-attention style): the middle of
// torch.nn.MultiheadAttention(batch_first=True) between the packed in-projection and the
// out-projection, which the caller runs as GEMMs.
//
// Math, per sample b and head h (head_dim = D / heads, columns h*head_dim .. of each row):
//   S   = scale * q_h k_h^T                    (Lq x Lk), scale = 1 / sqrt(head_dim)
//   P   = softmax over keys (rows of S)
//   Pd  = P * keep / (1 - p)                   dropout on the probabilities, p = 0: Pd = P
//   out_h = Pd v_h                             heads concatenated: out is (B, Lq, D)
//   keep_ij = philox_uniform(seed, offset, ((b*heads + h)*Lq + i)*Lk + j) >= p
// The mask is a pure function of (seed, offset, b, h, i, j): backward regenerates it.
//
// Forward never writes S or P to global memory: a block keeps its query rows in shared
// memory, streams 32-key tiles of k and v through shared memory and keeps an online softmax
// (running max m, running sum l, rescaled accumulator) per row; it saves the per-row
// logsumexp lse = m + log(l) (B, heads, Lq) for backward.
//
// Backward recomputes P = exp(S - lse) instead of storing it. With dO = dout,
//   dPd = dO v^T, dP = dPd * keep / (1 - p), D_i = sum_j P_ij dP_ij = dO_i . out_i,
//   dS = P * (dP - D_i), dq = scale dS k, dk = scale dS^T q, dv = Pd^T dO.
// Two kernels, so that no gradient needs atomics (results are bit-reproducible in any
// thread order): dq walks the keys for a block of query rows (the forward's shape), dk/dv
// walk the queries for a tile of 32 keys. P is recomputed twice; with Lq, Lk ~ 100 that
// costs less than storing and re-reading a B x heads x Lq x Lk matrix.
//
// Layouts: q (B, Lq, D), k and v (B, Lk, D) with any batch and row strides (unit stride
// within a row), so self-attention reads them straight out of the packed in-projection
// output (B, L, 3D) — see mha_packed_qkv(). dq, dk, dv likewise (they may point into a
// packed (B, L, 3D) gradient buffer). out and dout: contiguous (B, Lq, D); lse: (B, heads, Lq).
//
// Launch shapes (128 threads = 4 warps; head_dim <= 32*C with C in {1, 2, 4}):
//   forward   grid (ceil(Lq/16), heads, B); a warp owns 4 query rows, a lane owns one key of
//             the tile for scores and dims lane + 32c of the accumulator;
//             shared 16*head_dim + 32*(head_dim+1) + 32*head_dim + 512 floats (<= 42 KB).
//   dq        grid (ceil(Lq/(4R)), heads, B), R = 4 rows per warp (2 when head_dim > 64);
//             shared 2*4R*head_dim + 64*(head_dim+1) + 128R floats (<= 42 KB).
//   dk, dv    grid (ceil(Lk/32), heads, B); query chunks of Q = 32 rows (8 when
//             head_dim > 64); a warp owns 8 keys x the dims lane + 32c;
//             shared 64*(head_dim+1) + 2Q*head_dim + 66Q floats (<= 43 KB).
// Minimum bytes moved (fp32): forward 4*(B*Lq*D*2 + B*Lk*D*2 + B*heads*Lq);
//   backward 4*(B*Lq*D*4 + B*Lk*D*4 + B*heads*Lq) (read q, out, dout, k, v, lse; write grads).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/rng.hpp"
#include "milmer/tensor.hpp"

namespace milmer {

// Sizes and element strides of one attention call. Strides of a (B, L, D) operand: batch,
// row (the column stride is 1). Heads are columns h*head_dim .. (h+1)*head_dim - 1.
struct MhaShape {
  int batch, lq, lk, heads, head_dim;
  std::int64_t q_batch, q_row, k_batch, k_row, v_batch, v_row;
};

struct MhaDropout {
  float p;  // probability of dropping; 0 disables
  std::uint64_t seed, offset;
};

MILMER_HD inline std::uint64_t mha_dropout_index(const MhaShape& s, int b, int h, int i, int j) {
  return ((static_cast<std::uint64_t>(b) * s.heads + h) * s.lq + i) * s.lk + j;
}

// The dropout factor of probability (b, h, i, j): 0 (dropped) or 1 / (1 - p) (kept).
MILMER_HD inline float mha_dropout_factor(const MhaDropout& d, const MhaShape& s, int b, int h,
                                          int i, int j) {
  if (d.p <= 0.0f) return 1.0f;
  const float u = philox_uniform(d.seed, d.offset, mha_dropout_index(s, b, h, i, j));
  return u >= d.p ? 1.0f / (1.0f - d.p) : 0.0f;
}

}  // namespace milmer

namespace milmer::kernels {

inline constexpr int kMhaThreads = 128;
inline constexpr int kMhaWarps = kMhaThreads / 32;
inline constexpr int kMhaKeyTile = 32;
inline constexpr int kMhaMaxHeadDim = 128;

// Rows per warp of the forward and dq kernels; rows per query chunk of the dk/dv kernel.
template <int kChunks>
inline constexpr int kMhaDqRowsPerWarp = kChunks == 4 ? 2 : 4;
inline constexpr int kMhaForwardRowsPerWarp = 4;
template <int kChunks>
inline constexpr int kMhaDkdvChunkRows = kChunks == 4 ? 8 : 32;

// Copies rows [row0, row0 + rows) of one head of a (B, L, D) operand into shared memory
// (row stride `ld` floats), zero-filling rows past `len`. Consecutive threads read
// consecutive elements of a row.
template <class T>
__device__ inline void mha_load_rows(float* dst, int ld, const T* src, std::int64_t src_row,
                                     int row0, int rows, int len, int head_dim) {
  for (int e = threadIdx.x; e < rows * head_dim; e += blockDim.x) {
    const int r = e / head_dim, d = e % head_dim;
    const int i = row0 + r;
    dst[r * ld + d] = i < len ? to_float(src[i * src_row + d]) : 0.0f;
  }
}

template <class T, int kChunks>
__global__ void __launch_bounds__(kMhaThreads)
    mha_attention_forward_kernel(T* out, float* lse, const T* q, const T* k, const T* v, MhaShape s,
                                 float scale, MhaDropout drop) {
  constexpr int kRows = kMhaForwardRowsPerWarp;
  constexpr int kBlockRows = kRows * kMhaWarps;
  MILMER_DYNAMIC_SHARED(float, smem);
  const int hd = s.head_dim, hdp = hd + 1;
  float* q_s = smem;                     // [kBlockRows][hd]
  float* k_s = q_s + kBlockRows * hd;    // [32][hdp]: lane j reads row j
  float* v_s = k_s + kMhaKeyTile * hdp;  // [32][hd]: lane reads dims lane + 32c
  float* p_s = v_s + kMhaKeyTile * hd;   // [warps][kRows][32]
  const int b = blockIdx.z, h = blockIdx.y, row0 = blockIdx.x * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const T* qb = q + b * s.q_batch + h * hd;
  const T* kb = k + b * s.k_batch + h * hd;
  const T* vb = v + b * s.v_batch + h * hd;

  mha_load_rows(q_s, hd, qb, s.q_row, row0, kBlockRows, s.lq, hd);

  float m[kRows], l[kRows], acc[kRows][kChunks];
  for (int r = 0; r < kRows; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    for (int c = 0; c < kChunks; ++c) acc[r][c] = 0.0f;
  }
  for (int j0 = 0; j0 < s.lk; j0 += kMhaKeyTile) {
    const int nkeys = s.lk - j0 < kMhaKeyTile ? s.lk - j0 : kMhaKeyTile;
    __syncthreads();  // the previous tile is consumed before it is overwritten
    mha_load_rows(k_s, hdp, kb, s.k_row, j0, kMhaKeyTile, s.lk, hd);
    mha_load_rows(v_s, hd, vb, s.v_row, j0, kMhaKeyTile, s.lk, hd);
    __syncthreads();
    for (int r = 0; r < kRows; ++r) {
      const int lr = warp * kRows + r, i = row0 + lr;
      if (i >= s.lq) break;  // warp-uniform
      float score = -INFINITY;
      if (lane < nkeys) {
        float dot = 0.0f;
        for (int d = 0; d < hd; ++d) dot += q_s[lr * hd + d] * k_s[lane * hdp + d];
        score = dot * scale;
      }
      const float m_new = fmaxf(m[r], warp_max(score));
      const float alpha = expf(m[r] - m_new);
      const float p = lane < nkeys ? expf(score - m_new) : 0.0f;
      l[r] = l[r] * alpha + p;  // per-lane partial sums; reduced once at the end
      p_s[lr * kMhaKeyTile + lane] =
          lane < nkeys ? p * mha_dropout_factor(drop, s, b, h, i, j0 + lane) : 0.0f;
      for (int c = 0; c < kChunks; ++c) acc[r][c] *= alpha;
      m[r] = m_new;
    }
    __syncwarp();
    // P V. (The dq kernel's dS K loop below has the same shape; a shared helper taking the
    // accumulators by reference or by value makes ptxas spill the dq kernel.)
    for (int r = 0; r < kRows; ++r) {
      const int lr = warp * kRows + r;
      if (row0 + lr >= s.lq) break;
      for (int j = 0; j < nkeys; ++j) {
        const float pj = p_s[lr * kMhaKeyTile + j];
        for (int c = 0; c < kChunks; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) acc[r][c] += pj * v_s[j * hd + d];
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    const int i = row0 + warp * kRows + r;
    if (i >= s.lq) break;
    const float sum = warp_sum(l[r]);
    const float inv = 1.0f / sum;
    T* orow = out + (static_cast<std::int64_t>(b) * s.lq + i) * s.heads * hd + h * hd;
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) orow[d] = from_float<T>(acc[r][c] * inv);
    }
    if (lane == 0) lse[(static_cast<std::int64_t>(b) * s.heads + h) * s.lq + i] = m[r] + logf(sum);
  }
}

// D_i = dout_i . out_i for one head, by a whole warp (lanes over dims).
template <class T>
__device__ inline float mha_row_delta(const T* dout_row, const T* out_row, int hd) {
  float part = 0.0f;
  for (int d = threadIdx.x % 32; d < hd; d += 32)
    part += to_float(dout_row[d]) * to_float(out_row[d]);
  return warp_sum(part);
}

template <class T, int kChunks>
__global__ void __launch_bounds__(kMhaThreads)
    mha_attention_backward_dq_kernel(T* dq, std::int64_t dq_batch, std::int64_t dq_row,
                                     const T* dout, const T* q, const T* k, const T* v,
                                     const T* out, const float* lse, MhaShape s, float scale,
                                     MhaDropout drop) {
  constexpr int kRows = kMhaDqRowsPerWarp<kChunks>;
  constexpr int kBlockRows = kRows * kMhaWarps;
  MILMER_DYNAMIC_SHARED(float, smem);
  const int hd = s.head_dim, hdp = hd + 1;
  float* q_s = smem;                      // [kBlockRows][hd]
  float* do_s = q_s + kBlockRows * hd;    // [kBlockRows][hd]
  float* k_s = do_s + kBlockRows * hd;    // [32][hdp]
  float* v_s = k_s + kMhaKeyTile * hdp;   // [32][hdp]
  float* ds_s = v_s + kMhaKeyTile * hdp;  // [warps][kRows][32]
  const int b = blockIdx.z, h = blockIdx.y, row0 = blockIdx.x * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t o_row = static_cast<std::int64_t>(s.heads) * hd;
  const T* ob = out + static_cast<std::int64_t>(b) * s.lq * o_row + h * hd;
  const T* dob = dout + static_cast<std::int64_t>(b) * s.lq * o_row + h * hd;
  const T* kb = k + b * s.k_batch + h * hd;
  const T* vb = v + b * s.v_batch + h * hd;

  mha_load_rows(q_s, hd, q + b * s.q_batch + h * hd, s.q_row, row0, kBlockRows, s.lq, hd);
  mha_load_rows(do_s, hd, dob, o_row, row0, kBlockRows, s.lq, hd);
  float row_lse[kRows], delta[kRows], acc[kRows][kChunks];
  for (int r = 0; r < kRows; ++r) {
    const int i = row0 + warp * kRows + r;
    row_lse[r] = i < s.lq ? lse[(static_cast<std::int64_t>(b) * s.heads + h) * s.lq + i] : 0.0f;
    delta[r] = i < s.lq ? mha_row_delta(dob + i * o_row, ob + i * o_row, hd) : 0.0f;
    for (int c = 0; c < kChunks; ++c) acc[r][c] = 0.0f;
  }
  for (int j0 = 0; j0 < s.lk; j0 += kMhaKeyTile) {
    const int nkeys = s.lk - j0 < kMhaKeyTile ? s.lk - j0 : kMhaKeyTile;
    __syncthreads();
    mha_load_rows(k_s, hdp, kb, s.k_row, j0, kMhaKeyTile, s.lk, hd);
    mha_load_rows(v_s, hdp, vb, s.v_row, j0, kMhaKeyTile, s.lk, hd);
    __syncthreads();
    for (int r = 0; r < kRows; ++r) {
      const int lr = warp * kRows + r, i = row0 + lr;
      if (i >= s.lq) break;
      float dscore = 0.0f;
      if (lane < nkeys) {
        float qk = 0.0f, dov = 0.0f;
        for (int d = 0; d < hd; ++d) {
          qk += q_s[lr * hd + d] * k_s[lane * hdp + d];
          dov += do_s[lr * hd + d] * v_s[lane * hdp + d];
        }
        const float p = expf(qk * scale - row_lse[r]);
        const float dp = dov * mha_dropout_factor(drop, s, b, h, i, j0 + lane);
        dscore = p * (dp - delta[r]);
      }
      ds_s[lr * kMhaKeyTile + lane] = dscore;
    }
    __syncwarp();
    for (int r = 0; r < kRows; ++r) {
      const int lr = warp * kRows + r;
      if (row0 + lr >= s.lq) break;
      for (int j = 0; j < nkeys; ++j) {
        const float dsj = ds_s[lr * kMhaKeyTile + j];
        for (int c = 0; c < kChunks; ++c) {
          const int d = lane + 32 * c;
          if (d < hd) acc[r][c] += dsj * k_s[j * hdp + d];
        }
      }
    }
  }
  for (int r = 0; r < kRows; ++r) {
    const int i = row0 + warp * kRows + r;
    if (i >= s.lq) break;
    T* row = dq + b * dq_batch + i * dq_row + h * hd;
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) row[d] = from_float<T>(acc[r][c] * scale);
    }
  }
}

template <class T, int kChunks>
__global__ void __launch_bounds__(kMhaThreads)
    mha_attention_backward_dkdv_kernel(T* dk, std::int64_t dk_batch, std::int64_t dk_row, T* dv,
                                       std::int64_t dv_batch, std::int64_t dv_row, const T* dout,
                                       const T* q, const T* k, const T* v, const T* out,
                                       const float* lse, MhaShape s, float scale, MhaDropout drop) {
  constexpr int kChunkRows = kMhaDkdvChunkRows<kChunks>;
  constexpr int kKeysPerWarp = kMhaKeyTile / kMhaWarps;
  MILMER_DYNAMIC_SHARED(float, smem);
  const int hd = s.head_dim, hdp = hd + 1;
  float* k_s = smem;                               // [32][hdp]
  float* v_s = k_s + kMhaKeyTile * hdp;            // [32][hdp]
  float* q_s = v_s + kMhaKeyTile * hdp;            // [kChunkRows][hd]
  float* do_s = q_s + kChunkRows * hd;             // [kChunkRows][hd]
  float* pd_s = do_s + kChunkRows * hd;            // [kChunkRows][32]: dropped probabilities
  float* ds_s = pd_s + kChunkRows * kMhaKeyTile;   // [kChunkRows][32]: score gradients
  float* lse_s = ds_s + kChunkRows * kMhaKeyTile;  // [kChunkRows]
  float* delta_s = lse_s + kChunkRows;             // [kChunkRows]
  const int b = blockIdx.z, h = blockIdx.y, j0 = blockIdx.x * kMhaKeyTile;
  const int nkeys = s.lk - j0 < kMhaKeyTile ? s.lk - j0 : kMhaKeyTile;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t o_row = static_cast<std::int64_t>(s.heads) * hd;
  const T* ob = out + static_cast<std::int64_t>(b) * s.lq * o_row + h * hd;
  const T* dob = dout + static_cast<std::int64_t>(b) * s.lq * o_row + h * hd;
  const T* qb = q + b * s.q_batch + h * hd;
  const float* lseb = lse + (static_cast<std::int64_t>(b) * s.heads + h) * s.lq;

  mha_load_rows(k_s, hdp, k + b * s.k_batch + h * hd, s.k_row, j0, kMhaKeyTile, s.lk, hd);
  mha_load_rows(v_s, hdp, v + b * s.v_batch + h * hd, s.v_row, j0, kMhaKeyTile, s.lk, hd);
  float dk_acc[kKeysPerWarp][kChunks], dv_acc[kKeysPerWarp][kChunks];
  for (int e = 0; e < kKeysPerWarp; ++e)
    for (int c = 0; c < kChunks; ++c) dk_acc[e][c] = dv_acc[e][c] = 0.0f;

  for (int i0 = 0; i0 < s.lq; i0 += kChunkRows) {
    const int nrows = s.lq - i0 < kChunkRows ? s.lq - i0 : kChunkRows;
    __syncthreads();  // the previous chunk is consumed before it is overwritten
    mha_load_rows(q_s, hd, qb, s.q_row, i0, kChunkRows, s.lq, hd);
    mha_load_rows(do_s, hd, dob, o_row, i0, kChunkRows, s.lq, hd);
    for (int r = warp; r < nrows; r += kMhaWarps) {
      const float delta = mha_row_delta(dob + (i0 + r) * o_row, ob + (i0 + r) * o_row, hd);
      if (lane == 0) {
        delta_s[r] = delta;
        lse_s[r] = lseb[i0 + r];
      }
    }
    __syncthreads();
    // Scores: a lane owns key j0 + lane, a warp every fourth row of the chunk.
    for (int r = warp; r < kChunkRows; r += kMhaWarps) {
      float pd = 0.0f, dscore = 0.0f;
      if (r < nrows && lane < nkeys) {
        float qk = 0.0f, dov = 0.0f;
        for (int d = 0; d < hd; ++d) {
          qk += q_s[r * hd + d] * k_s[lane * hdp + d];
          dov += do_s[r * hd + d] * v_s[lane * hdp + d];
        }
        const float p = expf(qk * scale - lse_s[r]);
        const float factor = mha_dropout_factor(drop, s, b, h, i0 + r, j0 + lane);
        pd = p * factor;
        dscore = p * (dov * factor - delta_s[r]);
      }
      pd_s[r * kMhaKeyTile + lane] = pd;
      ds_s[r * kMhaKeyTile + lane] = dscore;
    }
    __syncthreads();
    // Accumulation: a warp owns keys warp*8 .. warp*8 + 7, a lane dims lane + 32c.
    for (int r = 0; r < nrows; ++r) {
      float q_r[kChunks], do_r[kChunks];
      for (int c = 0; c < kChunks; ++c) {
        const int d = lane + 32 * c;
        q_r[c] = d < hd ? q_s[r * hd + d] : 0.0f;
        do_r[c] = d < hd ? do_s[r * hd + d] : 0.0f;
      }
      for (int e = 0; e < kKeysPerWarp; ++e) {
        const int j = warp * kKeysPerWarp + e;
        const float pd = pd_s[r * kMhaKeyTile + j], dscore = ds_s[r * kMhaKeyTile + j];
        for (int c = 0; c < kChunks; ++c) {
          dv_acc[e][c] += pd * do_r[c];
          dk_acc[e][c] += dscore * q_r[c];
        }
      }
    }
  }
  for (int e = 0; e < kKeysPerWarp; ++e) {
    const int j = warp * kKeysPerWarp + e;
    if (j >= nkeys) break;
    T* dk_dst = dk + b * dk_batch + (j0 + j) * dk_row + h * hd;
    T* dv_dst = dv + b * dv_batch + (j0 + j) * dv_row + h * hd;
    for (int c = 0; c < kChunks; ++c) {
      const int d = lane + 32 * c;
      if (d < hd) {
        dk_dst[d] = from_float<T>(dk_acc[e][c] * scale);
        dv_dst[d] = from_float<T>(dv_acc[e][c]);
      }
    }
  }
}

}  // namespace milmer::kernels

namespace milmer {

// q, k, v views of a packed in-projection output (B, L, 3D) (self-attention): no copy.
template <class T>
struct MhaPackedViews {
  TensorView<T> q, k, v;
};
template <class T>
MhaPackedViews<T> mha_packed_qkv(T* qkv, std::int64_t batch, std::int64_t len, std::int64_t dim) {
  MhaPackedViews<T> r;
  TensorView<T>* parts[3] = {&r.q, &r.k, &r.v};
  for (int p = 0; p < 3; ++p) {
    *parts[p] = view(qkv + p * dim, {batch, len, dim});
    parts[p]->strides = {len * 3 * dim, 3 * dim, 1};
  }
  return r;
}

namespace detail {

// A (B, L, D) operand with any batch and row strides (unit column stride, rows that do not
// overlap each other within a sample).
template <class T>
void mha_expect_rows(const TensorView<T>& t, const char* op, const char* name, std::int64_t b,
                     std::int64_t len, std::int64_t dim) {
  bool ok = t.rank == 3 && t.shape[0] >= 1 && t.shape[1] >= 1 && t.shape[2] >= 1 &&
            (b < 0 || t.shape[0] == b) && (len < 0 || t.shape[1] == len) &&
            (dim < 0 || t.shape[2] == dim);
  MILMER_CHECK(ok, op, name, str("shape ", dims_string({b, len, dim})),
               str("shape ", t.shape_string()));
  MILMER_CHECK(t.data != nullptr, op, name, "a non-null pointer", "nullptr");
  MILMER_CHECK(t.strides[2] == 1 && t.strides[1] >= t.shape[2] &&
                   (t.shape[0] == 1 || t.strides[0] >= t.shape[1] * t.strides[1]),
               op, name, "unit column stride, row stride >= D, batch stride >= L * row stride",
               str("strides (", t.strides[0], ", ", t.strides[1], ", ", t.strides[2], ")"));
}

inline MhaShape mha_shape(const char* op, std::int64_t batch, std::int64_t lq, std::int64_t lk,
                          std::int64_t dim, int heads) {
  MILMER_CHECK(heads >= 1 && dim % heads == 0, op, "heads", str("a divisor of D = ", dim),
               std::to_string(heads));
  MILMER_CHECK(dim / heads <= kernels::kMhaMaxHeadDim, op, "heads",
               str("head_dim = D / heads <= ", kernels::kMhaMaxHeadDim),
               str(heads, " heads (head_dim ", dim / heads, ")"));
  MILMER_CHECK(batch <= 65535 && heads <= 65535, op, "q", "batch and heads <= 65535",
               str("batch ", batch, ", heads ", heads));
  MILMER_CHECK(lq < (1 << 30) && lk < (1 << 30) && batch * lq * dim < (std::int64_t{1} << 31) &&
                   batch * lk * dim < (std::int64_t{1} << 31),
               op, "q", "fewer than 2^31 elements per operand",
               str("B ", batch, ", Lq ", lq, ", Lk ", lk));
  MhaShape s{};
  s.batch = static_cast<int>(batch);
  s.lq = static_cast<int>(lq);
  s.lk = static_cast<int>(lk);
  s.heads = heads;
  s.head_dim = static_cast<int>(dim / heads);
  return s;
}

inline void mha_check_dropout(const char* op, float p) {
  MILMER_CHECK(p >= 0.0f && p < 1.0f, op, "dropout_p", "0 <= p < 1", std::to_string(p));
}

// The checks forward and backward share on q, k, v and heads; the call's sizes and strides.
template <class T>
MhaShape mha_operands(const char* op, const TensorView<const T>& q, const TensorView<const T>& k,
                      const TensorView<const T>& v, int heads) {
  mha_expect_rows(q, op, "q", -1, -1, -1);
  const std::int64_t batch = q.dim(0), lq = q.dim(1), dim = q.dim(2);
  mha_expect_rows(k, op, "k", batch, -1, dim);
  const std::int64_t lk = k.dim(1);
  mha_expect_rows(v, op, "v", batch, lk, dim);
  MhaShape s = mha_shape(op, batch, lq, lk, dim, heads);
  s.q_batch = q.strides[0], s.q_row = q.strides[1];
  s.k_batch = k.strides[0], s.k_row = k.strides[1];
  s.v_batch = v.strides[0], s.v_row = v.strides[1];
  return s;
}

}  // namespace detail

// out (B, Lq, D) contiguous, lse (B, heads, Lq): forward; q (B, Lq, D), k, v (B, Lk, D) with
// any row/batch strides. dropout_p = 0 (evaluation) disables dropout; (seed, offset) pick
// the mask, and backward must get the same triple.
template <class T>
void mha_attention_forward(Context& ctx, TensorView<T> out, TensorView<float> lse,
                           TensorView<const T> q, TensorView<const T> k, TensorView<const T> v,
                           int heads, float dropout_p = 0.0f, std::uint64_t seed = 0,
                           std::uint64_t offset = 0) {
  constexpr const char* op = "mha_attention_forward";
  const MhaShape s = detail::mha_operands(op, q, k, v, heads);
  const std::int64_t batch = s.batch, lq = s.lq, dim = q.dim(2);
  expect(out, op, "out", {batch, lq, dim});
  expect(lse, op, "lse", {batch, heads, lq});
  detail::mha_check_dropout(op, dropout_p);

  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const MhaDropout drop{dropout_p, seed, offset};
  constexpr int kBlockRows = kernels::kMhaForwardRowsPerWarp * kernels::kMhaWarps;
  const dim3 grid((s.lq + kBlockRows - 1) / kBlockRows, s.heads, s.batch);
  const std::size_t shared =
      sizeof(float) * (kBlockRows * s.head_dim + kernels::kMhaKeyTile * (s.head_dim + 1) +
                       kernels::kMhaKeyTile * s.head_dim + kBlockRows * kernels::kMhaKeyTile);
  detail::dispatch_head_chunks(s.head_dim, [&](auto chunks) {
    launch(kernels::mha_attention_forward_kernel<T, decltype(chunks)::value>, grid,
           dim3(kernels::kMhaThreads), shared, ctx.stream(), out.data, lse.data, q.data, k.data,
           v.data, s, scale, drop);
  });
}

// dq, dk, dv (written, not accumulated; same shapes as q, k, v, any row/batch strides, e.g.
// views into a packed (B, L, 3D) gradient) from dout (B, Lq, D) contiguous, the forward's
// inputs, its output `out` and its lse, with the forward's dropout triple.
template <class T>
void mha_attention_backward(Context& ctx, TensorView<T> dq, TensorView<T> dk, TensorView<T> dv,
                            TensorView<const T> dout, TensorView<const T> q, TensorView<const T> k,
                            TensorView<const T> v, TensorView<const T> out,
                            TensorView<const float> lse, int heads, float dropout_p = 0.0f,
                            std::uint64_t seed = 0, std::uint64_t offset = 0) {
  constexpr const char* op = "mha_attention_backward";
  const MhaShape s = detail::mha_operands(op, q, k, v, heads);
  const std::int64_t batch = s.batch, lq = s.lq, lk = s.lk, dim = q.dim(2);
  expect(dout, op, "dout", {batch, lq, dim});
  expect(out, op, "out", {batch, lq, dim});
  expect(lse, op, "lse", {batch, heads, lq});
  detail::mha_expect_rows(dq, op, "dq", batch, lq, dim);
  detail::mha_expect_rows(dk, op, "dk", batch, lk, dim);
  detail::mha_expect_rows(dv, op, "dv", batch, lk, dim);
  detail::mha_check_dropout(op, dropout_p);

  const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
  const MhaDropout drop{dropout_p, seed, offset};
  const int hd = s.head_dim;
  detail::dispatch_head_chunks(hd, [&](auto chunks) {
    constexpr int kChunks = decltype(chunks)::value;
    constexpr int kDqRows = kernels::kMhaDqRowsPerWarp<kChunks> * kernels::kMhaWarps;
    constexpr int kTile = kernels::kMhaKeyTile;
    const std::size_t dq_shared =
        sizeof(float) * (2 * kDqRows * hd + 2 * kTile * (hd + 1) + kDqRows * kTile);
    launch(kernels::mha_attention_backward_dq_kernel<T, kChunks>,
           dim3((s.lq + kDqRows - 1) / kDqRows, s.heads, s.batch), dim3(kernels::kMhaThreads),
           dq_shared, ctx.stream(), dq.data, dq.strides[0], dq.strides[1], dout.data, q.data,
           k.data, v.data, out.data, lse.data, s, scale, drop);
    constexpr int kChunkRows = kernels::kMhaDkdvChunkRows<kChunks>;
    const std::size_t dkdv_shared = sizeof(float) * (2 * kTile * (hd + 1) + 2 * kChunkRows * hd +
                                                     2 * kChunkRows * kTile + 2 * kChunkRows);
    launch(kernels::mha_attention_backward_dkdv_kernel<T, kChunks>,
           dim3((s.lk + kTile - 1) / kTile, s.heads, s.batch), dim3(kernels::kMhaThreads),
           dkdv_shared, ctx.stream(), dk.data, dk.strides[0], dk.strides[1], dv.data, dv.strides[0],
           dv.strides[1], dout.data, q.data, k.data, v.data, out.data, lse.data, s, scale, drop);
  });
}

}  // namespace milmer
