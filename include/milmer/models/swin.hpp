// SwinEncoder: the Swin Transformer of transformers' SwinModel (last_hidden_state), written
// from the library's kernels with a hand-written backward pass. docs/model.md §2.
//
// Data flow for B images (per stage s: width C, map H x H, window w = min(window, H), shift
// on odd blocks unless H <= window, map padded to Hp = ceil(H/w) w for attention):
//   pixels (B, Cin, H0, W0) -patch_gather-> (B*L0, Cin*P*P) -GEMM+bias-> -LayerNorm-> x
//   per block:   ln1 = LN(x); [pad to Hp]; qkv = ln1 @ [Wq; Wk; Wv]^T + b   (one GEMM)
//                attn = window_attention(qkv)            (shift, windows, bias, mask, crop)
//                x = x + DropPath(attn @ Wo^T + bo)
//                ln2 = LN(x); x = x + DropPath(GELU(ln2 @ W1^T + b1) @ W2^T + b2)
//   per stage but the last: x = Linear(LN(merge_gather(x)))     (B, L/4, 2C)
//   out = LN(x)                                                 (B, L_last, C_last)
// Drop-path is applied to both residual branches as in docs/model.md §2 (transformers applies
// it to the attention branch only; both are identical in evaluation, where it is off).
//
// Memory: parameters and gradients in one ParameterSet, read through typed tables (SwinTensors)
// bound once at construction; activations for `capacity` images (what backward needs, sized
// once); forward on more images than that runs in chunks and keeps nothing for backward.
// Backward scratch is shared by all blocks.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "milmer/config.hpp"
#include "milmer/context.hpp"
#include "milmer/kernels/dropout.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/kernels/swin_layout.hpp"
#include "milmer/kernels/window_attention.hpp"
#include "milmer/memory.hpp"
#include "milmer/params.hpp"
#include "milmer/rng.hpp"

namespace milmer {

// The encoder's tensors with the shapes the kernels read: its parameters (T = const float) or
// their gradients (T = float). Bound once from the transformers names (the checkpoint contract).
template <class T>
struct SwinBlockTensors {
  TensorView<T> ln1_w, ln1_b;    // layernorm_before (C)
  TensorView<T> qkv_w, qkv_b;    // attention.self.{query,key,value}, stacked (3C, C), (3C);
                                 // qkv_b empty without qkv_bias
  TensorView<T> rel_bias;        // attention.self.relative_position_bias_table (rows, heads)
  TensorView<T> proj_w, proj_b;  // attention.output.dense (C, C), (C)
  TensorView<T> ln2_w, ln2_b;    // layernorm_after (C)
  TensorView<T> fc1_w, fc1_b;    // intermediate.dense (H4, C), (H4)
  TensorView<T> fc2_w, fc2_b;    // output.dense (C, H4), (C)
};
template <class T>
struct SwinMergeTensors {
  TensorView<T> norm_w, norm_b;  // downsample.norm (4C)
  TensorView<T> reduction_w;     // downsample.reduction (2C, 4C), no bias
};
template <class T>
struct SwinTensors {
  TensorView<T> patch_w, patch_b;  // embeddings.patch_embeddings.projection (C0, Cin*P*P), (C0)
  TensorView<T> embed_norm_w, embed_norm_b;              // embeddings.norm (C0)
  std::vector<std::vector<SwinBlockTensors<T>>> blocks;  // [stage][block]
  std::vector<SwinMergeTensors<T>> merges;               // [stage], all stages but the last
  TensorView<T> final_norm_w, final_norm_b;              // layernorm (C_last)
};

class SwinEncoder {
 public:
  // capacity: the most images one forward keeps activations for (backward needs them).
  SwinEncoder(Context& ctx, const SwinConfig& cfg, int capacity) : cfg_(cfg), capacity_(capacity) {
    cfg_.validate("SwinEncoder");
    MILMER_CHECK(capacity >= 1, "SwinEncoder", "capacity", ">= 1", str(capacity));
    declare_parameters();
    params_.allocate(ctx);
    p_ = bind_tensors(ParameterViews<const float>{params_});
    g_ = bind_tensors(ParameterViews<float>{params_});
    plan_activations();
  }

  const SwinConfig& config() const { return cfg_; }
  ParameterSet& params() { return params_; }
  const ParameterSet& params() const { return params_; }
  int capacity() const { return capacity_; }
  int out_tokens() const { return cfg_.out_tokens(); }
  int out_width() const { return cfg_.out_width(); }
  std::size_t activation_bytes() const { return acts_.capacity(); }

  // transformers-style initialisation: Linear/conv weights N(0, 0.02), biases 0, LayerNorm
  // (1, 0), relative-position tables N(0, 0.02). Deterministic from seed.
  void init(Context& ctx, std::uint64_t seed) { params_.init_normal(ctx, seed, 0x5717, 0.02f); }

  // Loads transformers-named tensors, each name preceded by `prefix` (a Milmer checkpoint
  // uses "swin."; tensors without the prefix are then someone else's and skipped).
  // relative_position_index buffers may be present and must equal the kernels' index.
  void load(Context& ctx, const io::SafetensorsFile& file, const std::string& prefix = "") {
    check_position_index_buffers(file, prefix);
    params_.load(ctx, file, prefix, [&](const std::string& name) {
      return is_swin_buffer_name(name) || name.compare(0, prefix.size(), prefix) != 0;
    });
  }
  void load(Context& ctx, const std::filesystem::path& path) {
    load(ctx, io::read_safetensors(path));
  }

  // out (n, L, C) = SwinModel(pixels (n, Cin, H, W)).last_hidden_state. Keeps activations
  // for backward when n <= capacity. training: drop-path on, masks from (seed, block).
  void forward(Context& ctx, TensorView<float> out, TensorView<const float> pixels, bool training,
               std::uint64_t seed) {
    constexpr const char* op = "SwinEncoder::forward";
    expect(pixels, op, "pixels", {-1, cfg_.num_channels, cfg_.image_size, cfg_.image_size});
    const std::int64_t n = pixels.dim(0);
    expect(out, op, "out", {n, cfg_.out_tokens(), cfg_.out_width()});
    const std::int64_t per_image =
        std::int64_t{cfg_.num_channels} * cfg_.image_size * cfg_.image_size;
    const std::int64_t out_per_image = std::int64_t{cfg_.out_tokens()} * cfg_.out_width();
    for (std::int64_t first = 0; first < n; first += capacity_) {
      const int b = static_cast<int>(std::min<std::int64_t>(capacity_, n - first));
      forward_chunk(ctx, out.data + first * out_per_image, pixels.data + first * per_image, b,
                    training, seed);
    }
    saved_images_ = n <= capacity_ ? static_cast<int>(n) : 0;
    saved_training_ = training;
    saved_seed_ = seed;
  }

  // Backward of the last forward (which must have kept its activations): parameter gradients
  // accumulate (+=); dpixels (n, Cin, H, W) is written when given (non-empty view).
  void backward(Context& ctx, TensorView<const float> dout, TensorView<float> dpixels = {}) {
    constexpr const char* op = "SwinEncoder::backward";
    MILMER_CHECK(saved_images_ > 0, op, "activations",
                 str("a forward on at most ", capacity_, " images before backward"),
                 "none kept (no forward yet, or it ran on more images than the capacity)");
    const int B = saved_images_;
    expect(dout, op, "dout", {B, cfg_.out_tokens(), cfg_.out_width()});
    if (dpixels.data)
      expect(dpixels, op, "dpixels", {B, cfg_.num_channels, cfg_.image_size, cfg_.image_size});
    const int S = cfg_.stages();
    // final LayerNorm
    {
      const int s = S - 1;
      const std::int64_t rows = std::int64_t{B} * cfg_.tokens(s), C = cfg_.width(s);
      layernorm_backward<float>(
          ctx, view(dres_, {rows, C}), g_.final_norm_w, g_.final_norm_b,
          view(ln_scratch_, {ln_scratch_n_}), view<const float>(dout.data, {rows, C}),
          cview(stage_out(s), {rows, C}), p_.final_norm_w, view<const float>(final_mean_, {rows}),
          view<const float>(final_rstd_, {rows}), false);
    }
    for (int s = S - 1; s >= 0; --s) {
      if (s + 1 < S) merge_backward(ctx, s, B);
      for (int blk = cfg_.depth(s) - 1; blk >= 0; --blk) block_backward(ctx, s, blk, B);
    }
    embed_backward(ctx, B, dpixels);
  }

 private:
  // qkv_in: ln1 padded to the Hp x Hp map the attention reads, or ln1 itself where the map
  // needs no padding (then both name one buffer).
  struct BlockActs {
    float *x_in, *ln1, *mean1, *rstd1, *qkv_in, *qkv, *lse, *attn, *x_mid, *ln2, *mean2, *rstd2,
        *fc1_pre, *fc1_out, *x_out;
  };
  struct MergeActs {
    float *gathered, *normed, *mean, *rstd;
  };

  template <class T>
  SwinTensors<T> bind_tensors(const ParameterViews<T>& at) const {
    SwinTensors<T> t;
    const std::int64_t C0 = cfg_.width(0);
    const std::int64_t kpatch = std::int64_t{cfg_.num_channels} * cfg_.patch_size * cfg_.patch_size;
    t.patch_w = at("embeddings.patch_embeddings.projection.weight", {C0, kpatch});
    t.patch_b = at("embeddings.patch_embeddings.projection.bias", {C0});
    t.embed_norm_w = at("embeddings.norm.weight", {C0});
    t.embed_norm_b = at("embeddings.norm.bias", {C0});
    t.blocks.resize(cfg_.stages());
    t.merges.resize(cfg_.stages());
    for (int s = 0; s < cfg_.stages(); ++s) {
      const std::int64_t C = cfg_.width(s), H4 = cfg_.mlp_hidden(s);
      for (int b = 0; b < cfg_.depth(s); ++b) {
        const std::string n = str("encoder.layers.", s, ".blocks.", b, ".");
        SwinBlockTensors<T> k;
        k.ln1_w = at(n + "layernorm_before.weight", {C});
        k.ln1_b = at(n + "layernorm_before.bias", {C});
        k.qkv_w = at(n + "attention.self.query.weight", {3 * C, C});
        if (cfg_.qkv_bias) k.qkv_b = at(n + "attention.self.query.bias", {3 * C});
        k.rel_bias = at(n + "attention.self.relative_position_bias_table",
                        {cfg_.bias_table_rows(), cfg_.heads(s)});
        k.proj_w = at(n + "attention.output.dense.weight", {C, C});
        k.proj_b = at(n + "attention.output.dense.bias", {C});
        k.ln2_w = at(n + "layernorm_after.weight", {C});
        k.ln2_b = at(n + "layernorm_after.bias", {C});
        k.fc1_w = at(n + "intermediate.dense.weight", {H4, C});
        k.fc1_b = at(n + "intermediate.dense.bias", {H4});
        k.fc2_w = at(n + "output.dense.weight", {C, H4});
        k.fc2_b = at(n + "output.dense.bias", {C});
        t.blocks[s].push_back(k);
      }
      if (s + 1 < cfg_.stages()) {
        const std::string n = str("encoder.layers.", s, ".downsample.");
        t.merges[s].norm_w = at(n + "norm.weight", {4 * C});
        t.merges[s].norm_b = at(n + "norm.bias", {4 * C});
        t.merges[s].reduction_w = at(n + "reduction.weight", {2 * C, 4 * C});
      }
    }
    t.final_norm_w = at("layernorm.weight", {cfg_.out_width()});
    t.final_norm_b = at("layernorm.bias", {cfg_.out_width()});
    return t;
  }
  static TensorView<const float> cview(float* p, std::initializer_list<std::int64_t> dims) {
    return TensorView<const float>(p, dims);
  }
  float* stage_out(int s) {
    const auto& blocks = blocks_[s];
    return blocks.back().x_out;
  }
  int block_index(int s, int b) const {
    int i = b;
    for (int k = 0; k < s; ++k) i += cfg_.depth(k);
    return i;
  }

  void declare_parameters() {
    for (const auto& spec : swin_parameter_specs(cfg_)) {
      const std::string& n = spec.name;
      auto ends = [&](const std::string& suffix) {
        return n.size() >= suffix.size() &&
               n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
      };
      if (ends("key.weight") || ends("value.weight") || ends("query.bias") || ends("key.bias") ||
          ends("value.bias"))
        continue;  // placed with the query tensors below
      if (ends("query.weight")) {
        const std::string base = n.substr(0, n.size() - std::string("query.weight").size());
        params_.add(base + "query.weight", spec.shape);
        params_.add(base + "key.weight", spec.shape, true);
        params_.add(base + "value.weight", spec.shape, true);
        if (cfg_.qkv_bias) {
          const std::vector<std::int64_t> bshape{spec.shape[0]};
          params_.add(base + "query.bias", bshape);
          params_.add(base + "key.bias", bshape, true);
          params_.add(base + "value.bias", bshape, true);
        }
        continue;
      }
      params_.add(n, spec.shape);
    }
  }

  void plan_activations() {
    const std::int64_t B = capacity_;
    acts_ = ArenaPlan::build([&](ArenaPlan& plan) {
      auto take = [&](std::int64_t n, const char* what) { return plan.take(n, what); };
      const std::int64_t L0 = cfg_.tokens(0), C0 = cfg_.width(0);
      const std::int64_t kpatch =
          std::int64_t{cfg_.num_channels} * cfg_.patch_size * cfg_.patch_size;
      patches_ = take(B * L0 * kpatch, "patches");
      embed_pre_ = take(B * L0 * C0, "embed_pre");
      embed_mean_ = take(B * L0, "embed_mean");
      embed_rstd_ = take(B * L0, "embed_rstd");
      float* x = take(B * L0 * C0, "stage0_in");
      blocks_.assign(cfg_.stages(), {});
      merges_.assign(cfg_.stages(), {});
      std::int64_t big = 0, mid = 0, ln_scratch = 0, wa_ws = 0;
      for (int s = 0; s < cfg_.stages(); ++s) {
        const std::int64_t L = cfg_.tokens(s), C = cfg_.width(s), H4 = cfg_.mlp_hidden(s);
        const std::int64_t Hp = cfg_.padded_resolution(s), Lp = Hp * Hp, rows = B * L;
        const std::int64_t N = std::int64_t{cfg_.window(s)} * cfg_.window(s);
        const bool padded = Hp != cfg_.resolution(s);
        for (int b = 0; b < cfg_.depth(s); ++b) {
          BlockActs a{};
          a.x_in = x;
          a.ln1 = take(rows * C, "ln1");
          a.mean1 = take(rows, "mean1");
          a.rstd1 = take(rows, "rstd1");
          a.qkv_in = padded ? take(B * Lp * C, "ln1_padded") : a.ln1;
          a.qkv = take(B * Lp * 3 * C, "qkv");
          a.lse = take(B * cfg_.heads(s) * cfg_.windows(s) * N, "lse");
          a.attn = take(rows * C, "attn");
          a.x_mid = take(rows * C, "x_mid");
          a.ln2 = take(rows * C, "ln2");
          a.mean2 = take(rows, "mean2");
          a.rstd2 = take(rows, "rstd2");
          a.fc1_pre = take(rows * H4, "fc1_pre");
          a.fc1_out = take(rows * H4, "fc1_out");
          a.x_out = take(rows * C, "x_out");
          x = a.x_out;
          blocks_[s].push_back(a);
        }
        big = std::max({big, rows * H4, B * Lp * 3 * C});
        mid = std::max({mid, B * Lp * C, rows * C});
        ln_scratch = std::max(ln_scratch, layernorm_backward_scratch_elements(rows, C));
        wa_ws = std::max(
            wa_ws, std::int64_t{cfg_.heads(s)} * cfg_.bias_table_rows() * B * cfg_.windows(s));
        if (s + 1 < cfg_.stages()) {
          const std::int64_t L2 = cfg_.tokens(s + 1);
          MergeActs m{};
          m.gathered = take(B * L2 * 4 * C, "merge_gathered");
          m.normed = take(B * L2 * 4 * C, "merge_normed");
          m.mean = take(B * L2, "merge_mean");
          m.rstd = take(B * L2, "merge_rstd");
          merges_[s] = m;
          x = take(B * L2 * 2 * C, "stage_in");
          ln_scratch = std::max(ln_scratch, layernorm_backward_scratch_elements(B * L2, 4 * C));
          mid = std::max(mid, B * L2 * 4 * C);
        }
      }
      const int last = cfg_.stages() - 1;
      final_mean_ = take(B * cfg_.tokens(last), "final_mean");
      final_rstd_ = take(B * cfg_.tokens(last), "final_rstd");
      // backward scratch
      const std::int64_t res = std::max(B * L0 * std::max<std::int64_t>(C0, kpatch), mid);
      dres_ = take(res, "dres");
      dtmp_ = take(res, "dtmp");
      dbig_ = take(big, "dbig");
      dmid_ = take(mid, "dmid");
      ln_scratch_n_ = std::max<std::int64_t>(ln_scratch, 1);
      ln_scratch_ = take(ln_scratch_n_, "ln_scratch");
      wa_ws_ = take(std::max<std::int64_t>(wa_ws, 1), "window_attention_workspace");
      branch_ = take(mid, "branch");
    });
  }

  void forward_chunk(Context& ctx, float* out, const float* pixels, int B, bool training,
                     std::uint64_t seed) {
    const int P = cfg_.patch_size, S = cfg_.stages();
    const std::int64_t L0 = cfg_.tokens(0), C0 = cfg_.width(0);
    const std::int64_t kpatch = std::int64_t{cfg_.num_channels} * P * P;
    const float eps = static_cast<float>(cfg_.layer_norm_eps);
    patch_gather_forward<float>(
        ctx, view(patches_, {B * L0, kpatch}),
        view<const float>(pixels, {B, cfg_.num_channels, cfg_.image_size, cfg_.image_size}), P);
    linear_forward<float>(ctx, view(embed_pre_, {B * L0, C0}), cview(patches_, {B * L0, kpatch}),
                          p_.patch_w, p_.patch_b);
    layernorm_forward<float>(ctx, view(blocks_[0][0].x_in, {B * L0, C0}),
                             view(embed_mean_, {B * L0}), view(embed_rstd_, {B * L0}),
                             cview(embed_pre_, {B * L0, C0}), p_.embed_norm_w, p_.embed_norm_b,
                             eps);
    for (int s = 0; s < S; ++s) {
      for (int b = 0; b < cfg_.depth(s); ++b) block_forward(ctx, s, b, B, training, seed);
      if (s + 1 < S) merge_forward(ctx, s, B);
    }
    const int s = S - 1;
    const std::int64_t rows = std::int64_t{B} * cfg_.tokens(s), C = cfg_.width(s);
    layernorm_forward<float>(ctx, view(out, {rows, C}), view(final_mean_, {rows}),
                             view(final_rstd_, {rows}), cview(stage_out(s), {rows, C}),
                             p_.final_norm_w, p_.final_norm_b, eps);
  }

  float drop_path_p(int s, int b, bool training) const {
    return training ? static_cast<float>(cfg_.drop_path(s, b)) : 0.0f;
  }

  void block_forward(Context& ctx, int s, int b, int B, bool training, std::uint64_t seed) {
    BlockActs& a = blocks_[s][b];
    const SwinBlockTensors<const float>& pb = p_.blocks[s][b];
    const std::int64_t H = cfg_.resolution(s), C = cfg_.width(s), L = H * H, rows = B * L;
    const std::int64_t Hp = cfg_.padded_resolution(s), H4 = cfg_.mlp_hidden(s);
    const float eps = static_cast<float>(cfg_.layer_norm_eps);
    const float p = drop_path_p(s, b, training);
    const std::uint64_t offset = 2 * static_cast<std::uint64_t>(block_index(s, b));
    layernorm_forward<float>(ctx, view(a.ln1, {rows, C}), view(a.mean1, {rows}),
                             view(a.rstd1, {rows}), cview(a.x_in, {rows, C}), pb.ln1_w, pb.ln1_b,
                             eps);
    if (a.qkv_in != a.ln1)
      pad_map_forward<float>(ctx, view(a.qkv_in, {B, Hp, Hp, C}), cview(a.ln1, {B, H, H, C}));
    linear_forward<float>(ctx, view(a.qkv, {B * Hp * Hp, 3 * C}), cview(a.qkv_in, {B * Hp * Hp, C}),
                          pb.qkv_w, pb.qkv_b);
    window_attention_forward<float>(ctx, view(a.attn, {B, H, H, C}),
                                    view(a.lse, {B, cfg_.heads(s), cfg_.windows(s),
                                                 std::int64_t{cfg_.window(s)} * cfg_.window(s)}),
                                    cview(a.qkv, {B, Hp, Hp, 3 * C}), pb.rel_bias, cfg_.heads(s),
                                    cfg_.window(s), cfg_.block_shift(s, b));
    linear_forward<float>(ctx, view(branch_, {rows, C}), cview(a.attn, {rows, C}), pb.proj_w,
                          pb.proj_b);
    if (p > 0.0f)
      drop_path_forward<float>(ctx, view(branch_, {B, L * C}), cview(branch_, {B, L * C}), p, seed,
                               offset);
    add_forward<float>(ctx, view(a.x_mid, {rows, C}), cview(a.x_in, {rows, C}),
                       cview(branch_, {rows, C}));
    layernorm_forward<float>(ctx, view(a.ln2, {rows, C}), view(a.mean2, {rows}),
                             view(a.rstd2, {rows}), cview(a.x_mid, {rows, C}), pb.ln2_w, pb.ln2_b,
                             eps);
    linear_forward<float>(ctx, view(a.fc1_out, {rows, H4}), cview(a.ln2, {rows, C}), pb.fc1_w,
                          pb.fc1_b, Epilogue::gelu, view(a.fc1_pre, {rows, H4}));
    linear_forward<float>(ctx, view(branch_, {rows, C}), cview(a.fc1_out, {rows, H4}), pb.fc2_w,
                          pb.fc2_b);
    if (p > 0.0f)
      drop_path_forward<float>(ctx, view(branch_, {B, L * C}), cview(branch_, {B, L * C}), p, seed,
                               offset + 1);
    add_forward<float>(ctx, view(a.x_out, {rows, C}), cview(a.x_mid, {rows, C}),
                       cview(branch_, {rows, C}));
  }

  // On entry dres_ holds d x_out of the block; on exit d x_in.
  void block_backward(Context& ctx, int s, int b, int B) {
    BlockActs& a = blocks_[s][b];
    const SwinBlockTensors<const float>& pb = p_.blocks[s][b];
    const SwinBlockTensors<float>& gb = g_.blocks[s][b];
    const std::int64_t H = cfg_.resolution(s), C = cfg_.width(s), L = H * H, rows = B * L;
    const std::int64_t Hp = cfg_.padded_resolution(s), H4 = cfg_.mlp_hidden(s);
    const float p = drop_path_p(s, b, saved_training_);
    const std::uint64_t offset = 2 * static_cast<std::uint64_t>(block_index(s, b));
    // MLP branch: x_out = x_mid + DropPath(fc2(GELU(fc1(ln2))))
    float* d_branch = dres_;
    if (p > 0.0f) {
      drop_path_backward<float>(ctx, view(dtmp_, {B, L * C}), cview(dres_, {B, L * C}), p,
                                saved_seed_, offset + 1);
      d_branch = dtmp_;
    }
    linear_backward<float>(ctx, view(dbig_, {rows, H4}), gb.fc2_w, gb.fc2_b,
                           cview(d_branch, {rows, C}), cview(a.fc1_out, {rows, H4}), pb.fc2_w);
    linear_backward<float>(ctx, view(dmid_, {rows, C}), gb.fc1_w, gb.fc1_b,
                           cview(dbig_, {rows, H4}), cview(a.ln2, {rows, C}), pb.fc1_w,
                           Epilogue::gelu, cview(a.fc1_pre, {rows, H4}), view(dbig_, {rows, H4}));
    layernorm_backward<float>(ctx, view(dres_, {rows, C}), gb.ln2_w, gb.ln2_b,
                              view(ln_scratch_, {ln_scratch_n_}), cview(dmid_, {rows, C}),
                              cview(a.x_mid, {rows, C}), pb.ln2_w, cview(a.mean2, {rows}),
                              cview(a.rstd2, {rows}), true);
    // attention branch: x_mid = x_in + DropPath(out_proj(attn))
    d_branch = dres_;
    if (p > 0.0f) {
      drop_path_backward<float>(ctx, view(dtmp_, {B, L * C}), cview(dres_, {B, L * C}), p,
                                saved_seed_, offset);
      d_branch = dtmp_;
    }
    linear_backward<float>(ctx, view(dmid_, {rows, C}), gb.proj_w, gb.proj_b,
                           cview(d_branch, {rows, C}), cview(a.attn, {rows, C}), pb.proj_w);
    window_attention_backward<float>(
        ctx, view(dbig_, {B, Hp, Hp, 3 * C}), gb.rel_bias,
        view(wa_ws_, {cfg_.heads(s), cfg_.bias_table_rows(), std::int64_t{B} * cfg_.windows(s)}),
        cview(dmid_, {B, H, H, C}), cview(a.qkv, {B, Hp, Hp, 3 * C}), pb.rel_bias,
        cview(a.lse,
              {B, cfg_.heads(s), cfg_.windows(s), std::int64_t{cfg_.window(s)} * cfg_.window(s)}),
        cfg_.heads(s), cfg_.window(s), cfg_.block_shift(s, b));
    const bool padded = a.qkv_in != a.ln1;
    float* d_src = padded ? dtmp_ : dmid_;
    linear_backward<float>(ctx, view(d_src, {B * Hp * Hp, C}), gb.qkv_w, gb.qkv_b,
                           cview(dbig_, {B * Hp * Hp, 3 * C}), cview(a.qkv_in, {B * Hp * Hp, C}),
                           pb.qkv_w);
    if (padded)
      pad_map_backward<float>(ctx, view(dmid_, {B, H, H, C}), cview(dtmp_, {B, Hp, Hp, C}));
    layernorm_backward<float>(ctx, view(dres_, {rows, C}), gb.ln1_w, gb.ln1_b,
                              view(ln_scratch_, {ln_scratch_n_}), cview(dmid_, {rows, C}),
                              cview(a.x_in, {rows, C}), pb.ln1_w, cview(a.mean1, {rows}),
                              cview(a.rstd1, {rows}), true);
  }

  void merge_forward(Context& ctx, int s, int B) {
    MergeActs& m = merges_[s];
    const SwinMergeTensors<const float>& pm = p_.merges[s];
    const std::int64_t H = cfg_.resolution(s), C = cfg_.width(s), L2 = cfg_.tokens(s + 1);
    merge_gather_forward<float>(ctx, view(m.gathered, {B, L2, 4 * C}),
                                cview(stage_out(s), {B, H, H, C}));
    layernorm_forward<float>(ctx, view(m.normed, {B * L2, 4 * C}), view(m.mean, {B * L2}),
                             view(m.rstd, {B * L2}), cview(m.gathered, {B * L2, 4 * C}), pm.norm_w,
                             pm.norm_b, static_cast<float>(cfg_.layer_norm_eps));
    linear_forward<float>(ctx, view(blocks_[s + 1][0].x_in, {B * L2, 2 * C}),
                          cview(m.normed, {B * L2, 4 * C}), pm.reduction_w);
  }

  // On entry dres_ holds d(stage s+1 input); on exit d(stage s output).
  void merge_backward(Context& ctx, int s, int B) {
    MergeActs& m = merges_[s];
    const SwinMergeTensors<const float>& pm = p_.merges[s];
    const SwinMergeTensors<float>& gm = g_.merges[s];
    const std::int64_t H = cfg_.resolution(s), C = cfg_.width(s), L2 = cfg_.tokens(s + 1);
    linear_backward<float>(ctx, view(dmid_, {B * L2, 4 * C}), gm.reduction_w, TensorView<float>{},
                           cview(dres_, {B * L2, 2 * C}), cview(m.normed, {B * L2, 4 * C}),
                           pm.reduction_w);
    layernorm_backward<float>(ctx, view(dtmp_, {B * L2, 4 * C}), gm.norm_w, gm.norm_b,
                              view(ln_scratch_, {ln_scratch_n_}), cview(dmid_, {B * L2, 4 * C}),
                              cview(m.gathered, {B * L2, 4 * C}), pm.norm_w,
                              cview(m.mean, {B * L2}), cview(m.rstd, {B * L2}), false);
    merge_gather_backward<float>(ctx, view(dres_, {B, H, H, C}), cview(dtmp_, {B, L2, 4 * C}));
  }

  void embed_backward(Context& ctx, int B, TensorView<float> dpixels) {
    const int P = cfg_.patch_size;
    const std::int64_t L0 = cfg_.tokens(0), C0 = cfg_.width(0);
    const std::int64_t kpatch = std::int64_t{cfg_.num_channels} * P * P;
    layernorm_backward<float>(ctx, view(dmid_, {B * L0, C0}), g_.embed_norm_w, g_.embed_norm_b,
                              view(ln_scratch_, {ln_scratch_n_}), cview(dres_, {B * L0, C0}),
                              cview(embed_pre_, {B * L0, C0}), p_.embed_norm_w,
                              cview(embed_mean_, {B * L0}), cview(embed_rstd_, {B * L0}), false);
    linear_backward<float>(ctx, dpixels.data ? view(dtmp_, {B * L0, kpatch}) : TensorView<float>{},
                           g_.patch_w, g_.patch_b, cview(dmid_, {B * L0, C0}),
                           cview(patches_, {B * L0, kpatch}), p_.patch_w);
    if (dpixels.data) patch_gather_backward<float>(ctx, dpixels, cview(dtmp_, {B * L0, kpatch}), P);
  }

  // A relative_position_index buffer in a checkpoint must be the standard Swin index of the
  // stage's window: a different one would silently mean a different model.
  void check_position_index_buffers(const io::SafetensorsFile& file,
                                    const std::string& prefix) const {
    for (const auto& [name, t] : file.tensors) {
      if (!is_swin_buffer_name(name) || name.compare(0, prefix.size(), prefix) != 0) continue;
      const auto pos = name.find("encoder.layers.");
      MILMER_CHECK(pos != std::string::npos, "SwinEncoder::load " + file.path, name,
                   "a buffer under encoder.layers.<stage>", "an unknown buffer");
      const int s = std::stoi(name.substr(pos + 15));
      MILMER_CHECK(s >= 0 && s < cfg_.stages(), "SwinEncoder::load " + file.path, name,
                   str("a stage below ", cfg_.stages()), str("stage ", s));
      const int W = cfg_.window_size, N = W * W;
      MILMER_CHECK((t.shape == io::Shape{N, N} && t.dtype == io::DType::I64),
                   "SwinEncoder::load " + file.path, name, str("int64 [", N, ", ", N, "]"),
                   str(io::dtype_name(t.dtype), " ", io::shape_string(t.shape)));
      const auto v = t.values<std::int64_t>();
      for (int i = 0; i < N; ++i)
        for (int j = 0; j < N; ++j) {
          const std::int64_t want =
              std::int64_t{i / W - j / W + W - 1} * (2 * W - 1) + (i % W - j % W + W - 1);
          MILMER_CHECK(v[std::size_t(i) * N + j] == want, "SwinEncoder::load " + file.path, name,
                       str("the standard Swin index (", want, " at [", i, ", ", j, "])"),
                       str(v[std::size_t(i) * N + j]));
        }
    }
  }

  SwinConfig cfg_;
  int capacity_;
  ParameterSet params_;
  SwinTensors<const float> p_;  // parameter values, bound once
  SwinTensors<float> g_;        // their gradients
  Arena acts_;
  std::vector<std::vector<BlockActs>> blocks_;
  std::vector<MergeActs> merges_;
  float *patches_ = nullptr, *embed_pre_ = nullptr, *embed_mean_ = nullptr, *embed_rstd_ = nullptr;
  float *final_mean_ = nullptr, *final_rstd_ = nullptr;
  float *dres_ = nullptr, *dtmp_ = nullptr, *dbig_ = nullptr, *dmid_ = nullptr, *branch_ = nullptr;
  float *ln_scratch_ = nullptr, *wa_ws_ = nullptr;
  std::int64_t ln_scratch_n_ = 1;
  int saved_images_ = 0;
  bool saved_training_ = false;
  std::uint64_t saved_seed_ = 0;
};

}  // namespace milmer
