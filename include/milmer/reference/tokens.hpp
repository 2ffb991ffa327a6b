// The float64 reference of the fusion transformer's token assembly (include/milmer/kernels/
// tokens.hpp): plain loops templated on the scalar type (double: the reference; float: the
// plain fp32 baseline of check.hpp's rule).
#pragma once

#include <cstddef>
#include <vector>

namespace milmer::reference {

// Per sample the sequence is [CLS, visual tokens, EEG tokens], each of width `width`.
struct TokenAssemblySizes {
  int batch, visual, eeg, width;
  constexpr int sequence() const { return 1 + visual + eeg; }
  constexpr std::size_t tokens() const {
    return static_cast<std::size_t>(batch) * sequence() * width;
  }
  constexpr std::size_t visual_size() const {
    return static_cast<std::size_t>(batch) * visual * width;
  }
  constexpr std::size_t eeg_size() const { return static_cast<std::size_t>(batch) * eeg * width; }
};

template <class S>
struct TokenAssemblyParams {
  std::vector<S> visual, eeg, cls, type_embed, pos_visual, pos_eeg;
};

// tools/milmer_reference.py, Fusion.forward: cat(cls, visual + types[0] + pos_visual,
// eeg + types[1] + pos_eeg), the additions left to right.
template <class S>
std::vector<S> token_assembly_forward(const TokenAssemblySizes& z,
                                      const TokenAssemblyParams<S>& q) {
  const int D = z.width;
  std::vector<S> x(z.tokens());
  for (int b = 0; b < z.batch; ++b) {
    S* xb = &x[static_cast<std::size_t>(b) * z.sequence() * D];
    for (int c = 0; c < D; ++c) xb[c] = q.cls[c];
    for (int i = 0; i < z.visual; ++i)
      for (int c = 0; c < D; ++c)
        xb[(1 + i) * D + c] = q.visual[(static_cast<std::size_t>(b) * z.visual + i) * D + c] +
                              q.type_embed[c] + q.pos_visual[i * D + c];
    for (int j = 0; j < z.eeg; ++j)
      for (int c = 0; c < D; ++c)
        xb[(1 + z.visual + j) * D + c] = q.eeg[(static_cast<std::size_t>(b) * z.eeg + j) * D + c] +
                                         q.type_embed[D + c] + q.pos_eeg[j * D + c];
  }
  return x;
}

template <class S>
struct TokenAssemblyBackward {
  std::vector<S> dvisual, deeg, dcls, dtype_embed, dpos_visual, dpos_eeg;
};

// The gradients for d(tokens) dx: the parameter gradients start from the given values
// (+=), the sums in the obvious order.
template <class S>
TokenAssemblyBackward<S> token_assembly_backward(const TokenAssemblySizes& z,
                                                 const std::vector<S>& dx,
                                                 const std::vector<S>& dcls0,
                                                 const std::vector<S>& dtype_embed0,
                                                 const std::vector<S>& dpos_visual0,
                                                 const std::vector<S>& dpos_eeg0) {
  const int D = z.width;
  TokenAssemblyBackward<S> r{std::vector<S>(z.visual_size()),
                             std::vector<S>(z.eeg_size()),
                             dcls0,
                             dtype_embed0,
                             dpos_visual0,
                             dpos_eeg0};
  for (int b = 0; b < z.batch; ++b) {
    const S* xb = &dx[static_cast<std::size_t>(b) * z.sequence() * D];
    for (int c = 0; c < D; ++c) r.dcls[c] += xb[c];
    for (int i = 0; i < z.visual; ++i)
      for (int c = 0; c < D; ++c) {
        const S g = xb[(1 + i) * D + c];
        r.dvisual[(static_cast<std::size_t>(b) * z.visual + i) * D + c] = g;
        r.dtype_embed[c] += g;
        r.dpos_visual[i * D + c] += g;
      }
    for (int j = 0; j < z.eeg; ++j)
      for (int c = 0; c < D; ++c) {
        const S g = xb[(1 + z.visual + j) * D + c];
        r.deeg[(static_cast<std::size_t>(b) * z.eeg + j) * D + c] = g;
        r.dtype_embed[D + c] += g;
        r.dpos_eeg[j * D + c] += g;
      }
  }
  return r;
}

}  // namespace milmer::reference
