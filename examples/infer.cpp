// milmer-infer: evaluates a milmer-train checkpoint on shards, or classifies one sample.
//
//   milmer-infer --checkpoint RUN/checkpoint.safetensors --data SHARDS [--split test]
//   milmer-infer --checkpoint RUN/checkpoint.safetensors --data SHARDS --sample 17 [--json]
//
// The model config comes from the checkpoint's metadata ("config"); the label scheme from
// its "labels" unless --labels names another scheme with as many classes. --split test/train
// rebuild the training run's split and refuse shards that do not hold its samples (the
// split fingerprint stored in the checkpoint); non-finite outputs are an error.
#include <CLI/CLI.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "cli.hpp"
#include "common.hpp"
#include "evaluation.hpp"
#include "milmer/data/shards.hpp"
#include "milmer/models/milmer.hpp"

namespace fs = std::filesystem;
using namespace milmer;
using namespace milmer::examples;

namespace {

struct Args {
  std::string checkpoint, data_dir, labels, split = "all";
  std::optional<std::int64_t> sample;
  int batch = 14;
  bool json = false;
  int threads = 0;
  bool no_verify = false;
};

int run(const Args& a) {
  const std::string ck = a.checkpoint;
  const auto meta = read_safetensors_metadata(ck);
  MilmerConfig cfg = checkpoint_config(meta, ck);
  check_checkpoint_tensors(cfg, ck);  // before the model is built from cfg
  const auto labels_it = meta.find("labels");
  const std::string trained_labels = labels_it != meta.end() ? labels_it->second : "";
  const std::string labels = !a.labels.empty() ? a.labels : trained_labels;
  check(!labels.empty(), "milmer-infer", "--labels", "a label scheme (the checkpoint names none)",
        "none");
  const data::LabelScheme scheme = data::parse_label_scheme(labels);
  check(data::num_classes(scheme) == cfg.classes, "milmer-infer", "--labels",
        str("a scheme with the checkpoint's ", cfg.classes, " classes"),
        str(labels, " (", data::num_classes(scheme), " classes)"));
  const std::vector<std::string> names = data::class_names(scheme);

  const data::Dataset ds = data::Dataset::open_dir(a.data_dir, {.verify_checksum = !a.no_verify});
  match_config_to_data(cfg, ds, false, str("checkpoint ", ck, ": metadata 'config'"));

  std::vector<std::size_t> indices;
  std::string split_description = "every sample of the shards";
  if (a.sample) {
    check(*a.sample >= 0 && static_cast<std::size_t>(*a.sample) < ds.size(), "milmer-infer",
          "--sample", str("0 .. ", ds.size() - 1, " (samples in ", a.data_dir, ")"),
          str(*a.sample));
    indices = {static_cast<std::size_t>(*a.sample)};
    split_description = str("sample ", *a.sample);
  } else if (a.split == "all") {
    for (std::size_t i = 0; i < ds.size(); ++i) indices.push_back(i);
  } else {
    // The training run's split, rebuilt from its protocol (stratified on its label scheme).
    // The fingerprint of its samples must be the one the run stored: other shards (or the
    // same ones re-prepared differently) would give a split the model was never tested on.
    const Protocol protocol = Protocol::from_json(metadata_json<io::json>(meta, "protocol", ck),
                                                  str("checkpoint ", ck, ": metadata 'protocol'"));
    const auto ps = make_split(ds, protocol, data::parse_label_scheme(trained_labels));
    const std::string run_source = str("checkpoint ", ck, ": metadata 'run'");
    const io::json run = metadata_json<io::json>(meta, "run", ck);
    const std::string trained = io::as_string(io::get_field(run, "split_fingerprint", run_source),
                                              "split_fingerprint", run_source);
    const std::string here = split_fingerprint(ds, ps.split);
    check(here == trained, str("milmer-infer --split ", a.split), "--data",
          str("the shards the checkpoint was trained on (split fingerprint ", trained,
              "); evaluate other shards with --split all"),
          str(a.data_dir, ", whose split has fingerprint ", here));
    indices = a.split == "test" ? ps.split.test : ps.split.train;
    split_description = str("the ", a.split, " side of ", ps.description);
  }
  check(!indices.empty(), "milmer-infer", "samples", "at least one", "none");

  Context ctx;
  const int batch = static_cast<int>(std::min<std::size_t>(a.batch, indices.size()));
  Milmer model(ctx, cfg, batch);
  model.load_checkpoint(ctx, ck);
  Evaluation ev;
  try {
    ev = evaluate(ctx, model, ds, indices, scheme);
  } catch (const NonFinite& e) {
    throw NonFinite(str("milmer-infer: ", ck, " on ", a.data_dir), e.argument(), e.expected(),
                    str(e.got(),
                        " (the checkpoint's weights or the shards' values overflow: "
                        "no usable result)"));
  }

  if (a.sample) {
    const data::SampleInfo& info = ds.info(indices[0]);
    const std::span<const float> logits(ev.logits);
    const std::vector<double> prob = softmax(logits);
    const int pred = ev.predicted[0];
    if (a.json) {
      Json probs;
      for (std::size_t c = 0; c < names.size(); ++c) probs[names[c]] = prob[c];
      Json j{{"checkpoint", ck},
             {"data", a.data_dir},
             {"sample", *a.sample},
             {"participant", info.participant},
             {"trial", info.trial},
             {"window", info.window},
             {"labels", labels},
             {"true_class", names[static_cast<std::size_t>(ev.truth[0])]},
             {"predicted_class", names[static_cast<std::size_t>(pred)]},
             {"predicted_index", pred},
             {"probabilities", probs},
             {"logits", std::vector<float>(logits.begin(), logits.end())}};
      std::printf("%s\n", j.dump(2).c_str());
    } else {
      std::printf("sample %lld: participant %d, trial %d, window %d; true class %s\n",
                  static_cast<long long>(*a.sample), info.participant, info.trial, info.window,
                  names[static_cast<std::size_t>(ev.truth[0])].c_str());
      std::printf("predicted: %s\n", names[static_cast<std::size_t>(pred)].c_str());
      for (std::size_t c = 0; c < names.size(); ++c)
        std::printf("  p(%s) = %.4f%s\n", names[c].c_str(), prob[c],
                    static_cast<int>(c) == pred ? "  <-" : "");
    }
    return 0;
  }

  if (a.json) {
    Json j{{"checkpoint", ck},
           {"data", a.data_dir},
           {"split", a.split},
           {"description", split_description},
           {"labels", labels},
           {"eval", to_json(ev, names)},
           {"chance", Json{{"uniform", 1.0 / cfg.classes},
                           {"majority_class_rate", majority_class_rate(ev.metrics)}}}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    const auto& m = ev.metrics;
    std::printf("%s: %lld samples (%s), labels %s\n", ck.c_str(), static_cast<long long>(m.samples),
                split_description.c_str(), labels.c_str());
    std::printf("loss %.4f  accuracy %s  macro-F1 %.3f  (chance: uniform %s, majority class %s)\n",
                ev.loss, percent(m.accuracy).c_str(), m.macro_f1,
                percent(1.0 / cfg.classes).c_str(), percent(majority_class_rate(m)).c_str());
    for (std::size_t c = 0; c < names.size(); ++c)
      std::printf("  %-6s F1 %.3f  precision %.3f  recall %.3f  support %lld\n", names[c].c_str(),
                  m.per_class_f1[c], m.precision[c], m.recall[c],
                  static_cast<long long>(m.support[c]));
    std::printf("confusion matrix (rows: true class, columns: predicted):\n%s",
                confusion_table(m, names).c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{
      "milmer-infer: evaluate a milmer-train checkpoint on shards, or classify one sample"};
  app.add_option("--checkpoint", a.checkpoint, "checkpoint.safetensors written by milmer-train")
      ->required();
  add_data_and_threads_options(app, a.data_dir, a.threads, a.no_verify);
  auto* sample =
      app.add_option("--sample", a.sample,
                     "classify one sample: its index in the shards (sorted by file, then record)");
  app.add_option("--split", a.split,
                 "all samples, or the test / train side of the checkpoint's training protocol")
      ->check(CLI::IsMember({"all", "test", "train"}))
      ->capture_default_str()
      ->excludes(sample);
  add_labels_option(app, a.labels,
                    "label scheme (default: the checkpoint's; must have as many classes)");
  add_batch_option(app, a.batch, kMaxBatch, "evaluation batch size");
  app.add_flag("--json", a.json, "machine-readable output (JSON on stdout)");
  CLI11_PARSE(app, argc, argv);

  set_host_threads(a.threads);
  try {
    return run(a);
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "milmer-infer: error: %s\n", e.what());
    return 1;
  }
}
