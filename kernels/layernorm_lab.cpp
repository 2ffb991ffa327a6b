// LayerNorm lab: runs the library's layernorm_forward and layernorm_backward on a shape from
// the command line, checks them against an fp64 reference (the tests' tolerance rule: error
// at most 4x that of a plain fp32 implementation), and prints time per call and GB/s from
// the minimum bytes each pass must move (docs/kernels/layernorm.md).
//
//   layernorm_lab --rows 4096 --width 768 [--iters 100] [--eps 1e-5]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/memory.hpp"
#include "milmer/reference/layernorm.hpp"
#include "milmer/tensor.hpp"

namespace {

struct Options {
  std::int64_t rows = 4096, width = 768;
  int iters = MILMER_TARGET_CUDA ? 100 : 3;
  float eps = 1e-5f;
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("layernorm_lab");
  command_line.option("rows", o.rows, "rows R", 1)
      .option("width", o.width, "width W of a row", 1)
      .option("iters", o.iters, "timed calls of each pass", 1)
      .option("eps", o.eps, "added to the variance");
  return milmer::lab::run(command_line, argc, argv, [&] {
    const std::int64_t R = o.rows, W = o.width;
    const auto n = static_cast<std::size_t>(R * W);
    using T = float;

    // Each input from its own seed, so the data do not depend on the shapes of the others.
    using milmer::lab::random_vector;
    const auto hx = random_vector(n, 1, -2.0f, 2.0f), hw = random_vector(W, 2, 0.5f, 1.5f),
               hb = random_vector(W, 3, -0.5f, 0.5f), hdy = random_vector(n, 4, -1.0f, 1.0f);
    milmer::DeviceBuffer<T> x(n), w(W), b(W), out(n), dy(n), dinp(n), dw(W), db(W);
    milmer::DeviceBuffer<float> mean(R), rstd(R),
        scratch(static_cast<std::size_t>(milmer::layernorm_backward_scratch_elements(R, W)));
    x.upload(hx.data(), n);
    w.upload(hw.data(), W);
    b.upload(hb.data(), W);
    dy.upload(hdy.data(), n);
    dw.zero();
    db.zero();

    milmer::Context ctx;
    const auto cx = milmer::view(static_cast<const T*>(x.data()), {R, W});
    const auto cw = milmer::view(static_cast<const T*>(w.data()), {W});
    auto forward = [&] {
      milmer::layernorm_forward(ctx, milmer::view(out.data(), {R, W}),
                                milmer::view(mean.data(), {R}), milmer::view(rstd.data(), {R}), cx,
                                cw, milmer::view(static_cast<const T*>(b.data()), {W}), o.eps);
    };
    auto backward = [&] {
      milmer::layernorm_backward(
          ctx, milmer::view(dinp.data(), {R, W}), milmer::view(dw.data(), {W}),
          milmer::view(db.data(), {W}),
          milmer::view(scratch.data(), {static_cast<std::int64_t>(scratch.size())}),
          milmer::view(static_cast<const T*>(dy.data()), {R, W}), cx, cw,
          milmer::view(static_cast<const float*>(mean.data()), {R}),
          milmer::view(static_cast<const float*>(rstd.data()), {R}), false);
    };

    std::printf("layernorm_lab (%s target): rows %lld, width %lld, eps %g, %d iterations\n",
                milmer::target_name(), static_cast<long long>(R), static_cast<long long>(W),
                double(o.eps), o.iters);

    // Correctness: one forward and one backward from zeroed parameter gradients.
    forward();
    backward();
    ctx.synchronize();
    using milmer::lab::to_host;
    using milmer::reference::as;
    const int rows = static_cast<int>(R), width = static_cast<int>(W);
    const std::vector<float> zero_x(n), zero_w(W);
    const auto f64 = milmer::reference::layernorm_forward(
        rows, width, as<double>(hx), as<double>(hw), as<double>(hb), double(o.eps));
    const auto f32 = milmer::reference::layernorm_forward(rows, width, hx, hw, hb, o.eps);
    const auto b64 = milmer::reference::layernorm_backward(
        rows, width, as<double>(hdy), as<double>(hx), as<double>(hw), double(o.eps),
        as<double>(zero_x), as<double>(zero_w), as<double>(zero_w), false);
    const auto b32 = milmer::reference::layernorm_backward(rows, width, hdy, hx, hw, o.eps, zero_x,
                                                           zero_w, zero_w, false);
    // One check per pass, over its outputs joined: out | mean | rstd and dinp | dweight | dbias.
    const auto joined = [](auto a, const auto& b, const auto& c) {
      a.insert(a.end(), b.begin(), b.end());
      a.insert(a.end(), c.begin(), c.end());
      return a;
    };
    milmer::lab::Checks checks;
    checks.compare("forward", joined(to_host(out), to_host(mean), to_host(rstd)),
                   joined(f64.out, f64.mean, f64.rstd), joined(f32.out, f32.mean, f32.rstd));
    checks.compare("backward", joined(to_host(dinp), to_host(dw), to_host(db)),
                   joined(b64.dinp, b64.dweight, b64.dbias),
                   joined(b32.dinp, b32.dweight, b32.dbias));

    // Timing. Minimum bytes (s = sizeof(T)): forward 2RWs + 2Ws + 8R; backward (dinp written)
    // 3RWs + 5Ws + 8R.
    const double s = sizeof(T);
    const double fwd_bytes = 2.0 * R * W * s + 2.0 * W * s + 8.0 * R;
    const double bwd_bytes = 3.0 * R * W * s + 5.0 * W * s + 8.0 * R;
    milmer::lab::time_passes({{"forward", forward, fwd_bytes}, {"backward", backward, bwd_bytes}},
                             o.iters, ctx.stream());
    return checks.exit_code();
  });
}
