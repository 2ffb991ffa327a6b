// Swin's data-movement kernels: the patch gather of the patch embedding, the zero padding of a
// token map to whole windows, and the 2x2 gather of patch merging; forward and backward each.
// None does arithmetic: each is a permutation (plus zeros) of its input, written with one
// thread per destination element, so every output has exactly one writer and backward needs
// no atomics.
//
// Math and layouts (row-major)
//   patch_gather   pixels (B, Cin, H, W) -> patches (B * Hp * Wp, Cin * P * P), Hp = ceil(H/P):
//                  patches[(b, i, j), (c, ky, kx)] = pixels[b, c, i*P + ky, j*P + kx], 0 outside
//                  the image (transformers pads the image right and bottom with zeros). The
//                  column order (c, ky, kx) is the flattened Conv2d weight (out, Cin, P, P), so
//                  the 4x4 stride-4 convolution is the GEMM patches @ weight^T + bias. Patches
//                  do not overlap: this is a permutation, not an im2col copy of shared pixels.
//   pad_map        inp (B, H, W, C) -> out (B, Hp, Wp, C) with zeros at y >= H or x >= W.
//                  backward: dinp = dout cropped (written).
//   merge_gather   inp (B, H, W, C) -> out (B, ceil(H/2) * ceil(W/2), 4C):
//                  out[b, (i, j), q*C + c] = inp[b, 2i + dy_q, 2j + dx_q, c] with quadrants
//                  q = 0..3 at (dy, dx) = (0,0), (1,0), (0,1), (1,1) (transformers' order:
//                  x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2]); 0 outside the
//                  map (odd sizes are zero-padded first, as transformers does).
//   Backward of each gather: the destination gradient read back at the same positions
//   (written; the padding's gradient is dropped).
//
// Launch shape: one thread per destination element, block 256, grid-stride over 1-D grid
// (at most 65535 * 8 blocks: device_common.hpp's launch_grid_stride). No shared memory.
// Minimum bytes moved: read the source once, write the destination once (padding zeros are
// writes only): pixel gather B*Cin*H*W*s read + B*Hp*Wp*Cin*P*P*s written; pad_map
// B*H*W*C*s + B*Hp*Wp*C*s; merge_gather B*H*W*C*s + B*ceil(H/2)*ceil(W/2)*4C*s.
#pragma once

#include <cstdint>

#include "milmer/context.hpp"
#include "milmer/kernels/device_common.hpp"
#include "milmer/platform.hpp"
#include "milmer/tensor.hpp"

namespace milmer::kernels {

template <class T>
__global__ void patch_gather_forward_kernel(T* patches, const T* pixels, int batch, int channels,
                                            int height, int width, int patch, int grid_h,
                                            int grid_w) {
  const std::int64_t k = std::int64_t{channels} * patch * patch;
  const std::int64_t n = std::int64_t{batch} * grid_h * grid_w * k;
  for (std::int64_t e = global_thread_index(); e < n; e += grid_thread_count()) {
    const std::int64_t token = e / k;
    const int col = static_cast<int>(e % k);
    const int c = col / (patch * patch), ky = (col / patch) % patch, kx = col % patch;
    const int j = static_cast<int>(token % grid_w), i = static_cast<int>((token / grid_w) % grid_h);
    const std::int64_t b = token / (std::int64_t{grid_w} * grid_h);
    const int y = i * patch + ky, x = j * patch + kx;
    patches[e] =
        (y < height && x < width) ? pixels[((b * channels + c) * height + y) * width + x] : T(0.0f);
  }
}

template <class T>
__global__ void patch_gather_backward_kernel(T* dpixels, const T* dpatches, int batch, int channels,
                                             int height, int width, int patch, int grid_h,
                                             int grid_w) {
  const std::int64_t n = std::int64_t{batch} * channels * height * width;
  const std::int64_t k = std::int64_t{channels} * patch * patch;
  for (std::int64_t e = global_thread_index(); e < n; e += grid_thread_count()) {
    const int x = static_cast<int>(e % width), y = static_cast<int>((e / width) % height);
    const int c = static_cast<int>((e / (std::int64_t{width} * height)) % channels);
    const std::int64_t b = e / (std::int64_t{width} * height * channels);
    const std::int64_t token = (b * grid_h + y / patch) * grid_w + x / patch;
    dpixels[e] = dpatches[token * k + (c * patch + y % patch) * patch + x % patch];
  }
}

// forward: out (B, Hp, Wp, C) from inp (B, H, W, C); backward: inp-shaped from out-shaped.
template <class T>
__global__ void pad_map_forward_kernel(T* out, const T* inp, int batch, int height, int width,
                                       int channels, int padded_height, int padded_width) {
  const std::int64_t n = std::int64_t{batch} * padded_height * padded_width * channels;
  for (std::int64_t e = global_thread_index(); e < n; e += grid_thread_count()) {
    const int c = static_cast<int>(e % channels);
    const std::int64_t t = e / channels;
    const int x = static_cast<int>(t % padded_width),
              y = static_cast<int>((t / padded_width) % padded_height);
    const std::int64_t b = t / (std::int64_t{padded_width} * padded_height);
    out[e] =
        (y < height && x < width) ? inp[((b * height + y) * width + x) * channels + c] : T(0.0f);
  }
}

template <class T>
__global__ void pad_map_backward_kernel(T* dinp, const T* dout, int batch, int height, int width,
                                        int channels, int padded_height, int padded_width) {
  const std::int64_t n = std::int64_t{batch} * height * width * channels;
  for (std::int64_t e = global_thread_index(); e < n; e += grid_thread_count()) {
    const int c = static_cast<int>(e % channels);
    const std::int64_t t = e / channels;
    const int x = static_cast<int>(t % width), y = static_cast<int>((t / width) % height);
    const std::int64_t b = t / (std::int64_t{width} * height);
    dinp[e] = dout[((b * padded_height + y) * padded_width + x) * channels + c];
  }
}

template <class T>
__global__ void merge_gather_forward_kernel(T* out, const T* inp, int batch, int height, int width,
                                            int channels) {
  const int h2 = (height + 1) / 2, w2 = (width + 1) / 2;
  const std::int64_t n = std::int64_t{batch} * h2 * w2 * 4 * channels;
  for (std::int64_t e = global_thread_index(); e < n; e += grid_thread_count()) {
    const int col = static_cast<int>(e % (4 * channels));
    const int q = col / channels, c = col % channels;
    const std::int64_t t = e / (4 * channels);
    const int j = static_cast<int>(t % w2), i = static_cast<int>((t / w2) % h2);
    const std::int64_t b = t / (std::int64_t{w2} * h2);
    const int y = 2 * i + (q & 1), x = 2 * j + (q >> 1);
    out[e] =
        (y < height && x < width) ? inp[((b * height + y) * width + x) * channels + c] : T(0.0f);
  }
}

template <class T>
__global__ void merge_gather_backward_kernel(T* dinp, const T* dout, int batch, int height,
                                             int width, int channels) {
  const int h2 = (height + 1) / 2, w2 = (width + 1) / 2;
  const std::int64_t n = std::int64_t{batch} * height * width * channels;
  for (std::int64_t e = global_thread_index(); e < n; e += grid_thread_count()) {
    const int c = static_cast<int>(e % channels);
    const std::int64_t t = e / channels;
    const int x = static_cast<int>(t % width), y = static_cast<int>((t / width) % height);
    const std::int64_t b = t / (std::int64_t{width} * height);
    const int q = (y & 1) + 2 * (x & 1);
    dinp[e] = dout[((b * h2 + y / 2) * w2 + x / 2) * 4 * channels + q * channels + c];
  }
}

}  // namespace milmer::kernels

namespace milmer {

namespace detail {
inline int positive_int(std::int64_t v, const char* op, const char* name) {
  MILMER_CHECK(v >= 1 && v <= 0x7fffffff, op, name, "an int in [1, 2^31)", str(v));
  return static_cast<int>(v);
}

// Launches a map kernel (dst, src, B, H, W, C, extra...) over n destination elements, the
// sizes those of the (B, H, W, C) map, each an int >= 1.
template <class T, class... Params, class... Extra>
void map_layout_launch(Context& ctx, const char* op, void (*kernel)(Params...), std::int64_t n,
                       T* dst, const T* src, const TensorView<const T>& map,
                       const Extra&... extra) {
  launch_grid_stride(ctx, n, kernel, dst, src, positive_int(map.dim(0), op, "batch"),
                     positive_int(map.dim(1), op, "H"), positive_int(map.dim(2), op, "W"),
                     positive_int(map.dim(3), op, "C"), extra...);
}
}  // namespace detail

namespace detail {
// Checks an image batch (B, Cin, H, W) and its patch matrix and launches `kernel` on them; the
// forward writes the patches, the backward the image gradient.
template <class T, class Kernel>
void patch_gather_launch(Context& ctx, const char* op, Kernel kernel, T* dst, const T* src,
                         const TensorView<const T>& image, const TensorView<const T>& patches,
                         const char* image_name, const char* patches_name, int patch,
                         std::int64_t n) {
  expect(image, op, image_name, {-1, -1, -1, -1});
  MILMER_CHECK(patch >= 1, op, "patch", ">= 1", str(patch));
  const int b = positive_int(image.dim(0), op, "batch");
  const int c = positive_int(image.dim(1), op, "channels");
  const int h = positive_int(image.dim(2), op, "height");
  const int w = positive_int(image.dim(3), op, "width");
  const int gh = (h + patch - 1) / patch, gw = (w + patch - 1) / patch;
  expect(patches, op, patches_name, {std::int64_t{b} * gh * gw, std::int64_t{c} * patch * patch});
  launch_grid_stride(ctx, n, kernel, dst, src, b, c, h, w, patch, gh, gw);
}
}  // namespace detail

// patches (B * ceil(H/P) * ceil(W/P), Cin * P * P) from pixels (B, Cin, H, W).
template <class T>
void patch_gather_forward(Context& ctx, TensorView<T> patches, InView<T> pixels, int patch) {
  detail::patch_gather_launch(ctx, "patch_gather_forward", kernels::patch_gather_forward_kernel<T>,
                              patches.data, pixels.data, pixels, TensorView<const T>(patches),
                              "pixels", "patches", patch, patches.numel());
}

// dpixels (B, Cin, H, W) written from dpatches.
template <class T>
void patch_gather_backward(Context& ctx, TensorView<T> dpixels, InView<T> dpatches, int patch) {
  detail::patch_gather_launch(ctx, "patch_gather_backward",
                              kernels::patch_gather_backward_kernel<T>, dpixels.data, dpatches.data,
                              TensorView<const T>(dpixels), dpatches, "dpixels", "dpatches", patch,
                              dpixels.numel());
}

namespace detail {
enum class MapLayout { pad, merge };
// Checks a (B, H, W, C) map and its padded (B, Hp, Wp, C) or merged (B, ceil(H/2) *
// ceil(W/2), 4C) form and launches `kernel` on them (padding adds Hp, Wp to its arguments);
// the forward writes the padded or merged tensor, the backward the map gradient.
template <MapLayout kLayout, class T, class Kernel>
void map_pair_launch(Context& ctx, const char* op, Kernel kernel, T* dst, const T* src,
                     const TensorView<const T>& map, const TensorView<const T>& other,
                     const char* map_name, const char* other_name, std::int64_t n) {
  expect(map, op, map_name, {-1, -1, -1, -1});
  if constexpr (kLayout == MapLayout::merge) {
    const std::int64_t h2 = (map.dim(1) + 1) / 2, w2 = (map.dim(2) + 1) / 2;
    expect(other, op, other_name, {map.dim(0), h2 * w2, 4 * map.dim(3)});
    map_layout_launch(ctx, op, kernel, n, dst, src, map);
  } else {
    expect(other, op, other_name, {map.dim(0), -1, -1, map.dim(3)});
    MILMER_CHECK(other.dim(1) >= map.dim(1) && other.dim(2) >= map.dim(2), op, other_name,
                 str("a map at least ", map.dim(1), " x ", map.dim(2)), other.shape_string());
    map_layout_launch(ctx, op, kernel, n, dst, src, map, positive_int(other.dim(1), op, "Hp"),
                      positive_int(other.dim(2), op, "Wp"));
  }
}
}  // namespace detail

// out (B, Hp, Wp, C) = inp (B, H, W, C) zero-padded; Hp >= H, Wp >= W.
template <class T>
void pad_map_forward(Context& ctx, TensorView<T> out, InView<T> inp) {
  detail::map_pair_launch<detail::MapLayout::pad>(
      ctx, "pad_map_forward", kernels::pad_map_forward_kernel<T>, out.data, inp.data, inp,
      TensorView<const T>(out), "inp", "out", out.numel());
}

// dinp (B, H, W, C) = dout (B, Hp, Wp, C) cropped; written.
template <class T>
void pad_map_backward(Context& ctx, TensorView<T> dinp, InView<T> dout) {
  detail::map_pair_launch<detail::MapLayout::pad>(
      ctx, "pad_map_backward", kernels::pad_map_backward_kernel<T>, dinp.data, dout.data,
      TensorView<const T>(dinp), dout, "dinp", "dout", dinp.numel());
}

// out (B, ceil(H/2) * ceil(W/2), 4C) from inp (B, H, W, C) in transformers' quadrant order.
template <class T>
void merge_gather_forward(Context& ctx, TensorView<T> out, InView<T> inp) {
  detail::map_pair_launch<detail::MapLayout::merge>(
      ctx, "merge_gather_forward", kernels::merge_gather_forward_kernel<T>, out.data, inp.data, inp,
      TensorView<const T>(out), "inp", "out", out.numel());
}

// dinp (B, H, W, C) written from dout (B, ceil(H/2) * ceil(W/2), 4C).
template <class T>
void merge_gather_backward(Context& ctx, TensorView<T> dinp, InView<T> dout) {
  detail::map_pair_launch<detail::MapLayout::merge>(
      ctx, "merge_gather_backward", kernels::merge_gather_backward_kernel<T>, dinp.data, dout.data,
      TensorView<const T>(dinp), dout, "dinp", "dout", dinp.numel());
}

}  // namespace milmer
