// AdamW: bit-exact against a float reference written in PyTorch's operation order, close to
// an fp64 run of the textbook formulas over several steps (tolerance from a plain fp32 run),
// the global gradient norm (deterministic two-stage reduction), scaling, clipping, and
// argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "milmer/kernels/adamw.hpp"
#include "milmer/reference/adamw.hpp"
#include "support.hpp"

namespace {

using milmer::AdamWConfig;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using milmer::test::under_every_schedule;

struct State {
  std::vector<float> p, m, v;
};

// PyTorch's single-tensor AdamW (torch/optim/adam.py, decoupled_weight_decay) with each
// tensor op as its CUDA kernel evaluates it; scalars from Python doubles rounded to float.
void torch_order_step(State& s, const std::vector<float>& g, int t, const AdamWConfig& c) {
  const float decay = float(1.0 - c.lr * c.weight_decay);
  const float w1 = float(1.0 - c.beta1);
  const float b2 = float(c.beta2);
  const float w2 = float(1.0 - c.beta2);
  const double bc1 = 1.0 - std::pow(c.beta1, t), bc2 = 1.0 - std::pow(c.beta2, t);
  const float neg_step = float(-(c.lr / bc1));
  const float inv_bc2_sqrt = 1.0f / float(std::pow(bc2, 0.5));  // tensor / scalar
  const float eps = float(c.eps);
  for (size_t i = 0; i < g.size(); ++i) {
    s.p[i] = s.p[i] * decay;        // param.mul_
    const float d = g[i] - s.m[i];  // exp_avg.lerp_
    s.m[i] = w1 < 0.5f ? std::fma(w1, d, s.m[i]) : std::fma(-d, 1.0f - w1, g[i]);
    const float vb = s.v[i] * b2;                              // exp_avg_sq.mul_
    s.v[i] = std::fma(w2, g[i] * g[i], vb);                    // .addcmul_
    volatile float scaled = std::sqrt(s.v[i]) * inv_bc2_sqrt;  // sqrt() / bc2_sqrt
    const float denom = scaled + eps;                          // .add_(eps)
    s.p[i] = std::fma(neg_step, s.m[i] / denom, s.p[i]);       // param.addcdiv_
  }
}

State run_kernel(milmer::Context& ctx, const State& init,
                 const std::vector<std::vector<float>>& grads, const AdamWConfig& c) {
  const auto n = static_cast<std::int64_t>(init.p.size());
  DeviceVector<float> p(init.p), m(init.m), v(init.v), g(init.p.size());
  for (size_t t = 0; t < grads.size(); ++t) {
    g.upload(grads[t]);
    milmer::adamw_update(ctx, milmer::view(p.data(), {n}), milmer::view(m.data(), {n}),
                         milmer::view(v.data(), {n}), milmer::view<const float>(g.data(), {n}),
                         int(t) + 1, c);
  }
  return {p.to_host(), m.to_host(), v.to_host()};
}

// Gradients of mixed magnitudes (1e-5 to 10), some exactly zero.
std::vector<std::vector<float>> make_grads(size_t n, int steps, std::uint64_t seed) {
  std::vector<std::vector<float>> grads;
  for (int t = 0; t < steps; ++t) {
    auto g = random_vector(n, seed + t, -1.0f, 1.0f);
    const auto e = random_vector(n, seed + 100 + t, -5.0f, 1.0f);
    for (size_t i = 0; i < n; ++i) g[i] = i % 97 == 0 ? 0.0f : g[i] * std::pow(10.0f, e[i]);
    grads.push_back(g);
  }
  return grads;
}

const AdamWConfig kConfigs[] = {
    {1e-4, 0.9, 0.999, 1e-8, 0.01},  // the model's recipe
    {1e-2, 0.8, 0.99, 1e-6, 0.1},
    {3e-3, 0.3, 0.5, 1e-8, 0.0},  // lerp weight 0.7: ATen's second lerp branch; no decay
};

}  // namespace

TEST_SUITE("adamw") {
  TEST_CASE("adamw_update reproduces PyTorch's operation order bit for bit") {
    milmer::Context ctx;
    const size_t n = 1037;
    for (const auto& c : kConfigs) {
      INFO("lr ", c.lr, " betas ", c.beta1, " ", c.beta2, " wd ", c.weight_decay);
      const auto grads = make_grads(n, 6, 11);
      const State init{random_vector(n, 1), std::vector<float>(n, 0.0f),
                       std::vector<float>(n, 0.0f)};
      const auto got = under_every_schedule([&] {
        const State s = run_kernel(ctx, init, grads, c);
        return std::vector<std::vector<float>>{s.p, s.m, s.v};
      });
      State ref = init;
      for (size_t t = 0; t < grads.size(); ++t) torch_order_step(ref, grads[t], int(t) + 1, c);
      CHECK(got[0] == ref.p);
      CHECK(got[1] == ref.m);
      CHECK(got[2] == ref.v);
    }
  }

  TEST_CASE("adamw_update stays within the fp32 error of an fp64 run over several steps") {
    milmer::Context ctx;
    for (const size_t n : {size_t(1), size_t(300), size_t(5000)})
      for (const auto& c : kConfigs) {
        INFO("n ", n, " lr ", c.lr, " betas ", c.beta1, " ", c.beta2);
        const auto grads = make_grads(n, 8, 40);
        const State init{random_vector(n, 2), random_vector(n, 3, -0.01f, 0.01f),
                         random_vector(n, 4, 0.0f, 1e-4f)};
        const State got = run_kernel(ctx, init, grads, c);
        std::vector<double> p64(init.p.begin(), init.p.end()), m64(init.m.begin(), init.m.end()),
            v64(init.v.begin(), init.v.end());
        std::vector<float> p32 = init.p, m32 = init.m, v32 = init.v;
        for (size_t t = 0; t < grads.size(); ++t) {
          milmer::reference::adamw_step(p64, m64, v64, milmer::test::as<double>(grads[t]),
                                        int(t) + 1, c);
          milmer::reference::adamw_step(p32, m32, v32, grads[t], int(t) + 1, c);
        }
        check_close(got.p, p64, p32, "params");
        check_close(got.m, m64, m32, "m");
        check_close(got.v, v64, v32, "v");
      }
  }

  TEST_CASE("global_grad_norm matches the fp64 norm and is the same under every order") {
    milmer::Context ctx;
    for (const std::int64_t n : {1, 255, 256, 257, 4099, 300001}) {
      INFO("n ", n);
      const auto g = random_vector(size_t(n), 7 + n, -2.0f, 2.0f);
      const auto got = under_every_schedule([&] {
        DeviceVector<float> d_g(g), norm(1), scratch(milmer::kernels::kGradNormMaxBlocks);
        milmer::global_grad_norm(
            ctx, milmer::view(norm.data(), {1}),
            milmer::view(scratch.data(), {milmer::kernels::kGradNormMaxBlocks}),
            milmer::view<const float>(d_g.data(), {n}));
        return norm.to_host();
      });
      double s64 = 0;
      float s32 = 0;
      for (const float x : g) {
        s64 += double(x) * x;
        s32 += x * x;
      }
      check_close(got, {std::sqrt(s64)}, {std::sqrt(s32)}, "norm");
    }
  }

  TEST_CASE("scale_inplace and clip_grad_norm_inplace scale as torch's clip_grad_norm_ does") {
    milmer::Context ctx;
    const std::int64_t n = 777;
    const auto g = random_vector(size_t(n), 5, -3.0f, 3.0f);
    DeviceVector<float> d_g(g);
    milmer::scale_inplace(ctx, milmer::view(d_g.data(), {n}), 0.375f);
    auto scaled = d_g.to_host();
    for (size_t i = 0; i < g.size(); ++i) REQUIRE(scaled[i] == g[i] * 0.375f);

    for (const float max_norm : {1.0f, 1000.0f}) {
      INFO("max_norm ", max_norm);
      DeviceVector<float> grads(g), norm(1), scratch(milmer::kernels::kGradNormMaxBlocks);
      milmer::global_grad_norm(ctx, milmer::view(norm.data(), {1}),
                               milmer::view(scratch.data(), {milmer::kernels::kGradNormMaxBlocks}),
                               milmer::view<const float>(grads.data(), {n}));
      milmer::clip_grad_norm_inplace(ctx, milmer::view(grads.data(), {n}),
                                     milmer::view<const float>(norm.data(), {1}), max_norm);
      const float total = norm.to_host()[0];
      const float coef = std::min(max_norm / (total + 1e-6f), 1.0f);
      const auto clipped = grads.to_host();
      for (size_t i = 0; i < g.size(); ++i) REQUIRE(clipped[i] == g[i] * coef);
      if (max_norm > total) CHECK(clipped == g);
    }
  }

  TEST_CASE("the AdamW launchers name the op, the argument and the mismatch") {
    milmer::Context ctx;
    DeviceVector<float> p(16), m(16), v(16), g(16), s(milmer::kernels::kGradNormMaxBlocks);
    auto call = [&](std::int64_t mn, int step, AdamWConfig c) {
      milmer::adamw_update(ctx, milmer::view(p.data(), {16}), milmer::view(m.data(), {mn}),
                           milmer::view(v.data(), {16}), milmer::view<const float>(g.data(), {16}),
                           step, c);
    };
    CHECK(milmer::test::error_message([&] { call(16, 0, {}); }) ==
          "adamw_update: argument 'step': expected a 1-based step count >= 1, got 0");
    CHECK(milmer::test::error_message([&] { call(15, 1, {}); }) ==
          "adamw_update: argument 'm': expected shape (16), got shape (15)");
    CHECK(milmer::test::error_message([&] {
            call(16, 1, {1e-4, 1.0, 0.999, 1e-8, 0.01});
          }) == "adamw_update: argument 'beta1': expected 0 <= beta1 < 1, got 1");
    CHECK(milmer::test::error_message([&] {
            call(16, 1, {-1.0, 0.9, 0.999, 1e-8, 0.01});
          }) == "adamw_update: argument 'lr': expected a finite value >= 0, got -1");
    CHECK(milmer::test::error_message([&] {
            milmer::global_grad_norm(ctx, milmer::view(m.data(), {1}), milmer::view(s.data(), {16}),
                                     milmer::view<const float>(g.data(), {16}));
          }) == "global_grad_norm: argument 'scratch': expected shape (1024), got shape (16)");
  }
}
