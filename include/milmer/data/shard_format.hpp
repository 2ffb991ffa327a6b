// milmer::data shard format: the header and record layout, the dims and their limits, the
// per-sample metadata, and the byte codec the reader and the writer share.
//
// A shard holds the prepared windows of one participant (tools/prepare_deap.py writes them;
// docs/data.md gives the format byte by byte). Little-endian, fixed 64-byte header:
//   0 magic "MILMERSH" | 8 u32 version (1) | 12 u32 header bytes (64) | 16 u32 samples N
//   20 u32 frames F | 24 u32 height H | 28 u32 width W | 32 u32 EEG channels C
//   36 u32 EEG samples S | 40 u32 participant | 44 u32 record bytes R | 48 u64 payload bytes
//   56 u32 CRC-32 of the payload | 60 u32 CRC-32 of header bytes 0..59
// then N records of R = 44 + 4*C*S + F*H*W*3 bytes:
//   0 i32 labels[5] (deap2_valence, deap2_arousal, deap3_valence, deap3_arousal, deap4)
//   20 i32 participant | 24 i32 trial (Experiment_id) | 28 i32 presentation (Trial) |
//   32 i32 window | 36 f32 valence | 40 f32 arousal | 44 f32 eeg[C][S] | u8 frames[F][H][W][3]
// Frames are RGB. CRC-32 is the zlib / IEEE 802.3 one, so Python's zlib.crc32 agrees.
#pragma once

#include <milmer/data/labels.hpp>
#include <milmer/error.hpp>
#include <milmer/io/crc32.hpp>

#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace milmer::data {

static_assert(std::endian::native == std::endian::little,
              "the shard format is little-endian and is read by memcpy");

inline constexpr char kShardMagic[8] = {'M', 'I', 'L', 'M', 'E', 'R', 'S', 'H'};
inline constexpr std::uint32_t kShardVersion = 1;
inline constexpr std::size_t kShardHeaderBytes = 64;
inline constexpr std::size_t kRecordMetaBytes = 44;

// The largest record the format allows (a real DEAP record at 224 x 224 is 1.5 MB). It bounds
// what a header can make a reader allocate per sample, also for a shard without samples,
// whose record size no file bytes back.
inline constexpr std::size_t kMaxRecordBytes = std::size_t{1} << 30;

struct ShardDims {
  std::uint32_t frames = 0, height = 0, width = 0, eeg_channels = 0, eeg_samples = 0;
  std::size_t frame_bytes() const { return std::size_t{frames} * height * width * 3; }
  std::size_t eeg_floats() const { return std::size_t{eeg_channels} * eeg_samples; }
  std::size_t record_bytes() const { return kRecordMetaBytes + 4 * eeg_floats() + frame_bytes(); }
  bool operator==(const ShardDims&) const = default;

  std::string to_string() const {
    return str(frames, " frames of ", height, "x", width, ", EEG ", eeg_channels, "x", eeg_samples);
  }

  // Every dim > 0 and within the format's limits, the record at most kMaxRecordBytes (the
  // product is computed in 64 bits after the per-dim limits, so it cannot overflow).
  void validate(const std::string& op) const {
    check(frames > 0 && height > 0 && width > 0 && eeg_channels > 0 && eeg_samples > 0, op, "dims",
          "frames, height, width, EEG channels and samples all > 0", to_string());
    check(frames <= 4096 && height <= 16384 && width <= 16384 && eeg_channels <= 4096 &&
              eeg_samples <= (1u << 20),
          op, "dims",
          "at most 4096 frames of 16384x16384, EEG at most 4096 channels x 1048576 samples",
          to_string());
    check(record_bytes() <= kMaxRecordBytes, op, "record bytes",
          str("at most ", kMaxRecordBytes, " (44 + 4*C*S + F*H*W*3 for ", to_string(), ")"),
          str(record_bytes()));
  }
};

struct ShardHeader {
  std::uint32_t version = kShardVersion;
  std::uint32_t samples = 0;
  ShardDims dims;
  std::uint32_t participant = 0;
  std::uint64_t payload_bytes = 0;
  std::uint32_t payload_crc = 0;
};

struct SampleInfo {
  // deap2_valence, deap2_arousal, deap3_valence, deap3_arousal, deap4 (LabelScheme order)
  std::array<std::int32_t, 5> labels{};
  std::int32_t participant = 0;
  std::int32_t trial = 0;         // Experiment_id (1-based), the row + 1 in sXX.dat
  std::int32_t presentation = 0;  // Trial (1-based presentation order), the video's YY
  std::int32_t window = 0;        // 0-based 3 s window inside the trial
  float valence = 0, arousal = 0;

  int label(LabelScheme s) const { return labels[static_cast<std::size_t>(s)]; }

  // Fills the five labels from the ratings with the rules above.
  static SampleInfo from_ratings(double valence, double arousal, int participant, int trial,
                                 int presentation, int window) {
    SampleInfo s;
    s.labels = {deap2_label(valence), deap2_label(arousal), deap3_label(valence),
                deap3_label(arousal), deap4_label(valence, arousal)};
    s.participant = participant;
    s.trial = trial;
    s.presentation = presentation;
    s.window = window;
    s.valence = static_cast<float>(valence);
    s.arousal = static_cast<float>(arousal);
    return s;
  }
};

namespace detail {

template <class T>
void put(unsigned char* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}
template <class T>
T get(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

inline std::array<unsigned char, kShardHeaderBytes> encode_header(const ShardHeader& h) {
  std::array<unsigned char, kShardHeaderBytes> b{};
  std::memcpy(b.data(), kShardMagic, 8);
  put<std::uint32_t>(&b[8], h.version);
  put<std::uint32_t>(&b[12], static_cast<std::uint32_t>(kShardHeaderBytes));
  put<std::uint32_t>(&b[16], h.samples);
  put<std::uint32_t>(&b[20], h.dims.frames);
  put<std::uint32_t>(&b[24], h.dims.height);
  put<std::uint32_t>(&b[28], h.dims.width);
  put<std::uint32_t>(&b[32], h.dims.eeg_channels);
  put<std::uint32_t>(&b[36], h.dims.eeg_samples);
  put<std::uint32_t>(&b[40], h.participant);
  put<std::uint32_t>(&b[44], static_cast<std::uint32_t>(h.dims.record_bytes()));
  put<std::uint64_t>(&b[48], h.payload_bytes);
  put<std::uint32_t>(&b[56], h.payload_crc);
  put<std::uint32_t>(&b[60], io::crc32_update(0, b.data(), 60));
  return b;
}

inline void encode_meta(unsigned char* p, const SampleInfo& s) {
  for (std::size_t i = 0; i < 5; ++i) put<std::int32_t>(p + 4 * i, s.labels[i]);
  put<std::int32_t>(p + 20, s.participant);
  put<std::int32_t>(p + 24, s.trial);
  put<std::int32_t>(p + 28, s.presentation);
  put<std::int32_t>(p + 32, s.window);
  put<float>(p + 36, s.valence);
  put<float>(p + 40, s.arousal);
}

inline SampleInfo decode_meta(const unsigned char* p) {
  SampleInfo s;
  for (std::size_t i = 0; i < 5; ++i) s.labels[i] = get<std::int32_t>(p + 4 * i);
  s.participant = get<std::int32_t>(p + 20);
  s.trial = get<std::int32_t>(p + 24);
  s.presentation = get<std::int32_t>(p + 28);
  s.window = get<std::int32_t>(p + 32);
  s.valence = get<float>(p + 36);
  s.arousal = get<float>(p + 40);
  return s;
}

// EEG must be finite: a NaN or infinity in one window turns every loss and gradient it
// touches into NaN. The message names the sample and where in it the value sits.
inline std::string eeg_value_at(float v, std::size_t index, const ShardDims& d,
                                const SampleInfo& s) {
  return str(v, " at channel ", index / d.eeg_samples, ", sample ", index % d.eeg_samples,
             " of participant ", s.participant, ", trial ", s.trial, ", window ", s.window);
}

inline void check_eeg_value(float v, std::size_t index, const ShardDims& d, const SampleInfo& s,
                            const std::string& op, const std::string& argument) {
  if (!std::isfinite(v))
    throw Error(op, argument, "finite EEG values", eeg_value_at(v, index, d, s));
}

inline std::string printable(const unsigned char* p, std::size_t n) {
  std::string s = "\"";
  for (std::size_t i = 0; i < n; ++i) {
    if (p[i] >= 32 && p[i] < 127) {
      s += static_cast<char>(p[i]);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", p[i]);
      s += buf;
    }
  }
  return s + "\"";
}

}  // namespace detail

}  // namespace milmer::data
