// Shifted-window attention (Swin): the fused forward and backward kernels against the unfused
// composition (pad, roll, partition, attention with bias and mask, merge, roll back, crop) in
// fp64, with the fp32 composition as the error baseline; backward also against central finite
// differences of the fp64 composition; argument validation.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "milmer/context.hpp"
#include "milmer/kernels/window_attention.hpp"
#include "milmer/reference/window_attention.hpp"
#include "support.hpp"

namespace watest {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using refs::WindowAttentionSizes;

std::size_t qkv_size(const WindowAttentionSizes& z) {
  return std::size_t(z.batch) * z.padded_height() * z.padded_width() * 3 * z.channels();
}
std::size_t out_size(const WindowAttentionSizes& z) {
  return std::size_t(z.batch) * z.height * z.width * z.channels();
}
std::size_t lse_size(const WindowAttentionSizes& z) {
  return std::size_t(z.batch) * z.heads * z.windows() * z.tokens();
}
std::size_t table_size(const WindowAttentionSizes& z) {
  return std::size_t(z.table_rows()) * z.heads;
}

// One problem: the unpadded projections and their bias, padded the way the model pads (the
// projection of a zero token is the bias), the bias table, an upstream gradient, and the
// d_table the backward accumulates into.
struct Problem {
  WindowAttentionSizes z;
  std::vector<float> qkv, qkv_bias, qkv_padded, table, dout, d_table_init;
};

Problem make_problem(const WindowAttentionSizes& z, std::uint64_t seed) {
  Problem p{z, {}, {}, {}, {}, {}, {}};
  p.qkv = random_vector(std::size_t(z.batch) * z.height * z.width * 3 * z.channels(), seed, -2, 2);
  p.qkv_bias = random_vector(3 * std::size_t(z.channels()), seed + 1, -1, 1);
  p.qkv_padded = refs::window_attention_pad(p.qkv, p.qkv_bias, z);
  p.table = random_vector(table_size(z), seed + 2, -1, 1);
  p.dout = random_vector(out_size(z), seed + 3, -1, 1);
  p.d_table_init = random_vector(table_size(z), seed + 4, -1, 1);
  return p;
}

auto out_view(float* p, const WindowAttentionSizes& z) {
  return milmer::view(p, {z.batch, z.height, z.width, z.channels()});
}
auto qkv_view(float* p, const WindowAttentionSizes& z) {
  return milmer::view(p, {z.batch, z.padded_height(), z.padded_width(), 3 * z.channels()});
}
auto lse_view(float* p, const WindowAttentionSizes& z) {
  return milmer::view(p, {z.batch, z.heads, z.windows(), z.tokens()});
}
auto table_view(float* p, const WindowAttentionSizes& z) {
  return milmer::view(p, {z.table_rows(), z.heads});
}
auto workspace_view(float* p, const WindowAttentionSizes& z) {
  return milmer::view(p, {z.heads, z.table_rows(), z.batch * z.windows()});
}
template <class T>
milmer::TensorView<const T> in(milmer::TensorView<T> v) {
  return v;
}

std::vector<float> nan_filled(std::size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// The kernels' forward outputs {out, lse} (outputs start as NaN: every element is written).
std::vector<std::vector<float>> run_forward(const Problem& p) {
  const auto& z = p.z;
  milmer::Context ctx;
  DeviceVector<float> qkv(p.qkv_padded), table(p.table), out(nan_filled(out_size(z))),
      lse(nan_filled(lse_size(z)));
  milmer::window_attention_forward<float>(
      ctx, out_view(out.data(), z), lse_view(lse.data(), z), in(qkv_view(qkv.data(), z)),
      in(table_view(table.data(), z)), z.heads, z.window, z.shift);
  return {out.to_host(), lse.to_host()};
}

// The kernels' backward outputs {dqkv, d_table}, with lse from the forward kernel.
std::vector<std::vector<float>> run_backward(const Problem& p) {
  const auto& z = p.z;
  milmer::Context ctx;
  DeviceVector<float> qkv(p.qkv_padded), table(p.table), out(out_size(z)), lse(lse_size(z)),
      dout(p.dout), dqkv(nan_filled(qkv_size(z))), d_table(p.d_table_init),
      workspace(nan_filled(std::size_t(z.heads) * z.table_rows() * z.batch * z.windows()));
  milmer::window_attention_forward<float>(
      ctx, out_view(out.data(), z), lse_view(lse.data(), z), in(qkv_view(qkv.data(), z)),
      in(table_view(table.data(), z)), z.heads, z.window, z.shift);
  milmer::window_attention_backward<float>(
      ctx, qkv_view(dqkv.data(), z), table_view(d_table.data(), z),
      workspace_view(workspace.data(), z), in(out_view(dout.data(), z)),
      in(qkv_view(qkv.data(), z)), in(table_view(table.data(), z)), in(lse_view(lse.data(), z)),
      z.heads, z.window, z.shift);
  return {dqkv.to_host(), d_table.to_host()};
}

std::string describe(const WindowAttentionSizes& z) {
  return milmer::str("B=", z.batch, " map ", z.height, "x", z.width, " heads ", z.heads,
                     " head_dim ", z.head_dim, " window ", z.window, " shift ", z.shift);
}

void check_forward(const WindowAttentionSizes& z, std::uint64_t seed) {
  INFO(describe(z));
  const Problem p = make_problem(z, seed);
  const auto got = milmer::test::under_every_schedule([&] { return run_forward(p); });
  const auto ref =
      refs::window_attention_forward(refs::as<double>(p.qkv_padded), refs::as<double>(p.table), z);
  const auto plain = refs::window_attention_forward(p.qkv_padded, p.table, z);
  check_close(got[0], ref.out, plain.out, "out");
  check_close(got[1], ref.lse, plain.lse, "lse");
}

void check_backward(const WindowAttentionSizes& z, std::uint64_t seed) {
  INFO(describe(z));
  const Problem p = make_problem(z, seed);
  const auto got = milmer::test::under_every_schedule([&] { return run_backward(p); });
  const auto ref = refs::window_attention_backward(
      refs::as<double>(p.dout), refs::as<double>(p.qkv_padded), refs::as<double>(p.table), z);
  const auto plain = refs::window_attention_backward(p.dout, p.qkv_padded, p.table, z);
  check_close(got[0], ref.dqkv, plain.dqkv, "dqkv");
  // d_table accumulates: the expected value is the initial content plus this call's gradient.
  std::vector<double> table_ref(ref.d_table);
  std::vector<float> table_plain(plain.d_table);
  for (std::size_t i = 0; i < table_ref.size(); ++i) {
    table_ref[i] += p.d_table_init[i];
    table_plain[i] += p.d_table_init[i];
  }
  check_close(got[1], table_ref, table_plain, "d_table");
}

// The model's shapes and the edges: tiny shifted, padded 9x10 -> 12x12, whole-map window
// (a 4x4 map with window 7 requested runs as window 4 shift 0), window 7 head_dim 32, a one-row
// map with head_dim 1, the size limits (window 8, head_dim 64), window 7 unshifted with padding.
const std::vector<WindowAttentionSizes> kShapes = {
    {2, 8, 8, 2, 8, 4, 2},    {2, 9, 10, 2, 8, 4, 2}, {2, 4, 4, 3, 24, 4, 0},
    {1, 14, 14, 2, 32, 7, 3}, {1, 1, 5, 1, 1, 2, 1},  {1, 8, 8, 1, 64, 8, 4},
    {1, 10, 9, 3, 16, 7, 0},  {3, 6, 6, 2, 8, 2, 1},
};

// Loss = sum(out * dout) of the fp64 composition, for finite differences.
double reference_loss(const std::vector<double>& qkv_padded, const std::vector<double>& table,
                      const std::vector<double>& dout, const WindowAttentionSizes& z) {
  return refs::dot(refs::window_attention_forward(qkv_padded, table, z).out, dout);
}

std::vector<double> central_differences(std::vector<double>& x,
                                        const std::function<double()>& loss) {
  return milmer::test::central_differences(x, loss, 1e-5);
}

void check_against_differences(const std::vector<double>& analytic, const std::vector<double>& fd,
                               const char* what) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < fd.size(); ++i) {
    err = std::max(err, std::abs(analytic[i] - fd[i]));
    scale = std::max(scale, std::abs(fd[i]));
  }
  INFO(what, ": fp64 backward vs finite differences, max error ", err, ", scale ", scale);
  CHECK(err <= 1e-7 * std::max(scale, 1.0));
}

}  // namespace watest

using namespace watest;

TEST_SUITE("window_attention") {
  TEST_CASE("forward matches the fp64 composition under every schedule") {
    std::uint64_t seed = 100;
    for (const auto& z : kShapes) check_forward(z, seed += 10);
  }

  TEST_CASE("backward matches the fp64 composition under every schedule") {
    std::uint64_t seed = 200;
    for (const auto& z : kShapes) check_backward(z, seed += 10);
  }

  TEST_CASE("backward matches central finite differences of the fp64 composition") {
    // Padded (5x6 -> 8x8) and shifted, so the gradient flows through every step.
    const WindowAttentionSizes z{1, 5, 6, 2, 4, 4, 2};
    const Problem p = make_problem(z, 7);
    auto qkv = refs::as<double>(p.qkv_padded), table = refs::as<double>(p.table),
         dout = refs::as<double>(p.dout);
    const auto loss = [&] { return reference_loss(qkv, table, dout, z); };
    const auto fd_qkv = central_differences(qkv, loss);
    const auto fd_table = central_differences(table, loss);

    const auto ref = refs::window_attention_backward(dout, qkv, table, z);
    check_against_differences(ref.dqkv, fd_qkv, "dqkv");
    check_against_differences(ref.d_table, fd_table, "d_table");

    const auto got = run_backward(p);
    const auto plain = refs::window_attention_backward(p.dout, p.qkv_padded, p.table, z);
    check_close(got[0], fd_qkv, plain.dqkv, "dqkv vs finite differences");
    std::vector<float> d_table(got[1]);
    for (std::size_t i = 0; i < d_table.size(); ++i) d_table[i] -= p.d_table_init[i];
    check_close(d_table, fd_table, plain.d_table, "d_table vs finite differences");

    // The padding contract: padded tokens hold the projection bias, so the bias's gradient
    // through this op is the sum of dqkv over the padded tokens.
    auto bias = refs::as<double>(p.qkv_bias);
    const auto unpadded = refs::as<double>(p.qkv);
    const auto fd_bias = central_differences(bias, [&] {
      return reference_loss(refs::window_attention_pad(unpadded, bias, z), table, dout, z);
    });
    const int K = 3 * z.channels();
    std::vector<double> bias_from_kernel(K, 0.0);
    for (int y = 0; y < z.padded_height(); ++y)
      for (int x = 0; x < z.padded_width(); ++x)
        if (y >= z.height || x >= z.width)
          for (int c = 0; c < K; ++c)
            bias_from_kernel[c] += got[0][(std::size_t(y) * z.padded_width() + x) * K + c];
    double err = 0, scale = 0;
    for (int c = 0; c < K; ++c) {
      err = std::max(err, std::abs(bias_from_kernel[c] - fd_bias[c]));
      scale = std::max(scale, std::abs(fd_bias[c]));
    }
    INFO("bias gradient from the padded tokens: max error ", err, ", scale ", scale);
    CHECK(scale > 0.1);
    CHECK(err <= 1e-5 * scale);
  }

  TEST_CASE("the shift mask and the relative index follow transformers") {
    // 8x8 map, window 4, shift 2: transformers' img_mask regions on the shifted map are rows
    // [0, 4), [4, 6), [6, 8) and the same for columns; window 3 (bottom right) holds four
    // regions, window 0 one.
    const WindowAttentionSizes z{1, 8, 8, 1, 1, 4, 2};
    const auto mask = refs::window_attention_shift_mask<double>(z);
    const int N = 16;
    for (int i = 0; i < N * N; ++i) CHECK(mask[i] == 0.0);
    auto at = [&](int w, int i, int j) { return mask[(std::size_t(w) * N + i) * N + j]; };
    CHECK(at(3, 0, 1) == 0.0);      // (0,0) and (0,1): region 4 and 4
    CHECK(at(3, 0, 2) == -100.0);   // (0,2): region 5
    CHECK(at(3, 0, 8) == -100.0);   // (2,0): region 7
    CHECK(at(3, 10, 15) == 0.0);    // (2,2) and (3,3): region 8
    CHECK(at(1, 0, 3) == -100.0);   // window (0,1): columns 4,5 vs 6,7
    CHECK(at(2, 0, 15) == -100.0);  // window (1,0): rows 4,5 vs 6,7
    const auto index = refs::window_attention_relative_index(2);
    CHECK(index == std::vector<int>{4, 3, 1, 0, 5, 4, 2, 1, 7, 6, 4, 3, 8, 7, 5, 4});
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        CHECK(milmer::kernels::window_relative_position_index(i, j, 2) == index[i * 4 + j]);
  }

  TEST_CASE("the launchers validate their arguments") {
    const WindowAttentionSizes z{2, 9, 10, 2, 8, 4, 2};
    std::vector<float> qkv(qkv_size(z)), out(out_size(z)), lse(lse_size(z)), table(table_size(z)),
        d_table(table_size(z)),
        workspace(std::size_t(z.heads) * z.table_rows() * z.batch * z.windows());
    milmer::Context ctx;
    auto forward = [&](auto out_v, auto qkv_v, auto table_v, int heads, int window, int shift) {
      milmer::window_attention_forward<float>(ctx, out_v, lse_view(lse.data(), z), in(qkv_v),
                                              in(table_v), heads, window, shift);
    };
    const auto o = out_view(out.data(), z);
    const auto q = qkv_view(qkv.data(), z);
    const auto t = table_view(table.data(), z);
    using milmer::test::error_message;

    CHECK(error_message([&] { forward(o, q, t, 2, 4, 4); }) ==
          "window_attention_forward: argument 'shift': expected 0 <= shift < window (4), got 4");
    CHECK(error_message([&] { forward(o, q, t, 2, 4, -1); }).find("'shift'") != std::string::npos);
    CHECK(error_message([&] { forward(o, q, t, 3, 4, 2); }) ==
          "window_attention_forward: argument 'out': expected channels divisible by heads (3), "
          "got 16 channels");
    {
      std::vector<float> wide_out(std::size_t(1) * 4 * 4 * 128), wide_qkv(std::size_t(16) * 384),
          wide_table(49);
      CHECK(error_message([&] {
              forward(milmer::view(wide_out.data(), {1, 4, 4, 128}),
                      milmer::view(wide_qkv.data(), {1, 4, 4, 384}),
                      milmer::view(wide_table.data(), {49, 1}), 1, 4, 0);
            }) ==
            "window_attention_forward: argument 'out': expected head_dim (channels / heads) at "
            "most 64, got head_dim 128");
    }
    CHECK(error_message([&] { forward(o, q, t, 2, 9, 2); }) ==
          "window_attention_forward: argument 'window': expected 1 to 8, got 9");
    CHECK(error_message([&] {
            forward(o, q, milmer::view(table.data(), {z.table_rows(), 1}), 2, 4, 2);
          }) ==
          "window_attention_forward: argument 'table': expected shape (49, 2), got shape (49, 1)");
    CHECK(error_message([&] {
            forward(o, milmer::view(qkv.data(), {2, 9, 10, 48}), t, 2, 4, 2);
          }) ==
          "window_attention_forward: argument 'qkv': expected shape (2, 12, 12, 48), got shape "
          "(2, 9, 10, 48)");
    CHECK(error_message([&] { forward(o, qkv_view(nullptr, z), t, 2, 4, 2); }) ==
          "window_attention_forward: argument 'qkv': expected a non-null pointer, got nullptr");
    CHECK(error_message([&] {
            forward(out_view(nullptr, z), q, t, 2, 4, 2);
          }).find("'out': expected a non-null pointer") != std::string::npos);
    CHECK(error_message([&] {
            forward(o, q, table_view(nullptr, z), 2, 4, 2);
          }).find("'table': expected a non-null pointer") != std::string::npos);
    CHECK(error_message([&] {
            milmer::window_attention_forward<float>(ctx, o, lse_view(nullptr, z), in(q), in(t), 2,
                                                    4, 2);
          }).find("'lse': expected a non-null pointer") != std::string::npos);

    auto backward = [&](auto dqkv_v, auto d_table_v, auto workspace_v) {
      milmer::window_attention_backward<float>(ctx, dqkv_v, d_table_v, workspace_v, in(o), in(q),
                                               in(t), in(lse_view(lse.data(), z)), 2, 4, 2);
    };
    const auto w = workspace_view(workspace.data(), z);
    const auto dt = table_view(d_table.data(), z);
    CHECK(error_message([&] {
            backward(q, dt, milmer::view(workspace.data(), {2, 49, 9}));
          }) ==
          "window_attention_backward: argument 'workspace': expected shape (2, 49, 18), got "
          "shape (2, 49, 9)");
    CHECK(error_message([&] {
            backward(q, milmer::view(d_table.data(), {2, 49}), w);
          }).find("'d_table'") != std::string::npos);
    CHECK(error_message([&] {
            backward(qkv_view(nullptr, z), dt, w);
          }).find("'dqkv': expected a non-null pointer") != std::string::npos);
    CHECK(error_message([&] {
            milmer::window_attention_backward<float>(ctx, q, dt, w, in(out_view(nullptr, z)), in(q),
                                                     in(t), in(lse_view(lse.data(), z)), 2, 4, 2);
          }).find("'dout': expected a non-null pointer") != std::string::npos);
  }
}
