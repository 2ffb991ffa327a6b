// Kernel lab: the multi-head attention core (include/milmer/kernels/mha_attention.hpp).
//
//   mha_attention_lab --batch 14 --lq 64 --lk 147 --dim 768 --heads 12 --dropout 0.2
//                     [--packed 0|1] [--iters N] [--seed S] [--check 0|1]
//
// Defaults: the cross-attention compression at paper size. --packed 1 reads q, k, v from one
// (B, L, 3D) buffer (self-attention, needs lq == lk; the fusion layer is --lq 97 --lk 97
// --packed 1). Runs the library's forward and backward, checks them against fp64 plain
// loops (kernel error <= 4 x the error of the same loops in fp32, plus a tiny absolute term:
// the rule of tests/support.hpp), prints time per call, GB/s from the minimum bytes moved
// and TFLOP/s. Exit status 1 when the check fails, 2 on bad arguments.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/mha_attention.hpp"
#include "milmer/memory.hpp"
#include "milmer/reference/mha_attention.hpp"

namespace {

struct Options {
  int batch = 14, lq = 64, lk = 147, dim = 768, heads = 12, packed = 0;
  double dropout = 0.2;
  milmer::lab::RunOptions run{MILMER_TARGET_CUDA ? 20 : 1};
};

// Rows [r][col0, col0 + D) of a (rows, ld) matrix, as a contiguous (rows, D) vector.
std::vector<float> columns(const std::vector<float>& m, std::size_t rows, std::size_t ld,
                           std::size_t col0, std::size_t dim) {
  std::vector<float> r(rows * dim);
  for (std::size_t i = 0; i < rows; ++i)
    std::copy_n(m.begin() + i * ld + col0, dim, r.begin() + i * dim);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("mha_attention_lab");
  command_line
      .sizes({{"batch", o.batch, "batch B"},
              {"lq", o.lq, "query tokens Lq"},
              {"lk", o.lk, "key / value tokens Lk"},
              {"dim", o.dim, "model width D (heads x head_dim)"},
              {"heads", o.heads, "attention heads"}})
      .option("dropout", o.dropout, "drop probability P of the attention weights", 0.0, 1.0)
      .sizes({{"packed", o.packed, "1: q, k, v in one (B, L, 3D) buffer", 0, 1}})
      .run_options(o.run);
  return milmer::lab::run(command_line, argc, argv, [&] {
    if (o.packed != 0 && o.lq != o.lk)
      command_line.fail("--packed 1 needs lq == lk (self-attention)");
    const milmer::reference::MhaAttentionSizes c{
        o.batch, o.lq, o.lk, o.dim, o.heads, float(o.dropout), std::uint64_t(o.run.seed), 11};
    const bool packed = o.packed != 0;
    const std::int64_t B = c.batch, Lq = c.lq, Lk = c.lk, D = c.dim;
    std::mt19937_64 rng(c.seed);
    const std::size_t nq = std::size_t(B * Lq * D), nk = std::size_t(B * Lk * D);

    milmer::Context ctx;
    // q, k, v (and their gradients) live either in one packed (B, L, 3D) buffer or in three.
    const std::int64_t ld = packed ? 3 * D : D;
    const auto qkv_host = milmer::lab::random_vector(packed ? 3 * nq : nq + 2 * nk, rng, -2, 2);
    const auto dout_host = milmer::lab::random_vector(nq, rng, -1, 1);
    const auto qkv = milmer::lab::to_device(qkv_host), dout = milmer::lab::to_device(dout_host);
    milmer::DeviceBuffer<float> out(nq), lse(std::size_t(B) * c.heads * Lq), grads(qkv_host.size());
    auto strided = [&](auto* base, std::int64_t len) {
      auto v = milmer::view(base, {B, len, D});
      v.strides = {len * ld, ld, 1};
      return v;
    };
    const float* x = qkv.data();
    float* g = grads.data();
    // Offsets of q, k, v: packed, column blocks 0, D, 2D of each row; else three tensors.
    const std::int64_t off_k = packed ? D : std::int64_t(nq);
    const std::int64_t off_v = packed ? 2 * D : std::int64_t(nq + nk);
    const auto q_v = strided(x, Lq), k_v = strided(x + off_k, Lk), v_v = strided(x + off_v, Lk);
    const auto dq_v = strided(g, Lq), dk_v = strided(g + off_k, Lk), dv_v = strided(g + off_v, Lk);
    const auto out_v = milmer::view(out.data(), {B, Lq, D});
    const auto lse_v = milmer::view(lse.data(), {B, std::int64_t(c.heads), Lq});

    const auto forward = [&] {
      milmer::mha_attention_forward<float>(ctx, out_v, lse_v, q_v, k_v, v_v, c.heads, c.dropout,
                                           c.seed, c.offset);
    };
    const auto backward = [&] {
      milmer::mha_attention_backward<float>(
          ctx, dq_v, dk_v, dv_v, milmer::view(static_cast<const float*>(dout.data()), {B, Lq, D}),
          q_v, k_v, v_v, milmer::view(static_cast<const float*>(out.data()), {B, Lq, D}),
          milmer::view(static_cast<const float*>(lse.data()), {B, std::int64_t(c.heads), Lq}),
          c.heads, c.dropout, c.seed, c.offset);
    };
    forward();
    backward();
    std::printf(
        "mha_attention (%s): batch %d, Lq %d, Lk %d, dim %d, heads %d (head_dim %d), "
        "dropout %.2f, %s\n",
        milmer::target_name(), c.batch, c.lq, c.lk, c.dim, c.heads, c.dim / c.heads, c.dropout,
        packed ? "packed (B, L, 3D) q|k|v" : "separate q, k, v");

    milmer::lab::Checks checks;
    if (o.run.check) {
      using milmer::lab::to_host;
      const std::size_t rows_q = std::size_t(B * Lq), rows_k = std::size_t(B * Lk);
      auto part = [&](const std::vector<float>& m, std::int64_t off, std::size_t rows) {
        return packed ? columns(m, rows, std::size_t(ld), std::size_t(off), std::size_t(D))
                      : std::vector<float>(m.begin() + off, m.begin() + off + rows * D);
      };
      const auto qh = part(qkv_host, 0, rows_q), kh = part(qkv_host, off_k, rows_k),
                 vh = part(qkv_host, off_v, rows_k);
      using milmer::reference::as;
      using milmer::reference::mha_attention;
      const auto r64 =
          mha_attention(c, as<double>(qh), as<double>(kh), as<double>(vh), as<double>(dout_host));
      const auto r32 = mha_attention(c, qh, kh, vh, dout_host);
      const auto gh = to_host(grads);
      checks.compare("out", to_host(out), r64.out, r32.out);
      checks.compare("lse", to_host(lse), r64.lse, r32.lse);
      checks.compare("dq", part(gh, 0, rows_q), r64.dq, r32.dq);
      checks.compare("dk", part(gh, off_k, rows_k), r64.dk, r32.dk);
      checks.compare("dv", part(gh, off_v, rows_k), r64.dv, r32.dv);
    }

    // Minimum bytes (see the header): forward reads q, k, v and writes out and lse; backward
    // reads q, k, v, out, dout, lse and writes dq, dk, dv.
    const double s = sizeof(float), lse_bytes = double(B) * c.heads * Lq * 4;
    const double forward_bytes = (2.0 * nq + 2.0 * nk) * s + lse_bytes;
    const double backward_bytes = (4.0 * nq + 4.0 * nk) * s + lse_bytes;
    const double qk = double(B) * c.heads * Lq * Lk * (c.dim / c.heads);
    const double forward_flops = 4 * qk;    // S = q k^T, out = P v
    const double backward_flops = 14 * qk;  // S and dPd in both kernels, then dq, dk, dv
    milmer::lab::time_passes({{"forward", forward, forward_bytes, forward_flops},
                              {"backward", backward, backward_bytes, backward_flops}},
                             o.run.iters, ctx.stream());
    return checks.exit_code();
  });
}
