// Kernel lab: fused softmax + cross-entropy (include/milmer/kernels/softmax_ce.hpp).
//
//   softmax_ce_lab --batch 4096 --classes 1000 [--iters N] [--seed S] [--check 0|1]
//
// Runs softmax_ce_forward (losses, mean, logits gradient) and softmax_ce_forward_only
// (losses, mean, probabilities), checks them against the fp64 loops (kernel error <= 4 x the
// error of a plain fp32 implementation plus a tiny absolute term, the rule of
// tests/support.hpp), then prints the time per call and GB/s from the minimum bytes moved.
// The timed calls pass host labels, so they measure the kernels without the label read-back.
// Exit status 1 when the check fails, 2 on bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/softmax_ce.hpp"
#include "milmer/memory.hpp"

namespace {

struct Options {
  int batch = 4096, classes = 1000;
  int iters = MILMER_TARGET_CUDA ? 50 : 3;
  int seed = 1, check = 1;
};

// The obvious loops in precision S: losses, mean, gradient (scale 1 / B) and probabilities.
template <class S>
struct Reference {
  std::vector<S> losses, grad, probs;
  S mean = 0;
};
template <class S>
Reference<S> reference(int B, int C, const std::vector<float>& logits,
                       const std::vector<int>& labels) {
  Reference<S> r;
  r.losses.resize(B);
  r.grad.resize(std::size_t(B) * C);
  r.probs.resize(std::size_t(B) * C);
  S total = 0;
  for (int b = 0; b < B; ++b) {
    const float* x = logits.data() + std::size_t(b) * C;
    S m = S(x[0]);
    for (int j = 1; j < C; ++j) m = std::max(m, S(x[j]));
    S s = 0;
    for (int j = 0; j < C; ++j) s += std::exp(S(x[j]) - m);
    r.losses[b] = m + std::log(s) - S(x[labels[b]]);
    total += r.losses[b];
    for (int j = 0; j < C; ++j) {
      const S p = std::exp(S(x[j]) - m) / s;
      r.probs[std::size_t(b) * C + j] = p;
      r.grad[std::size_t(b) * C + j] = (p - (j == labels[b] ? S(1) : S(0))) / S(B);
    }
  }
  r.mean = total / S(B);
  return r;
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  milmer::lab::CommandLine command_line("softmax_ce_lab");
  command_line.option("batch", o.batch, "rows B of logits", 1, 100000000)
      .option("classes", o.classes, "classes C", 1, 100000000)
      .run_options(o.iters, o.seed, o.check);
  command_line.parse(argc, argv);
  const int B = o.batch, C = o.classes;
  const std::size_t n = std::size_t(B) * C;
  std::printf("softmax_ce_lab [%s]: batch %d classes %d\n", milmer::target_name(), B, C);

  std::mt19937_64 rng(static_cast<std::uint64_t>(o.seed));
  const auto logits = milmer::lab::random_vector(n, rng, -8.0f, 8.0f);
  std::vector<int> labels(B);
  for (auto& y : labels) y = static_cast<int>(rng() % static_cast<std::uint64_t>(C));

  milmer::Context ctx;
  const auto d_logits = milmer::lab::to_device(logits);
  const auto d_labels = milmer::lab::to_device(labels);
  milmer::DeviceBuffer<float> d_out(n), d_losses(B), d_mean(1);
  using milmer::view;
  auto train = [&](std::span<const int> host_labels) {
    milmer::softmax_ce_forward(ctx, view(d_mean.data(), {1}), view(d_losses.data(), {B}),
                               view(d_out.data(), {B, C}),
                               view<const float>(d_logits.data(), {B, C}),
                               view<const int>(d_labels.data(), {B}), 1.0f, host_labels);
  };
  auto eval = [&](std::span<const int> host_labels) {
    milmer::softmax_ce_forward_only(ctx, view(d_mean.data(), {1}), view(d_losses.data(), {B}),
                                    view(d_out.data(), {B, C}),
                                    view<const float>(d_logits.data(), {B, C}),
                                    view<const int>(d_labels.data(), {B}), host_labels);
  };

  milmer::lab::Checks checks;
  if (o.check) {
    using milmer::lab::to_host;
    const auto r64 = reference<double>(B, C, logits, labels);
    const auto r32 = reference<float>(B, C, logits, labels);
    train({});  // the device label check path
    checks.compare("losses", to_host(d_losses), r64.losses, r32.losses);
    checks.compare("mean", to_host(d_mean), std::vector<double>{r64.mean},
                   std::vector<float>{r32.mean});
    checks.compare("dlogits", to_host(d_out), r64.grad, r32.grad);
    eval({});
    checks.compare("probs", to_host(d_out), r64.probs, r32.probs);
  }

  // Minimum traffic: logits read, gradient (or probabilities) written, labels read, losses
  // written, the mean's partial pass over the losses.
  const double bytes = 2.0 * n * sizeof(float) + B * (sizeof(int) + 2 * sizeof(float));
  using milmer::lab::time_ms;
  milmer::lab::report("forward", time_ms([&] { train(labels); }, o.iters, ctx.stream()), bytes);
  milmer::lab::report("forward_only", time_ms([&] { eval(labels); }, o.iters, ctx.stream()), bytes);
  return checks.exit_code();
} catch (...) {
  milmer::lab::fail_on_exception();
}
