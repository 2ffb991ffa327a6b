// AMIL's per-frame movement kernels against plain loops, under every thread order.
#include <doctest/doctest.h>

#include "milmer/kernels/frames.hpp"
#include "milmer/reference/frames.hpp"
#include "support.hpp"

using milmer::view;
using milmer::test::DeviceVector;

TEST_SUITE("frames") {
  TEST_CASE("frame_gather picks each sample's selected frames in top-K order") {
    milmer::Context ctx;
    const int B = 3, F = 5, K = 2, R = 37;
    const auto in = milmer::test::random_vector(std::size_t(B) * F * R, 1);
    const std::vector<std::int32_t> topk{4, 0, 2, 3, 1, 4};
    const auto got = milmer::test::under_every_schedule([&] {
      DeviceVector<float> din(in), dout(std::size_t(B) * K * R);
      DeviceVector<std::int32_t> dtopk(topk);
      milmer::frame_gather<float>(ctx, view(dout.data(), {B, K, R}),
                                  view<const float>(din.data(), {B, F, R}),
                                  view<const std::int32_t>(dtopk.data(), {B, K}));
      return dout.to_host();
    });
    for (int b = 0; b < B; ++b)
      for (int k = 0; k < K; ++k)
        for (int r = 0; r < R; ++r)
          REQUIRE(got[(b * K + k) * R + r] == in[(b * F + topk[b * K + k]) * R + r]);
  }

  TEST_CASE("gate_scale forward and backward against loops and finite differences") {
    milmer::Context ctx;
    const int B = 2, K = 3, R = 300;
    const auto x = milmer::test::random_vector(std::size_t(B) * K * R, 2);
    const auto dz = milmer::test::random_vector(x.size(), 3);
    const std::vector<float> gates{0.5f, 1.25f, 1.25f, 2.0f, 0.75f, 0.25f};
    const auto z = milmer::test::under_every_schedule([&] {
      DeviceVector<float> dx(x), dzv(x.size());
      DeviceVector<float> dg(gates);
      milmer::gate_scale_forward<float>(ctx, view(dzv.data(), {B, K, R}),
                                        view<const float>(dx.data(), {B, K, R}),
                                        view<const float>(dg.data(), {B, K}));
      return dzv.to_host();
    });
    for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(z[i] == gates[i / R] * x[i]);
    struct Out {
      std::vector<float> dx, dg;
      bool operator==(const Out&) const = default;
    };
    const auto out = milmer::test::under_every_schedule([&] {
      DeviceVector<float> dxv(x), ddz(dz), dgates(gates), ddx(x.size()), ddg(gates.size());
      milmer::gate_scale_backward<float>(ctx, view(ddx.data(), {B, K, R}), view(ddg.data(), {B, K}),
                                         view<const float>(ddz.data(), {B, K, R}),
                                         view<const float>(dxv.data(), {B, K, R}),
                                         view<const float>(dgates.data(), {B, K}));
      return Out{ddx.to_host(), ddg.to_host()};
    });
    for (std::size_t i = 0; i < x.size(); ++i) REQUIRE(out.dx[i] == gates[i / R] * dz[i]);
    using milmer::reference::gate_scale_gate_gradient;
    using milmer::test::as;
    milmer::test::check_close(out.dg,
                              gate_scale_gate_gradient(B * K, R, as<double>(dz), as<double>(x)),
                              gate_scale_gate_gradient(B * K, R, dz, x), "dg");
  }

  TEST_CASE("topk_scatter puts each selected frame's value in place, zeros elsewhere") {
    milmer::Context ctx;
    const std::vector<float> v{1, 2, 3, 4};
    const std::vector<std::int32_t> topk{2, 0, 1, 3};
    DeviceVector<float> dv(v), out(2 * 4);
    DeviceVector<std::int32_t> dt(topk);
    milmer::topk_scatter(ctx, view(out.data(), {2, 4}), view<const float>(dv.data(), {2, 2}),
                         view<const std::int32_t>(dt.data(), {2, 2}));
    CHECK(out.to_host() == std::vector<float>{2, 0, 1, 0, 0, 3, 0, 4});
    CHECK_THROWS_AS(
        milmer::topk_scatter(ctx, view(out.data(), {2, 1}), view<const float>(dv.data(), {2, 2}),
                             view<const std::int32_t>(dt.data(), {2, 2})),
        milmer::Error);
  }
}
