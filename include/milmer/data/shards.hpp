// milmer::data: the DEAP shard format, its reader and writer, label schemes, evaluation
// protocols and a batcher with a background prefetch thread.
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
//
// Batches handed to the model (caller-provided host buffers):
//   frames (B, F, 3, H, W) float32, (x/255 - mean) / std with ImageNet mean and std
//   eeg    (B, C, S) float32
//   labels (B) int32, under the selected label scheme
#pragma once

#include <milmer/error.hpp>
#include <milmer/io/crc32.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace milmer::data {

static_assert(std::endian::native == std::endian::little,
              "the shard format is little-endian and is read by memcpy");

inline constexpr char kShardMagic[8] = {'M', 'I', 'L', 'M', 'E', 'R', 'S', 'H'};
inline constexpr std::uint32_t kShardVersion = 1;
inline constexpr std::size_t kShardHeaderBytes = 64;
inline constexpr std::size_t kRecordMetaBytes = 44;
// The opening scan reads records through a buffer of at most this many bytes.
inline constexpr std::size_t kScanChunkBytes = std::size_t{1} << 20;

// ---------------------------------------------------------------------------------------
// Labels. The Python preparation tool applies the same rules (tools/deap_common.py); both
// are tested on the boundary ratings.

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

// ---------------------------------------------------------------------------------------
// Header and per-sample metadata.

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

// ---------------------------------------------------------------------------------------
// Reading one shard.

struct ShardOpenOptions {
  // Reads the whole payload once to check its CRC-32 (about 1.2 GB per real participant at
  // 224 x 224). The metadata of every record is read and checked either way.
  bool verify_checksum = true;
};

class Shard {
 public:
  // Validates magic, version, header checksum, sizes, and (optionally) the payload
  // checksum. Every problem is a milmer::Error whose op is the file path.
  explicit Shard(std::filesystem::path path, ShardOpenOptions opt = {}) : path_(std::move(path)) {
    const std::string f = path_.string();
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path_, ec))
      throw Error(f, "file", "an existing shard file", "no such file");
    const std::uintmax_t file_size = std::filesystem::file_size(path_, ec);
    in_.open(path_, std::ios::binary);
    if (!in_ || ec) throw Error(f, "file", "a readable file", "it cannot be opened");

    std::array<unsigned char, kShardHeaderBytes> b{};
    const std::size_t got = read_some(b.data(), b.size());
    if (got < 12)
      throw Error(f, "header", str(kShardHeaderBytes, " bytes"),
                  str(file_size, " bytes in the file (truncated)"));
    if (std::memcmp(b.data(), kShardMagic, 8) != 0)
      throw Error(f, "magic", "\"MILMERSH\" (not a milmer shard?)", detail::printable(&b[0], 8));
    header_.version = detail::get<std::uint32_t>(&b[8]);
    if (header_.version != kShardVersion)
      throw Error(f, "version", str(kShardVersion, " (re-run tools/prepare_deap.py)"),
                  str(header_.version));
    if (got < kShardHeaderBytes)
      throw Error(f, "header", str(kShardHeaderBytes, " bytes"),
                  str(file_size, " bytes in the file (truncated)"));
    const auto header_crc = detail::get<std::uint32_t>(&b[60]);
    const auto computed = io::crc32_update(0, b.data(), 60);
    if (header_crc != computed)
      throw Error(f, "header checksum", str("CRC-32 ", hex(computed)),
                  str(hex(header_crc), " (header corrupt)"));
    const auto header_bytes = detail::get<std::uint32_t>(&b[12]);
    check(header_bytes == kShardHeaderBytes, f, "header bytes", str(kShardHeaderBytes),
          str(header_bytes));
    header_.samples = detail::get<std::uint32_t>(&b[16]);
    header_.dims.frames = detail::get<std::uint32_t>(&b[20]);
    header_.dims.height = detail::get<std::uint32_t>(&b[24]);
    header_.dims.width = detail::get<std::uint32_t>(&b[28]);
    header_.dims.eeg_channels = detail::get<std::uint32_t>(&b[32]);
    header_.dims.eeg_samples = detail::get<std::uint32_t>(&b[36]);
    header_.participant = detail::get<std::uint32_t>(&b[40]);
    const auto record_bytes = detail::get<std::uint32_t>(&b[44]);
    header_.payload_bytes = detail::get<std::uint64_t>(&b[48]);
    header_.payload_crc = detail::get<std::uint32_t>(&b[56]);

    // Every size is checked against the format's limits and the file's size before the
    // scan allocates anything.
    const ShardDims& d = header_.dims;
    d.validate(f);
    check(record_bytes == d.record_bytes(), f, "record bytes",
          str(d.record_bytes(), " (44 + 4*C*S + F*H*W*3)"), str(record_bytes));
    const std::uint64_t payload = std::uint64_t{header_.samples} * record_bytes;
    check(header_.payload_bytes == payload, f, "payload bytes",
          str(payload, " (samples x record bytes)"), str(header_.payload_bytes));
    const std::uint64_t expected_size = kShardHeaderBytes + payload;
    if (file_size < expected_size)
      throw Error(f, "file size", str(expected_size, " bytes"),
                  str(file_size, " bytes (truncated)"));
    if (file_size > expected_size)
      throw Error(f, "file size", str(expected_size, " bytes"),
                  str(file_size, " bytes (trailing data)"));

    scan_records(opt.verify_checksum);
  }

  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  const ShardDims& dims() const { return header_.dims; }
  std::size_t size() const { return infos_.size(); }
  const SampleInfo& info(std::size_t i) const { return infos_.at(i); }

  // Reads record i's frames (F*H*W*3 bytes, HWC RGB) and EEG (C*S floats). Thread-safe.
  void read(std::size_t i, std::uint8_t* frames, float* eeg) const {
    const ShardDims& d = header_.dims;
    check(i < infos_.size(), path_.string(), "record", str("< ", infos_.size()), str(i));
    const std::uint64_t off = kShardHeaderBytes + std::uint64_t{i} * d.record_bytes();
    std::lock_guard lock(mu_);
    in_.clear();
    in_.seekg(static_cast<std::streamoff>(off + kRecordMetaBytes));
    if (eeg) {
      read_exact(reinterpret_cast<char*>(eeg), 4 * d.eeg_floats(), i);
      for (std::size_t k = 0; k < d.eeg_floats(); ++k)
        detail::check_eeg_value(eeg[k], k, d, infos_[i], path_.string(), str("record ", i));
    } else {
      in_.seekg(static_cast<std::streamoff>(4 * d.eeg_floats()), std::ios::cur);
    }
    if (frames) read_exact(reinterpret_cast<char*>(frames), d.frame_bytes(), i);
  }

 private:
  static std::string hex(std::uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "0x%08x", v);
    return buf;
  }

  std::size_t read_some(unsigned char* p, std::size_t n) {
    in_.read(reinterpret_cast<char*>(p), static_cast<std::streamsize>(n));
    return static_cast<std::size_t>(in_.gcount());
  }

  void read_exact(char* p, std::size_t n, std::size_t record) const {
    in_.read(p, static_cast<std::streamsize>(n));
    if (static_cast<std::size_t>(in_.gcount()) != n)
      throw Error(path_.string(), str("record ", record), str(n, " bytes readable"),
                  str(in_.gcount(), " (file changed or truncated since it was opened)"));
  }

  // Reads every record once: metadata always and, when asked, every byte for the CRC and
  // the EEG's finiteness (through a buffer of at most kScanChunkBytes; chunks are multiples
  // of 4 bytes from the record's start, so no EEG float straddles two). A non-finite value
  // is reported only once the CRC has matched: in a corrupt file the CRC is the real fault.
  void scan_records(bool verify) {
    const std::string f = path_.string();
    const ShardDims& d = header_.dims;
    const std::size_t rb = d.record_bytes();
    const std::size_t eeg_end = kRecordMetaBytes + 4 * d.eeg_floats();
    const std::size_t want = verify ? rb : kRecordMetaBytes;
    infos_.reserve(header_.samples);  // samples x record bytes is the file size (checked)
    std::vector<unsigned char> buf(std::min(want, kScanChunkBytes));
    std::uint32_t crc = 0;
    std::string non_finite;  // the first non-finite EEG value, described
    std::uint32_t non_finite_record = 0;
    for (std::uint32_t i = 0; i < header_.samples; ++i) {
      in_.clear();
      in_.seekg(static_cast<std::streamoff>(kShardHeaderBytes + std::uint64_t{i} * rb));
      SampleInfo s;
      for (std::size_t pos = 0; pos < want;) {
        const std::size_t len = std::min(buf.size(), want - pos);
        const std::size_t n = read_some(buf.data(), len);
        if (n != len)
          throw Error(f, str("record ", i), str(want, " bytes"),
                      str(pos + n, " bytes (truncated)"));
        if (pos == 0) {
          s = detail::decode_meta(buf.data());
          check_meta(s, i);
        }
        if (verify) {
          crc = io::crc32_update(crc, buf.data(), len);
          for (std::size_t b = std::max(pos, kRecordMetaBytes); b < std::min(pos + len, eeg_end);
               b += 4) {
            const float v = detail::get<float>(&buf[b - pos]);
            if (non_finite.empty() && !std::isfinite(v)) {
              non_finite_record = i;
              non_finite = detail::eeg_value_at(v, (b - kRecordMetaBytes) / 4, d, s);
            }
          }
        }
        pos += len;
      }
      infos_.push_back(s);
    }
    if (verify && crc != header_.payload_crc)
      throw Error(f, "payload checksum", str("CRC-32 ", hex(header_.payload_crc), " (header)"),
                  str(hex(crc), " (payload corrupt)"));
    if (!non_finite.empty())
      throw Error(f, str("record ", non_finite_record), "finite EEG values", non_finite);
  }

  void check_meta(const SampleInfo& s, std::uint32_t i) const {
    const std::string arg = str("record ", i);
    for (std::size_t k = 0; k < 5; ++k) {
      const int n = num_classes(static_cast<LabelScheme>(k));
      if (s.labels[k] < 0 || s.labels[k] >= n)
        throw Error(path_.string(), arg, str("label ", kLabelSchemeNames[k], " in [0, ", n, ")"),
                    str(s.labels[k], " (payload corrupt)"));
    }
    if (s.participant != static_cast<std::int32_t>(header_.participant))
      throw Error(path_.string(), arg, str("participant ", header_.participant, " (header)"),
                  str(s.participant));
  }

  std::filesystem::path path_;
  ShardHeader header_;
  std::vector<SampleInfo> infos_;
  mutable std::ifstream in_;
  mutable std::mutex mu_;
};

// ---------------------------------------------------------------------------------------
// Writing one shard (the C++ twin of tools/prepare_deap.py's writer). Records stream into
// "<path>.tmp"; finish() writes the header, fsyncs and renames, so a reader never sees a
// half-written shard under the final name.

class ShardWriter {
 public:
  ShardWriter(std::filesystem::path path, ShardDims dims, std::uint32_t participant)
      : path_(std::move(path)), tmp_(path_.string() + ".tmp") {
    header_.dims = dims;
    header_.participant = participant;
    dims.validate("ShardWriter " + path_.string());
    file_ = std::fopen(tmp_.c_str(), "wb");
    if (!file_) throw Error("ShardWriter " + path_.string(), "file", "writable", tmp_);
    const std::array<unsigned char, kShardHeaderBytes> placeholder{};
    write(placeholder.data(), placeholder.size(), false);
  }

  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  ~ShardWriter() {
    if (file_) {
      std::fclose(file_);
      std::remove(tmp_.c_str());
    }
  }

  // frames: F*H*W*3 bytes (HWC RGB); eeg: C*S floats, channel-major.
  void add(const SampleInfo& s, const std::uint8_t* frames, const float* eeg) {
    check(file_ != nullptr, "ShardWriter " + path_.string(), "state", "open", "finished");
    check(s.participant == static_cast<std::int32_t>(header_.participant),
          "ShardWriter " + path_.string(), "participant", str(header_.participant),
          str(s.participant));
    for (std::size_t k = 0; k < header_.dims.eeg_floats(); ++k)
      detail::check_eeg_value(eeg[k], k, header_.dims, s, "ShardWriter " + path_.string(), "eeg");
    std::array<unsigned char, kRecordMetaBytes> meta{};
    detail::encode_meta(meta.data(), s);
    write(meta.data(), meta.size(), true);
    write(eeg, 4 * header_.dims.eeg_floats(), true);
    write(frames, header_.dims.frame_bytes(), true);
    ++header_.samples;
  }

  void finish() {
    const std::string op = "ShardWriter " + path_.string();
    check(file_ != nullptr, op, "state", "open", "finished");
    header_.payload_bytes = std::uint64_t{header_.samples} * header_.dims.record_bytes();
    const auto b = detail::encode_header(header_);
    bool ok = std::fseek(file_, 0, SEEK_SET) == 0;
    ok = ok && std::fwrite(b.data(), 1, b.size(), file_) == b.size();
    ok = ok && std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
    ok = (std::fclose(file_) == 0) && ok;
    file_ = nullptr;
    if (!ok) {
      std::remove(tmp_.c_str());
      throw Error(op, "file", "header written and synced", "an I/O error");
    }
    std::error_code ec;
    std::filesystem::rename(tmp_, path_, ec);
    if (ec) {
      std::remove(tmp_.c_str());
      throw Error(op, "rename", "the temporary file renamed into place", ec.message());
    }
    // Make the rename itself durable.
    const auto dir = path_.parent_path().empty() ? std::filesystem::path(".") : path_.parent_path();
    if (int fd = ::open(dir.c_str(), O_RDONLY); fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  }

  std::uint32_t samples() const { return header_.samples; }

 private:
  void write(const void* p, std::size_t n, bool count) {
    if (std::fwrite(p, 1, n, file_) != n)
      throw Error("ShardWriter " + path_.string(), "file", str(n, " bytes written"),
                  "an I/O error (disk full?)");
    if (count) header_.payload_crc = io::crc32_update(header_.payload_crc, p, n);
  }

  std::filesystem::path path_;
  std::string tmp_;
  ShardHeader header_;
  std::FILE* file_ = nullptr;
};

// ---------------------------------------------------------------------------------------
// A dataset over many shards (one per participant). Sample indices run over the shards in
// the order given.

class Dataset {
 public:
  Dataset() = default;

  static Dataset open(const std::vector<std::filesystem::path>& paths, ShardOpenOptions opt = {}) {
    Dataset ds;
    check(!paths.empty(), "Dataset::open", "paths", "at least one shard", "none");
    for (const auto& p : paths) {
      auto shard = std::make_unique<Shard>(p, opt);
      if (ds.shards_.empty()) {
        ds.dims_ = shard->dims();
      } else if (!(shard->dims() == ds.dims_)) {
        const ShardDims& d = shard->dims();
        throw Error(p.string(), "dims",
                    str("the dims of ", ds.shards_.front()->path().string(), ": ", ds.dims_.frames,
                        "x", ds.dims_.height, "x", ds.dims_.width, ", EEG ", ds.dims_.eeg_channels,
                        "x", ds.dims_.eeg_samples),
                    str(d.frames, "x", d.height, "x", d.width, ", EEG ", d.eeg_channels, "x",
                        d.eeg_samples));
      }
      // One shard per participant: a second file of one (a copy, a renamed file) would be
      // counted as another participant, its samples twice.
      for (const auto& other : ds.shards_)
        if (other->header().participant == shard->header().participant)
          throw Error(p.string(), "participant", "a participant of no other shard",
                      str(shard->header().participant, ", the participant of ",
                          other->path().string(), " too"));
      for (std::size_t i = 0; i < shard->size(); ++i)
        ds.index_.push_back(
            {static_cast<std::uint32_t>(ds.shards_.size()), static_cast<std::uint32_t>(i)});
      ds.shards_.push_back(std::move(shard));
    }
    return ds;
  }

  // Every "*.shard" file in dir, sorted by name.
  static Dataset open_dir(const std::filesystem::path& dir, ShardOpenOptions opt = {}) {
    std::error_code ec;
    check(std::filesystem::is_directory(dir, ec), "Dataset::open_dir", "dir",
          "an existing directory", dir.string());
    std::vector<std::filesystem::path> paths;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.is_regular_file() && e.path().extension() == ".shard") paths.push_back(e.path());
    std::sort(paths.begin(), paths.end());
    check(!paths.empty(), "Dataset::open_dir", "dir", "at least one *.shard file",
          str("none in ", dir.string()));
    return open(paths, opt);
  }

  std::size_t size() const { return index_.size(); }
  const ShardDims& dims() const { return dims_; }
  std::size_t num_shards() const { return shards_.size(); }
  const Shard& shard(std::size_t s) const { return *shards_.at(s); }

  const SampleInfo& info(std::size_t i) const {
    const Ref r = index_.at(i);
    return shards_[r.shard]->info(r.record);
  }
  int label(std::size_t i, LabelScheme s) const { return info(i).label(s); }

  // Raw sample: frames F*H*W*3 uint8 (HWC RGB), EEG C*S float32. Either may be null.
  void read(std::size_t i, std::uint8_t* frames, float* eeg) const {
    const Ref r = index_.at(i);
    shards_[r.shard]->read(r.record, frames, eeg);
  }

  std::vector<int> participants() const {
    std::vector<int> p;
    for (std::size_t i = 0; i < size(); ++i) p.push_back(info(i).participant);
    std::sort(p.begin(), p.end());
    p.erase(std::unique(p.begin(), p.end()), p.end());
    return p;
  }

 private:
  struct Ref {
    std::uint32_t shard, record;
  };
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<Ref> index_;
  ShardDims dims_;
};

// ---------------------------------------------------------------------------------------
// Seeded randomness that gives the same numbers on every platform (std::shuffle and the
// std distributions do not promise that).

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, without modulo bias.
  std::uint64_t below(std::uint64_t n) {
    const std::uint64_t limit = (~std::uint64_t{0}) - (~std::uint64_t{0}) % n;
    std::uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }

 private:
  std::uint64_t s_;
};

template <class T>
void seeded_shuffle(std::vector<T>& v, std::uint64_t seed) {
  SplitMix64 rng(seed);
  for (std::size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng.below(i)]);
}

// ---------------------------------------------------------------------------------------
// Protocols. A Split lists dataset sample indices.

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

// ---------------------------------------------------------------------------------------
// Batching.

inline constexpr std::array<float, 3> kImageNetMean = {0.485f, 0.456f, 0.406f};
inline constexpr std::array<float, 3> kImageNetStd = {0.229f, 0.224f, 0.225f};

// Caller-owned host buffers for one batch of up to batch_size samples:
//   frames batch_size*F*3*H*W floats, eeg batch_size*C*S floats, labels batch_size ints.
struct BatchBuffers {
  float* frames = nullptr;
  float* eeg = nullptr;
  std::int32_t* labels = nullptr;
};

struct BatcherOptions {
  LabelScheme scheme = LabelScheme::deap4;
  std::size_t batch_size = 14;
  std::uint64_t seed = 0;
  bool shuffle = true;     // reshuffled every epoch from (seed, epoch)
  bool drop_last = false;  // otherwise the last batch of an epoch may be short
  bool prefetch = true;    // fill batches on a background thread
  std::size_t prefetch_depth = 2;
};

// One sample into its batch slot: frames HWC uint8 -> normalised (F, 3, H, W) float.
inline void normalise_frames(const ShardDims& d, const std::uint8_t* src, float* dst) {
  const std::size_t hw = std::size_t{d.height} * d.width;
  std::array<float, 3> scale{}, shift{};
  for (std::size_t c = 0; c < 3; ++c) {
    scale[c] = 1.0f / (255.0f * kImageNetStd[c]);
    shift[c] = kImageNetMean[c] / kImageNetStd[c];
  }
  for (std::size_t f = 0; f < d.frames; ++f) {
    const std::uint8_t* s = src + f * hw * 3;
    float* o = dst + f * 3 * hw;
    for (std::size_t p = 0; p < hw; ++p)
      for (std::size_t c = 0; c < 3; ++c)
        o[c * hw + p] = static_cast<float>(s[3 * p + c]) * scale[c] - shift[c];
  }
}

class Batcher {
 public:
  Batcher(const Dataset& ds, std::vector<std::size_t> indices, BatcherOptions opt)
      : ds_(ds), indices_(std::move(indices)), opt_(opt) {
    check(opt_.batch_size > 0, "Batcher", "batch_size", "> 0", str(opt_.batch_size));
    check(opt_.prefetch_depth > 0, "Batcher", "prefetch_depth", "> 0", str(opt_.prefetch_depth));
    for (std::size_t i : indices_)
      check(i < ds_.size(), "Batcher", "indices", str("< ", ds_.size()), str(i));
    order_ = indices_;
  }

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;
  ~Batcher() { stop(); }

  std::size_t frames_floats() const {
    return opt_.batch_size * ds_.dims().frames * 3 * ds_.dims().height * ds_.dims().width;
  }
  std::size_t eeg_floats() const { return opt_.batch_size * ds_.dims().eeg_floats(); }
  std::size_t batch_size() const { return opt_.batch_size; }
  std::size_t size() const { return indices_.size(); }
  std::size_t batches_per_epoch() const {
    return opt_.drop_last ? indices_.size() / opt_.batch_size
                          : (indices_.size() + opt_.batch_size - 1) / opt_.batch_size;
  }

  // The sample order of an epoch: the indices shuffled with (seed, epoch), or as given.
  std::vector<std::size_t> epoch_order(std::uint64_t epoch) const {
    std::vector<std::size_t> o = indices_;
    if (opt_.shuffle) seeded_shuffle(o, opt_.seed ^ (0xD1B54A32D192ED03ull * (epoch + 1)));
    return o;
  }

  // Begins an epoch (abandoning any unfinished one) and, with prefetch, starts the thread.
  void start_epoch(std::uint64_t epoch) {
    stop();
    order_ = epoch_order(epoch);
    next_batch_ = 0;
    started_ = true;
    exhausted_ = false;
    if (opt_.prefetch) {
      stopping_ = false;
      worker_ = std::thread([this] { produce(); });
    }
  }

  // Fills out with the next batch of the epoch; returns its sample count, 0 at the end of
  // the epoch. An exception raised while reading (on the prefetch thread too) comes out here.
  std::size_t next(const BatchBuffers& out) {
    check(started_, "Batcher::next", "epoch", "start_epoch called first", "not started");
    check(out.frames && out.eeg && out.labels, "Batcher::next", "out",
          "non-null frames, eeg and labels buffers", "a null pointer");
    if (!opt_.prefetch) {
      if (next_batch_ >= batches_per_epoch()) return 0;
      return fill(next_batch_++, out);
    }
    if (exhausted_) return 0;
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !ready_.empty(); });
    Staged st = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    lock.unlock();
    const std::size_t count = st.count;
    if (st.error || count == 0) {
      exhausted_ = true;  // the producer has stopped after these
      if (st.error) std::rethrow_exception(st.error);
      return 0;
    }
    const auto copy = [](const auto& v, std::size_t n, auto* dst) {
      std::copy(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(n), dst);
    };
    copy(st.frames, per_frames() * count, out.frames);
    copy(st.eeg, per_eeg() * count, out.eeg);
    copy(st.labels, count, out.labels);
    lock.lock();
    free_.push_back(std::move(st));
    return count;
  }

 private:
  struct Staged {
    std::vector<float> frames, eeg;
    std::vector<std::int32_t> labels;
    std::size_t count = 0;
    std::exception_ptr error;
  };

  std::size_t per_frames() const {
    return std::size_t{ds_.dims().frames} * 3 * ds_.dims().height * ds_.dims().width;
  }
  std::size_t per_eeg() const { return ds_.dims().eeg_floats(); }

  std::size_t fill(std::size_t b, const BatchBuffers& out) {
    const std::size_t begin = b * opt_.batch_size;
    const std::size_t count = std::min(opt_.batch_size, order_.size() - begin);
    raw_.resize(ds_.dims().frame_bytes());
    for (std::size_t j = 0; j < count; ++j) {
      const std::size_t i = order_[begin + j];
      ds_.read(i, raw_.data(), out.eeg + j * per_eeg());
      normalise_frames(ds_.dims(), raw_.data(), out.frames + j * per_frames());
      out.labels[j] = ds_.label(i, opt_.scheme);
    }
    return count;
  }

  void produce() {
    const std::size_t n = batches_per_epoch();
    for (std::size_t b = 0; b <= n; ++b) {
      Staged st;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || ready_.size() < opt_.prefetch_depth; });
        if (stopping_) return;
        if (!free_.empty()) {
          st = std::move(free_.back());
          free_.pop_back();
        }
      }
      st.error = nullptr;
      st.count = 0;
      if (b < n) {
        try {
          st.frames.resize(frames_floats());
          st.eeg.resize(eeg_floats());
          st.labels.resize(opt_.batch_size);
          st.count = fill(b, {st.frames.data(), st.eeg.data(), st.labels.data()});
        } catch (...) {
          st.error = std::current_exception();
        }
      }
      std::lock_guard lock(mu_);
      const bool last = st.error || b == n;
      ready_.push_back(std::move(st));
      cv_.notify_all();
      if (last) return;
    }
  }

  void stop() {
    if (worker_.joinable()) {
      {
        std::lock_guard lock(mu_);
        stopping_ = true;
      }
      cv_.notify_all();
      worker_.join();
    }
    std::lock_guard lock(mu_);
    while (!ready_.empty()) {
      free_.push_back(std::move(ready_.front()));
      ready_.pop_front();
    }
  }

  const Dataset& ds_;
  std::vector<std::size_t> indices_, order_;
  BatcherOptions opt_;
  std::size_t next_batch_ = 0;
  bool started_ = false;
  bool exhausted_ = false;         // prefetch: the end marker or an error has been consumed
  std::vector<std::uint8_t> raw_;  // used by whichever single thread fills batches

  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Staged> ready_;
  std::vector<Staged> free_;
  bool stopping_ = false;
};

}  // namespace milmer::data
