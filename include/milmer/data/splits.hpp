// milmer::data evaluation protocols: subject-dependent k-fold splits (by trial, or leaky by
// window) and leave-one-subject-out. A Split lists dataset sample indices.
#pragma once

#include <milmer/data/dataset.hpp>
#include <milmer/data/labels.hpp>
#include <milmer/error.hpp>
#include <milmer/splitmix.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace milmer::data {

struct Split {
  std::vector<std::size_t> train, test;
  int test_participant = -1;  // set by leave_one_subject_out
};

enum class SplitUnit {
  trial,        // all windows of a trial fall on one side (the honest split)
  window_leaky  // windows split independently: the common practice in the field, which leaks
                // neighbouring 3 s windows of one trial (one set of ratings) into the test set
};

// Subject-dependent k-fold cross-validation inside one participant, stratified by label:
// units (trials, or windows for window_leaky) of each class are shuffled with the seed and
// dealt round-robin to the k folds; fold f tests on its units and trains on the rest.
// A class with fewer units than k cannot be in every fold ("stratified where possible").
// An 80/20 split is folds(k = 5)[0].
inline std::vector<Split> subject_dependent_folds(const Dataset& ds, int participant,
                                                  LabelScheme scheme, std::size_t k,
                                                  std::uint64_t seed,
                                                  SplitUnit unit = SplitUnit::trial) {
  const std::string op = "subject_dependent_folds";
  // unit key -> its sample indices; a trial's label is the label of its windows (one set of
  // ratings per trial), so taking the first window's is exact.
  std::map<std::int64_t, std::vector<std::size_t>> units;
  for (std::size_t i = 0; i < ds.size(); ++i) {
    const SampleInfo& s = ds.info(i);
    if (s.participant != participant) continue;
    const std::int64_t key =
        unit == SplitUnit::trial ? std::int64_t{s.trial} : static_cast<std::int64_t>(i);
    units[key].push_back(i);
  }
  check(!units.empty(), op, "participant", "a participant present in the dataset",
        str(participant));
  check(k >= 2 && k <= units.size(), op, "k",
        str("2 .. ", units.size(), unit == SplitUnit::trial ? " (trials)" : " (windows)"), str(k));
  std::map<int, std::vector<std::int64_t>> by_class;
  for (const auto& [key, idx] : units) by_class[ds.label(idx.front(), scheme)].push_back(key);
  std::vector<std::vector<std::int64_t>> fold_units(k);
  std::size_t next_fold = 0;
  for (auto& [cls, keys] : by_class) {
    seeded_shuffle(keys, seed * 0x100000001B3ull + static_cast<std::uint64_t>(cls) + 1);
    for (std::int64_t key : keys) {
      fold_units[next_fold].push_back(key);
      next_fold = (next_fold + 1) % k;
    }
  }
  std::vector<Split> folds(k);
  for (std::size_t f = 0; f < k; ++f) {
    for (std::size_t g = 0; g < k; ++g)
      for (std::int64_t key : fold_units[g]) {
        auto& side = (g == f) ? folds[f].test : folds[f].train;
        side.insert(side.end(), units[key].begin(), units[key].end());
      }
    std::sort(folds[f].train.begin(), folds[f].train.end());
    std::sort(folds[f].test.begin(), folds[f].test.end());
    folds[f].test_participant = -1;
  }
  return folds;
}

// Subject-independent: one fold per participant (ascending), tested on all its samples and
// trained on every other participant's.
inline std::vector<Split> leave_one_subject_out(const Dataset& ds) {
  const std::vector<int> parts = ds.participants();
  check(parts.size() >= 2, "leave_one_subject_out", "dataset", "at least 2 participants",
        str(parts.size()));
  std::vector<Split> folds;
  for (int p : parts) {
    Split s;
    s.test_participant = p;
    for (std::size_t i = 0; i < ds.size(); ++i)
      (ds.info(i).participant == p ? s.test : s.train).push_back(i);
    folds.push_back(std::move(s));
  }
  return folds;
}

}  // namespace milmer::data
