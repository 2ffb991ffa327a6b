// The example programs' classification metrics (examples/common.hpp) against hand-computed
// cases; the expected macro F1 values are also what scikit-learn's
// f1_score(average="macro", zero_division=0) returns for the same labels.
#include <doctest/doctest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "../examples/common.hpp"
#include "milmer/io/safetensors.hpp"
#include "support.hpp"

using milmer::examples::classification_metrics;
using milmer::examples::ClassificationMetrics;
using milmer::examples::ConfusionMatrix;

namespace {

ClassificationMetrics metrics_of(const std::vector<int>& truth, const std::vector<int>& pred,
                                 int classes) {
  return classification_metrics(truth, pred, classes);
}

}  // namespace

TEST_CASE("metrics: three classes, every class seen") {
  // confusion [true][pred] = [[2 1 0] [0 1 1] [0 0 1]]
  const auto m = metrics_of({0, 0, 0, 1, 1, 2}, {0, 0, 1, 1, 2, 2}, 3);
  CHECK(m.samples == 6);
  CHECK(m.confusion == std::vector<std::vector<std::int64_t>>{{2, 1, 0}, {0, 1, 1}, {0, 0, 1}});
  CHECK(m.accuracy == doctest::Approx(4.0 / 6.0).epsilon(1e-15));
  CHECK(m.support == std::vector<std::int64_t>{3, 2, 1});
  // class 0: TP 2 FP 0 FN 1; class 1: TP 1 FP 1 FN 1; class 2: TP 1 FP 1 FN 0
  CHECK(m.per_class_f1[0] == doctest::Approx(0.8).epsilon(1e-15));
  CHECK(m.per_class_f1[1] == doctest::Approx(0.5).epsilon(1e-15));
  CHECK(m.per_class_f1[2] == doctest::Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(m.precision == std::vector<double>{1.0, 0.5, 0.5});
  CHECK(m.recall[0] == doctest::Approx(2.0 / 3.0).epsilon(1e-15));
  CHECK(m.recall[1] == 0.5);
  CHECK(m.recall[2] == 1.0);
  CHECK(m.macro_f1 == doctest::Approx(0.6555555555555556).epsilon(1e-15));
}

TEST_CASE("metrics: a class absent from truth and predictions is left out of macro F1") {
  // 4 classes; class 2 never occurs, class 3 is predicted once but never true.
  const auto m = metrics_of({0, 0, 1, 1, 1}, {0, 3, 1, 1, 0}, 4);
  CHECK(m.accuracy == doctest::Approx(0.6).epsilon(1e-15));
  CHECK(m.per_class_f1[0] == doctest::Approx(0.5).epsilon(1e-15));
  CHECK(m.per_class_f1[1] == doctest::Approx(0.8).epsilon(1e-15));
  CHECK(m.per_class_f1[2] == 0.0);  // zero_division = 0
  CHECK(m.per_class_f1[3] == 0.0);  // predicted, never true: precision 0, recall 0
  CHECK(m.precision[3] == 0.0);
  CHECK(m.recall[2] == 0.0);
  // mean over classes 0, 1, 3 (those seen): (0.5 + 0.8 + 0) / 3
  CHECK(m.macro_f1 == doctest::Approx(0.43333333333333335).epsilon(1e-15));
  CHECK(milmer::examples::majority_class_rate(m) == doctest::Approx(0.6).epsilon(1e-15));
}

TEST_CASE("metrics: perfect, all wrong, empty") {
  const auto perfect = metrics_of({1, 0, 1, 1}, {1, 0, 1, 1}, 2);
  CHECK(perfect.accuracy == 1.0);
  CHECK(perfect.macro_f1 == 1.0);
  CHECK(perfect.per_class_f1 == std::vector<double>{1.0, 1.0});

  const auto wrong = metrics_of({0, 0, 1}, {1, 1, 0}, 2);
  CHECK(wrong.accuracy == 0.0);
  CHECK(wrong.macro_f1 == 0.0);
  CHECK(wrong.confusion == std::vector<std::vector<std::int64_t>>{{0, 2}, {1, 0}});

  // One class only in the truth, always predicted: F1 1 for it, the other class unseen.
  const auto one = metrics_of({1, 1, 1}, {1, 1, 1}, 2);
  CHECK(one.macro_f1 == 1.0);
  CHECK(one.per_class_f1 == std::vector<double>{0.0, 1.0});

  const auto empty = metrics_of({}, {}, 3);
  CHECK(empty.samples == 0);
  CHECK(empty.accuracy == 0.0);
  CHECK(empty.macro_f1 == 0.0);
  CHECK(empty.per_class_f1 == std::vector<double>{0.0, 0.0, 0.0});
}

TEST_CASE("metrics: the confusion matrix accumulates and rejects out-of-range classes") {
  ConfusionMatrix cm(3);
  cm.add(2, 2);
  cm.add(2, 0);
  cm.add(2, 2);
  const auto m = cm.metrics();
  CHECK(m.confusion[2] == std::vector<std::int64_t>{1, 0, 2});
  CHECK(m.per_class_f1[2] == doctest::Approx(0.8).epsilon(1e-15));  // TP 2 FP 0 FN 1
  CHECK(milmer::test::error_message([&] { cm.add(3, 0); }) ==
        "ConfusionMatrix::add: argument 'truth': expected a class in [0, 3), got 3");
  CHECK(milmer::test::error_message([&] { cm.add(0, -1); }) ==
        "ConfusionMatrix::add: argument 'predicted': expected a class in [0, 3), got -1");
  CHECK(milmer::test::error_message([] {
          metrics_of({0, 1}, {0}, 2);
        }) ==
        "classification_metrics: argument 'predicted': expected 2 predictions (one per true "
        "label), got 1");
}

TEST_CASE("metrics: argmax takes the lowest index on a tie; softmax sums to one") {
  const std::vector<float> row{0.5f, 2.0f, 2.0f, -1.0f};
  CHECK(milmer::examples::argmax(row) == 1);
  const auto p = milmer::examples::softmax(row);
  double sum = 0;
  for (double v : p) sum += v;
  CHECK(sum == doctest::Approx(1.0).epsilon(1e-15));
  CHECK(p[1] == p[2]);
  CHECK(p[0] == doctest::Approx(std::exp(-1.5) / (2 + std::exp(-1.5) + std::exp(-3.0))));
}

TEST_CASE("examples: durations read as a person reads them") {
  CHECK(milmer::examples::format_duration(42.2) == "42s");
  CHECK(milmer::examples::format_duration(185) == "3m05s");
  CHECK(milmer::examples::format_duration(3720) == "1h02m");
  CHECK(milmer::examples::format_duration(-1) == "?");
}

TEST_CASE("examples: checkpoint metadata is read from the safetensors header alone") {
  const auto path = std::filesystem::temp_directory_path() /
                    ("milmer_metrics_meta_" + std::to_string(::getpid()) + ".safetensors");
  milmer::io::TensorMap t;
  const std::vector<float> w{1, 2, 3};
  t["w"] = milmer::io::Tensor::from({3}, std::span<const float>(w));
  milmer::io::write_safetensors(path, t, {{"epoch", "2"}, {"labels", "deap4"}});
  const auto meta = milmer::examples::read_safetensors_metadata(path);
  CHECK(meta.at("epoch") == "2");
  CHECK(meta.at("labels") == "deap4");
  CHECK(milmer::test::error_message(
            [&] { milmer::examples::metadata_field(meta, "step", "x.safetensors"); }) ==
        "checkpoint x.safetensors: argument 'metadata': expected a 'step' entry (a "
        "checkpoint written by milmer-train), got none");
  {  // a truncated file: the header length points past the end
    std::ofstream(path, std::ios::binary | std::ios::trunc)
        << std::string("\xff\x00\x00\x00\x00\x00\x00\x00{", 9);
  }
  CHECK(milmer::test::error_message([&] {
          milmer::examples::read_safetensors_metadata(path);
        }).find("argument 'header length'") != std::string::npos);
  std::filesystem::remove(path);
  CHECK(milmer::test::error_message([&] {
          milmer::examples::read_safetensors_metadata(path);
        }).find("expected an existing file, got no such file") != std::string::npos);
}
