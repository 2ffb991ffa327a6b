// milmer configs: presets, derived Swin geometry, JSON load/save, validation messages, and
// the parameter specs against the list the PyTorch reference exports (tests/golden).
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "milmer/config.hpp"
#include "milmer/io/json.hpp"
#include "milmer/io/safetensors.hpp"
#include "support.hpp"

#ifndef MILMER_SOURCE_DIR
#define MILMER_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;
using milmer::MilmerConfig;
using milmer::ParamSpec;
using milmer::SwinConfig;

namespace {

const fs::path kGoldenDir = fs::path(MILMER_SOURCE_DIR) / "tests" / "golden";

using milmer::test::error_message;

std::vector<ParamSpec> specs_from_json(const milmer::io::json& list) {
  std::vector<ParamSpec> out;
  for (const auto& e : list)
    out.push_back({e[0].get<std::string>(), e[1].get<std::vector<std::int64_t>>()});
  return out;
}

// Compares in order and reports the first difference by name.
void check_same_specs(const std::vector<ParamSpec>& got, const std::vector<ParamSpec>& want) {
  CHECK(got.size() == want.size());
  for (std::size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
    CAPTURE(i);
    REQUIRE(got[i].name == want[i].name);
    REQUIRE(got[i].shape == want[i].shape);
  }
}

milmer::io::json tiny_json() {
  return milmer::io::json::parse(MilmerConfig::tiny().to_json().dump());
}

// The message MilmerConfig::from_json gives for tiny_json() after `edit`.
std::string milmer_error(const std::function<void(milmer::io::json&)>& edit) {
  auto j = tiny_json();
  edit(j);
  return error_message([&] { (void)MilmerConfig::from_json(j); });
}

// The message SwinConfig::from_json gives for tiny_json()'s "swin" part after `edit`.
std::string swin_error(const std::function<void(milmer::io::json&)>& edit) {
  auto j = tiny_json()["swin"];
  edit(j);
  return error_message([&] { (void)SwinConfig::from_json(j); });
}

}  // namespace

TEST_CASE("config: paper preset geometry matches docs/model.md") {
  const auto c = MilmerConfig::paper();
  c.validate();
  const SwinConfig& s = c.swin;
  CHECK(s.stages() == 4);
  CHECK(c.width() == 768);
  CHECK(c.tokens_per_frame() == 49);
  CHECK(c.selected_tokens() == 147);
  CHECK(c.fusion_tokens() == 97);
  const int res[] = {56, 28, 14, 7}, width[] = {96, 192, 384, 768};
  for (int i = 0; i < 4; ++i) {
    CAPTURE(i);
    CHECK(s.resolution(i) == res[i]);
    CHECK(s.width(i) == width[i]);
    CHECK(s.head_dim(i) == 32);
    CHECK(s.window(i) == 7);
    CHECK(s.padded_resolution(i) == res[i]);
  }
  CHECK(s.shift(0) == 3);
  CHECK(s.block_shift(0, 0) == 0);
  CHECK(s.block_shift(2, 5) == 3);
  CHECK(s.shift(3) == 0);  // 7x7 map equals the window: unshifted
  CHECK(s.windows(0) == 64);
  CHECK(s.mlp_hidden(3) == 3072);
  CHECK(s.bias_table_rows() == 169);
  CHECK(s.drop_path(0, 0) == 0.0);
  CHECK(s.drop_path(3, 1) == doctest::Approx(0.1));
  CHECK(s.drop_path(1, 0) == doctest::Approx(0.1 * 2 / 11));
}

TEST_CASE("config: padding geometry of the non-multiple Swin fixtures") {
  const auto pad = SwinConfig::load(kGoldenDir / "swin_pad" / "config.json");
  const int res[] = {18, 9, 5}, padded[] = {20, 12, 8};
  for (int i = 0; i < 3; ++i) {
    CAPTURE(i);
    CHECK(pad.resolution(i) == res[i]);
    CHECK(pad.padded_resolution(i) == padded[i]);
    CHECK(pad.shift(i) == 2);
  }
  const auto odd = SwinConfig::load(kGoldenDir / "swin_odd_window" / "config.json");
  CHECK(odd.window(0) == 5);
  CHECK(odd.shift(0) == 2);
  CHECK(odd.resolution(2) == 5);
  CHECK(odd.shift(2) == 0);
  CHECK_FALSE(odd.qkv_bias);
}

TEST_CASE("config: presets equal the PyTorch reference's") {
  CHECK(MilmerConfig::load(kGoldenDir / "presets" / "tiny.json") == MilmerConfig::tiny());
  CHECK(MilmerConfig::load(kGoldenDir / "presets" / "paper.json") == MilmerConfig::paper());
  const auto t = MilmerConfig::tiny();
  CHECK(t.width() == 32);
  CHECK(t.tokens_per_frame() == 64);
  CHECK(t.swin.shift(0) == 2);
  CHECK(t.swin.shift(1) == 2);  // every tiny stage exercises shifted windows
}

TEST_CASE("config: parameter specs equal the names and shapes of the PyTorch reference") {
  const auto golden = milmer::io::read_json_file(kGoldenDir / "parameter_specs.json");
  int milmer_configs = 0, swin_configs = 0;
  for (auto it = golden.begin(); it != golden.end(); ++it) {
    CAPTURE(it.key());
    const auto& entry = it.value();
    const fs::path config = kGoldenDir / entry["config"].get<std::string>();
    if (entry.contains("count")) {
      const auto c = MilmerConfig::load(config);
      const auto specs = milmer::parameter_specs(c);
      check_same_specs(specs, specs_from_json(entry["params"]));
      CHECK(milmer::parameter_count(specs) == entry["count"].get<std::int64_t>());
      ++milmer_configs;
    } else {
      const auto c = SwinConfig::load(config);
      check_same_specs(milmer::swin_parameter_specs(c), specs_from_json(entry["params"]));
      check_same_specs(milmer::swin_buffer_specs(c), specs_from_json(entry["buffers"]));
      ++swin_configs;
    }
  }
  CHECK(milmer_configs >= 3);  // tiny, paper and the fixture configs
  CHECK(swin_configs >= 2);
  // docs/model.md §9: Swin-T has 27,519,354 parameters.
  const auto paper = milmer::parameter_specs(MilmerConfig::paper());
  CHECK(milmer::parameter_count(milmer::swin_parameter_specs(MilmerConfig::paper().swin)) ==
        27'519'354);
  CHECK(milmer::parameter_count(paper) == 41'432'959);
}

TEST_CASE("config: fixture parameter files hold exactly the specified tensors") {
  // load_tensors refuses a missing, extra or misshapen tensor (skip: names it may ignore).
  const auto load = [](const auto& specs, const fs::path& file, auto... skip) {
    std::vector<float> arena(milmer::parameter_count(specs));
    std::vector<milmer::io::TensorSlot> slots;
    std::size_t off = 0;
    for (const auto& p : specs) {
      slots.push_back(milmer::io::slot(p.name, p.shape, arena.data() + off));
      off += p.numel();
    }
    milmer::io::load_tensors(file, slots, skip...);
  };
  for (const char* name : {"milmer_tiny", "milmer_alt"}) {
    CAPTURE(name);
    const auto c = MilmerConfig::load(kGoldenDir / name / "config.json");
    load(milmer::parameter_specs(c), kGoldenDir / name / "params.safetensors");
  }
  for (const char* name : {"swin_tiny", "swin_pad", "swin_odd_window"}) {
    CAPTURE(name);
    const auto c = SwinConfig::load(kGoldenDir / name / "config.json");
    load(milmer::swin_parameter_specs(c), kGoldenDir / name / "params.safetensors",
         milmer::is_swin_buffer_name);
  }
}

TEST_CASE("config: JSON round trip and save/load") {
  const auto t = MilmerConfig::tiny();
  CHECK(MilmerConfig::from_json(tiny_json()) == t);
  const fs::path dir = fs::temp_directory_path() / milmer::str("milmer_test_config_", ::getpid());
  fs::create_directories(dir);
  t.save(dir / "m.json");
  CHECK(MilmerConfig::load(dir / "m.json") == t);
  t.swin.save(dir / "config.json");
  CHECK(SwinConfig::load(dir / "config.json") == t.swin);
  fs::remove_all(dir);
}

TEST_CASE("config: a transformers config.json with extra keys, list sizes and defaults") {
  const auto j = milmer::io::json::parse(R"({
    "architectures": ["SwinForImageClassification"], "model_type": "swin",
    "id2label": {"0": "angry"}, "image_size": [224, 224], "patch_size": 4,
    "embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24],
    "window_size": 7, "mlp_ratio": 4.0, "encoder_stride": 32, "path_norm": true,
    "hidden_dropout_prob": 0.0, "use_absolute_embeddings": false})");
  CHECK(SwinConfig::from_json(j) == SwinConfig{});
  CHECK(SwinConfig::from_json(milmer::io::json::object()) == SwinConfig{});
}

TEST_CASE("config: invalid configs are refused with the key named") {
  using milmer::io::json;
  const auto npos = std::string::npos;
  SUBCASE("heads must divide the width") {
    const auto m = milmer_error([](json& j) { j["swin"]["num_heads"] = {3, 2}; });
    CHECK(m.find("num_heads[0]") != npos);
    CHECK(m.find("divisor of the stage width 16") != npos);
  }
  SUBCASE("top_k at most frames") {
    CHECK(milmer_error([](json& j) { j["top_k"] = 5; }).find("'top_k'") != npos);
  }
  SUBCASE("fusion and cross-attention heads divide the model width") {
    CHECK(milmer_error([](json& j) { j["fusion_heads"] = 3; }).find("'fusion_heads'") != npos);
    CHECK(milmer_error([](json& j) { j["ca_heads"] = 5; }).find("'ca_heads'") != npos);
  }
  SUBCASE("unknown, missing and mistyped keys") {
    CHECK(milmer_error([](json& j) { j["top-k"] = 2; }).find("'top-k'") != npos);
    const auto m = milmer_error([](json& j) { j.erase("classes"); });
    CHECK(m.find("'classes'") != npos);
    CHECK(m.find("missing") != npos);
    CHECK(milmer_error([](json& j) { j["frames"] = "4"; }).find("an integer") != npos);
    CHECK(milmer_error([](json& j) {
            j["swin"]["depths"] = {2, 2, 2};
          }).find("'num_heads'") != npos);
  }
  SUBCASE("Swin settings the model does not implement") {
    CHECK(swin_error([](json& j) {
            j["use_absolute_embeddings"] = true;
          }).find("use_absolute_embeddings") != npos);
    CHECK(swin_error([](json& j) { j["model_type"] = "swinv2"; }).find("'model_type'") != npos);
    CHECK(swin_error([](json& j) { j["image_size"] = {32, 48}; }).find("square") != npos);
  }
  SUBCASE("a stage map smaller than the window") {
    auto c = SwinConfig{};
    c.image_size = 12;
    c.patch_size = 2;
    c.window_size = 4;
    c.embed_dim = 8;
    c.depths = {2, 2};
    c.num_heads = {1, 1};
    const auto m = error_message([&] { c.validate(); });
    CHECK(m.find("'window_size'") != std::string::npos);
    CHECK(m.find("stage 1 resolution 3") != std::string::npos);
  }
  SUBCASE("a malformed file names the file") {
    const fs::path p =
        fs::temp_directory_path() / milmer::str("milmer_test_bad_", ::getpid(), ".json");
    milmer::io::write_text_file(p, "{\"frames\": ");
    const auto m = error_message([&] { (void)MilmerConfig::load(p); });
    CHECK(m.find(p.string()) != std::string::npos);
    fs::remove(p);
  }
}

TEST_CASE("config: every size is bounded, and so are the products they imply") {
  auto refused = [](const milmer::io::json& j, const std::string& what) {
    const auto m = error_message([&] { (void)MilmerConfig::from_json(j, "checkpoint c: config"); });
    CHECK_MESSAGE(m.find("checkpoint c: config") != std::string::npos, m);
    CHECK_MESSAGE(m.find(what) != std::string::npos, m);
  };
  // One field at a time, each far out of range but a valid int32.
  const std::vector<std::pair<std::vector<std::string>, std::string>> fields = {
      {{"fusion_layers"}, "'fusion_layers': expected in [1, 1024], got 200000000"},
      {{"ffn_dim"}, "'ffn_dim': expected in [1, 1048576]"},
      {{"queries"}, "'queries': expected in [1, 65536]"},
      {{"amil_hidden"}, "'amil_hidden'"},
      {{"frames"}, "'frames': expected in [1, 4096]"},
      {{"eeg_channels"}, "'eeg_channels'"},
      {{"eeg_samples"}, "'eeg_samples'"},
      {{"classes"}, "'classes': expected in [2, 1024]"},
      {{"swin", "image_size"}, "'image_size': expected in [1, 4096]"},
      {{"swin", "embed_dim"}, "'embed_dim'"},
      {{"swin", "num_channels"}, "'num_channels'"},
      {{"swin", "window_size"}, "'window_size'"},
  };
  for (const auto& [path, what] : fields) {
    CAPTURE(what);
    auto j = tiny_json();
    auto& v = path.size() == 1 ? j[path[0]] : j[path[0]][path[1]];
    v = 200'000'000;
    refused(j, what);
  }
  auto j = tiny_json();
  j["swin"]["depths"] = {2, 100000};
  refused(j, "'depths[1]': expected in [1, 64]");
  j = tiny_json();
  j["swin"]["mlp_ratio"] = 1e300;
  refused(j, "'mlp_ratio'");
  // In range one by one, too large together: 4 x 2 x 1048576 x 32 x 32-wide FFN weights...
  j = tiny_json();
  j["fusion_layers"] = 1024;
  j["ffn_dim"] = 1 << 20;
  refused(j, "'parameter count': expected at most 1073741824, got ");
  // ...and a 4096 x 4096 image in 1 x 1 patches: no more parameters, a 268 M-element frame.
  j = tiny_json();
  j["swin"]["image_size"] = 4096;
  j["swin"]["patch_size"] = 1;
  refused(j, "'activations per frame'");
  j = tiny_json();
  j["frames"] = 4096;
  j["swin"]["image_size"] = 1024;
  refused(j, "'activations per sample'");
  // The presets are far inside every bound.
  MilmerConfig::paper().validate();
  CHECK(MilmerConfig::paper().sample_activation_elements() < milmer::kMaxSampleActivations / 100);
}

namespace {

// A checkpoint of `c`'s parameters (zeros) and their AdamW moments, with `c` in its metadata.
void write_checkpoint(const fs::path& p, const MilmerConfig& c, const MilmerConfig& meta) {
  milmer::io::TensorMap t;
  for (const auto& s : milmer::parameter_specs(c)) {
    const std::vector<float> zeros(static_cast<std::size_t>(s.numel()));
    for (const char* prefix : {"", "optim.m.", "optim.v."})
      t[prefix + s.name] = milmer::io::Tensor::from<float>(s.shape, zeros);
  }
  milmer::io::write_safetensors(p, t, {{"config", meta.to_json().dump()}, {"step", "0"}});
}

}  // namespace

TEST_CASE("config: a checkpoint's config must agree with the tensors it holds") {
  const fs::path dir =
      fs::temp_directory_path() / milmer::str("milmer_test_checkpoint_tensors_", ::getpid());
  fs::create_directories(dir);
  const fs::path p = dir / "checkpoint.safetensors";
  const MilmerConfig tiny = MilmerConfig::tiny();
  write_checkpoint(p, tiny, tiny);
  milmer::check_checkpoint_tensors(tiny, p);

  // The file holds `holds`' tensors; its metadata (what a reader would build) says `says`.
  auto refused = [&](const MilmerConfig& holds, const MilmerConfig& says) {
    write_checkpoint(p, holds, says);
    const auto m = error_message([&] { milmer::check_checkpoint_tensors(says, p); });
    CHECK_MESSAGE(m.find("checkpoint " + p.string() + ": argument 'tensors'") != std::string::npos,
                  m);
    return m;
  };
  SUBCASE("more fusion layers than the file holds") {
    MilmerConfig says = tiny;
    says.fusion_layers = 1000;
    const auto m = refused(tiny, says);
    CHECK(m.find("11976 missing (fusion.layers.2.self_attn.in_proj_weight") != std::string::npos);
  }
  SUBCASE("a wider FFN than the tensors") {
    MilmerConfig says = tiny;
    says.ffn_dim = 1 << 20;
    const auto m = refused(tiny, says);
    CHECK(m.find("fusion.layers.0.linear1.bias is F32 [64], expected F32 [1048576]") !=
          std::string::npos);
  }
  SUBCASE("fewer layers than the tensors") {
    MilmerConfig holds = tiny;
    holds.fusion_layers = 3;
    const auto m = refused(holds, tiny);
    CHECK(m.find("unexpected (fusion.layers.2.") != std::string::npos);
  }
  fs::remove_all(dir);
}
