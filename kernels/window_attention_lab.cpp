// Kernel lab: Swin shifted-window attention (include/milmer/kernels/window_attention.hpp).
//
//   window_attention_lab --batch 8 --res 56 --window 7 --heads 3 --head-dim 32 --shift 3
//                        [--iters 20] [--seed 1] [--check 1]
//
// Runs the library's forward and backward on a res x res map, checks them against the fp64
// unfused composition (kernel error <= 4 x the error of the plain fp32 composition plus a tiny
// absolute term, the rule of tests/support.hpp), then prints the time per call, GB/s from the
// minimum bytes moved and TFLOP/s. Exit status 1 when the check fails, 2 on bad arguments.
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <random>
#include <vector>

#include "lab.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/window_attention.hpp"
#include "milmer/memory.hpp"
#include "milmer/reference/window_attention.hpp"

namespace {

struct Options {
  int batch = 8, res = 56, window = 7, heads = 3, head_dim = 32, shift = 3;
  milmer::lab::RunOptions run{MILMER_TARGET_CUDA ? 20 : 2};
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  milmer::lab::CommandLine command_line("window_attention_lab");
  command_line
      .sizes({{"batch", o.batch, "images B"},
              {"res", o.res, "height and width of the token map"},
              {"window", o.window, "window side"},
              {"heads", o.heads, "attention heads", 0},
              {"head-dim", o.head_dim, "channels per head", 0},
              {"shift", o.shift, "cyclic shift (0: plain windows)", 0}})
      .run_options(o.run);
  return milmer::lab::run(command_line, argc, argv, [&] {
    const milmer::reference::WindowAttentionSizes z{o.batch,    o.res,    o.res,  o.heads,
                                                    o.head_dim, o.window, o.shift};
    using milmer::lab::random_vector;
    auto rng = o.run.rng();
    const std::size_t C = static_cast<std::size_t>(z.channels());
    const std::size_t tokens = static_cast<std::size_t>(z.batch) * z.height * z.width;
    const std::size_t padded_tokens =
        static_cast<std::size_t>(z.batch) * z.padded_height() * z.padded_width();
    const std::size_t table_size = static_cast<std::size_t>(z.table_rows()) * z.heads;
    const std::size_t lse_size =
        static_cast<std::size_t>(z.batch) * z.heads * z.windows() * z.tokens();
    const std::size_t slots = static_cast<std::size_t>(z.batch) * z.windows();

    const auto qkv_unpadded = random_vector(tokens * 3 * C, rng, -2, 2);
    const auto qkv_bias = random_vector(3 * C, rng, -1, 1);
    const auto qkv_host = milmer::reference::window_attention_pad(qkv_unpadded, qkv_bias, z);
    const auto table_host = random_vector(table_size, rng, -1, 1);
    const auto dout_host = random_vector(tokens * C, rng, -1, 1);

    milmer::Context ctx;
    using milmer::lab::to_device;
    const auto qkv = to_device(qkv_host), table = to_device(table_host),
               dout = to_device(dout_host);
    milmer::DeviceBuffer<float> out(tokens * C), lse(lse_size), dqkv(padded_tokens * 3 * C),
        d_table(table_size), workspace(z.heads * z.table_rows() * slots);
    d_table.zero(ctx.stream());

    const auto out_v = milmer::view(out.data(), {z.batch, z.height, z.width, z.channels()});
    const auto dout_v = milmer::view(static_cast<const float*>(dout.data()),
                                     {z.batch, z.height, z.width, z.channels()});
    const std::initializer_list<std::int64_t> qkv_shape = {z.batch, z.padded_height(),
                                                           z.padded_width(), 3 * z.channels()};
    const auto qkv_v = milmer::view(static_cast<const float*>(qkv.data()), qkv_shape);
    const auto dqkv_v = milmer::view(dqkv.data(), qkv_shape);
    const auto table_v =
        milmer::view(static_cast<const float*>(table.data()), {z.table_rows(), z.heads});
    const auto d_table_v = milmer::view(d_table.data(), {z.table_rows(), z.heads});
    const auto lse_v = milmer::view(lse.data(), {z.batch, z.heads, z.windows(), z.tokens()});
    const auto workspace_v =
        milmer::view(workspace.data(), {z.heads, z.table_rows(), static_cast<std::int64_t>(slots)});

    const auto forward = [&] {
      milmer::window_attention_forward<float>(ctx, out_v, lse_v, qkv_v, table_v, z.heads, z.window,
                                              z.shift);
    };
    const auto backward = [&] {
      milmer::window_attention_backward<float>(ctx, dqkv_v, d_table_v, workspace_v, dout_v, qkv_v,
                                               table_v, lse_v, z.heads, z.window, z.shift);
    };
    forward();
    backward();

    const milmer::kernels::WindowAttentionShape shape{
        z.batch, z.height,   z.width,  z.padded_height(), z.padded_width(),
        z.heads, z.head_dim, z.window, z.shift,           0.0f};
    std::printf(
        "window_attention (%s): batch %d, map %dx%d (padded %dx%d), window %d, shift %d, "
        "heads %d, head_dim %d\n",
        milmer::target_name(), z.batch, z.height, z.width, z.padded_height(), z.padded_width(),
        z.window, z.shift, z.heads, z.head_dim);
    std::printf("  grid (%d, %d, %d) x %d threads, shared memory forward %zu B, backward %zu B\n",
                z.windows(), z.heads, z.batch, milmer::kernels::kWindowAttentionThreads,
                milmer::kernels::window_attention_shared_bytes(shape, 3),
                milmer::kernels::window_attention_shared_bytes(shape, 4));

    milmer::lab::Checks checks;
    if (o.run.check) {
      using milmer::lab::to_host;
      using milmer::reference::as;
      const auto qkv64 = as<double>(qkv_host), table64 = as<double>(table_host);
      const auto ref = milmer::reference::window_attention_forward(qkv64, table64, z);
      const auto plain = milmer::reference::window_attention_forward(qkv_host, table_host, z);
      checks.compare("out", to_host(out), ref.out, plain.out);
      checks.compare("lse", to_host(lse), ref.lse, plain.lse);
      const auto ref_b =
          milmer::reference::window_attention_backward(as<double>(dout_host), qkv64, table64, z);
      const auto plain_b =
          milmer::reference::window_attention_backward(dout_host, qkv_host, table_host, z);
      checks.compare("dqkv", to_host(dqkv), ref_b.dqkv, plain_b.dqkv);
      checks.compare("d_table", to_host(d_table), ref_b.d_table, plain_b.d_table);
    }

    // Minimum bytes (see the header): forward reads qkv and the table and writes out; backward
    // reads qkv, dout, lse and the table, writes dqkv and reads + writes d_table.
    const double s = sizeof(float);
    const double forward_bytes = (padded_tokens * 3 * C + table_size + tokens * C) * s;
    const double backward_bytes =
        (2 * padded_tokens * 3 * C + tokens * C + 3 * table_size) * s + lse_size * 4.0;
    const double window_heads = double(slots) * z.heads;
    const double n2d = double(z.tokens()) * z.tokens() * z.head_dim;
    const double forward_flops = window_heads * 4 * n2d;    // Q K^T, P V
    const double backward_flops = window_heads * 10 * n2d;  // S again, dV, dP, dQ, dK
    milmer::lab::time_passes({{"forward", forward, forward_bytes, forward_flops},
                              {"backward", backward, backward_bytes, backward_flops}},
                             o.run.iters, ctx.stream());
    return checks.exit_code();
  });
}
