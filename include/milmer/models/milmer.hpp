// Milmer: the whole model of docs/model.md (§1-§8) with a hand-written backward pass
// and its training step (loss, backward, AdamW, cosine schedule). docs/model.md walks through
// the data flow with every tensor's shape.
//
//   frames (B, F, 3, H, W) -Swin per frame-> X (B, F, M, D)
//   AMIL: e = mean_m X; s = w.tanh(V e + b) + b_w; a = softmax_F(s); top-K; gates
//         Z (B, K*M, D) = gate_k * X[b, T_k]
//   compression: visual (B, N, D) = MultiheadAttention(queries, Z, Z)
//   EEG: tokens (B, C, D) = ReLU(Linear(LayerNorm_S(eeg)))
//   fusion: x = [cls; visual + type0 + pos_v; eeg + type1 + pos_e]      (B, 1+N+C, D)
//           post-LN TransformerEncoderLayer x L
//   head: logits = Linear(Dropout(x[:, 0]))
//
// With amil_detach_scores (the default) the encoder runs twice in training: once over all F
// frames without drop-path and without keeping activations (it only scores the frames), then
// over the K selected frames of each sample, keeping activations, with drop-path; Z is built
// from that second pass, and only it is back-propagated. Without drop-path (evaluation, or a
// zero rate) both passes give identical tokens, so this is exactly the reference model; with
// drop-path the scores come from the deterministic encoder, which is what a selection
// decision with a detached gradient should see. Without amil_detach_scores every frame gets
// a gradient, so all F frames are encoded once with activations kept.
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "milmer/config.hpp"
#include "milmer/context.hpp"
#include "milmer/io/safetensors.hpp"
#include "milmer/kernels/activation.hpp"
#include "milmer/kernels/adamw.hpp"
#include "milmer/kernels/amil.hpp"
#include "milmer/kernels/dropout.hpp"
#include "milmer/kernels/elementwise.hpp"
#include "milmer/kernels/frames.hpp"
#include "milmer/kernels/gemm.hpp"
#include "milmer/kernels/layernorm.hpp"
#include "milmer/kernels/mha_attention.hpp"
#include "milmer/kernels/residual_layernorm.hpp"
#include "milmer/kernels/softmax_ce.hpp"
#include "milmer/kernels/tokens.hpp"
#include "milmer/memory.hpp"
#include "milmer/models/swin.hpp"
#include "milmer/params.hpp"

namespace milmer {

// Milmer's own tensors (all but the encoder's) with the shapes the kernels read: its
// parameters (T = const float) or their gradients (T = float), bound once from the
// docs/model.md section 11 names (the checkpoint contract).
template <class T>
struct AmilTensors {
  TensorView<T> V_w, V_b;  // amil.V (L, D), (L)
  TensorView<T> w_w, w_b;  // amil.w (1, L), (1)
};
template <class T>
struct CompressionTensors {
  TensorView<T> queries;       // ca.queries (N, D)
  TensorView<T> q_w, q_b;      // rows 0..D of ca.attn.in_proj_weight / _bias: (D, D), (D)
  TensorView<T> kv_w, kv_b;    // rows D..3D of the same, k and v adjacent: (2D, D), (2D)
  TensorView<T> out_w, out_b;  // ca.attn.out_proj (D, D), (D)
};
template <class T>
struct EegTensors {
  TensorView<T> norm_w, norm_b;  // eeg.norm (S)
  TensorView<T> proj_w, proj_b;  // eeg.proj (D, S), (D)
};
template <class T>
struct TokenTensors {
  TensorView<T> cls;         // fusion.cls (D)
  TensorView<T> type_embed;  // fusion.type_embed.weight (2, D)
  TensorView<T> pos_visual;  // fusion.pos_visual (N, D)
  TensorView<T> pos_eeg;     // fusion.pos_eeg (C, D)
};
template <class T>
struct FusionLayerTensors {              // fusion.layers.<l>.
  TensorView<T> in_proj_w, in_proj_b;    // self_attn.in_proj_weight / _bias (3D, D), (3D)
  TensorView<T> out_proj_w, out_proj_b;  // self_attn.out_proj (D, D), (D)
  TensorView<T> linear1_w, linear1_b;    // linear1 (ffn, D), (ffn)
  TensorView<T> linear2_w, linear2_b;    // linear2 (D, ffn), (D)
  TensorView<T> norm1_w, norm1_b;        // norm1 (D)
  TensorView<T> norm2_w, norm2_b;        // norm2 (D)
};
template <class T>
struct HeadTensors {
  TensorView<T> w, b;  // head (classes, D), (classes)
};
template <class T>
struct MilmerTensors {
  AmilTensors<T> amil;
  CompressionTensors<T> ca;
  EegTensors<T> eeg;
  TokenTensors<T> tokens;
  std::vector<FusionLayerTensors<T>> fusion;
  HeadTensors<T> head;
};

// Learning rate at `step` (0-based) of `total`: optional linear warm-up to lr, then cosine
// decay from lr to final_fraction * lr at the last step (docs/model.md §7).
struct CosineSchedule {
  double lr = 1e-4;
  double final_fraction = 0.1;
  std::int64_t total_steps = 1;
  std::int64_t warmup_steps = 0;
  double at(std::int64_t step) const {
    if (warmup_steps > 0 && step < warmup_steps)
      return lr * double(step + 1) / double(warmup_steps);
    const double span = std::max<std::int64_t>(total_steps - warmup_steps - 1, 1);
    const double t = std::clamp(double(step - warmup_steps) / span, 0.0, 1.0);
    const double lo = lr * final_fraction;
    return lo + (lr - lo) * 0.5 * (1.0 + std::cos(3.14159265358979323846 * t));
  }
};

class Milmer {
 public:
  // batch: the largest batch a step or a prediction will see (buffers are sized for it once).
  Milmer(Context& ctx, const MilmerConfig& cfg, int batch)
      : cfg_(validated(cfg)),
        batch_(batch),
        swin_(ctx, cfg_.swin, batch * (cfg_.amil_detach_scores ? cfg_.top_k : cfg_.frames)) {
    MILMER_CHECK(batch >= 1, "Milmer", "batch", ">= 1", str(batch));
    declare_parameters();
    params_.allocate(ctx);
    p_ = bind_tensors(ParameterViews<const float>{params_});
    g_ = bind_tensors(ParameterViews<float>{params_});
    plan_buffers(ctx);
  }

  const MilmerConfig& config() const { return cfg_; }
  int batch_capacity() const { return batch_; }
  SwinEncoder& swin() { return swin_; }
  ParameterSet& params() { return params_; }  // everything but the encoder
  std::int64_t parameter_count() const { return swin_param_count() + params_.count(); }
  std::int64_t swin_param_count() const { return swin_.params().count(); }
  std::size_t activation_bytes() const { return swin_.activation_bytes() + acts_.capacity(); }
  std::size_t parameter_bytes() const { return 4 * (swin_.params().size() + params_.size()); }

  // Device input buffers a caller fills before a step or a prediction (no allocation per
  // step): frames (B, F, 3, H, W) normalised, eeg (B, C, S), labels (B).
  float* frames_input() { return in_frames_; }
  float* eeg_input() { return in_eeg_; }
  int* labels_input() { return in_labels_; }
  const float* logits() const { return logits_; }
  const std::int32_t* selected_frames() const { return topk_; }

  // Initialisation as the reference: encoder as transformers, Linear weights N(0, 0.02)
  // (MultiheadAttention in-projections xavier-uniform in PyTorch; here N(0, 0.02) too: the
  // reference's exact draws cannot be reproduced from C++, and checkpoints carry weights),
  // queries, cls, type and position embeddings N(0, 0.02), LayerNorms (1, 0), biases 0.
  void init(Context& ctx, std::uint64_t seed) {
    swin_.init(ctx, seed);
    params_.init_normal(ctx, seed, 0x4d49, 0.02f);
  }

  // Loads every parameter from a safetensors file of docs/model.md §11 names (optimizer state,
  // if present, is left to load_checkpoint). Nothing is written unless the whole file checks out.
  void load_parameters(Context& ctx, const io::SafetensorsFile& file) {
    std::vector<std::string> unknown;
    for (const auto& [name, t] : file.tensors) {
      if (name.starts_with("swin.") || params_.contains(name) || name.starts_with("optim."))
        continue;
      unknown.push_back(name);
    }
    MILMER_CHECK(unknown.empty(), "Milmer::load " + file.path, "tensors",
                 "only docs/model.md section 11 parameter names",
                 str("unknown tensor ", unknown.empty() ? "" : unknown[0]));
    swin_.load(ctx, file, "swin.");
    params_.load(ctx, file, "", [](const std::string& n) {
      return n.starts_with("swin.") || n.starts_with("optim.");
    });
  }

  // ---- forward -------------------------------------------------------------------------
  // logits (B, classes) from frames_input() / eeg_input(). training: dropout and drop-path
  // on, activations kept for backward.
  void forward(Context& ctx, int B, bool training, std::uint64_t seed) {
    MILMER_CHECK(B >= 1 && B <= batch_, "Milmer::forward", "batch", str("1 to ", batch_), str(B));
    B_ = B;
    training_ = training;
    seed_ = seed;
    const int F = cfg_.frames, K = cfg_.top_k, M = cfg_.tokens_per_frame(), D = cfg_.width();
    const int img = cfg_.swin.image_size, ch = cfg_.swin.num_channels;
    const std::int64_t BF = std::int64_t{B} * F, BK = std::int64_t{B} * K;
    const bool reencode = cfg_.amil_detach_scores && training;
    // encoder over every frame
    swin_.forward(ctx, view(x_all_, {BF, M, D}), cview(in_frames_, {BF, ch, img, img}),
                  training && !cfg_.amil_detach_scores, swin_seed());
    // AMIL
    amil_forward<float>(ctx, view(z_, {B, std::int64_t{K} * M, D}), view(amil_a_, {B, F}),
                        view(topk_, {B, K}), view(gates_, {B, K}), view(amil_s_, {B, F}),
                        view(amil_h_, {B, F, cfg_.amil_hidden}), view(amil_e_, {B, F, D}),
                        cview(x_all_, {B, F, M, D}), p_.amil.V_w, p_.amil.V_b, p_.amil.w_w,
                        p_.amil.w_b, K);
    if (reencode) {
      const std::int64_t per_image = std::int64_t{ch} * img * img;
      frame_gather<float>(ctx, view(sel_pixels_, {B, K, per_image}),
                          cview(in_frames_, {B, F, per_image}), cview_i(topk_, {B, K}));
      swin_.forward(ctx, view(x_sel_, {BK, M, D}), cview(sel_pixels_, {BK, ch, img, img}), true,
                    swin_seed());
      gate_scale_forward<float>(ctx, view(z_, {B, K, std::int64_t{M} * D}),
                                cview(x_sel_, {B, K, std::int64_t{M} * D}), cview(gates_, {B, K}));
    }
    compression_forward(ctx, B);
    eeg_forward(ctx, B);
    token_assembly_forward<float>(ctx, view(fusion_in_, {B, fusion_tokens(), D}),
                                  cview(visual_, {B, cfg_.queries, D}),
                                  cview(eeg_tok_, {B, cfg_.eeg_channels, D}), p_.tokens.cls,
                                  p_.tokens.type_embed, p_.tokens.pos_visual, p_.tokens.pos_eeg);
    for (int l = 0; l < cfg_.fusion_layers; ++l) fusion_forward(ctx, l, B);
    head_forward(ctx, B);
  }

  // Loss (mean over the batch) and dlogits for labels_input(); returns nothing, the loss is
  // at loss_device() (read it with read_loss).
  void loss(Context& ctx, int B, std::span<const int> host_labels = {}) {
    softmax_ce_forward<float>(ctx, view(loss_, {1}), view(losses_, {B}),
                              view(dlogits_, {B, cfg_.classes}), cview(logits_, {B, cfg_.classes}),
                              cview_i(in_labels_, {B}), 1.0f, host_labels);
  }
  float read_loss(Context& ctx) const {
    float h = 0;
    MILMER_CUDA_CHECK(cudaMemcpyAsync(&h, loss_, 4, cudaMemcpyDeviceToHost, ctx.stream()));
    MILMER_CUDA_CHECK(cudaStreamSynchronize(ctx.stream()));
    return h;
  }

  // ---- backward ------------------------------------------------------------------------
  // From dlogits (written by loss()): every parameter gradient accumulates (+=).
  void backward(Context& ctx) {
    MILMER_CHECK(training_, "Milmer::backward", "forward", "a training forward first",
                 "an evaluation forward (no activations kept)");
    const int B = B_;
    head_backward(ctx, B);
    for (int l = cfg_.fusion_layers - 1; l >= 0; --l) fusion_backward(ctx, l, B);
    const int D = cfg_.width();
    token_assembly_backward<float>(
        ctx, view(d_visual_, {B, cfg_.queries, D}), view(d_eeg_tok_, {B, cfg_.eeg_channels, D}),
        g_.tokens.cls, g_.tokens.type_embed, g_.tokens.pos_visual, g_.tokens.pos_eeg,
        view(reduce_scratch_, {std::int64_t{cfg_.queries + cfg_.eeg_channels} * D}),
        cview(d_x_, {B, fusion_tokens(), D}));
    eeg_backward(ctx, B);
    compression_backward(ctx, B);
    amil_and_encoder_backward(ctx, B);
  }

  // One AdamW step over every parameter, then gradients zeroed for the next step.
  void optimizer_step(Context& ctx, double lr) {
    ++step_;
    AdamWConfig c = adamw_;
    c.lr = lr;
    auto& sp = swin_.params();
    adamw_update<float>(ctx, view(sp.values(), {std::int64_t(sp.size())}),
                        view(swin_m_.data(), {std::int64_t(sp.size())}),
                        view(swin_v_.data(), {std::int64_t(sp.size())}),
                        cview(sp.grads(), {std::int64_t(sp.size())}), static_cast<int>(step_), c);
    adamw_update<float>(ctx, view(params_.values(), {std::int64_t(params_.size())}),
                        view(m_.data(), {std::int64_t(params_.size())}),
                        view(v_.data(), {std::int64_t(params_.size())}),
                        cview(params_.grads(), {std::int64_t(params_.size())}),
                        static_cast<int>(step_), c);
    zero_grads(ctx);
  }
  void zero_grads(Context& ctx) {
    swin_.params().zero_grads(ctx);
    params_.zero_grads(ctx);
  }

  // forward + loss + backward + AdamW on the batch in the input buffers; returns the loss.
  // Randomness comes from (seed, step): a resumed run continues bit-identically.
  // before_update(loss), when given, runs after backward and before AdamW: it may read the
  // gradients and throw to leave the parameters and the step as they are.
  float train_step(Context& ctx, int B, double lr, std::uint64_t seed,
                   std::span<const int> host_labels = {},
                   const std::function<void(float)>& before_update = {}) {
    forward(ctx, B, true, step_seed(seed, step_));
    loss(ctx, B, host_labels);
    backward(ctx);
    const float l = read_loss(ctx);
    if (before_update) before_update(l);
    optimizer_step(ctx, lr);
    return l;
  }

  // The same with the learning rate of the cosine schedule (docs/model.md §7) at the
  // current step.
  float train_step(Context& ctx, int B, const CosineSchedule& schedule, std::uint64_t seed,
                   std::span<const int> host_labels = {}) {
    return train_step(ctx, B, schedule.at(step_), seed, host_labels);
  }

  std::int64_t step() const { return step_; }
  AdamWConfig& optimizer() { return adamw_; }

  // ---- checkpoints ---------------------------------------------------------------------
  // Parameters (docs/model.md §11 names), AdamW moments (optim.m.<name>, optim.v.<name>) and the
  // step, written atomically (temp file, fsync, rename).
  void save_checkpoint(Context& ctx, const std::filesystem::path& path,
                       std::map<std::string, std::string> metadata = {}) const {
    io::TensorMap t = swin_.params().to_tensors(ctx, false, "swin.");
    io::TensorMap rest = params_.to_tensors(ctx);
    t.insert(rest.begin(), rest.end());
    add_moments(ctx, t, swin_.params(), swin_m_, "swin.", "optim.m.");
    add_moments(ctx, t, swin_.params(), swin_v_, "swin.", "optim.v.");
    add_moments(ctx, t, params_, m_, "", "optim.m.");
    add_moments(ctx, t, params_, v_, "", "optim.v.");
    metadata["step"] = std::to_string(step_);
    metadata["config"] = cfg_.to_json().dump();
    io::write_safetensors(path, t, metadata);
  }

  // Restores parameters, optimizer moments and the step; the config must match.
  void load_checkpoint(Context& ctx, const std::filesystem::path& path) {
    const auto file = io::read_safetensors(path);
    const std::string op = "Milmer::load_checkpoint " + path.string();
    auto it = file.metadata.find("config");
    MILMER_CHECK(it != file.metadata.end(), op, "metadata", "a 'config' entry", "none");
    const MilmerConfig saved = MilmerConfig::from_json(io::json::parse(it->second), op);
    MILMER_CHECK(saved == cfg_, op, "config", cfg_.to_json().dump(), it->second);
    auto st = file.metadata.find("step");
    MILMER_CHECK(st != file.metadata.end(), op, "metadata", "a 'step' entry", "none");
    // Moments first into host copies (validated before any device write).
    auto swin_m = read_moments(file, swin_.params(), "swin.", "optim.m.");
    auto swin_v = read_moments(file, swin_.params(), "swin.", "optim.v.");
    auto m = read_moments(file, params_, "", "optim.m.");
    auto v = read_moments(file, params_, "", "optim.v.");
    load_parameters(ctx, file);
    swin_m_.upload(swin_m.data(), swin_m.size(), ctx.stream());
    swin_v_.upload(swin_v.data(), swin_v.size(), ctx.stream());
    m_.upload(m.data(), m.size(), ctx.stream());
    v_.upload(v.data(), v.size(), ctx.stream());
    step_ = std::stoll(st->second);
    zero_grads(ctx);
  }

  static std::uint64_t step_seed(std::uint64_t seed, std::int64_t step) {
    return milmer::step_seed(seed, step);
  }

 private:
  static MilmerConfig validated(const MilmerConfig& c) {
    c.validate("Milmer");
    return c;
  }
  int fusion_tokens() const { return cfg_.fusion_tokens(); }
  std::uint64_t swin_seed() const { return seed_ ^ 0x5317A11CE5ull; }

  static TensorView<const float> cview(const float* p, std::initializer_list<std::int64_t> d) {
    return TensorView<const float>(p, d);
  }
  static TensorView<const std::int32_t> cview_i(const std::int32_t* p,
                                                std::initializer_list<std::int64_t> d) {
    return TensorView<const std::int32_t>(p, d);
  }

  template <class T>
  MilmerTensors<T> bind_tensors(const ParameterViews<T>& at) const {
    const std::int64_t D = cfg_.width(), L = cfg_.amil_hidden, N = cfg_.queries;
    const std::int64_t C = cfg_.eeg_channels, S = cfg_.eeg_samples, ffn = cfg_.ffn_dim;
    MilmerTensors<T> t;
    t.amil = {at("amil.V.weight", {L, D}), at("amil.V.bias", {L}), at("amil.w.weight", {1, L}),
              at("amil.w.bias", {1})};
    t.ca = {at("ca.queries", {N, D}),
            at("ca.attn.in_proj_weight", {D, D}),
            at("ca.attn.in_proj_bias", {D}),
            at("ca.attn.in_proj_weight", {2 * D, D}, D * D),
            at("ca.attn.in_proj_bias", {2 * D}, D),
            at("ca.attn.out_proj.weight", {D, D}),
            at("ca.attn.out_proj.bias", {D})};
    t.eeg = {at("eeg.norm.weight", {S}), at("eeg.norm.bias", {S}), at("eeg.proj.weight", {D, S}),
             at("eeg.proj.bias", {D})};
    t.tokens = {at("fusion.cls", {D}), at("fusion.type_embed.weight", {2, D}),
                at("fusion.pos_visual", {N, D}), at("fusion.pos_eeg", {C, D})};
    for (int l = 0; l < cfg_.fusion_layers; ++l) {
      const std::string n = str("fusion.layers.", l, ".");
      t.fusion.push_back(
          {at(n + "self_attn.in_proj_weight", {3 * D, D}),
           at(n + "self_attn.in_proj_bias", {3 * D}), at(n + "self_attn.out_proj.weight", {D, D}),
           at(n + "self_attn.out_proj.bias", {D}), at(n + "linear1.weight", {ffn, D}),
           at(n + "linear1.bias", {ffn}), at(n + "linear2.weight", {D, ffn}),
           at(n + "linear2.bias", {D}), at(n + "norm1.weight", {D}), at(n + "norm1.bias", {D}),
           at(n + "norm2.weight", {D}), at(n + "norm2.bias", {D})});
    }
    t.head = {at("head.weight", {cfg_.classes, D}), at("head.bias", {cfg_.classes})};
    return t;
  }

  void declare_parameters() {
    for (const auto& spec : parameter_specs(cfg_))
      if (!spec.name.starts_with("swin.")) params_.add(spec.name, spec.shape);
  }

  void plan_buffers(Context& ctx) {
    const std::int64_t B = batch_, F = cfg_.frames, K = cfg_.top_k, M = cfg_.tokens_per_frame();
    const std::int64_t D = cfg_.width(), L = cfg_.amil_hidden, N = cfg_.queries;
    const std::int64_t C = cfg_.eeg_channels, S = cfg_.eeg_samples, Tn = fusion_tokens();
    const std::int64_t ffn = cfg_.ffn_dim, cls = cfg_.classes;
    const std::int64_t img =
        std::int64_t{cfg_.swin.num_channels} * cfg_.swin.image_size * cfg_.swin.image_size;
    const std::int64_t KM = K * M;
    const bool detach = cfg_.amil_detach_scores;
    acts_ = ArenaPlan::build([&](ArenaPlan& plan) {
      auto take = [&](std::int64_t n, const char* what) { return plan.take(n, what); };
      in_frames_ = take(B * F * img, "frames");
      in_eeg_ = take(B * C * S, "eeg");
      in_labels_ = plan.take<int>(B, "labels");
      x_all_ = take(B * F * M * D, "x_all");
      sel_pixels_ = detach ? take(B * K * img, "selected_pixels") : nullptr;
      x_sel_ = detach ? take(B * K * M * D, "x_selected") : nullptr;
      amil_e_ = take(B * F * D, "amil_e");
      amil_h_ = take(B * F * L, "amil_h");
      amil_s_ = take(B * F, "amil_s");
      amil_a_ = take(B * F, "amil_a");
      topk_ = plan.take<std::int32_t>(B * K, "topk");
      gates_ = take(B * K, "gates");
      z_ = take(B * KM * D, "z");
      qproj_ = take(N * D, "ca_qproj");
      ca_q_ = take(B * N * D, "ca_q");
      ca_kv_ = take(B * KM * 2 * D, "ca_kv");
      ca_attn_ = take(B * N * D, "ca_attn");
      ca_lse_ = take(B * cfg_.ca_heads * N, "ca_lse");
      visual_ = take(B * N * D, "visual");
      eeg_ln_ = take(B * C * S, "eeg_ln");
      eeg_mean_ = take(B * C, "eeg_mean");
      eeg_rstd_ = take(B * C, "eeg_rstd");
      eeg_tok_ = take(B * C * D, "eeg_tokens");
      fusion_in_ = take(B * Tn * D, "fusion_in");
      layers_.assign(cfg_.fusion_layers, {});
      for (auto& a : layers_) {
        a.qkv = take(B * Tn * 3 * D, "qkv");
        a.attn = take(B * Tn * D, "attn");
        a.lse = take(B * cfg_.fusion_heads * Tn, "lse");
        a.x1 = take(B * Tn * D, "x1");
        a.sum1 = take(B * Tn * D, "sum1");
        a.mean1 = take(B * Tn, "mean1");
        a.rstd1 = take(B * Tn, "rstd1");
        a.h_relu = take(B * Tn * ffn, "h_relu");
        a.h_drop = take(B * Tn * ffn, "h_drop");
        a.x2 = take(B * Tn * D, "x2");
        a.sum2 = take(B * Tn * D, "sum2");
        a.mean2 = take(B * Tn, "mean2");
        a.rstd2 = take(B * Tn, "rstd2");
      }
      cls_ = take(B * D, "cls");
      cls_drop_ = take(B * D, "cls_drop");
      logits_ = take(B * cls, "logits");
      loss_ = take(1, "loss");
      losses_ = take(B, "losses");
      dlogits_ = take(B * cls, "dlogits");
      // backward
      d_cls_ = take(B * D, "d_cls");
      d_x_ = take(B * Tn * D, "d_x");
      d_x1_ = take(B * Tn * D, "d_x1");
      branch_scratch_ = take(B * Tn * D, "branch_or_d_branch");
      d_wide_ = take(B * Tn * std::max(ffn, 3 * D), "d_hidden_or_d_qkv");
      d_partial_ = take(B * Tn * D, "d_attn_or_partial");
      d_visual_ = take(B * N * D, "d_visual");
      d_eeg_tok_ = take(B * C * D, "d_eeg_tokens");
      d_eeg_ln_ = take(B * C * S, "d_eeg_ln");
      d_ca_attn_ = take(B * N * D, "d_ca_attn");
      d_ca_q_ = take(B * N * D, "d_ca_q");
      d_ca_kv_ = take(B * KM * 2 * D, "d_ca_kv");
      d_qsum_ = take(N * D, "d_qsum");
      d_queries_ = take(N * D, "d_queries");
      d_z_ = take(B * KM * D, "d_z");
      d_x_frames_ = take(B * (detach ? K : F) * M * D, "d_x_frames");
      d_g_ = take(B * K, "d_gates");
      d_s_ = take(B * F, "d_scores");
      d_pre_ = take(B * F * L, "d_amil_pre");
      d_e_ = detach ? nullptr : take(B * F * D, "d_e");
      ones_ = take(B, "ones");
      // Each backward's own (rows, width); the scratch functions are monotonic in rows, so
      // a batch smaller than B fits too.
      reduce_scratch_n_ =
          std::max({layernorm_backward_scratch_elements(B * C, S),
                    residual_layernorm_backward_scratch_elements(B * Tn, D), (N + C) * D});
      reduce_scratch_ = take(reduce_scratch_n_, "reduce_scratch");
    });
    acts_.zero(ctx.stream());
    std::vector<float> ones(static_cast<std::size_t>(B), 1.0f);
    MILMER_CUDA_CHECK(
        cudaMemcpyAsync(ones_, ones.data(), ones.size() * 4, cudaMemcpyHostToDevice, ctx.stream()));
    ctx.synchronize();
    swin_m_ = DeviceBuffer<float>(swin_.params().size());
    swin_v_ = DeviceBuffer<float>(swin_.params().size());
    m_ = DeviceBuffer<float>(params_.size());
    v_ = DeviceBuffer<float>(params_.size());
    swin_m_.zero(ctx.stream());
    swin_v_.zero(ctx.stream());
    m_.zero(ctx.stream());
    v_.zero(ctx.stream());
  }

  float dropout_p(double p) const { return training_ ? static_cast<float>(p) : 0.0f; }

  void compression_forward(Context& ctx, int B) {
    const std::int64_t N = cfg_.queries, D = cfg_.width(),
                       KM = std::int64_t{cfg_.top_k} * cfg_.tokens_per_frame();
    // q = queries @ Wq^T + bq, the same for every sample: computed once, then copied.
    linear_forward<float>(ctx, view(qproj_, {N, D}), p_.ca.queries, p_.ca.q_w, p_.ca.q_b);
    for (int s = 0; s < B; ++s)
      MILMER_CUDA_CHECK(cudaMemcpyAsync(ca_q_ + s * N * D, qproj_, N * D * 4,
                                        cudaMemcpyDeviceToDevice, ctx.stream()));
    // k | v = Z @ [Wk; Wv]^T + [bk; bv]: one GEMM over the adjacent rows of in_proj_weight.
    linear_forward<float>(ctx, view(ca_kv_, {B * KM, 2 * D}), cview(z_, {B * KM, D}), p_.ca.kv_w,
                          p_.ca.kv_b);
    mha_attention_forward<float>(ctx, view(ca_attn_, {B, N, D}),
                                 view(ca_lse_, {B, cfg_.ca_heads, N}), cview(ca_q_, {B, N, D}),
                                 kv_view<const float>(ca_kv_, B, KM, D, 0),
                                 kv_view<const float>(ca_kv_, B, KM, D, 1), cfg_.ca_heads,
                                 dropout_p(cfg_.ca_dropout), seed_, kOffsetCompression);
    linear_forward<float>(ctx, view(visual_, {B * N, D}), cview(ca_attn_, {B * N, D}), p_.ca.out_w,
                          p_.ca.out_b);
  }

  // k (which = 0) or v (1) of a packed (B, L, 2D) k|v buffer, as a strided (B, L, D) view.
  template <class T>
  static TensorView<T> kv_view(T* kv, std::int64_t B, std::int64_t L, std::int64_t D, int which) {
    TensorView<T> t(kv + which * D, {B, L, D});
    t.strides = {L * 2 * D, 2 * D, 1};
    return t;
  }

  void compression_backward(Context& ctx, int B) {
    const std::int64_t N = cfg_.queries, D = cfg_.width(),
                       KM = std::int64_t{cfg_.top_k} * cfg_.tokens_per_frame();
    linear_backward<float>(ctx, view(d_ca_attn_, {B * N, D}), g_.ca.out_w, g_.ca.out_b,
                           cview(d_visual_, {B * N, D}), cview(ca_attn_, {B * N, D}), p_.ca.out_w);
    mha_attention_backward<float>(
        ctx, view(d_ca_q_, {B, N, D}), kv_view(d_ca_kv_, B, KM, D, 0),
        kv_view(d_ca_kv_, B, KM, D, 1), cview(d_ca_attn_, {B, N, D}), cview(ca_q_, {B, N, D}),
        kv_view<const float>(ca_kv_, B, KM, D, 0), kv_view<const float>(ca_kv_, B, KM, D, 1),
        cview(ca_attn_, {B, N, D}), cview(ca_lse_, {B, cfg_.ca_heads, N}), cfg_.ca_heads,
        dropout_p(cfg_.ca_dropout), seed_, kOffsetCompression);
    // k | v projection: dZ written, weight rows D..3D and their biases accumulate.
    linear_backward<float>(ctx, view(d_z_, {B * KM, D}), g_.ca.kv_w, g_.ca.kv_b,
                           cview(d_ca_kv_, {B * KM, 2 * D}), cview(z_, {B * KM, D}), p_.ca.kv_w);
    // q projection: the batch's dq summed (ones^T dq, one GEMM), then the Linear's backward.
    gemm<float>(ctx, view(d_qsum_, {1, N * D}), cview(ones_, {1, B}), MatOp::N,
                cview(d_ca_q_, {B, N * D}), MatOp::N);
    linear_backward<float>(ctx, view(d_queries_, {N, D}), g_.ca.q_w, g_.ca.q_b,
                           cview(d_qsum_, {N, D}), p_.ca.queries, p_.ca.q_w);
    add_inplace<float>(ctx, g_.ca.queries, cview(d_queries_, {N, D}));
  }

  void eeg_forward(Context& ctx, int B) {
    const std::int64_t C = cfg_.eeg_channels, S = cfg_.eeg_samples, D = cfg_.width();
    layernorm_forward<float>(ctx, view(eeg_ln_, {B * C, S}), view(eeg_mean_, {B * C}),
                             view(eeg_rstd_, {B * C}), cview(in_eeg_, {B * C, S}), p_.eeg.norm_w,
                             p_.eeg.norm_b, kLayerNormEps);
    linear_forward<float>(ctx, view(eeg_tok_, {B * C, D}), cview(eeg_ln_, {B * C, S}),
                          p_.eeg.proj_w, p_.eeg.proj_b, Epilogue::relu);
  }

  void eeg_backward(Context& ctx, int B) {
    const std::int64_t C = cfg_.eeg_channels, S = cfg_.eeg_samples, D = cfg_.width();
    linear_backward<float>(ctx, view(d_eeg_ln_, {B * C, S}), g_.eeg.proj_w, g_.eeg.proj_b,
                           cview(d_eeg_tok_, {B * C, D}), cview(eeg_ln_, {B * C, S}), p_.eeg.proj_w,
                           Epilogue::relu, cview(eeg_tok_, {B * C, D}),
                           view(d_eeg_tok_, {B * C, D}));
    // The EEG input needs no gradient; LayerNorm's input gradient goes to scratch.
    layernorm_backward<float>(ctx, view(d_eeg_ln_, {B * C, S}), g_.eeg.norm_w, g_.eeg.norm_b,
                              view(reduce_scratch_, {reduce_scratch_n_}),
                              cview(d_eeg_ln_, {B * C, S}), cview(in_eeg_, {B * C, S}),
                              p_.eeg.norm_w, cview(eeg_mean_, {B * C}), cview(eeg_rstd_, {B * C}),
                              false);
  }

  struct LayerActs {
    float *qkv, *attn, *lse, *x1, *sum1, *mean1, *rstd1, *h_relu, *h_drop, *x2, *sum2, *mean2,
        *rstd2;
  };
  const float* layer_input(int l) const { return l == 0 ? fusion_in_ : layers_[l - 1].x2; }
  const float* fusion_out() const { return layers_.back().x2; }

  void fusion_forward(Context& ctx, int l, int B) {
    LayerActs& a = layers_[l];
    const FusionLayerTensors<const float>& lp = p_.fusion[l];
    const std::int64_t Tn = fusion_tokens(), D = cfg_.width(), ffn = cfg_.ffn_dim, rows = B * Tn;
    const float p = dropout_p(cfg_.dropout);
    const std::uint64_t off = kOffsetFusion + 16 * static_cast<std::uint64_t>(l);
    linear_forward<float>(ctx, view(a.qkv, {rows, 3 * D}), cview(layer_input(l), {rows, D}),
                          lp.in_proj_w, lp.in_proj_b);
    const auto qkv = mha_packed_qkv<const float>(a.qkv, B, Tn, D);
    mha_attention_forward<float>(ctx, view(a.attn, {B, Tn, D}),
                                 view(a.lse, {B, cfg_.fusion_heads, Tn}), qkv.q, qkv.k, qkv.v,
                                 cfg_.fusion_heads, p, seed_, off);
    linear_forward<float>(ctx, view(branch(), {rows, D}), cview(a.attn, {rows, D}), lp.out_proj_w);
    residual_layernorm_forward<float>(
        ctx, view(a.x1, {rows, D}), view(a.sum1, {rows, D}), view(a.mean1, {rows}),
        view(a.rstd1, {rows}), cview(layer_input(l), {rows, D}), cview(branch(), {rows, D}),
        lp.out_proj_b, lp.norm1_w, lp.norm1_b, kLayerNormEps, p, seed_, off + 1);
    linear_forward<float>(ctx, view(a.h_relu, {rows, ffn}), cview(a.x1, {rows, D}), lp.linear1_w,
                          lp.linear1_b, Epilogue::relu);
    dropout_forward<float>(ctx, view(a.h_drop, {rows * ffn}), cview(a.h_relu, {rows * ffn}), p,
                           seed_, off + 2);
    linear_forward<float>(ctx, view(branch(), {rows, D}), cview(a.h_drop, {rows, ffn}),
                          lp.linear2_w);
    residual_layernorm_forward<float>(
        ctx, view(a.x2, {rows, D}), view(a.sum2, {rows, D}), view(a.mean2, {rows}),
        view(a.rstd2, {rows}), cview(a.x1, {rows, D}), cview(branch(), {rows, D}), lp.linear2_b,
        lp.norm2_w, lp.norm2_b, kLayerNormEps, p, seed_, off + 3);
  }
  // One (rows, D) buffer for a sublayer's residual branch, under two names: in forward the
  // branch's raw (bias-free) GEMM output, consumed at once by the fused residual-LayerNorm
  // kernel; in backward the branch's gradient.
  float* branch() { return branch_scratch_; }
  float* d_branch() { return branch_scratch_; }
  // One (rows, max(ffn, 3D)) buffer for the gradients of a layer's wide tensors, under two
  // names: the FFN hidden, then the packed q|k|v.
  float* d_hidden() { return d_wide_; }
  float* d_qkv() { return d_wide_; }
  // One (rows, D) buffer, under two names: the attention output's gradient, and a partial
  // input gradient (of x1 from the FFN, of x from the in-projection) before it is added.
  float* d_attn() { return d_partial_; }

  // On entry d_x_ holds d(layer output); on exit d(layer input).
  void fusion_backward(Context& ctx, int l, int B) {
    LayerActs& a = layers_[l];
    const FusionLayerTensors<const float>& lp = p_.fusion[l];
    const FusionLayerTensors<float>& lg = g_.fusion[l];
    const std::int64_t Tn = fusion_tokens(), D = cfg_.width(), ffn = cfg_.ffn_dim, rows = B * Tn;
    const float p = dropout_p(cfg_.dropout);
    const std::uint64_t off = kOffsetFusion + 16 * static_cast<std::uint64_t>(l);
    // x2 = LN2(x1 + Drop(h_drop @ W2^T + b2))
    residual_layernorm_backward<float>(
        ctx, view(d_x1_, {rows, D}), view(d_branch(), {rows, D}), lg.norm2_w, lg.norm2_b,
        lg.linear2_b, view(reduce_scratch_, {reduce_scratch_n_}), cview(d_x_, {rows, D}),
        cview(a.sum2, {rows, D}), lp.norm2_w, cview(a.mean2, {rows}), cview(a.rstd2, {rows}), p,
        seed_, off + 3);
    linear_backward<float>(ctx, view(d_hidden(), {rows, ffn}), lg.linear2_w, TensorView<float>{},
                           cview(d_branch(), {rows, D}), cview(a.h_drop, {rows, ffn}),
                           lp.linear2_w);
    dropout_backward<float>(ctx, view(d_hidden(), {rows * ffn}), cview(d_hidden(), {rows * ffn}), p,
                            seed_, off + 2);
    linear_backward<float>(ctx, view(d_partial_, {rows, D}), lg.linear1_w, lg.linear1_b,
                           cview(d_hidden(), {rows, ffn}), cview(a.x1, {rows, D}), lp.linear1_w,
                           Epilogue::relu, cview(a.h_relu, {rows, ffn}),
                           view(d_hidden(), {rows, ffn}));
    add_inplace<float>(ctx, view(d_x1_, {rows, D}), cview(d_partial_, {rows, D}));
    // x1 = LN1(x + Drop(attn @ Wo^T + bo))
    residual_layernorm_backward<float>(
        ctx, view(d_x_, {rows, D}), view(d_branch(), {rows, D}), lg.norm1_w, lg.norm1_b,
        lg.out_proj_b, view(reduce_scratch_, {reduce_scratch_n_}), cview(d_x1_, {rows, D}),
        cview(a.sum1, {rows, D}), lp.norm1_w, cview(a.mean1, {rows}), cview(a.rstd1, {rows}), p,
        seed_, off + 1);
    linear_backward<float>(ctx, view(d_attn(), {rows, D}), lg.out_proj_w, TensorView<float>{},
                           cview(d_branch(), {rows, D}), cview(a.attn, {rows, D}), lp.out_proj_w);
    const auto qkv = mha_packed_qkv<const float>(a.qkv, B, Tn, D);
    const auto dqkv = mha_packed_qkv<float>(d_qkv(), B, Tn, D);
    mha_attention_backward<float>(ctx, dqkv.q, dqkv.k, dqkv.v, cview(d_attn(), {B, Tn, D}), qkv.q,
                                  qkv.k, qkv.v, cview(a.attn, {B, Tn, D}),
                                  cview(a.lse, {B, cfg_.fusion_heads, Tn}), cfg_.fusion_heads, p,
                                  seed_, off);
    linear_backward<float>(ctx, view(d_partial_, {rows, D}), lg.in_proj_w, lg.in_proj_b,
                           cview(d_qkv(), {rows, 3 * D}), cview(layer_input(l), {rows, D}),
                           lp.in_proj_w);
    add_inplace<float>(ctx, view(d_x_, {rows, D}), cview(d_partial_, {rows, D}));
  }

  void head_forward(Context& ctx, int B) {
    const std::int64_t D = cfg_.width(), Tn = fusion_tokens();
    cls_gather<float>(ctx, view(cls_, {B, D}), cview(fusion_out(), {B, Tn, D}));
    dropout_forward<float>(ctx, view(cls_drop_, {B * D}), cview(cls_, {B * D}),
                           dropout_p(cfg_.head_dropout), seed_, kOffsetHead);
    linear_forward<float>(ctx, view(logits_, {B, cfg_.classes}), cview(cls_drop_, {B, D}),
                          p_.head.w, p_.head.b);
  }

  void head_backward(Context& ctx, int B) {
    const std::int64_t D = cfg_.width(), Tn = fusion_tokens();
    linear_backward<float>(ctx, view(d_cls_, {B, D}), g_.head.w, g_.head.b,
                           cview(dlogits_, {B, cfg_.classes}), cview(cls_drop_, {B, D}), p_.head.w);
    dropout_backward<float>(ctx, view(d_cls_, {B * D}), cview(d_cls_, {B * D}),
                            dropout_p(cfg_.head_dropout), seed_, kOffsetHead);
    MILMER_CUDA_CHECK(
        cudaMemsetAsync(d_x_, 0, static_cast<std::size_t>(B * Tn * D) * 4, ctx.stream()));
    cls_scatter_add<float>(ctx, view(d_x_, {B, Tn, D}), cview(d_cls_, {B, D}));
  }

  void amil_and_encoder_backward(Context& ctx, int B) {
    const int F = cfg_.frames, K = cfg_.top_k, M = cfg_.tokens_per_frame(), D = cfg_.width();
    const std::int64_t L = cfg_.amil_hidden, MD = std::int64_t{M} * D;
    if (cfg_.amil_detach_scores) {
      // dX of the selected frames and the gates' gradient, then gates -> a -> s.
      gate_scale_backward<float>(ctx, view(d_x_frames_, {B, K, MD}), view(d_g_, {B, K}),
                                 cview(d_z_, {B, K, MD}), cview(x_sel_, {B, K, MD}),
                                 cview(gates_, {B, K}));
      topk_scatter(ctx, view(d_s_, {B, F}), cview(d_g_, {B, K}), cview_i(topk_, {B, K}));
      amil_gate_backward(ctx, view(d_s_, {B, F}), cview_i(topk_, {B, K}), cview(gates_, {B, K}));
      amil_scores_backward(ctx, TensorView<float>{}, g_.amil.V_w, g_.amil.V_b, g_.amil.w_w,
                           view(d_pre_, {B, F, L}), cview(d_s_, {B, F}), cview(amil_h_, {B, F, L}),
                           cview(amil_e_, {B, F, D}), p_.amil.V_w, p_.amil.w_w);
      swin_.backward(ctx, cview(d_x_frames_, {std::int64_t{B} * K, M, D}));
    } else {
      amil_backward<float>(ctx, view(d_x_frames_, {B, F, M, D}), g_.amil.V_w, g_.amil.V_b,
                           g_.amil.w_w, view(d_s_, {B, F}), view(d_pre_, {B, F, L}),
                           view(d_e_, {B, F, D}), cview(d_z_, {B, std::int64_t{K} * M, D}),
                           cview(x_all_, {B, F, M, D}), cview(amil_e_, {B, F, D}),
                           cview(amil_h_, {B, F, L}), cview_i(topk_, {B, K}), cview(gates_, {B, K}),
                           p_.amil.V_w, p_.amil.w_w, false);
      swin_.backward(ctx, cview(d_x_frames_, {std::int64_t{B} * F, M, D}));
    }
  }

  static void add_moments(Context& ctx, io::TensorMap& out, const ParameterSet& set,
                          const DeviceBuffer<float>& moment, const std::string& prefix,
                          const std::string& kind) {
    std::vector<float> all(set.size());
    moment.download(all.data(), all.size(), ctx.stream());
    for (const auto& e : set.entries())
      out[kind + prefix + e.name] =
          io::Tensor::from(io::Shape(e.shape.begin(), e.shape.end()),
                           std::span<const float>(all.data() + e.offset, e.numel));
  }
  static std::vector<float> read_moments(const io::SafetensorsFile& file, const ParameterSet& set,
                                         const std::string& prefix, const std::string& kind) {
    std::vector<float> all(set.size(), 0.0f);
    for (const auto& e : set.entries()) {
      const auto v =
          file.values<float>(kind + prefix + e.name, io::Shape(e.shape.begin(), e.shape.end()));
      std::copy(v.begin(), v.end(), all.begin() + static_cast<std::ptrdiff_t>(e.offset));
    }
    return all;
  }

  static constexpr float kLayerNormEps = 1e-5f;  // torch's LayerNorm default (EEG, fusion)
  static constexpr std::uint64_t kOffsetCompression = 1000, kOffsetFusion = 2000,
                                 kOffsetHead = 3000;

  MilmerConfig cfg_;
  int batch_;
  SwinEncoder swin_;
  ParameterSet params_;
  MilmerTensors<const float> p_;  // parameter values, bound once
  MilmerTensors<float> g_;        // their gradients
  AdamWConfig adamw_{};
  DeviceBuffer<float> swin_m_, swin_v_, m_, v_;
  std::int64_t step_ = 0;
  Arena acts_;
  int B_ = 0;
  bool training_ = false;
  std::uint64_t seed_ = 0;
  std::vector<LayerActs> layers_;
  float *in_frames_ = nullptr, *in_eeg_ = nullptr;
  int* in_labels_ = nullptr;
  float *x_all_ = nullptr, *sel_pixels_ = nullptr, *x_sel_ = nullptr;
  float *amil_e_ = nullptr, *amil_h_ = nullptr, *amil_s_ = nullptr, *amil_a_ = nullptr;
  std::int32_t* topk_ = nullptr;
  float *gates_ = nullptr, *z_ = nullptr, *qproj_ = nullptr, *ca_q_ = nullptr, *ca_kv_ = nullptr;
  float *ca_attn_ = nullptr, *ca_lse_ = nullptr, *visual_ = nullptr;
  float *eeg_ln_ = nullptr, *eeg_mean_ = nullptr, *eeg_rstd_ = nullptr, *eeg_tok_ = nullptr;
  float *fusion_in_ = nullptr, *cls_ = nullptr, *cls_drop_ = nullptr, *logits_ = nullptr;
  float *loss_ = nullptr, *losses_ = nullptr, *dlogits_ = nullptr;
  float *branch_scratch_ = nullptr, *d_wide_ = nullptr, *d_partial_ = nullptr;  // see branch()
  float *d_cls_ = nullptr, *d_x_ = nullptr, *d_x1_ = nullptr;
  float *d_visual_ = nullptr, *d_eeg_tok_ = nullptr, *d_eeg_ln_ = nullptr;
  float *d_ca_attn_ = nullptr, *d_ca_q_ = nullptr, *d_ca_kv_ = nullptr, *d_qsum_ = nullptr;
  float *d_queries_ = nullptr, *d_z_ = nullptr, *d_x_frames_ = nullptr, *d_g_ = nullptr;
  float *d_s_ = nullptr, *d_pre_ = nullptr, *d_e_ = nullptr, *ones_ = nullptr;
  // Workspace of the backward reductions: LayerNorm, residual LayerNorm, token assembly.
  float* reduce_scratch_ = nullptr;
  std::int64_t reduce_scratch_n_ = 1;
};

}  // namespace milmer
