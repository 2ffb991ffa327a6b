// milmer::data label schemes: the DEAP ratings (valence, arousal on 1..9) as the classes
// of the five schemes a shard record carries. The Python preparation tool applies the same
// rules (tools/deap_common.py); both are tested on the boundary ratings.
#pragma once

#include <milmer/error.hpp>

#include <array>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace milmer::data {

// DEAP-2, per dimension: low (0) < 5 <= high (1).
inline int deap2_label(double rating) {
  return rating >= 5.0 ? 1 : 0;
}

// DEAP-3, per dimension: ratings are real-valued, so the integer bands 1-3, 4-6, 7-9 become
// low (0) < 3.5 <= medium (1) < 6.5 <= high (2).
inline int deap3_label(double rating) {
  return rating < 3.5 ? 0 : (rating < 6.5 ? 1 : 2);
}

// DEAP-4 quadrants (threshold 5): 0 HAHV, 1 HALV, 2 LAHV, 3 LALV.
inline int deap4_label(double valence, double arousal) {
  const bool high_a = arousal >= 5.0, high_v = valence >= 5.0;
  if (high_a) return high_v ? 0 : 1;
  return high_v ? 2 : 3;
}

enum class LabelScheme { deap2_valence = 0, deap2_arousal, deap3_valence, deap3_arousal, deap4 };

inline constexpr std::array<std::string_view, 5> kLabelSchemeNames = {
    "deap2-valence", "deap2-arousal", "deap3-valence", "deap3-arousal", "deap4"};

inline std::string_view label_scheme_name(LabelScheme s) {
  return kLabelSchemeNames[static_cast<std::size_t>(s)];
}

inline LabelScheme parse_label_scheme(std::string_view name) {
  for (std::size_t i = 0; i < kLabelSchemeNames.size(); ++i)
    if (kLabelSchemeNames[i] == name) return static_cast<LabelScheme>(i);
  throw Error("parse_label_scheme", "name",
              "one of deap2-valence, deap2-arousal, deap3-valence, deap3-arousal, deap4",
              str('"', name, '"'));
}

inline int num_classes(LabelScheme s) {
  switch (s) {
    case LabelScheme::deap2_valence:
    case LabelScheme::deap2_arousal:
      return 2;
    case LabelScheme::deap3_valence:
    case LabelScheme::deap3_arousal:
      return 3;
    case LabelScheme::deap4:
      return 4;
  }
  return 0;
}

inline std::vector<std::string> class_names(LabelScheme s) {
  switch (s) {
    case LabelScheme::deap2_valence:
    case LabelScheme::deap2_arousal:
      return {"low", "high"};
    case LabelScheme::deap3_valence:
    case LabelScheme::deap3_arousal:
      return {"low", "medium", "high"};
    case LabelScheme::deap4:
      return {"HAHV", "HALV", "LAHV", "LALV"};
  }
  return {};
}

}  // namespace milmer::data
