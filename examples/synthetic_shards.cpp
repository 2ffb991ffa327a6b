// milmer-synthetic-shards: writes small shards with class-dependent signal straight from
// C++ (data::ShardWriter), for tests and quick experiments that should not need the Python
// data environment. The real path is tools/make_synthetic_deap.py + tools/prepare_deap.py.
//
//   milmer-synthetic-shards --out DIR [--participants 2] [--trials 4] [--windows 3]
//       [--frames 4] [--frame-size 32] [--eeg-channels 8] [--eeg-samples 64] [--seed 0]
//
// Trial t of a participant takes the valence/arousal quadrant t mod 4 (HAHV, HALV, LAHV,
// LALV), ratings uniform inside it. A frame is a noisy background with a centred square
// whose brightness rises with valence and whose colour warms with arousal; EEG is noise plus
// a 10 Hz rhythm scaled by valence on the first half of the channels and a 20 Hz rhythm
// scaled by arousal on the second half.
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "cli.hpp"
#include "milmer/data/shard_writer.hpp"
#include "milmer/rng.hpp"

namespace fs = std::filesystem;
using namespace milmer;
using milmer::examples::add_positive;

namespace {

struct Options {
  std::string out;
  int participants = 2, trials = 4, windows = 3, frames = 4, frame_size = 32;
  int eeg_channels = 8, eeg_samples = 64;
  std::uint64_t seed = 0;
};

double uniform(SplitMix64& rng) {
  return static_cast<double>(rng.next() >> 11) * (1.0 / 9007199254740992.0);
}

void write_participant(const Options& o, int participant) {
  const data::ShardDims dims{
      static_cast<std::uint32_t>(o.frames), static_cast<std::uint32_t>(o.frame_size),
      static_cast<std::uint32_t>(o.frame_size), static_cast<std::uint32_t>(o.eeg_channels),
      static_cast<std::uint32_t>(o.eeg_samples)};
  char name[32];
  std::snprintf(name, sizeof name, "s%02d.shard", participant);
  data::ShardWriter writer(fs::path(o.out) / name, dims, static_cast<std::uint32_t>(participant));
  SplitMix64 rng(o.seed * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(participant));
  std::vector<std::uint8_t> frames(dims.frame_bytes());
  std::vector<float> eeg(dims.eeg_floats());
  const int size = o.frame_size, lo = size / 4, hi = size - size / 4;
  for (int t = 0; t < o.trials; ++t) {
    const int quadrant = t % 4;  // 0 HAHV, 1 HALV, 2 LAHV, 3 LALV
    const bool high_v = quadrant == 0 || quadrant == 2, high_a = quadrant <= 1;
    const double valence = high_v ? 5.5 + 3.5 * uniform(rng) : 1.0 + 3.5 * uniform(rng);
    const double arousal = high_a ? 5.5 + 3.5 * uniform(rng) : 1.0 + 3.5 * uniform(rng);
    const double v01 = (valence - 1) / 8, a01 = (arousal - 1) / 8;
    for (int w = 0; w < o.windows; ++w) {
      for (int f = 0; f < o.frames; ++f)
        for (int y = 0; y < size; ++y)
          for (int x = 0; x < size; ++x) {
            const bool face = y >= lo && y < hi && x >= lo && x < hi;
            const double base = face ? 60 + 150 * v01 : 40;
            const double warm = face ? 50 * (a01 - 0.5) : 0;
            const double rgb[3] = {base + warm, base, base - warm};
            std::uint8_t* px = frames.data() + ((std::size_t(f) * size + y) * size + x) * 3;
            for (int c = 0; c < 3; ++c)
              px[c] = static_cast<std::uint8_t>(
                  std::clamp(rgb[c] + 30 * (uniform(rng) - 0.5), 0.0, 255.0));
          }
      const double phase = 6.283185307179586 * uniform(rng);
      for (int c = 0; c < o.eeg_channels; ++c)
        for (int s = 0; s < o.eeg_samples; ++s) {
          const double time = (w * o.eeg_samples + s) / 128.0;
          const double rhythm =
              c < o.eeg_channels / 2
                  ? (2 + 8 * v01) * std::sin(6.283185307179586 * 10 * time + phase)
                  : (2 + 8 * a01) * std::sin(6.283185307179586 * 20 * time + phase);
          eeg[std::size_t(c) * o.eeg_samples + s] =
              static_cast<float>(rhythm + 6 * (uniform(rng) - 0.5));
        }
      writer.add(data::SampleInfo::from_ratings(valence, arousal, participant, t + 1, t + 1, w),
                 frames.data(), eeg.data());
    }
  }
  writer.finish();
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"milmer-synthetic-shards: small shards with class-dependent signal (tests)"};
  app.add_option("--out", o.out, "directory to write sXX.shard files into")->required();
  app.add_option("--participants", o.participants)->check(CLI::Range(1, 99))->capture_default_str();
  add_positive(app, "--trials", o.trials, "trials per participant");
  add_positive(app, "--windows", o.windows, "windows per trial");
  add_positive(app, "--frames", o.frames);
  app.add_option("--frame-size", o.frame_size)->check(CLI::Range(4, 1024))->capture_default_str();
  add_positive(app, "--eeg-channels", o.eeg_channels);
  add_positive(app, "--eeg-samples", o.eeg_samples);
  app.add_option("--seed", o.seed)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    fs::create_directories(o.out);
    for (int p = 1; p <= o.participants; ++p) write_participant(o, p);
    std::printf("wrote %d shards (%d trials x %d windows each) to %s\n", o.participants, o.trials,
                o.windows, o.out.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "milmer-synthetic-shards: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
