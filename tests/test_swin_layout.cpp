// Swin's data-movement kernels against plain loops. They only move values, so results must
// be exact, under every thread order; backward is the adjoint of forward (<dy, F x> =
// <F^T dy, x>), which is what makes it the gradient.
#include <doctest/doctest.h>

#include "milmer/kernels/swin_layout.hpp"
#include "milmer/reference/check.hpp"
#include "milmer/reference/swin_layout.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::view;
using milmer::test::DeviceVector;

}  // namespace

TEST_SUITE("swin_layout") {
  TEST_CASE("patch gather equals the loops; its backward is the adjoint") {
    milmer::Context ctx;
    struct Case {
      int B, C, H, W, P;
    };
    for (auto [B, C, H, W, P] :
         {Case{2, 3, 8, 8, 4}, Case{1, 3, 9, 7, 2}, Case{3, 1, 5, 5, 5}, Case{1, 2, 3, 4, 1}}) {
      INFO("B ", B, " C ", C, " H ", H, " W ", W, " P ", P);
      const auto px = milmer::test::random_vector(std::size_t(B) * C * H * W, 1);
      const auto ref = refs::patch_gather(px, B, C, H, W, P);
      const int gh = (H + P - 1) / P, gw = (W + P - 1) / P;
      const auto got = milmer::test::under_every_schedule([&] {
        DeviceVector<float> dpx(px), out(ref.size());
        milmer::patch_gather_forward(ctx, view(out.data(), {B * gh * gw, C * P * P}),
                                     view<const float>(dpx.data(), {B, C, H, W}), P);
        return out.to_host();
      });
      CHECK(got == ref);
      const auto dy = milmer::test::random_vector(ref.size(), 2);
      const auto dx = milmer::test::under_every_schedule([&] {
        DeviceVector<float> ddy(dy), ddx(px.size());
        milmer::patch_gather_backward(ctx, view(ddx.data(), {B, C, H, W}),
                                      view<const float>(ddy.data(), {B * gh * gw, C * P * P}), P);
        return ddx.to_host();
      });
      CHECK(refs::dot(dy, ref) == doctest::Approx(refs::dot(dx, px)).epsilon(1e-6));
    }
  }

  TEST_CASE("pad_map pads with zeros and its backward crops") {
    milmer::Context ctx;
    const int B = 2, H = 5, W = 6, C = 3, Hp = 8, Wp = 8;
    const auto x = milmer::test::random_vector(std::size_t(B) * H * W * C, 3);
    const auto got = milmer::test::under_every_schedule([&] {
      DeviceVector<float> dx(x), out(std::size_t(B) * Hp * Wp * C);
      milmer::pad_map_forward(ctx, view(out.data(), {B, Hp, Wp, C}),
                              view<const float>(dx.data(), {B, H, W, C}));
      return out.to_host();
    });
    for (int b = 0; b < B; ++b)
      for (int y = 0; y < Hp; ++y)
        for (int xx = 0; xx < Wp; ++xx)
          for (int c = 0; c < C; ++c) {
            const float want = (y < H && xx < W) ? x[((b * H + y) * W + xx) * C + c] : 0.0f;
            REQUIRE(got[((b * Hp + y) * Wp + xx) * C + c] == want);
          }
    DeviceVector<float> dout(got), dinp(x.size());
    milmer::pad_map_backward(ctx, view(dinp.data(), {B, H, W, C}),
                             view<const float>(dout.data(), {B, Hp, Wp, C}));
    CHECK(dinp.to_host() == x);
    CHECK_THROWS_AS(milmer::pad_map_forward(ctx, view(dinp.data(), {B, H, W, C}),
                                            view<const float>(dout.data(), {B, Hp, Wp, C})),
                    milmer::Error);
  }

  TEST_CASE("merge gather follows transformers' quadrant order, odd sizes padded") {
    milmer::Context ctx;
    struct Case {
      int B, H, W, C;
    };
    for (auto [B, H, W, C] : {Case{2, 4, 4, 3}, Case{1, 5, 7, 2}, Case{1, 1, 1, 4}}) {
      INFO("B ", B, " H ", H, " W ", W, " C ", C);
      const auto x = milmer::test::random_vector(std::size_t(B) * H * W * C, 4);
      const auto ref = refs::patch_merge(x, B, H, W, C);
      const int L2 = ((H + 1) / 2) * ((W + 1) / 2);
      const auto got = milmer::test::under_every_schedule([&] {
        DeviceVector<float> dx(x), out(ref.size());
        milmer::merge_gather_forward(ctx, view(out.data(), {B, L2, 4 * C}),
                                     view<const float>(dx.data(), {B, H, W, C}));
        return out.to_host();
      });
      CHECK(got == ref);
      const auto dy = milmer::test::random_vector(ref.size(), 5);
      DeviceVector<float> ddy(dy), ddx(x.size());
      milmer::merge_gather_backward(ctx, view(ddx.data(), {B, H, W, C}),
                                    view<const float>(ddy.data(), {B, L2, 4 * C}));
      CHECK(refs::dot(dy, ref) == doctest::Approx(refs::dot(ddx.to_host(), x)).epsilon(1e-6));
    }
  }

  TEST_CASE("layout launchers name the op and the argument") {
    milmer::Context ctx;
    DeviceVector<float> a(64), b(64);
    const auto msg = milmer::test::error_message([&] {
      milmer::merge_gather_forward(ctx, view(a.data(), {1, 4, 8}),
                                   view<const float>(b.data(), {1, 4, 4, 4}));
    });
    CHECK(msg ==
          "merge_gather_forward: argument 'out': expected shape (1, 4, 16), got shape "
          "(1, 4, 8)");
  }
}
