// milmer configs: the Swin encoder (a transformers SwinConfig) and the whole Milmer model
// (docs/model.md §10), their presets, JSON load/save, validation, the derived
// sizes kernels and launchers need, and the checkpoint contract: every parameter's name and
// shape in one deterministic order (tools/milmer_reference.py's `parameter_specs` gives the
// same list; tests/test_config.cpp compares the two through tests/golden).
//
// Swin geometry, as transformers computes it:
//   resolution(0) = ceil(image / patch)          (the image is zero-padded to a patch multiple)
//   resolution(s) = ceil(resolution(s-1) / 2)     (patch merging pads odd maps)
//   window(s)     = min(window_size, resolution(s)); shift(s) = window_size / 2 on odd blocks,
//                   0 when resolution(s) <= window_size
//   padded(s)     = resolution(s) rounded up to a multiple of window(s) (the block pads the map)
// A stage whose resolution is below window_size is refused: transformers sizes the bias
// table for window_size and fails on such a stage, so no checkpoint can exist for it.
// LayerNorm eps: layer_norm_eps in the blocks and the final norm; 1e-5 (PyTorch's default) in
// the patch-embedding and patch-merging norms, whatever layer_norm_eps says.
//
// Bounds: configs come from files (config.json, a checkpoint's metadata), so validate() puts
// every size in a range far above any published model, then bounds the products the sizes
// imply: the parameter count (kMaxParameters) and the activation elements of one frame and
// one sample (kMaxFrameActivations, kMaxSampleActivations). A config that passes cannot make
// the library allocate without bound; check_checkpoint_tensors() also checks a checkpoint's
// config against the tensors the file holds, before any model is built from it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "milmer/error.hpp"
#include "milmer/io/json.hpp"
#include "milmer/io/safetensors.hpp"

namespace milmer {

// Product bounds of validate() (see the top of this file). The paper model has 41 million
// parameters, 1.2 million elements in a frame's largest activation, 14 million in a sample's.
inline constexpr std::int64_t kMaxParameters = std::int64_t{1} << 30;
inline constexpr double kMaxFrameActivations = double(std::int64_t{1} << 28);
inline constexpr double kMaxSampleActivations = double(std::int64_t{1} << 31);

namespace detail {

// check(lo <= v <= hi) with the range in the message; false for NaN.
template <class T>
void check_range(T v, T lo, T hi, const std::string& ctx, const std::string& name) {
  check(v >= lo && v <= hi, ctx, name, str("in [", lo, ", ", hi, "]"), str(v));
}

// A config's JSON file, read (from_json checks it) and written (validated first, then
// atomically, indented).
template <class Config>
Config load_config(const std::filesystem::path& path) {
  return Config::from_json(io::read_json_file(path), path.string());
}
template <class Config>
void save_config(const Config& c, const std::filesystem::path& path) {
  c.validate();
  io::write_text_file(path, c.to_json().dump(2) + "\n");
}

}  // namespace detail

// One parameter: its checkpoint name and its shape (PyTorch layouts; Linear: out x in).
struct ParamSpec {
  std::string name;
  std::vector<std::int64_t> shape;

  std::int64_t numel() const {
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    return n;
  }
  bool operator==(const ParamSpec&) const = default;
};

struct SwinConfig;
inline std::vector<ParamSpec> swin_parameter_specs(const SwinConfig& c,
                                                   const std::string& prefix = "");
inline std::int64_t parameter_count(const std::vector<ParamSpec>& specs);

struct SwinConfig {
  int image_size = 224;
  int patch_size = 4;
  int num_channels = 3;
  int embed_dim = 96;
  std::vector<int> depths{2, 2, 6, 2};
  std::vector<int> num_heads{3, 6, 12, 24};
  int window_size = 7;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  double layer_norm_eps = 1e-5;
  double drop_path_rate = 0.1;

  bool operator==(const SwinConfig&) const = default;

  int stages() const { return static_cast<int>(depths.size()); }
  int depth(int s) const { return depths.at(s); }
  int heads(int s) const { return num_heads.at(s); }
  // Channels of stage s (it doubles at every patch merging).
  int width(int s) const { return embed_dim << s; }
  int head_dim(int s) const { return width(s) / heads(s); }
  // int(mlp_ratio * width), truncated as Python's int() does.
  int mlp_hidden(int s) const { return static_cast<int>(mlp_ratio * width(s)); }
  int resolution(int s) const {
    int r = (image_size + patch_size - 1) / patch_size;
    for (int i = 0; i < s; ++i) r = (r + 1) / 2;
    return r;
  }
  int tokens(int s) const { return resolution(s) * resolution(s); }
  int window(int s) const { return std::min(window_size, resolution(s)); }
  int shift(int s) const { return resolution(s) <= window_size ? 0 : window_size / 2; }
  int block_shift(int s, int block) const { return block % 2 ? shift(s) : 0; }
  int padded_resolution(int s) const {
    const int w = window(s);
    return (resolution(s) + w - 1) / w * w;
  }
  int windows(int s) const {
    const int n = padded_resolution(s) / window(s);
    return n * n;
  }
  // Rows of the relative-position bias table (2W-1)^2, sized by window_size in every stage.
  int bias_table_rows() const { return (2 * window_size - 1) * (2 * window_size - 1); }
  int total_blocks() const {
    int n = 0;
    for (int d : depths) n += d;
    return n;
  }
  // Stochastic-depth rate of block b of stage s: linear over all blocks, 0 for the first.
  double drop_path(int s, int block) const {
    int i = block;
    for (int k = 0; k < s; ++k) i += depths[k];
    return drop_path_rate * i / std::max(total_blocks() - 1, 1);
  }
  int out_width() const { return width(stages() - 1); }
  int out_tokens() const { return tokens(stages() - 1); }

  // Elements of one frame's largest activation: over the stages, the MLP hidden layer or the
  // attention scores (padded tokens x heads x window^2), in double (no overflow).
  double frame_activation_elements() const {
    double m = 0;
    for (int s = 0; s < stages(); ++s) {
      const double tokens = double(padded_resolution(s)) * padded_resolution(s);
      const double w2 = double(window(s)) * window(s);
      m = std::max(m, tokens * std::max<double>(mlp_hidden(s), heads(s) * w2));
    }
    return m;
  }

  void validate(const std::string& ctx = "SwinConfig") const {
    using detail::check_range;
    check_range(image_size, 1, 4096, ctx, "image_size");
    check_range(patch_size, 1, image_size, ctx, "patch_size");
    check_range(num_channels, 1, 16, ctx, "num_channels");
    check_range(embed_dim, 1, 4096, ctx, "embed_dim");
    check_range(window_size, 1, 1024, ctx, "window_size");
    check(!depths.empty(), ctx, "depths", "at least one stage", "none");
    check(depths.size() <= 8, ctx, "depths", "at most 8 stages", str(depths.size()));
    check(num_heads.size() == depths.size(), ctx, "num_heads",
          str(depths.size(), " entries (one per stage in depths)"), str(num_heads.size()));
    check_range(mlp_ratio, 1e-3, 64.0, ctx, "mlp_ratio");
    check_range(layer_norm_eps, 1e-12, 1.0, ctx, "layer_norm_eps");
    check(drop_path_rate >= 0 && drop_path_rate < 1, ctx, "drop_path_rate", "in [0, 1)",
          str(drop_path_rate));
    for (int s = 0; s < stages(); ++s) {
      check_range(depths[s], 1, 64, ctx, str("depths[", s, "]"));
      check(num_heads[s] > 0, ctx, str("num_heads[", s, "]"), "> 0", str(num_heads[s]));
      check(width(s) % num_heads[s] == 0, ctx, str("num_heads[", s, "]"),
            str("a divisor of the stage width ", width(s)), str(num_heads[s]));
      check(mlp_hidden(s) > 0, ctx, "mlp_ratio", str("an MLP width > 0 at stage ", s),
            str(mlp_hidden(s)));
      check(resolution(s) >= window_size, ctx, "window_size",
            str("at most the stage ", s, " resolution ", resolution(s),
                " (transformers fails on smaller maps)"),
            str(window_size));
    }
    const std::int64_t params = parameter_count(swin_parameter_specs(*this, ""));
    check(params <= kMaxParameters, ctx, "parameter count", str("at most ", kMaxParameters),
          str(params));
    check(frame_activation_elements() <= kMaxFrameActivations, ctx, "activations per frame",
          str("at most ", kMaxFrameActivations,
              " elements (image_size, patch_size, embed_dim, "
              "mlp_ratio, num_heads, window_size)"),
          str(frame_activation_elements()));
  }

  // From a transformers config.json dict. Missing keys keep transformers' defaults (which
  // are Swin-T's, the defaults above); keys the model has no use for are ignored; settings
  // it does not implement are refused.
  static SwinConfig from_json(const io::json& j, const std::string& ctx = "swin config") {
    check(j.is_object(), ctx, "config", "a JSON object", io::json_type(j));
    SwinConfig c;
    auto has = [&](const char* k) { return j.contains(k); };
    auto square = [&](const char* k, int& out) {
      if (!has(k)) return;
      const io::json& v = j.at(k);
      if (v.is_array()) {
        const auto dims = io::as_int_list(v, k, ctx);
        check(dims.size() == 2 && dims[0] == dims[1], ctx, k, "one size or a square [h, w]",
              v.dump());
        out = dims[0];
      } else {
        out = io::as_int32(v, k, ctx);
      }
    };
    if (has("model_type"))
      check(io::as_string(j.at("model_type"), "model_type", ctx) == "swin", ctx, "model_type",
            "\"swin\"", j.at("model_type").dump());
    square("image_size", c.image_size);
    square("patch_size", c.patch_size);
    if (has("num_channels")) c.num_channels = io::get_int(j, "num_channels", ctx);
    if (has("embed_dim")) c.embed_dim = io::get_int(j, "embed_dim", ctx);
    if (has("depths")) c.depths = io::as_int_list(j.at("depths"), "depths", ctx);
    if (has("num_heads")) c.num_heads = io::as_int_list(j.at("num_heads"), "num_heads", ctx);
    if (has("window_size")) c.window_size = io::get_int(j, "window_size", ctx);
    if (has("mlp_ratio")) c.mlp_ratio = io::get_double(j, "mlp_ratio", ctx);
    if (has("qkv_bias")) c.qkv_bias = io::get_bool(j, "qkv_bias", ctx);
    if (has("layer_norm_eps")) c.layer_norm_eps = io::get_double(j, "layer_norm_eps", ctx);
    if (has("drop_path_rate")) c.drop_path_rate = io::get_double(j, "drop_path_rate", ctx);
    if (has("use_absolute_embeddings"))
      check(!io::get_bool(j, "use_absolute_embeddings", ctx), ctx, "use_absolute_embeddings",
            "false (absolute position embeddings are not implemented)", "true");
    if (has("hidden_act"))
      check(io::as_string(j.at("hidden_act"), "hidden_act", ctx) == "gelu", ctx, "hidden_act",
            "\"gelu\" (the erf form is the one implemented)", j.at("hidden_act").dump());
    for (const char* k : {"hidden_dropout_prob", "attention_probs_dropout_prob"})
      if (has(k))
        check(io::get_double(j, k, ctx) == 0.0, ctx, k, "0 (not implemented)", j.at(k).dump());
    c.validate(ctx);
    return c;
  }

  // A transformers-loadable config dict (the fields above plus the fixed ones).
  io::ordered_json to_json() const {
    return io::ordered_json{{"model_type", "swin"},
                            {"image_size", image_size},
                            {"patch_size", patch_size},
                            {"num_channels", num_channels},
                            {"embed_dim", embed_dim},
                            {"depths", depths},
                            {"num_heads", num_heads},
                            {"window_size", window_size},
                            {"mlp_ratio", mlp_ratio},
                            {"qkv_bias", qkv_bias},
                            {"layer_norm_eps", layer_norm_eps},
                            {"drop_path_rate", drop_path_rate},
                            {"hidden_act", "gelu"},
                            {"hidden_dropout_prob", 0.0},
                            {"attention_probs_dropout_prob", 0.0},
                            {"use_absolute_embeddings", false}};
  }

  static SwinConfig load(const std::filesystem::path& path) {
    return detail::load_config<SwinConfig>(path);
  }
  void save(const std::filesystem::path& path) const { detail::save_config(*this, path); }
};

struct MilmerConfig;
inline std::vector<ParamSpec> parameter_specs(const MilmerConfig& c);

struct MilmerConfig {
  SwinConfig swin;
  int frames = 10;
  int top_k = 3;
  int amil_hidden = 128;
  bool amil_detach_scores = true;
  int queries = 64;
  int ca_heads = 12;
  double ca_dropout = 0.2;
  int eeg_channels = 32;
  int eeg_samples = 384;
  int fusion_layers = 2;
  int fusion_heads = 12;
  int ffn_dim = 2048;
  double dropout = 0.2;
  double head_dropout = 0.1;
  int classes = 4;

  bool operator==(const MilmerConfig&) const = default;

  // Model width D: the Swin output width.
  int width() const { return swin.out_width(); }
  // M: Swin output tokens per frame.
  int tokens_per_frame() const { return swin.out_tokens(); }
  // K * M: tokens entering the cross-attention.
  int selected_tokens() const { return top_k * tokens_per_frame(); }
  // 1 + N + C: the fusion sequence [CLS; visual; EEG].
  int fusion_tokens() const { return 1 + queries + eeg_channels; }

  // Every default of docs/model.md (§9).
  static MilmerConfig paper() { return MilmerConfig{}; }

  // docs/model.md §9; tools/milmer_reference.py's tiny_config() holds the same values.
  // Swin 32x32 / patch 2 -> 16x16 (width 16, 1 head) -> 8x8 (width 32, 2 heads), window 4:
  // both stages shift and have several windows. D = 32, M = 64.
  static MilmerConfig tiny() {
    MilmerConfig c;
    c.swin.image_size = 32;
    c.swin.patch_size = 2;
    c.swin.embed_dim = 16;
    c.swin.depths = {2, 2};
    c.swin.num_heads = {1, 2};
    c.swin.window_size = 4;
    c.frames = 4;
    c.top_k = 2;
    c.amil_hidden = 16;
    c.queries = 8;
    c.ca_heads = 2;
    c.eeg_channels = 8;
    c.eeg_samples = 64;
    c.fusion_layers = 2;
    c.fusion_heads = 2;
    c.ffn_dim = 64;
    return c;
  }

  // Elements of the activations one sample needs, roughly (every frame through Swin, the
  // cross-attention scores, the fusion attention scores and FFN, the inputs), in double.
  double sample_activation_elements() const {
    const double t = fusion_tokens();
    return double(frames) * (swin.frame_activation_elements() +
                             double(swin.num_channels) * swin.image_size * swin.image_size) +
           double(queries) * selected_tokens() * ca_heads + t * t * fusion_heads + t * ffn_dim +
           double(eeg_channels) * eeg_samples;
  }

  void validate(const std::string& ctx = "MilmerConfig") const {
    using detail::check_range;
    swin.validate(ctx + ": swin");
    check_range(frames, 1, 4096, ctx, "frames");
    check(top_k >= 1 && top_k <= frames, ctx, "top_k", str("in [1, frames = ", frames, "]"),
          str(top_k));
    check_range(amil_hidden, 1, 1 << 16, ctx, "amil_hidden");
    check_range(queries, 1, 1 << 16, ctx, "queries");
    check(ca_heads > 0, ctx, "ca_heads", "> 0", str(ca_heads));
    check(width() % ca_heads == 0, ctx, "ca_heads", str("a divisor of the model width ", width()),
          str(ca_heads));
    check_range(eeg_channels, 1, 4096, ctx, "eeg_channels");
    check_range(eeg_samples, 1, 1 << 20, ctx, "eeg_samples");
    check_range(fusion_layers, 1, 1024, ctx, "fusion_layers");
    check(fusion_heads > 0, ctx, "fusion_heads", "> 0", str(fusion_heads));
    check(width() % fusion_heads == 0, ctx, "fusion_heads",
          str("a divisor of the model width ", width()), str(fusion_heads));
    check_range(ffn_dim, 1, 1 << 20, ctx, "ffn_dim");
    check_range(classes, 2, 1024, ctx, "classes");
    for (auto [p, name] : {std::pair{ca_dropout, "ca_dropout"}, std::pair{dropout, "dropout"},
                           std::pair{head_dropout, "head_dropout"}})
      check(p >= 0 && p < 1, ctx, name, "in [0, 1)", str(p));
    // Every size is bounded now, so these sums cannot overflow.
    const std::int64_t params = parameter_count(parameter_specs(*this));
    check(params <= kMaxParameters, ctx, "parameter count", str("at most ", kMaxParameters),
          str(params));
    check(sample_activation_elements() <= kMaxSampleActivations, ctx, "activations per sample",
          str("at most ", kMaxSampleActivations,
              " elements (frames, image, queries, fusion tokens, ffn_dim, EEG)"),
          str(sample_activation_elements()));
  }

  // docs/model.md §10: every key required, unknown keys refused (a typo must not fall back
  // to a default silently).
  static MilmerConfig from_json(const io::json& j, const std::string& ctx = "milmer config") {
    check(j.is_object(), ctx, "config", "a JSON object", io::json_type(j));
    static const char* const kKeys[] = {
        "swin",          "frames",       "top_k",      "amil_hidden",  "amil_detach_scores",
        "queries",       "ca_heads",     "ca_dropout", "eeg_channels", "eeg_samples",
        "fusion_layers", "fusion_heads", "ffn_dim",    "dropout",      "head_dropout",
        "classes"};
    for (auto it = j.begin(); it != j.end(); ++it)
      check(std::find_if(std::begin(kKeys), std::end(kKeys),
                         [&](const char* k) { return it.key() == k; }) != std::end(kKeys),
            ctx, it.key(), "no such key (the keys of docs/model.md section 10 only)",
            "an unknown key");
    MilmerConfig c;
    c.swin = SwinConfig::from_json(io::get_field(j, "swin", ctx), ctx + ": swin");
    c.frames = io::get_int(j, "frames", ctx);
    c.top_k = io::get_int(j, "top_k", ctx);
    c.amil_hidden = io::get_int(j, "amil_hidden", ctx);
    c.amil_detach_scores = io::get_bool(j, "amil_detach_scores", ctx);
    c.queries = io::get_int(j, "queries", ctx);
    c.ca_heads = io::get_int(j, "ca_heads", ctx);
    c.ca_dropout = io::get_double(j, "ca_dropout", ctx);
    c.eeg_channels = io::get_int(j, "eeg_channels", ctx);
    c.eeg_samples = io::get_int(j, "eeg_samples", ctx);
    c.fusion_layers = io::get_int(j, "fusion_layers", ctx);
    c.fusion_heads = io::get_int(j, "fusion_heads", ctx);
    c.ffn_dim = io::get_int(j, "ffn_dim", ctx);
    c.dropout = io::get_double(j, "dropout", ctx);
    c.head_dropout = io::get_double(j, "head_dropout", ctx);
    c.classes = io::get_int(j, "classes", ctx);
    c.validate(ctx);
    return c;
  }

  io::ordered_json to_json() const {
    return io::ordered_json{{"swin", swin.to_json()},
                            {"frames", frames},
                            {"top_k", top_k},
                            {"amil_hidden", amil_hidden},
                            {"amil_detach_scores", amil_detach_scores},
                            {"queries", queries},
                            {"ca_heads", ca_heads},
                            {"ca_dropout", ca_dropout},
                            {"eeg_channels", eeg_channels},
                            {"eeg_samples", eeg_samples},
                            {"fusion_layers", fusion_layers},
                            {"fusion_heads", fusion_heads},
                            {"ffn_dim", ffn_dim},
                            {"dropout", dropout},
                            {"head_dropout", head_dropout},
                            {"classes", classes}};
  }

  static MilmerConfig load(const std::filesystem::path& path) {
    return detail::load_config<MilmerConfig>(path);
  }
  void save(const std::filesystem::path& path) const { detail::save_config(*this, path); }
};

// ---------------------------------------------------------------------------------------
// Parameter names and shapes (docs/model.md §11), PyTorch layouts (Linear: out x in).

// Swin parameters under the names transformers writes to checkpoints, in forward order:
// patch embedding, then per block layernorm_before, bias table, query, key, value, output,
// layernorm_after, MLP; patch merging after each stage but the last; the final LayerNorm.
inline std::vector<ParamSpec> swin_parameter_specs(const SwinConfig& c, const std::string& prefix) {
  std::vector<ParamSpec> v;
  auto add = [&](std::string name, std::vector<std::int64_t> shape) {
    v.push_back({prefix + std::move(name), std::move(shape)});
  };
  const std::int64_t e = c.embed_dim, p = c.patch_size;
  add("embeddings.patch_embeddings.projection.weight", {e, c.num_channels, p, p});
  add("embeddings.patch_embeddings.projection.bias", {e});
  add("embeddings.norm.weight", {e});
  add("embeddings.norm.bias", {e});
  for (int s = 0; s < c.stages(); ++s) {
    const std::int64_t d = c.width(s), h = c.mlp_hidden(s);
    for (int b = 0; b < c.depth(s); ++b) {
      const std::string blk = str("encoder.layers.", s, ".blocks.", b, ".");
      add(blk + "layernorm_before.weight", {d});
      add(blk + "layernorm_before.bias", {d});
      add(blk + "attention.self.relative_position_bias_table", {c.bias_table_rows(), c.heads(s)});
      for (const char* proj : {"query", "key", "value"}) {
        add(blk + "attention.self." + proj + ".weight", {d, d});
        if (c.qkv_bias) add(blk + "attention.self." + proj + ".bias", {d});
      }
      add(blk + "attention.output.dense.weight", {d, d});
      add(blk + "attention.output.dense.bias", {d});
      add(blk + "layernorm_after.weight", {d});
      add(blk + "layernorm_after.bias", {d});
      add(blk + "intermediate.dense.weight", {h, d});
      add(blk + "intermediate.dense.bias", {h});
      add(blk + "output.dense.weight", {d, h});
      add(blk + "output.dense.bias", {d});
    }
    if (s + 1 < c.stages()) {
      const std::string m = str("encoder.layers.", s, ".downsample.");
      add(m + "reduction.weight", {2 * d, 4 * d});
      add(m + "norm.weight", {4 * d});
      add(m + "norm.bias", {4 * d});
    }
  }
  add("layernorm.weight", {c.out_width()});
  add("layernorm.bias", {c.out_width()});
  return v;
}

// The int64 relative_position_index buffers (window^2 x window^2) that transformers 4.x
// checkpoints and the converted files carry; not parameters (the model computes them).
inline std::vector<ParamSpec> swin_buffer_specs(const SwinConfig& c,
                                                const std::string& prefix = "") {
  std::vector<ParamSpec> v;
  const std::int64_t w2 = std::int64_t{c.window_size} * c.window_size;
  for (int s = 0; s < c.stages(); ++s)
    for (int b = 0; b < c.depth(s); ++b)
      v.push_back({str(prefix, "encoder.layers.", s, ".blocks.", b,
                       ".attention.self.relative_position_index"),
                   {w2, w2}});
  return v;
}

inline bool is_swin_buffer_name(const std::string& name) {
  static const std::string suffix = "relative_position_index";
  return name.size() >= suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Every Milmer parameter: swin.*, amil, ca, eeg, fusion tokens, fusion layers, head.
inline std::vector<ParamSpec> parameter_specs(const MilmerConfig& c) {
  std::vector<ParamSpec> v = swin_parameter_specs(c.swin, "swin.");
  const std::int64_t d = c.width(), l = c.amil_hidden, n = c.queries, ch = c.eeg_channels,
                     s = c.eeg_samples, f = c.ffn_dim;
  auto add = [&](std::string name, std::vector<std::int64_t> shape) {
    v.push_back({std::move(name), std::move(shape)});
  };
  add("amil.V.weight", {l, d});
  add("amil.V.bias", {l});
  add("amil.w.weight", {1, l});
  add("amil.w.bias", {1});
  add("ca.queries", {n, d});
  add("ca.attn.in_proj_weight", {3 * d, d});
  add("ca.attn.in_proj_bias", {3 * d});
  add("ca.attn.out_proj.weight", {d, d});
  add("ca.attn.out_proj.bias", {d});
  add("eeg.norm.weight", {s});
  add("eeg.norm.bias", {s});
  add("eeg.proj.weight", {d, s});
  add("eeg.proj.bias", {d});
  add("fusion.cls", {d});
  add("fusion.type_embed.weight", {2, d});
  add("fusion.pos_visual", {n, d});
  add("fusion.pos_eeg", {ch, d});
  for (int i = 0; i < c.fusion_layers; ++i) {
    const std::string p = str("fusion.layers.", i, ".");
    add(p + "self_attn.in_proj_weight", {3 * d, d});
    add(p + "self_attn.in_proj_bias", {3 * d});
    add(p + "self_attn.out_proj.weight", {d, d});
    add(p + "self_attn.out_proj.bias", {d});
    add(p + "linear1.weight", {f, d});
    add(p + "linear1.bias", {f});
    add(p + "linear2.weight", {d, f});
    add(p + "linear2.bias", {d});
    add(p + "norm1.weight", {d});
    add(p + "norm1.bias", {d});
    add(p + "norm2.weight", {d});
    add(p + "norm2.bias", {d});
  }
  add("head.weight", {c.classes, d});
  add("head.bias", {c.classes});
  return v;
}

inline std::int64_t parameter_count(const std::vector<ParamSpec>& specs) {
  std::int64_t n = 0;
  for (const auto& p : specs) n += p.numel();
  return n;
}

// ---------------------------------------------------------------------------------------
// A checkpoint's config, checked before a model is built from it.

// Checks that the checkpoint at `path` holds exactly the tensors `c` implies: every parameter
// of parameter_specs(c) as F32 of its shape; optionally its AdamW moments optim.m.<name> and
// optim.v.<name> of the same shape; Swin's relative_position_index buffers; nothing else.
// Reads the header only. One Error names the file and lists every missing, mismatched and
// unexpected tensor. Called on a checkpoint's config before a model is built from it, so that
// the model allocates what the file's own tensors imply: a few corrupted bytes of metadata
// cannot make it allocate more.
inline void check_checkpoint_tensors(const MilmerConfig& c, const std::filesystem::path& path) {
  const io::SafetensorsHeader file = io::read_safetensors_header(path);
  std::map<std::string, const ParamSpec*> params;
  const std::vector<ParamSpec> specs = parameter_specs(c);
  for (const auto& p : specs) params[p.name] = &p;
  std::vector<std::string> missing, mismatched, unexpected;
  std::set<std::string> held;
  for (const auto& t : file.tensors) held.insert(t.name);
  for (const auto& p : specs)
    if (!held.count(p.name)) missing.push_back(p.name);
  for (const auto& t : file.tensors) {
    std::string name = t.name;
    for (const char* moment : {"optim.m.", "optim.v."})
      if (name.starts_with(moment)) name = name.substr(std::string(moment).size());
    const auto it = params.find(name);
    if (it == params.end()) {
      if (!(name == t.name && name.starts_with("swin.") && is_swin_buffer_name(name)))
        unexpected.push_back(t.name);
    } else if (t.dtype != io::DType::F32 || t.shape != it->second->shape) {
      mismatched.push_back(str(t.name, " is ", io::dtype_name(t.dtype), " ",
                               io::shape_string(t.shape), ", expected F32 ",
                               io::shape_string(it->second->shape)));
    }
  }
  if (missing.empty() && mismatched.empty() && unexpected.empty()) return;
  auto list = [](const char* what, const std::vector<std::string>& v) {
    std::string s = str(v.size(), " ", what, " (");
    for (std::size_t i = 0; i < v.size() && i < 5; ++i) s += (i ? ", " : "") + v[i];
    return s + (v.size() > 5 ? ", ...)" : ")");
  };
  std::string got;
  for (auto [what, v] : {std::pair{"missing", &missing}, std::pair{"mismatched", &mismatched},
                         std::pair{"unexpected", &unexpected}})
    if (!v->empty()) got += (got.empty() ? "" : "; ") + list(what, *v);
  throw Error("checkpoint " + file.path, "tensors",
              str("the ", specs.size(), " parameters its config implies (", parameter_count(specs),
                  " values)"),
              got);
}

}  // namespace milmer
