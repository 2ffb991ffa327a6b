// Fused softmax + cross-entropy: losses, mean loss, logits gradient and probabilities against
// plain loops run in double (reference) and float (plain fp32 baseline), central differences
// of the double loss, label checking on both paths, and argument errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include "milmer/kernels/softmax_ce.hpp"
#include "milmer/reference/softmax_ce.hpp"
#include "support.hpp"

namespace {

namespace refs = milmer::reference;
using milmer::test::check_close;
using milmer::test::DeviceVector;
using milmer::test::random_vector;
using milmer::test::under_every_schedule;

// The reference in S for float logits.
template <class S>
refs::SoftmaxCrossEntropy<S> ref_softmax_ce(int B, int C, const std::vector<float>& logits,
                                            const std::vector<int>& labels, float dloss) {
  return refs::softmax_cross_entropy(B, C, refs::as<S>(logits), labels, S(dloss));
}

std::vector<int> random_labels(int B, int C, std::uint64_t seed) {
  return refs::random_labels(std::size_t(B), C, seed);
}

struct Shape {
  int b, c;
};
const Shape kShapes[] = {{1, 1},  {1, 2},  {3, 2},    {5, 3},    {14, 4}, {9, 31},
                         {8, 32}, {7, 33}, {17, 100}, {3, 1000}, {300, 5}};

}  // namespace

TEST_SUITE("softmax_ce") {
  TEST_CASE("softmax_ce_forward: losses, mean and gradient match the fp64 loops") {
    milmer::Context ctx;
    std::uint64_t seed = 1;
    for (const Shape s : kShapes)
      for (const float dloss : {1.0f, 0.25f})
        for (const bool use_host_labels : {false, true}) {
          INFO("B=", s.b, " C=", s.c, " dloss ", dloss, " host labels ", use_host_labels);
          // Wide logits (including large offsets) exercise the max subtraction.
          auto logits = random_vector(size_t(s.b) * s.c, seed++, -8.0f, 8.0f);
          for (int b = 0; b < s.b; b += 2)
            for (int j = 0; j < s.c; ++j) logits[size_t(b) * s.c + j] += 60.0f;
          const auto labels = random_labels(s.b, s.c, seed++);
          auto outs = under_every_schedule([&] {
            DeviceVector<float> d_logits(logits), d_grad(size_t(s.b) * s.c), d_losses(s.b),
                d_mean(1);
            DeviceVector<int> d_labels(labels);
            milmer::softmax_ce_forward(
                ctx, milmer::view(d_mean.data(), {1}), milmer::view(d_losses.data(), {s.b}),
                milmer::view(d_grad.data(), {s.b, s.c}),
                milmer::view<const float>(d_logits.data(), {s.b, s.c}),
                milmer::view<const int>(d_labels.data(), {s.b}), dloss,
                use_host_labels ? std::span<const int>(labels) : std::span<const int>{});
            return std::vector<std::vector<float>>{d_losses.to_host(), d_mean.to_host(),
                                                   d_grad.to_host()};
          });
          const auto r64 = ref_softmax_ce<double>(s.b, s.c, logits, labels, dloss);
          const auto r32 = ref_softmax_ce<float>(s.b, s.c, logits, labels, dloss);
          check_close(outs[0], r64.losses, r32.losses, "losses");
          check_close(outs[1], {r64.mean}, {r32.mean}, "loss_mean");
          check_close(outs[2], r64.grad, r32.grad, "dlogits");
        }
  }

  TEST_CASE("softmax_ce_forward_only: losses, mean and probabilities; in place on the logits") {
    milmer::Context ctx;
    std::uint64_t seed = 50;
    for (const Shape s : kShapes) {
      INFO("B=", s.b, " C=", s.c);
      const auto logits = random_vector(size_t(s.b) * s.c, seed++, -5.0f, 5.0f);
      const auto labels = random_labels(s.b, s.c, seed++);
      auto outs = under_every_schedule([&] {
        DeviceVector<float> d_logits(logits), d_losses(s.b), d_mean(1);
        DeviceVector<int> d_labels(labels);
        // probs written over the logits they come from.
        milmer::softmax_ce_forward_only(ctx, milmer::view(d_mean.data(), {1}),
                                        milmer::view(d_losses.data(), {s.b}),
                                        milmer::view(d_logits.data(), {s.b, s.c}),
                                        milmer::view<const float>(d_logits.data(), {s.b, s.c}),
                                        milmer::view<const int>(d_labels.data(), {s.b}));
        return std::vector<std::vector<float>>{d_losses.to_host(), d_mean.to_host(),
                                               d_logits.to_host()};
      });
      const auto r64 = ref_softmax_ce<double>(s.b, s.c, logits, labels, 1.0f);
      const auto r32 = ref_softmax_ce<float>(s.b, s.c, logits, labels, 1.0f);
      check_close(outs[0], r64.losses, r32.losses, "losses");
      check_close(outs[1], {r64.mean}, {r32.mean}, "loss_mean");
      check_close(outs[2], r64.probs, r32.probs, "probs");
    }
  }

  TEST_CASE("the gradient reference agrees with central differences of dloss * mean loss") {
    for (const Shape s : {Shape{3, 2}, Shape{4, 3}, Shape{2, 4}, Shape{3, 37}}) {
      INFO("B=", s.b, " C=", s.c);
      const auto logits = random_vector(size_t(s.b) * s.c, 77, -3.0f, 3.0f);
      const auto labels = random_labels(s.b, s.c, 78);
      const float dloss = 0.5f;
      const auto r = ref_softmax_ce<double>(s.b, s.c, logits, labels, dloss);
      std::vector<double> x(logits.begin(), logits.end());
      auto loss = [&] {
        return double(dloss) * refs::softmax_cross_entropy(s.b, s.c, x, labels, 1.0).mean;
      };
      const double h = 1e-6;
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] += h;
        const double lp = loss();
        x[i] -= 2 * h;
        const double lm = loss();
        x[i] += h;
        CHECK(std::abs((lp - lm) / (2 * h) - r.grad[i]) < 1e-8);
      }
    }
  }

  TEST_CASE("a label out of range throws on the host-label path and on the device path") {
    milmer::Context ctx;
    const int B = 5, C = 4;
    const auto logits = random_vector(size_t(B) * C, 3);
    for (const int bad : {4, -1, 1000}) {
      std::vector<int> labels = {0, 3, bad, 1, 2};
      DeviceVector<float> d_logits(logits), d_grad(size_t(B) * C), d_losses(B), d_mean(1);
      DeviceVector<int> d_labels(labels);
      auto run = [&](std::span<const int> host) {
        milmer::softmax_ce_forward(
            ctx, milmer::view(d_mean.data(), {1}), milmer::view(d_losses.data(), {B}),
            milmer::view(d_grad.data(), {B, C}), milmer::view<const float>(d_logits.data(), {B, C}),
            milmer::view<const int>(d_labels.data(), {B}), 1.0f, host);
      };
      const std::string expected =
          "softmax_ce_forward: argument 'labels': expected class "
          "indices in [0, 4), got labels[2] = " +
          std::to_string(bad);
      CHECK(milmer::test::error_message([&] { run(labels); }) == expected);
      CHECK(milmer::test::error_message([&] { run({}); }) == expected);
      // The device path marks the bad sample and nothing else.
      const auto losses = d_losses.to_host();
      CHECK(std::isnan(losses[2]));
      CHECK(std::isfinite(losses[1]));
      CHECK(std::isnan(d_mean.to_host()[0]));
    }
    // NaN logits with valid labels: not a label error; the NaN loss is returned.
    auto nan_logits = logits;
    nan_logits[7] = NAN;
    const std::vector<int> labels = {0, 1, 2, 3, 0};
    DeviceVector<float> d_logits(nan_logits), d_probs(size_t(B) * C), d_losses(B), d_mean(1);
    DeviceVector<int> d_labels(labels);
    milmer::softmax_ce_forward_only(
        ctx, milmer::view(d_mean.data(), {1}), milmer::view(d_losses.data(), {B}),
        milmer::view(d_probs.data(), {B, C}), milmer::view<const float>(d_logits.data(), {B, C}),
        milmer::view<const int>(d_labels.data(), {B}));
    CHECK(std::isnan(d_mean.to_host()[0]));
  }

  TEST_CASE("softmax_ce launchers name the op, the argument and the mismatch") {
    milmer::Context ctx;
    DeviceVector<float> x(64), g(64), l(8), m(1);
    DeviceVector<int> y(8);
    auto call = [&](int grad_rows, int label_rows, int loss_rows) {
      milmer::softmax_ce_forward(
          ctx, milmer::view(m.data(), {1}), milmer::view(l.data(), {loss_rows}),
          milmer::view(g.data(), {grad_rows, 4}), milmer::view<const float>(x.data(), {4, 4}),
          milmer::view<const int>(y.data(), {label_rows}));
    };
    CHECK(milmer::test::error_message([&] { call(3, 4, 4); }) ==
          "softmax_ce_forward: argument 'dlogits': expected shape (4, 4), got shape (3, 4)");
    CHECK(milmer::test::error_message([&] { call(4, 5, 4); }) ==
          "softmax_ce_forward: argument 'labels': expected shape (4), got shape (5)");
    CHECK(milmer::test::error_message([&] { call(4, 4, 2); }) ==
          "softmax_ce_forward: argument 'losses': expected shape (4), got shape (2)");
    const std::vector<int> three = {0, 1, 2};
    CHECK(milmer::test::error_message([&] {
            milmer::softmax_ce_forward_only(
                ctx, milmer::view(m.data(), {1}), milmer::view(l.data(), {4}),
                milmer::view(g.data(), {4, 4}), milmer::view<const float>(x.data(), {4, 4}),
                milmer::view<const int>(y.data(), {4}), three);
          }) ==
          "softmax_ce_forward_only: argument 'host_labels': expected 4 labels (logits' "
          "rows), got 3 labels");
  }
}
