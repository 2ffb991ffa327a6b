// Fused softmax + cross-entropy: per-sample loss, batch-mean loss and the logits gradient in
// one pass over the logits (training), or loss and probabilities (evaluation).
//
// Math, for row b of logits x (B x C) with label y_b in [0, C):
//   m_b = max_j x_bj,  s_b = sum_j exp(x_bj - m_b)               (max-subtracted: stable)
//   loss_b = (m_b - x_by) + log(s_b)           = -log softmax(x_b)_y
//   loss_mean = (sum_b loss_b) / B                                  (one scalar, on device)
//   p_bj = exp(x_bj - m_b) / s_b
//   dlogits_bj = (p_bj - [j == y_b]) * dloss / B   (written, =: the gradient of
//                                                   dloss * loss_mean; dloss defaults to 1)
// softmax_ce_forward_only writes p_bj instead of the gradient.
//
// Layouts: logits, dlogits, probs (B, C) row-major contiguous; labels (B) int32 on device;
// losses (B) float; loss_mean (1) float. dlogits (or probs) may be the memory of logits: each
// element is read and then written by the same thread, after the row's max and sum are known.
//
// Launch shape:
//   softmax_ce_rows_kernel: one warp per row, block 256 threads (8 rows), grid ceil(B / 8),
//     no shared memory. Each lane strides over the row's columns three times (max, sum of
//     exponentials, write), the warp combines with butterfly shuffles (warp_max, warp_sum),
//     so every lane holds the same m and s and the result does not depend on thread order.
//   mean_loss_kernel: one block of 256 threads sums the B losses in a fixed order (strided
//     per-thread sums, then device_common.hpp's block_sum tree over 256 floats), so the mean
//     is bit-reproducible (no float atomics).
// Minimum traffic: read B*C logits + B labels, write B*C gradient (or probabilities) + B
// losses + 1 mean: about 8 B C bytes for float storage.
//
// Labels out of range. The launcher cannot read device labels without a copy, so:
//   - with host labels (the batcher has them anyway), they are checked before the launch;
//   - otherwise the kernel writes NaN as that sample's loss and gradient row, which makes the
//     mean NaN; the launcher reads back the mean (4 bytes and a stream synchronisation) and,
//     only when it is NaN, copies the labels to find the offending one. Either way a bad label
//     throws: "softmax_ce_forward: argument 'labels': expected class indices in [0, C), got
//     labels[i] = v". A NaN mean with valid labels (diverged logits) is returned as is.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/error.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

inline constexpr int kSoftmaxCeRowsPerBlock = 8;  // one warp per row
inline constexpr int kMeanLossThreads = 256;

// out = (softmax - onehot) * grad_scale when kGradient, else softmax. losses[b] = loss_b.
template <class T, bool kGradient>
__global__ void softmax_ce_rows_kernel(T* out, float* losses, const T* logits, const int* labels,
                                       int rows, int classes, float grad_scale) {
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kSoftmaxCeRowsPerBlock + threadIdx.x / 32;
  if (row >= rows) return;  // whole warps leave together: rows are per warp
  const T* x = logits + static_cast<std::int64_t>(row) * classes;
  T* o = out + static_cast<std::int64_t>(row) * classes;
  const int label = labels[row];
  const bool label_ok = label >= 0 && label < classes;
  // Read before the warp's shuffles: with out == logits, other lanes write the row after them.
  const float label_logit = label_ok ? to_float(x[label]) : 0.0f;

  float m = -INFINITY;
  for (int j = lane; j < classes; j += 32) m = fmaxf(m, to_float(x[j]));
  m = warp_max(m);
  float s = 0.0f;
  for (int j = lane; j < classes; j += 32) s += expf(to_float(x[j]) - m);
  s = warp_sum(s);

  if (lane == 0) losses[row] = label_ok ? (m - label_logit) + logf(s) : NAN;

  // With out == logits, the lane that owns the label column overwrites x[label], which every
  // lane read above. A shuffle orders execution, not memory: __syncwarp makes those reads
  // happen before the writes below.
  __syncwarp();
  for (int j = lane; j < classes; j += 32) {
    const float p = expf(to_float(x[j]) - m) / s;
    float v;
    if constexpr (kGradient) {
      v = label_ok ? (p - (j == label ? 1.0f : 0.0f)) * grad_scale : NAN;
    } else {
      v = p;
    }
    o[j] = from_float<T>(v);
  }
}

// loss_mean[0] = sum(losses) / rows, in a fixed order. One block of kThreads (a power of 2).
template <int kThreads>
__global__ void mean_loss_kernel(float* loss_mean, const float* losses, int rows) {
  MILMER_SHARED(float, partial, [kThreads]);
  const float total = block_sum_of(losses, rows, partial);
  if (threadIdx.x == 0) loss_mean[0] = total / static_cast<float>(rows);
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {

inline std::string label_range(std::int64_t classes) {
  return str("class indices in [0, ", classes, ")");
}

template <class T, bool kGradient>
void softmax_ce_launch(const char* op, Context& ctx, TensorView<float> loss_mean,
                       TensorView<float> losses, TensorView<T> out, TensorView<const T> logits,
                       TensorView<const int> labels, float grad_scale,
                       std::span<const int> host_labels) {
  expect(logits, op, "logits", {-1, -1});
  const std::int64_t rows = logits.shape[0], classes = logits.shape[1];
  MILMER_CHECK(rows <= INT32_MAX / 2 && classes <= INT32_MAX, op, "logits",
               str("at most ", INT32_MAX / 2, " rows and ", INT32_MAX, " classes"),
               str("shape ", logits.shape_string()));
  expect(out, op, kGradient ? "dlogits" : "probs", {rows, classes});
  expect(labels, op, "labels", {rows});
  expect(losses, op, "losses", {rows});
  expect(loss_mean, op, "loss_mean", {1});
  if (!host_labels.empty()) {
    MILMER_CHECK(static_cast<std::int64_t>(host_labels.size()) == rows, op, "host_labels",
                 str(rows, " labels (logits' rows)"), str(host_labels.size(), " labels"));
    for (std::size_t i = 0; i < host_labels.size(); ++i)
      MILMER_CHECK(host_labels[i] >= 0 && host_labels[i] < classes, op, "labels",
                   label_range(classes), str("labels[", i, "] = ", host_labels[i]));
  }
  const int r = static_cast<int>(rows), c = static_cast<int>(classes);
  launch(kernels::softmax_ce_rows_kernel<T, kGradient>,
         dim3(static_cast<unsigned>((r + kernels::kSoftmaxCeRowsPerBlock - 1) /
                                    kernels::kSoftmaxCeRowsPerBlock)),
         dim3(32 * kernels::kSoftmaxCeRowsPerBlock), 0, ctx.stream(), out.data, losses.data,
         logits.data, labels.data, r, c, grad_scale);
  launch(kernels::mean_loss_kernel<kernels::kMeanLossThreads>, dim3(1),
         dim3(kernels::kMeanLossThreads), 0, ctx.stream(), loss_mean.data,
         static_cast<const float*>(losses.data), r);
  if (!host_labels.empty()) return;

  float mean = 0.0f;
  MILMER_CUDA_CHECK(
      cudaMemcpyAsync(&mean, loss_mean.data, sizeof(float), cudaMemcpyDeviceToHost, ctx.stream()));
  MILMER_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  if (!std::isnan(mean)) return;
  std::vector<int> h(static_cast<std::size_t>(rows));
  MILMER_CUDA_CHECK(cudaMemcpyAsync(h.data(), labels.data, h.size() * sizeof(int),
                                    cudaMemcpyDeviceToHost, ctx.stream()));
  MILMER_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
  for (std::size_t i = 0; i < h.size(); ++i)
    MILMER_CHECK(h[i] >= 0 && h[i] < classes, op, "labels", label_range(classes),
                 str("labels[", i, "] = ", h[i]));
}

}  // namespace detail

// Training: losses (B) and loss_mean (1) of softmax cross-entropy, and dlogits (B, C) =
// (softmax(logits) - onehot(labels)) * dloss / B. host_labels (optional, the same B labels in
// host memory) lets the labels be checked before the launch instead of by a read-back.
template <class T>
void softmax_ce_forward(Context& ctx, TensorView<float> loss_mean, TensorView<float> losses,
                        TensorView<T> dlogits, InView<T> logits, TensorView<const int> labels,
                        float dloss = 1.0f, std::span<const int> host_labels = {}) {
  constexpr const char* op = "softmax_ce_forward";
  MILMER_CHECK(std::isfinite(dloss), op, "dloss", "a finite scale", str(dloss));
  const float grad_scale =
      logits.rank == 2 && logits.shape[0] > 0 ? dloss / static_cast<float>(logits.shape[0]) : dloss;
  detail::softmax_ce_launch<T, true>(op, ctx, loss_mean, losses, dlogits, logits, labels,
                                     grad_scale, host_labels);
}

// Evaluation: losses, loss_mean and probs (B, C) = softmax(logits); no gradient.
template <class T>
void softmax_ce_forward_only(Context& ctx, TensorView<float> loss_mean, TensorView<float> losses,
                             TensorView<T> probs, InView<T> logits, TensorView<const int> labels,
                             std::span<const int> host_labels = {}) {
  detail::softmax_ce_launch<T, false>("softmax_ce_forward_only", ctx, loss_mean, losses, probs,
                                      logits, labels, 1.0f, host_labels);
}

}  // namespace milmer
