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
#include "milmer/reference/softmax_ce.hpp"

namespace {

struct Options {
  int batch = 4096, classes = 1000;
  milmer::lab::RunOptions run{MILMER_TARGET_CUDA ? 50 : 3};
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("softmax_ce_lab");
  command_line
      .sizes({{"batch", o.batch, "rows B of logits", 1, 100000000},
              {"classes", o.classes, "classes C", 1, 100000000}})
      .run_options(o.run);
  return milmer::lab::run(command_line, argc, argv, [&] {
    const int B = o.batch, C = o.classes;
    const std::size_t n = std::size_t(B) * C;
    std::printf("softmax_ce_lab [%s]: batch %d classes %d\n", milmer::target_name(), B, C);

    auto rng = o.run.rng();
    const auto logits = milmer::lab::random_vector(n, rng, -8.0f, 8.0f);
    const auto labels = milmer::reference::random_labels(B, C, rng);

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
    if (o.run.check) {
      using milmer::lab::to_host;
      using milmer::reference::softmax_cross_entropy;
      const auto r64 =
          softmax_cross_entropy(B, C, milmer::reference::as<double>(logits), labels, 1.0);
      const auto r32 = softmax_cross_entropy(B, C, logits, labels, 1.0f);
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
    milmer::lab::time_passes({{"forward", [&] { train(labels); }, bytes},
                              {"forward_only", [&] { eval(labels); }, bytes}},
                             o.run.iters, ctx.stream());
    return checks.exit_code();
  });
}
