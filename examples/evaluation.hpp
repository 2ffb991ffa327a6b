// What milmer-train and milmer-infer share around the model: checking that shards fit a
// config, the protocol's train/test split, copying a batch into the model's input buffers,
// and evaluating a list of samples (loss, predictions, metrics).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common.hpp"
#include "milmer/config.hpp"
#include "milmer/context.hpp"
#include "milmer/data/shards.hpp"
#include "milmer/models/milmer.hpp"

namespace milmer::examples {

// The largest --batch the programs take: far above what memory allows at the paper's size,
// and small enough that no count of images or tokens derived from it overflows.
constexpr int kMaxBatch = 4096;

// The model config of a milmer-train checkpoint, read from its metadata; the entries
// Milmer::load_checkpoint reads itself ('config', 'step') are checked here first, so a
// corrupt one is an error naming the entry and the file.
inline MilmerConfig checkpoint_config(const std::map<std::string, std::string>& meta,
                                      const std::string& file) {
  metadata_int(meta, "step", file, 0, std::numeric_limits<std::int64_t>::max());
  return MilmerConfig::from_json(metadata_json<io::json>(meta, "config", file),
                                 str("checkpoint ", file, ": metadata 'config'"));
}

// ---------------------------------------------------------------------------------------
// Shards against the model config.

// Every model dimension the shards also have, checked before a model is built, so a config
// that does not fit the data is an error naming the config field, what the config says and
// what the shards hold (`source` names the config: a file, a preset, a checkpoint's).
// - swin.num_channels: shard frames are RGB, so 3.
// - swin.image_size: the (square) frame size; a Swin encoder is built for one image size, and
//   resizing here would silently train on something the paper's model never sees.
// - frames: the model takes `frames` evenly spaced frames of the shard's F (all of them when
//   equal; see frame_selection), so a config may not ask for more than the shards hold.
// - eeg_channels, eeg_samples: with adopt_data_shape (a preset: it fixes the architecture, not
//   the input sizes) the config takes them from the shards, and caps frames (and top_k) at
//   the shards' F; a config file must match them.
// (classes comes from the label scheme, not from the shards: the callers check it.)
inline void match_config_to_data(MilmerConfig& cfg, const data::Dataset& ds, bool adopt_data_shape,
                                 const std::string& source) {
  const data::ShardDims& d = ds.dims();
  const std::string file = ds.shard(0).path().string();
  check(d.height == d.width, file, "frame size", "square frames", str(d.height, "x", d.width));
  auto field = [&](const char* name, std::int64_t says, std::int64_t holds, const std::string& what,
                   const std::string& fix = "") {
    if (says != holds)
      throw Error(source, name, str(holds, " (", what, " in ", file, fix, ")"), str(says));
  };
  field("swin.num_channels", cfg.swin.num_channels, 3, "channels of the shards' RGB frames");
  field("swin.image_size", cfg.swin.image_size, d.height,
        str("the shards' frame size, ", d.height, "x", d.width),
        str("; or prepare shards for this model with tools/prepare_deap.py --frame-size ",
            cfg.swin.image_size));
  if (adopt_data_shape) {
    cfg.frames = std::min(cfg.frames, static_cast<int>(d.frames));
    cfg.top_k = std::min(cfg.top_k, cfg.frames);
    cfg.eeg_channels = static_cast<int>(d.eeg_channels);
    cfg.eeg_samples = static_cast<int>(d.eeg_samples);
  } else {
    check(cfg.frames <= static_cast<int>(d.frames), source, "frames",
          str("at most ", d.frames, " (the frames per sample in ", file, ")"), str(cfg.frames));
    field("eeg_channels", cfg.eeg_channels, d.eeg_channels, "the EEG channels per sample");
    field("eeg_samples", cfg.eeg_samples, d.eeg_samples, "the EEG samples per channel");
  }
  cfg.validate("model config for " + file);
}

// The shard frames a model with `model_frames` frames sees: the one nearest the centre of
// each of model_frames equal slices of the window (all frames when the counts are equal;
// 4 of 10: frames 1, 3, 6, 8).
inline std::vector<int> frame_selection(int shard_frames, int model_frames) {
  std::vector<int> sel;
  for (int k = 0; k < model_frames; ++k)
    sel.push_back(static_cast<int>((2 * k + 1) * shard_frames / (2 * model_frames)));
  return sel;
}

// ---------------------------------------------------------------------------------------
// Protocols (docs/data.md §9): which samples train and which test.

struct Protocol {
  std::string name = "subject-dependent";  // subject-dependent | window-level | loso
  int fold = 0;
  int folds = 5;
  int participant = 0;  // subject-dependent / window-level: 0 = every participant
  std::uint64_t split_seed = 0;

  Json to_json() const {
    return Json{{"name", name},
                {"fold", fold},
                {"folds", folds},
                {"participant", participant},
                {"split_seed", split_seed}};
  }
  // source names where j came from (a checkpoint's metadata) for the errors.
  static Protocol from_json(const io::json& j, const std::string& source) {
    Protocol p;
    p.name = io::as_string(io::get_field(j, "name", source), "name", source);
    p.fold = io::get_int(j, "fold", source);
    p.folds = io::get_int(j, "folds", source);
    p.participant = io::get_int(j, "participant", source);
    const io::json& seed = io::get_field(j, "split_seed", source);
    check(seed.is_number_unsigned(), source, "split_seed", "an integer >= 0", io::json_type(seed));
    p.split_seed = seed.get<std::uint64_t>();
    return p;
  }
};

struct ProtocolSplit {
  data::Split split;
  std::string description;  // one line for logs
  bool leaky = false;       // window-level: neighbouring windows of a trial on both sides
};

// subject-dependent / window-level: the stratified k-fold split of every participant (or of
// the one given), fold `fold` of each, pooled: one model trained on the union of the
// participants' training folds and tested on the union of their test folds.
// loso: fold k leaves out the k-th participant (ascending ids).
inline ProtocolSplit make_split(const data::Dataset& ds, const Protocol& p,
                                data::LabelScheme scheme) {
  const std::string op = "protocol " + p.name;
  ProtocolSplit out;
  if (p.name == "loso") {
    const auto folds = data::leave_one_subject_out(ds);
    check(p.fold >= 0 && p.fold < static_cast<int>(folds.size()), op, "fold",
          str("0 .. ", folds.size() - 1, " (one fold per participant)"), str(p.fold));
    out.split = folds[static_cast<std::size_t>(p.fold)];
    out.description = str("leave-one-subject-out, fold ", p.fold, " of ", folds.size(),
                          ": test participant ", out.split.test_participant);
    return out;
  }
  check(p.name == "subject-dependent" || p.name == "window-level", "protocol", "name",
        "subject-dependent, window-level or loso", p.name);
  out.leaky = p.name == "window-level";
  const auto unit = out.leaky ? data::SplitUnit::window_leaky : data::SplitUnit::trial;
  check(p.folds >= 2, op, "folds", ">= 2", str(p.folds));
  check(p.fold >= 0 && p.fold < p.folds, op, "fold", str("0 .. ", p.folds - 1), str(p.fold));
  std::vector<int> parts = ds.participants();
  if (p.participant != 0) {
    check(std::find(parts.begin(), parts.end(), p.participant) != parts.end(), op, "participant",
          "a participant present in the shards", str(p.participant));
    parts = {p.participant};
  }
  for (int part : parts) {
    std::vector<data::Split> folds;
    try {
      folds = data::subject_dependent_folds(ds, part, scheme, static_cast<std::size_t>(p.folds),
                                            p.split_seed, unit);
    } catch (const Error& e) {
      throw Error(str(op, ", participant ", part), e.argument() == "k" ? "folds" : e.argument(),
                  e.expected(), e.got());
    }
    const data::Split& f = folds[static_cast<std::size_t>(p.fold)];
    out.split.train.insert(out.split.train.end(), f.train.begin(), f.train.end());
    out.split.test.insert(out.split.test.end(), f.test.begin(), f.test.end());
  }
  std::sort(out.split.train.begin(), out.split.train.end());
  std::sort(out.split.test.begin(), out.split.test.end());
  out.description =
      str(p.name, ", fold ", p.fold, " of ", p.folds, out.leaky ? " over windows" : " over trials",
          ", ",
          p.participant ? str("participant ", p.participant)
                        : str(parts.size(), " participants pooled"),
          out.leaky ? " (LEAKY: windows of one trial on both sides; report only as such)" : "");
  return out;
}

// A 64-bit FNV-1a fingerprint of what the split's samples are (ids and labels), so a resumed
// run can tell it reads the same data.
inline std::string split_fingerprint(const data::Dataset& ds, const data::Split& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](std::int64_t v) {
    for (int b = 0; b < 8; ++b) {
      h ^= static_cast<std::uint64_t>(v >> (8 * b)) & 0xffu;
      h *= 0x100000001b3ull;
    }
  };
  for (const auto* side : {&s.train, &s.test}) {
    mix(static_cast<std::int64_t>(side->size()));
    for (std::size_t i : *side) {
      const data::SampleInfo& info = ds.info(i);
      for (int l : info.labels) mix(l);
      mix(info.participant);
      mix(info.trial);
      mix(info.presentation);
      mix(info.window);
    }
  }
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// ---------------------------------------------------------------------------------------
// Batches into the model.

// Host staging for batches of up to `batch` samples: what the Batcher fills (all the
// shard's frames) and, when the model takes fewer frames, the frames it takes.
struct HostBatch {
  std::vector<float> frames, eeg;
  std::vector<std::int32_t> labels;
  std::vector<int> selection;   // shard frame of each model frame
  std::vector<float> selected;  // (batch, model frames, 3, H, W) when a subset is taken
  std::size_t per_frame = 0;    // 3 * H * W
  int shard_frames = 0;

  HostBatch(const data::Dataset& ds, std::size_t batch, int model_frames)
      : frames(batch * ds.dims().frames * 3 * ds.dims().height * ds.dims().width),
        eeg(batch * ds.dims().eeg_floats()),
        labels(batch),
        selection(frame_selection(static_cast<int>(ds.dims().frames), model_frames)),
        per_frame(std::size_t{3} * ds.dims().height * ds.dims().width),
        shard_frames(static_cast<int>(ds.dims().frames)) {
    if (model_frames != shard_frames)
      selected.resize(batch * static_cast<std::size_t>(model_frames) * per_frame);
  }
  data::BatchBuffers buffers() { return {frames.data(), eeg.data(), labels.data()}; }
};

inline void upload_batch(Context& ctx, Milmer& model, HostBatch& b, int n) {
  const MilmerConfig& c = model.config();
  const auto count = static_cast<std::size_t>(n);
  const auto model_frames = static_cast<std::size_t>(c.frames);
  const std::size_t per_eeg =
      static_cast<std::size_t>(c.eeg_channels) * static_cast<std::size_t>(c.eeg_samples);
  check(b.selection.size() == model_frames &&
            b.per_frame == static_cast<std::size_t>(c.swin.num_channels) *
                               static_cast<std::size_t>(c.swin.image_size) *
                               static_cast<std::size_t>(c.swin.image_size) &&
            b.eeg.size() >= count * per_eeg && b.labels.size() >= count,
        "upload_batch", "batch", str(n, " samples of the model's input sizes"),
        "host buffers of other sizes");
  const float* frames = b.frames.data();
  if (!b.selected.empty()) {
    for (std::size_t s = 0; s < count; ++s)
      for (std::size_t k = 0; k < model_frames; ++k)
        std::memcpy(b.selected.data() + (s * model_frames + k) * b.per_frame,
                    b.frames.data() + (s * static_cast<std::size_t>(b.shard_frames) +
                                       static_cast<std::size_t>(b.selection[k])) *
                                          b.per_frame,
                    b.per_frame * sizeof(float));
    frames = b.selected.data();
  }
  MILMER_CUDA_CHECK(cudaMemcpyAsync(model.frames_input(), frames,
                                    count * model_frames * b.per_frame * sizeof(float),
                                    cudaMemcpyHostToDevice, ctx.stream()));
  MILMER_CUDA_CHECK(cudaMemcpyAsync(model.eeg_input(), b.eeg.data(),
                                    count * per_eeg * sizeof(float), cudaMemcpyHostToDevice,
                                    ctx.stream()));
  MILMER_CUDA_CHECK(cudaMemcpyAsync(model.labels_input(), b.labels.data(),
                                    count * sizeof(std::int32_t), cudaMemcpyHostToDevice,
                                    ctx.stream()));
}

// The model's logits of the last forward, (n, classes), on the host.
inline std::vector<float> download_logits(Context& ctx, const Milmer& model, int n) {
  std::vector<float> out(static_cast<std::size_t>(n) *
                         static_cast<std::size_t>(model.config().classes));
  MILMER_CUDA_CHECK(cudaMemcpyAsync(out.data(), model.logits(), out.size() * sizeof(float),
                                    cudaMemcpyDeviceToHost, ctx.stream()));
  ctx.synchronize();
  return out;
}

// ---------------------------------------------------------------------------------------
// Non-finite values.

// A value that must be finite was not (a diverged training step; weights or inputs whose
// values overflow): which value, and where.
class NonFinite : public Error {
 public:
  using Error::Error;
};

inline bool all_finite(std::span<const float> values) {
  return std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); });
}

inline std::string describe_sample(const data::Dataset& ds, std::size_t i) {
  const data::SampleInfo& s = ds.info(i);
  return str("sample ", i, " (participant ", s.participant, ", trial ", s.trial, ", window ",
             s.window, ")");
}

// ---------------------------------------------------------------------------------------
// Evaluation.

struct Evaluation {
  ClassificationMetrics metrics;
  double loss = 0;                    // mean cross-entropy over the samples
  std::vector<int> truth, predicted;  // in the order of the indices given
  std::vector<float> logits;          // (samples, classes)
};

// Evaluation-mode forward (no dropout, no drop-path) over `indices` in the order given,
// batches of up to the model's capacity. progress(done, total) is called after each batch.
// Non-finite logits or loss throw NonFinite naming the first sample concerned.
inline Evaluation evaluate(Context& ctx, Milmer& model, const data::Dataset& ds,
                           const std::vector<std::size_t>& indices, data::LabelScheme scheme,
                           const std::function<void(std::size_t, std::size_t)>& progress = {}) {
  const int classes = model.config().classes;
  check(data::num_classes(scheme) == classes, "evaluate", "labels",
        str("a scheme with the model's ", classes, " classes"),
        str(data::label_scheme_name(scheme), " (", data::num_classes(scheme), " classes)"));
  Evaluation ev;
  if (indices.empty()) {
    ev.metrics = ConfusionMatrix(classes).metrics();
    return ev;
  }
  const auto batch = static_cast<std::size_t>(model.batch_capacity());
  data::Batcher batcher(ds, indices,
                        {.scheme = scheme, .batch_size = batch, .seed = 0, .shuffle = false});
  HostBatch hb(ds, batch, model.config().frames);
  ConfusionMatrix cm(classes);
  double loss_sum = 0;
  batcher.start_epoch(0);
  while (const std::size_t n = batcher.next(hb.buffers())) {
    const int b = static_cast<int>(n);
    upload_batch(ctx, model, hb, b);
    model.forward(ctx, b, false, 0);
    model.loss(ctx, b, std::span<const int>(hb.labels.data(), n));
    const float batch_loss = model.read_loss(ctx);
    const std::vector<float> logits = download_logits(ctx, model, b);
    const std::size_t first = ev.truth.size();
    for (std::size_t j = 0; j < n; ++j) {
      const auto row = std::span<const float>(logits).subspan(j * static_cast<std::size_t>(classes),
                                                              static_cast<std::size_t>(classes));
      if (!all_finite(row))
        throw NonFinite(
            "evaluate", "logits", "finite values",
            str(*std::find_if(row.begin(), row.end(), [](float v) { return !std::isfinite(v); }),
                " for ", describe_sample(ds, indices[first + j])));
      const int pred = argmax(row);
      cm.add(hb.labels[j], pred);
      ev.truth.push_back(hb.labels[j]);
      ev.predicted.push_back(pred);
    }
    if (!std::isfinite(batch_loss))
      throw NonFinite("evaluate", "loss", "a finite value",
                      str(batch_loss, " on the batch from ", describe_sample(ds, indices[first])));
    loss_sum += static_cast<double>(batch_loss) * static_cast<double>(n);
    ev.logits.insert(ev.logits.end(), logits.begin(), logits.end());
    if (progress) progress(ev.truth.size(), indices.size());
  }
  ev.metrics = cm.metrics();
  ev.loss = loss_sum / static_cast<double>(indices.size());
  return ev;
}

inline Json to_json(const Evaluation& ev, const std::vector<std::string>& names) {
  Json j = to_json(ev.metrics, names);
  j["loss"] = ev.loss;
  return j;
}

}  // namespace milmer::examples
