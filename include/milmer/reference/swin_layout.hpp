// The reference of Swin's data-movement kernels (include/milmer/kernels/swin_layout.hpp):
// plain loops that only move values, so the kernels must equal them exactly.
#pragma once

#include <cstddef>
#include <vector>

namespace milmer::reference {

// Patch embedding's gather: pixels (B, C, H, W) -> patches (B, gh, gw, C*P*P), the map
// zero-padded to multiples of the patch P.
template <class S>
std::vector<S> patch_gather(const std::vector<S>& px, int B, int C, int H, int W, int P) {
  const int gh = (H + P - 1) / P, gw = (W + P - 1) / P;
  std::vector<S> out(static_cast<std::size_t>(B) * gh * gw * C * P * P, S(0));
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < gh; ++i)
      for (int j = 0; j < gw; ++j)
        for (int c = 0; c < C; ++c)
          for (int ky = 0; ky < P; ++ky)
            for (int kx = 0; kx < P; ++kx) {
              const int y = i * P + ky, x = j * P + kx;
              if (y < H && x < W)
                out[((std::size_t(b) * gh + i) * gw + j) * C * P * P + (c * P + ky) * P + kx] =
                    px[((std::size_t(b) * C + c) * H + y) * W + x];
            }
  return out;
}

// Patch merging's gather: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), 4C), the 2 x 2
// neighbours in transformers' order (0,0), (1,0), (0,1), (1,1), zero-padded.
template <class S>
std::vector<S> patch_merge(const std::vector<S>& x, int B, int H, int W, int C) {
  const int h2 = (H + 1) / 2, w2 = (W + 1) / 2;
  std::vector<S> out(static_cast<std::size_t>(B) * h2 * w2 * 4 * C, S(0));
  const int dy[4] = {0, 1, 0, 1}, dx[4] = {0, 0, 1, 1};
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < h2; ++i)
      for (int j = 0; j < w2; ++j)
        for (int q = 0; q < 4; ++q)
          for (int c = 0; c < C; ++c) {
            const int y = 2 * i + dy[q], xx = 2 * j + dx[q];
            if (y < H && xx < W)
              out[((std::size_t(b) * h2 + i) * w2 + j) * 4 * C + q * C + c] =
                  x[((std::size_t(b) * H + y) * W + xx) * C + c];
          }
  return out;
}

}  // namespace milmer::reference
