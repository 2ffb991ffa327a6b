// milmer-train: trains Milmer on prepared DEAP shards (docs/examples.md).
//
//   milmer-train --preset tiny --data SHARDS --out RUN --labels deap2-valence --epochs 8
//
// Every epoch: train over the protocol's training split (shuffled from (seed, epoch)),
// evaluate on its held-out split, write RUN/checkpoint.safetensors atomically (parameters,
// AdamW moments, step, epoch and the history so far) and RUN/metrics.json. --resume
// continues a stopped or killed run from its last checkpoint; the result equals an
// uninterrupted run's because every random choice is a function of the seed and the
// epoch (sample order) or the step (dropout, drop-path), never of the process's history.
// A non-finite loss or gradient norm stops the run before the update it would poison: the
// last checkpoint stays, and metrics.json says complete: false and why. One run at a time
// per RUN (a lock file, RUN/.lock).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.hpp"
#include "common.hpp"
#include "evaluation.hpp"
#include "milmer/data/shards.hpp"
#include "milmer/kernels/adamw.hpp"
#include "milmer/models/milmer.hpp"

namespace fs = std::filesystem;
using namespace milmer;
using namespace milmer::examples;

namespace {

constexpr int kExitStoppedForTest = 3;

struct Args {
  std::string preset = "tiny";
  std::string config_path;
  std::string labels = "deap4";
  Protocol protocol;
  int epochs = 10;
  int batch = 14;
  double lr = 1e-4;
  std::int64_t warmup_steps = 0;
  std::uint64_t seed = 0;
  std::string data_dir;
  std::string out_dir;
  std::string swin_weights;
  bool resume = false;
  int threads = 0;
  std::int64_t stop_after_steps = 0;
  bool no_verify = false;

  Json to_json() const {
    return Json{{"preset", config_path.empty() ? preset : ""},
                {"config", config_path},
                {"labels", labels},
                {"protocol", protocol.to_json()},
                {"epochs", epochs},
                {"batch", batch},
                {"lr", lr},
                {"warmup_steps", warmup_steps},
                {"seed", seed},
                {"data", data_dir},
                {"out", out_dir},
                {"swin_weights", swin_weights},
                {"resume", resume},
                {"threads", threads},
                {"stop_after_steps", stop_after_steps},
                {"no_verify", no_verify}};
  }
};

std::string device_description() {
#if MILMER_TARGET_CUDA
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
    return str("cuda device ", dev, ": ", prop.name);
  return "cuda";
#else
  return str("host emulator (", emu::os_threads(), " threads; no GPU)");
#endif
}

// What determines a run's result: a resumed run must match it field by field.
Json run_identity(const Args& a, const MilmerConfig& cfg, const std::string& fingerprint) {
  return Json{{"config", cfg.to_json()},
              {"labels", a.labels},
              {"protocol", a.protocol.to_json()},
              {"epochs", a.epochs},
              {"batch", a.batch},
              {"lr", a.lr},
              {"warmup_steps", a.warmup_steps},
              {"seed", a.seed},
              {"split_fingerprint", fingerprint}};
}

void check_same_run(const Json& saved, const Json& now, const fs::path& ckpt) {
  for (auto it = now.begin(); it != now.end(); ++it) {
    const std::string key = it.key();
    const bool same = saved.contains(key) && saved.at(key) == it.value();
    if (!same)
      throw Error(str("milmer-train --resume (", ckpt.string(), ")"), key,
                  str(saved.contains(key) ? saved.at(key).dump() : std::string("(absent)"),
                      " as in the checkpoint (a resumed run must repeat the original's settings; "
                      "use another --out for a new run)"),
                  it.value().dump());
  }
}

// The global L2 norm of every gradient (encoder and the rest), computed on the device
// (global_grad_norm: deterministic, no atomics); one 8-byte read back per step.
class GradNorm {
 public:
  GradNorm() : norms_(2), scratch_(kernels::kGradNormMaxBlocks) {}
  double operator()(Context& ctx, Milmer& model) {
    const auto scratch = view(scratch_.data(), {kernels::kGradNormMaxBlocks});
    ParameterSet* sets[2] = {&model.swin().params(), &model.params()};
    for (int i = 0; i < 2; ++i)
      global_grad_norm(ctx, view(norms_.data() + i, {1}), scratch,
                       view<const float>(sets[i]->grads(), {std::int64_t(sets[i]->size())}));
    float norms[2] = {};
    norms_.download(norms, 2, ctx.stream());
    return std::hypot(double(norms[0]), double(norms[1]));
  }

 private:
  DeviceBuffer<float> norms_, scratch_;
};

// Files a killed write leaves in the run directory: io::AtomicFile's ".NAME.tmp.XXXXXX"
// beside the checkpoint, metrics.json and config.json. Only the holder of the run's lock
// writes there, so the holder removes them; returns one line per file removed.
std::vector<std::string> remove_interrupted_writes(const fs::path& out) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(out, ec)) {
    if (!io::is_atomic_temp_name(entry.path().filename().string())) continue;
    const std::string what = str(entry.path().string(), " (left by an interrupted write)");
    std::error_code rm;
    fs::remove(entry.path(), rm);
    removed.push_back(rm ? str("  could not remove ", what, ": ", rm.message())
                         : str("  removed ", what, "; the file it was to replace is whole"));
  }
  return removed;
}

struct EpochRecord {
  Json deterministic;  // what an uninterrupted run reproduces bit for bit
  double seconds = 0;  // wall time of the epoch (training + evaluation)
  double train_samples_per_second = 0;

  Json to_json() const {
    return Json{{"record", deterministic},
                {"seconds", seconds},
                {"train_samples_per_second", train_samples_per_second}};
  }
  static EpochRecord from_json(const Json& h, const std::string& op, const std::string& argument) {
    const bool ok = h.is_object() && h.contains("record") && h["record"].is_object() &&
                    h.contains("seconds") && h["seconds"].is_number() &&
                    h.contains("train_samples_per_second") &&
                    h["train_samples_per_second"].is_number();
    check(ok, op, argument,
          "an object with 'record' (an object), 'seconds' and 'train_samples_per_second' "
          "(numbers)",
          quoted_excerpt(h.dump()));
    return {h["record"], h["seconds"].get<double>(), h["train_samples_per_second"].get<double>()};
  }
};

// The state of a run between two epochs: everything a checkpoint's metadata holds besides
// the model's own entries (its config and step, written by Milmer::save_checkpoint). A
// checkpoint stores to_metadata() of the state after an epoch; --resume continues from
// from_metadata(), its mirror image, so what is saved is what is resumed.
struct RunState {
  static constexpr const char* kFormat = "milmer-train checkpoint 1";

  Json identity;                     // "run": what determines the result (run_identity)
  std::string labels;                // "labels": the label scheme (read by milmer-infer)
  Json class_names;                  // "class_names"
  Json protocol;                     // "protocol" (read by milmer-infer --split)
  std::uint64_t seed = 0;            // "rng": the random state, stated (see to_metadata)
  int epoch = 0;                     // "epoch": epochs done, so the index of the next one
  std::int64_t step = 0;             // "rng" next_step: optimiser steps done
  std::vector<EpochRecord> history;  // "history": one record per epoch done
  double wall_seconds = 0;           // "wall_seconds": training time over every process
  int runs = 1;                      // "runs": processes that have trained the run
  Json args;                         // "args": the latest process's options

  std::map<std::string, std::string> to_metadata() const {
    Json hist = Json::array();
    for (const auto& r : history) hist.push_back(r.to_json());
    std::map<std::string, std::string> meta;
    meta["format"] = kFormat;
    meta["epoch"] = std::to_string(epoch);
    meta["run"] = identity.dump();
    meta["labels"] = labels;
    meta["class_names"] = class_names.dump();
    meta["protocol"] = protocol.dump();
    // The random state, stated: sample order = seeded_shuffle(seed, epoch) (data::Batcher),
    // dropout and drop-path = Philox(step_seed(seed, step)) (Milmer::train_step).
    meta["rng"] = Json{{"seed", seed},
                       {"next_epoch", epoch},
                       {"next_step", step},
                       {"shuffle", "data::Batcher: seeded_shuffle from (seed, epoch)"},
                       {"model", "Milmer::train_step: Philox from step_seed(seed, step)"}}
                      .dump();
    meta["history"] = hist.dump();
    meta["wall_seconds"] = str(wall_seconds);
    meta["runs"] = std::to_string(runs);
    meta["args"] = args.dump();
    return meta;
  }

  // Every entry checked; a malformed one is an Error naming the entry and `file`.
  static RunState from_metadata(const std::map<std::string, std::string>& meta,
                                const std::string& file, int max_epoch) {
    const std::string op = "checkpoint " + file;
    check(metadata_field(meta, "format", file) == kFormat, op, "format", kFormat,
          meta.at("format"));
    RunState s;
    s.identity = metadata_json(meta, "run", file);
    s.epoch = static_cast<int>(metadata_int(meta, "epoch", file, 0, max_epoch));
    const Json hist = metadata_json(meta, "history", file);
    check(hist.is_array() && hist.size() == static_cast<std::size_t>(s.epoch), op,
          "metadata 'history'", str("a list of ", s.epoch, " epoch records (metadata 'epoch')"),
          hist.is_array() ? str("a list of ", hist.size()) : std::string(hist.type_name()));
    for (std::size_t i = 0; i < hist.size(); ++i)
      s.history.push_back(EpochRecord::from_json(hist[i], op, str("metadata 'history'[", i, "]")));
    s.wall_seconds = metadata_double(meta, "wall_seconds", file);
    s.runs = static_cast<int>(metadata_int(meta, "runs", file, 1, 1'000'000'000));
    s.labels = metadata_field(meta, "labels", file);
    s.class_names = metadata_json(meta, "class_names", file);
    s.protocol = metadata_json(meta, "protocol", file);
    s.args = metadata_json(meta, "args", file);
    const Json rng = metadata_json(meta, "rng", file);
    const bool rng_ok = rng.is_object() && rng.contains("seed") &&
                        rng.at("seed").is_number_unsigned() && rng.contains("next_epoch") &&
                        rng.at("next_epoch") == s.epoch && rng.contains("next_step") &&
                        rng.at("next_step").is_number_unsigned();
    check(rng_ok, op, "metadata 'rng'",
          str("an object with 'seed', 'next_epoch' (", s.epoch,
              ", as metadata 'epoch') and 'next_step' (integers >= 0)"),
          quoted_excerpt(rng.dump()));
    s.seed = rng.at("seed").get<std::uint64_t>();
    s.step = rng.at("next_step").get<std::int64_t>();
    return s;
  }
};

class Trainer {
 public:
  explicit Trainer(Args args) : a_(std::move(args)) {}

  int run() {
    const auto t_start = std::chrono::steady_clock::now();
    scheme_ = data::parse_label_scheme(a_.labels);
    names_ = data::class_names(scheme_);
    out_ = a_.out_dir;
    ckpt_ = out_ / "checkpoint.safetensors";

    ds_ = std::make_unique<data::Dataset>(
        data::Dataset::open_dir(a_.data_dir, {.verify_checksum = !a_.no_verify}));
    cfg_ = a_.config_path.empty()
               ? (a_.preset == "paper" ? MilmerConfig::paper() : MilmerConfig::tiny())
               : MilmerConfig::load(a_.config_path);
    const std::string source =
        a_.config_path.empty() ? "preset " + a_.preset : "config " + a_.config_path;
    if (!a_.config_path.empty())
      check(cfg_.classes == data::num_classes(scheme_), source, "classes",
            str(data::num_classes(scheme_), " (the classes of --labels ", a_.labels, ")"),
            str(cfg_.classes));
    cfg_.classes = data::num_classes(scheme_);
    match_config_to_data(cfg_, *ds_, a_.config_path.empty(), source);
    split_ = make_split(*ds_, a_.protocol, scheme_);
    check(!split_.split.train.empty(), "milmer-train", "training split", "at least one sample",
          "none");
    fingerprint_ = split_fingerprint(*ds_, split_.split);
    identity_ = run_identity(a_, cfg_, fingerprint_);

    fs::create_directories(out_);
    lock_ = std::make_unique<RunDirLock>(out_, "milmer-train");
    const bool have_ckpt = fs::exists(ckpt_);
    if (have_ckpt && !a_.resume)
      throw Error("milmer-train", "--out",
                  str("a directory without a checkpoint, or --resume to continue the run in it"),
                  str(out_.string(), " (has ", ckpt_.filename().string(), ")"));
    if (!have_ckpt && a_.resume)
      throw Error("milmer-train", "--resume",
                  str("a checkpoint to continue from, ", ckpt_.string()),
                  str("none in ", out_.string(), " (leave out --resume to start a new run)"));
    if (have_ckpt) {
      const std::string ck = ckpt_.string();
      const auto saved = read_safetensors_metadata(ckpt_);
      state_ = RunState::from_metadata(saved, ck, a_.epochs);
      check_same_run(state_.identity, identity_, ckpt_);
      checkpoint_config(saved, ck);
      ++state_.runs;
    } else {
      state_.identity = identity_;
      state_.labels = a_.labels;
      state_.class_names = Json(names_);
      state_.protocol = a_.protocol.to_json();
      state_.seed = a_.seed;
    }
    state_.args = a_.to_json();
    prior_wall_ = state_.wall_seconds;

    log_ = RunLog(out_ / "train.log");
    if (!lock_->stale_owner().empty())
      notes_.push_back(str("  took over ", lock_->path().string(), " from process ",
                           lock_->stale_owner(), ", which ended without releasing it (killed?)"));
    for (auto& line : remove_interrupted_writes(out_)) notes_.push_back(std::move(line));
    Context& ctx = ctx_;
    const int batch = a_.batch;
    model_ = std::make_unique<Milmer>(ctx, cfg_, batch);
    batcher_ = std::make_unique<data::Batcher>(
        *ds_, split_.split.train,
        data::BatcherOptions{
            .scheme = scheme_, .batch_size = static_cast<std::size_t>(batch), .seed = a_.seed});
    steps_per_epoch_ = static_cast<std::int64_t>(batcher_->batches_per_epoch());
    total_steps_ = steps_per_epoch_ * a_.epochs;
    schedule_ = CosineSchedule{.lr = a_.lr,
                               .final_fraction = 0.1,
                               .total_steps = total_steps_,
                               .warmup_steps = a_.warmup_steps};

    const int start_epoch = state_.epoch;
    if (have_ckpt) {
      model_->load_checkpoint(ctx, ckpt_);
      check(model_->step() == std::int64_t{start_epoch} * steps_per_epoch_,
            "checkpoint " + ckpt_.string(), "step",
            str(start_epoch * steps_per_epoch_, " (epoch ", start_epoch, " x ", steps_per_epoch_,
                " steps)"),
            str(model_->step()));
      check(state_.step == model_->step(), "checkpoint " + ckpt_.string(), "metadata 'rng'",
            str("next_step ", model_->step(), " (as metadata 'step')"), str(state_.step));
    } else {
      model_->init(ctx, a_.seed);
      if (!a_.swin_weights.empty()) model_->swin().load(ctx, fs::path(a_.swin_weights));
    }
    cfg_.save(out_ / "config.json");
    log_start(have_ckpt, start_epoch);

    Progress progress(str("epoch ", start_epoch + 1, "/", a_.epochs), total_steps_,
                      std::int64_t{start_epoch} * steps_per_epoch_);
    HostBatch hb(*ds_, static_cast<std::size_t>(batch), cfg_.frames);
    std::int64_t steps_this_run = 0;
    try {
      train_epochs(ctx, start_epoch, hb, progress, t_start, steps_this_run);
    } catch (const NonFinite& e) {
      progress.clear_line();
      throw stopped(e, t_start);
    }
    const double wall = prior_wall_ + seconds_since(t_start);
    write_metrics(a_.epochs, wall, true);
    log_final(wall);
    return 0;
  }

 private:
  // The epoch loop: each epoch trains, evaluates on the held-out split, and ends in a
  // checkpoint (the run state after it) and metrics.json.
  void train_epochs(Context& ctx, int start_epoch, HostBatch& hb, Progress& progress,
                    std::chrono::steady_clock::time_point t_start, std::int64_t& steps_this_run) {
    for (int epoch = start_epoch; epoch < a_.epochs; ++epoch) {
      const auto t_epoch = std::chrono::steady_clock::now();
      progress.set_label(str("epoch ", epoch + 1, "/", a_.epochs));
      EpochRecord rec = train_epoch(ctx, epoch, hb, progress, steps_this_run);
      const Evaluation ev = evaluate_epoch(ctx, epoch, progress);
      if (const std::string name = first_nonfinite_parameter(ctx); !name.empty())
        throw NonFinite(str("epoch ", epoch + 1, "/", a_.epochs, ", before its checkpoint"), name,
                        "finite values (a checkpoint is never written otherwise)",
                        "a value that is not finite");
      rec.deterministic["eval"] = to_json(ev, names_);
      rec.seconds = seconds_since(t_epoch);
      state_.history.push_back(rec);
      log_epoch(rec, ev);
      const double wall = prior_wall_ + seconds_since(t_start);
      save_checkpoint(ctx, epoch + 1, wall);
      write_metrics(epoch + 1, wall, false);
    }
  }

  // One pass over the training split: its record without the evaluation ("eval") and the
  // epoch's wall time.
  EpochRecord train_epoch(Context& ctx, int epoch, HostBatch& hb, Progress& progress,
                          std::int64_t& steps_this_run) {
    batcher_->start_epoch(static_cast<std::uint64_t>(epoch));
    std::vector<double> step_losses;
    double loss_sum = 0, train_seconds = 0;
    std::int64_t seen = 0, correct = 0;
    double lr = 0;
    while (const std::size_t n = batcher_->next(hb.buffers())) {
      const auto t_step = std::chrono::steady_clock::now();
      const int b = static_cast<int>(n);
      upload_batch(ctx, *model_, hb, b);
      lr = schedule_.at(model_->step());
      // A non-finite loss or gradient norm throws NonFinite before the update, so the
      // parameters stay those after the previous step.
      const float loss = model_->train_step(
          ctx, b, lr, a_.seed, std::span<const int>(hb.labels.data(), n), [&](float l) {
            const auto where = [&] {
              return str("epoch ", epoch + 1, "/", a_.epochs, ", step ", step_losses.size() + 1,
                         "/", steps_per_epoch_, " (step ", model_->step() + 1, " of the run)");
            };
            if (!std::isfinite(l)) throw NonFinite(where(), "loss", "a finite value", str(l));
            const double norm = grad_norm_(ctx, *model_);
            if (!std::isfinite(norm))
              throw NonFinite(where(), "gradient norm", "a finite value",
                              str(norm, " (loss ", l, ")"));
          });
      const std::vector<float> logits = download_logits(ctx, *model_, b);
      train_seconds += seconds_since(t_step);
      for (std::size_t j = 0; j < n; ++j)
        correct += argmax(std::span<const float>(logits).subspan(
                       j * static_cast<std::size_t>(cfg_.classes),
                       static_cast<std::size_t>(cfg_.classes))) == hb.labels[j];
      seen += b;
      step_losses.push_back(loss);
      loss_sum += static_cast<double>(loss) * b;
      ++steps_this_run;
      const double samples_per_s = seen / std::max(train_seconds, 1e-9);
      progress.update(model_->step(), str("loss ", fixed(loss_sum / seen, 4), "  acc ",
                                          percent(double(correct) / seen), "  ",
                                          fixed(samples_per_s * cfg_.frames, 1), " img/s"));
      if (a_.stop_after_steps > 0 && steps_this_run == a_.stop_after_steps) {
        progress.clear_line();
        log_.line(str("stopping after ", steps_this_run,
                      " steps as asked (--stop-after-steps, a test aid): nothing more is "
                      "written; the checkpoint of epoch ",
                      epoch, " stays; continue with --resume"));
        std::fflush(nullptr);
        std::_Exit(kExitStoppedForTest);
      }
    }
    progress.clear_line();
    EpochRecord rec;
    rec.deterministic = Json{{"epoch", epoch + 1},
                             {"step", model_->step()},
                             {"lr_last", lr},
                             {"train_loss", loss_sum / seen},
                             {"train_accuracy", double(correct) / seen},
                             {"step_losses", step_losses}};
    rec.train_samples_per_second = seen / std::max(train_seconds, 1e-9);
    return rec;
  }

  Evaluation evaluate_epoch(Context& ctx, int epoch, Progress& progress) {
    const std::string after = str("evaluation after epoch ", epoch + 1, "/", a_.epochs);
    Evaluation ev;
    try {
      ev = evaluate(ctx, *model_, *ds_, split_.split.test, scheme_,
                    [&](std::size_t done, std::size_t total) {
                      progress.update(model_->step(), str("evaluating ", done, "/", total));
                    });
    } catch (const NonFinite& e) {
      throw NonFinite(after + ": " + e.op(), e.argument(), e.expected(), e.got());
    }
    progress.clear_line();
    return ev;
  }

  // The first parameter holding a value that is not finite, or "" (checked before every
  // checkpoint).
  std::string first_nonfinite_parameter(Context& ctx) {
    const std::pair<ParameterSet*, std::string> sets[2] = {{&model_->swin().params(), "swin."},
                                                           {&model_->params(), ""}};
    for (const auto& [set, prefix] : sets) {
      const std::vector<float> values = set->download(ctx);
      for (const auto& e : set->entries())
        if (!all_finite(std::span<const float>(values).subspan(e.offset, e.numel)))
          return prefix + e.name;
    }
    return "";
  }

  // A run stopped by a non-finite value: metrics.json says complete: false and why, the log
  // says so, and the error to report names what is kept. The last checkpoint is untouched.
  NonFinite stopped(const NonFinite& e, std::chrono::steady_clock::time_point t_start) {
    const int done = static_cast<int>(state_.history.size());
    const std::string kept =
        done > 0 ? str("the checkpoint of epoch ", done, " stays (", ckpt_.string(), ")")
                 : std::string("no checkpoint was written");
    const NonFinite out(e.op(), e.argument(), e.expected(),
                        str(e.got(),
                            "; training diverged (lower --lr, or check the data and the "
                            "Swin weights); ",
                            kept, "; metrics.json says complete: false"));
    stopped_ = Json{{"reason", out.what()}, {"epochs_done", done}, {"step", model_->step()}};
    write_metrics(done, prior_wall_ + seconds_since(t_start), false);
    log_.line(str("stopped: ", out.what()), false);
    return out;
  }

  void save_checkpoint(Context& ctx, int epochs_done, double wall) {
    state_.epoch = epochs_done;
    state_.step = model_->step();
    state_.wall_seconds = wall;
    model_->save_checkpoint(ctx, ckpt_, state_.to_metadata());
  }

  void write_metrics(int epochs_done, double wall, bool complete) const {
    Json m;
    m["program"] = "milmer-train";
    m["complete"] = complete;
    if (!stopped_.is_null()) m["stopped"] = stopped_;
    m["epochs_done"] = epochs_done;
    m["epochs"] = a_.epochs;
    m["args"] = a_.to_json();
    m["config"] = cfg_.to_json();
    m["labels"] = a_.labels;
    m["class_names"] = names_;
    const auto& test = split_.split.test;
    m["protocol"] = a_.protocol.to_json();
    m["protocol"]["description"] = split_.description;
    m["protocol"]["leaky"] = split_.leaky;
    m["protocol"]["train_samples"] = split_.split.train.size();
    m["protocol"]["test_samples"] = test.size();
    if (split_.split.test_participant >= 0)
      m["protocol"]["test_participant"] = split_.split.test_participant;
    m["protocol"]["split_fingerprint"] = fingerprint_;
    m["parameter_count"] = model_->parameter_count();
    m["swin_parameter_count"] = model_->swin_param_count();
    m["steps_per_epoch"] = steps_per_epoch_;
    m["total_steps"] = total_steps_;
    m["chance"] = Json{
        {"uniform", 1.0 / cfg_.classes},
        {"majority_class_rate",
         state_.history.empty()
             ? 0.0
             : state_.history.back().deterministic["eval"]["majority_class_rate"].get<double>()}};
    Json hist = Json::array(), timing = Json::array();
    for (const auto& r : state_.history) {
      hist.push_back(r.deterministic);
      timing.push_back(Json{{"epoch", r.deterministic["epoch"]},
                            {"seconds", r.seconds},
                            {"train_samples_per_second", r.train_samples_per_second},
                            {"train_images_per_second", r.train_samples_per_second * cfg_.frames}});
    }
    m["history"] = hist;
    if (!state_.history.empty()) {
      const Json& last = state_.history.back().deterministic;
      m["final"] = Json{
          {"epoch", last["epoch"]}, {"train_loss", last["train_loss"]}, {"eval", last["eval"]}};
    }
    m["timing"] = Json{{"wall_seconds", wall},
                       {"runs", state_.runs},
                       {"device", device_description()},
                       {"epochs", timing}};
    m["files"] = Json{{"checkpoint", ckpt_.string()},
                      {"log", (out_ / "train.log").string()},
                      {"config", (out_ / "config.json").string()}};
    write_json_file(out_ / "metrics.json", m);
  }

  void log_start(bool resumed, int start_epoch) {
    const data::ShardDims& d = ds_->dims();
    log_.line(str("milmer-train ", resumed ? "resuming" : "starting", ": ",
                  a_.config_path.empty() ? "preset " + a_.preset : "config " + a_.config_path, ", ",
                  model_->parameter_count(), " parameters (Swin ", model_->swin_param_count(),
                  "), ", device_description()));
    log_.line(str("  data ", a_.data_dir, ": ", ds_->num_shards(), " participants, ", ds_->size(),
                  " samples, frames ", d.frames, "x", d.height, "x", d.width, ", EEG ",
                  d.eeg_channels, "x", d.eeg_samples));
    std::string frames;
    if (cfg_.frames != static_cast<int>(d.frames)) {
      frames = " (frames";
      for (int f : frame_selection(static_cast<int>(d.frames), cfg_.frames)) frames += str(" ", f);
      frames += str(" of each window's ", d.frames, ")");
    }
    log_.line(str("  model: image ", cfg_.swin.image_size, ", F ", cfg_.frames, frames, ", top-K ",
                  cfg_.top_k, ", width ", cfg_.width(), ", EEG ", cfg_.eeg_channels, "x",
                  cfg_.eeg_samples, ", ", cfg_.classes, " classes"));
    std::string classes;
    for (const auto& n : names_) classes += (classes.empty() ? "" : " ") + n;
    log_.line(str("  labels ", a_.labels, " (", classes, "); protocol ", split_.description));
    log_.line(str("  train ", split_.split.train.size(), " samples, test ",
                  split_.split.test.size(), "; batch ", a_.batch, ", ", steps_per_epoch_,
                  " steps/epoch, ", total_steps_, " steps; lr ", a_.lr, " cosine to ",
                  a_.lr * schedule_.final_fraction, ", warm-up ", a_.warmup_steps, "; seed ",
                  a_.seed));
    for (const auto& note : notes_) log_.line(note);
    if (resumed)
      log_.line(str("  resumed from ", ckpt_.string(), " after epoch ", start_epoch, " (step ",
                    model_->step(), ")"));
    else if (!a_.swin_weights.empty())
      log_.line(str("  Swin weights from ", a_.swin_weights));
  }

  void log_epoch(const EpochRecord& rec, const Evaluation& ev) {
    const Json& r = rec.deterministic;
    std::string f1s;
    for (std::size_t c = 0; c < names_.size(); ++c)
      f1s += str(c ? " " : "", names_[c], " ", fixed(ev.metrics.per_class_f1[c], 2));
    log_.line(str("epoch ", r["epoch"].get<int>(), "/", a_.epochs, "  train loss ",
                  fixed(r["train_loss"].get<double>(), 4), " acc ",
                  percent(r["train_accuracy"].get<double>()), "  |  eval loss ", fixed(ev.loss, 4),
                  " acc ", percent(ev.metrics.accuracy), " macro-F1 ",
                  fixed(ev.metrics.macro_f1, 3), " (F1 ", f1s, ")  ",
                  format_duration(rec.seconds)));
  }

  void log_final(double wall) {
    if (state_.history.empty()) return;
    const Json& e = state_.history.back().deterministic["eval"];
    ClassificationMetrics m;
    m.confusion = e["confusion_matrix"].get<std::vector<std::vector<std::int64_t>>>();
    log_.line(str("final (epoch ", a_.epochs, ", held-out ", e["samples"].get<std::int64_t>(),
                  " samples): accuracy ", percent(e["accuracy"].get<double>()), ", macro-F1 ",
                  fixed(e["macro_f1"].get<double>(), 3), "; chance: uniform ",
                  percent(1.0 / cfg_.classes), ", majority class ",
                  percent(e["majority_class_rate"].get<double>()), "; wall time ",
                  format_duration(wall)));
    log_.line("confusion matrix (rows: true class, columns: predicted):\n" +
              confusion_table(m, names_));
    log_.line(str("wrote ", (out_ / "metrics.json").string(), ", ", ckpt_.string(), ", ",
                  (out_ / "train.log").string()));
  }

  Args a_;
  Context ctx_;  // after set_host_threads (main), before the model that uses it
  data::LabelScheme scheme_{};
  std::vector<std::string> names_;
  fs::path out_, ckpt_;
  RunLog log_;
  std::unique_ptr<data::Dataset> ds_;
  MilmerConfig cfg_;
  ProtocolSplit split_;
  std::string fingerprint_;
  Json identity_;
  std::unique_ptr<Milmer> model_;
  std::unique_ptr<data::Batcher> batcher_;
  std::int64_t steps_per_epoch_ = 0, total_steps_ = 0;
  CosineSchedule schedule_;
  RunState state_;         // after the last epoch done (the checkpoint's metadata)
  double prior_wall_ = 0;  // training time of the processes before this one
  std::unique_ptr<RunDirLock> lock_;
  std::vector<std::string> notes_;  // for the log: a lock taken over, files cleaned up
  GradNorm grad_norm_;
  Json stopped_;  // why the run stopped early (metrics.json "stopped"), null otherwise
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"milmer-train: train Milmer on DEAP shards (tools/prepare_deap.py output)"};
  auto* preset = app.add_option("--preset", a.preset, "model size: tiny or paper")
                     ->check(CLI::IsMember({"tiny", "paper"}))
                     ->capture_default_str();
  auto* config = app.add_option("--config", a.config_path,
                                "model config JSON (docs/model.md §10) instead of a preset")
                     ->check(CLI::ExistingFile);
  preset->excludes(config);
  add_labels_option(app, a.labels, "label scheme (sets the number of classes)")
      ->capture_default_str();
  app.add_option("--protocol", a.protocol.name,
                 "subject-dependent (k-fold over trials), window-level (k-fold over windows: "
                 "leaky), loso (leave one subject out)")
      ->check(CLI::IsMember({"subject-dependent", "window-level", "loso"}))
      ->capture_default_str();
  app.add_option("--fold", a.protocol.fold, "fold to test (loso: the k-th participant)")
      ->capture_default_str();
  app.add_option("--folds", a.protocol.folds, "folds of the k-fold protocols")
      ->capture_default_str();
  app.add_option("--participant", a.protocol.participant,
                 "k-fold protocols: one participant only (0: all, pooled)")
      ->capture_default_str();
  app.add_option("--split-seed", a.protocol.split_seed, "seed of the k-fold dealing")
      ->capture_default_str();
  add_positive(app, "--epochs", a.epochs, "epochs");
  add_batch_option(app, a.batch, kMaxBatch, "batch size");
  add_positive(app, "--lr", a.lr, "peak learning rate (cosine decay to 0.1 x over the run)");
  app.add_option("--warmup-steps", a.warmup_steps, "linear warm-up steps")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  app.add_option("--seed", a.seed, "seed of initialisation, sample order, dropout, drop-path")
      ->capture_default_str();
  add_data_and_threads_options(app, a.data_dir, a.threads, a.no_verify);
  app.add_option("--out", a.out_dir, "run directory (checkpoint, metrics.json, train.log)")
      ->required();
  app.add_option("--swin-weights", a.swin_weights,
                 "pretrained Swin encoder (safetensors, transformers names; tools/convert_swin.py)")
      ->check(CLI::ExistingFile);
  app.add_flag("--resume", a.resume, "continue the run in --out from its checkpoint");
  app.add_option("--stop-after-steps", a.stop_after_steps,
                 "testing aid: exit with status 3 after this many steps of this process, as if "
                 "killed (the last epoch's checkpoint stays)")
      ->check(CLI::NonNegativeNumber);
  CLI11_PARSE(app, argc, argv);

  set_host_threads(a.threads);
  try {
    return Trainer(a).run();
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "milmer-train: error: %s\n", e.what());
    return 1;
  }
}
