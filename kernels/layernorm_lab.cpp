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
#include "milmer/tensor.hpp"

namespace {

struct Options {
  std::int64_t rows = 4096, width = 768;
  int iters = MILMER_TARGET_CUDA ? 100 : 3;
  float eps = 1e-5f;
};

// Each input from its own seed, so the data do not depend on the shapes of the others.
std::vector<float> random_vector(std::size_t n, std::uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  return milmer::lab::random_vector(n, rng, lo, hi);
}

// Forward and backward of one row set in S (double: the reference; float: the plain fp32
// baseline), outputs concatenated as out | mean | rstd and dinp | dweight | dbias.
template <class S>
void reference(const Options& o, const std::vector<float>& x, const std::vector<float>& w,
               const std::vector<float>& b, const std::vector<float>& dy, std::vector<S>& fwd,
               std::vector<S>& bwd) {
  const std::int64_t R = o.rows, W = o.width;
  fwd.assign(static_cast<std::size_t>(R * W + 2 * R), S(0));
  bwd.assign(static_cast<std::size_t>(R * W + 2 * W), S(0));
  S* dw = &bwd[static_cast<std::size_t>(R * W)];
  S* db = dw + W;
  for (std::int64_t r = 0; r < R; ++r) {
    const std::size_t base = static_cast<std::size_t>(r * W);
    S sum = 0;
    for (std::int64_t c = 0; c < W; ++c) sum += S(x[base + c]);
    const S mean = sum / S(W);
    S sq = 0;
    for (std::int64_t c = 0; c < W; ++c) sq += (S(x[base + c]) - mean) * (S(x[base + c]) - mean);
    const S rstd = S(1) / std::sqrt(sq / S(W) + S(o.eps));
    S sum_g = 0, sum_gx = 0;
    for (std::int64_t c = 0; c < W; ++c) {
      const S xhat = (S(x[base + c]) - mean) * rstd;
      fwd[base + c] = xhat * S(w[c]) + S(b[c]);
      const S g = S(dy[base + c]) * S(w[c]);
      sum_g += g;
      sum_gx += g * xhat;
      dw[c] += S(dy[base + c]) * xhat;
      db[c] += S(dy[base + c]);
    }
    for (std::int64_t c = 0; c < W; ++c) {
      const S xhat = (S(x[base + c]) - mean) * rstd;
      const S g = S(dy[base + c]) * S(w[c]);
      bwd[base + c] = rstd * (g - sum_g / S(W) - xhat * sum_gx / S(W));
    }
    fwd[static_cast<std::size_t>(R * W + r)] = mean;
    fwd[static_cast<std::size_t>(R * W + R + r)] = rstd;
  }
}

}  // namespace

int main(int argc, char** argv) try {
  Options o;
  milmer::lab::CommandLine command_line("layernorm_lab");
  command_line.option("rows", o.rows, "rows R", 1)
      .option("width", o.width, "width W of a row", 1)
      .option("iters", o.iters, "timed calls of each pass", 1)
      .option("eps", o.eps, "added to the variance");
  command_line.parse(argc, argv);
  const std::int64_t R = o.rows, W = o.width;
  const auto n = static_cast<std::size_t>(R * W);
  using T = float;

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
    milmer::layernorm_forward(ctx, milmer::view(out.data(), {R, W}), milmer::view(mean.data(), {R}),
                              milmer::view(rstd.data(), {R}), cx, cw,
                              milmer::view(static_cast<const T*>(b.data()), {W}), o.eps);
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
  std::vector<float> got_fwd(n + 2 * R), got_bwd(n + 2 * W);
  out.download(got_fwd.data(), n);
  mean.download(got_fwd.data() + n, R);
  rstd.download(got_fwd.data() + n + R, R);
  dinp.download(got_bwd.data(), n);
  dw.download(got_bwd.data() + n, W);
  db.download(got_bwd.data() + n + W, W);
  std::vector<double> ref_fwd, ref_bwd;
  std::vector<float> plain_fwd, plain_bwd;
  reference<double>(o, hx, hw, hb, hdy, ref_fwd, ref_bwd);
  reference<float>(o, hx, hw, hb, hdy, plain_fwd, plain_bwd);
  milmer::lab::Checks checks;
  checks.compare("forward", got_fwd, ref_fwd, plain_fwd);
  checks.compare("backward", got_bwd, ref_bwd, plain_bwd);

  // Timing. Minimum bytes (s = sizeof(T)): forward 2RWs + 2Ws + 8R; backward (dinp written)
  // 3RWs + 5Ws + 8R.
  const double s = sizeof(T);
  const double fwd_bytes = 2.0 * R * W * s + 2.0 * W * s + 8.0 * R;
  const double bwd_bytes = 3.0 * R * W * s + 5.0 * W * s + 8.0 * R;
  milmer::lab::report("forward", milmer::lab::time_ms(forward, o.iters, ctx.stream()), fwd_bytes);
  milmer::lab::report("backward", milmer::lab::time_ms(backward, o.iters, ctx.stream()), bwd_bytes);
  return checks.exit_code();
} catch (...) {
  milmer::lab::fail_on_exception();
}
