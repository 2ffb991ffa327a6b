// Shard format, label schemes, protocols and batching of milmer::data.
#include <doctest/doctest.h>

#include <milmer/data/shards.hpp>  // defines: Shard, ShardWriter, Dataset, Batcher, labels

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>  // getpid

namespace fs = std::filesystem;
using namespace milmer::data;

namespace {

constexpr ShardDims kDims{2, 4, 6, 3, 5};  // F, H, W, C, S

// A scratch directory removed at the end of a test.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("milmer_test_shards_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path operator/(const std::string& name) const { return path / name; }
};

// The name of the one entry of dir, or a description of what else is there.
std::string only_file_in(const fs::path& dir) {
  std::string names;
  for (const auto& e : fs::directory_iterator(dir))
    names += (names.empty() ? "" : ", ") + e.path().filename().string();
  return names;
}

// The EEG's first value identifies the sample, so batches can be traced back.
float sample_id(int participant, int trial, int window) {
  return static_cast<float>(participant * 10000 + trial * 100 + window);
}

// Ratings per trial chosen to cover every class of every scheme.
double trial_valence(int trial) {
  return 1.0 + std::fmod(trial * 2.3, 8.0);
}
double trial_arousal(int trial) {
  return 1.0 + std::fmod(trial * 3.7 + 1.0, 8.0);
}

fs::path write_shard(const fs::path& path, int participant, int trials, int windows,
                     ShardDims dims = kDims) {
  ShardWriter w(path, dims, static_cast<std::uint32_t>(participant));
  std::vector<std::uint8_t> frames(dims.frame_bytes());
  std::vector<float> eeg(dims.eeg_floats());
  for (int t = 1; t <= trials; ++t)
    for (int k = 0; k < windows; ++k) {
      for (std::size_t i = 0; i < frames.size(); ++i)
        frames[i] = static_cast<std::uint8_t>(i * 7 + static_cast<std::size_t>(t * 31 + k));
      for (std::size_t i = 0; i < eeg.size(); ++i)
        eeg[i] = static_cast<float>(i) * 0.5f - static_cast<float>(t);
      eeg[0] = sample_id(participant, t, k);
      w.add(SampleInfo::from_ratings(trial_valence(t), trial_arousal(t), participant, t,
                                     trials + 1 - t, k),
            frames.data(), eeg.data());
    }
  w.finish();
  return path;
}

std::vector<char> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const fs::path& p, const std::vector<char>& b) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(b.data(), static_cast<std::streamsize>(b.size()));
}

// Opening path must fail with a milmer::Error that names the file and contains `what`.
void check_open_fails(const fs::path& path, const std::string& what) {
  try {
    Shard s(path);
    FAIL("opened a bad shard: ", path.string());
  } catch (const milmer::Error& e) {
    const std::string msg = e.what();
    CHECK_MESSAGE(msg.find(path.string()) != std::string::npos, msg);
    CHECK_MESSAGE(msg.find(what) != std::string::npos, msg);
  }
}

}  // namespace

TEST_CASE("crc32 matches zlib's CRC-32, also when continued") {
  const std::string s = "123456789";
  CHECK(milmer::io::crc32_update(0, s.data(), s.size()) == 0xCBF43926u);
  const std::uint32_t part = milmer::io::crc32_update(0, s.data(), 4);
  CHECK(milmer::io::crc32_update(part, s.data() + 4, s.size() - 4) == 0xCBF43926u);
  CHECK(milmer::io::crc32_update(0, s.data(), 0) == 0u);
}

TEST_CASE("shard round trip keeps header, metadata, EEG and frames") {
  TempDir dir;
  const fs::path p = write_shard(dir / "s07.shard", 7, 3, 4);
  CHECK(only_file_in(dir.path) == "s07.shard");  // the writer's temporary file is gone
  CHECK(fs::file_size(p) == kShardHeaderBytes + 12 * kDims.record_bytes());

  Shard s(p);
  CHECK(s.size() == 12);
  CHECK(s.dims() == kDims);
  CHECK(s.header().participant == 7);
  CHECK(s.header().version == kShardVersion);

  std::vector<std::uint8_t> frames(kDims.frame_bytes());
  std::vector<float> eeg(kDims.eeg_floats());
  std::size_t i = 0;
  for (int t = 1; t <= 3; ++t)
    for (int k = 0; k < 4; ++k, ++i) {
      const SampleInfo& info = s.info(i);
      CHECK(info.participant == 7);
      CHECK(info.trial == t);
      CHECK(info.presentation == 4 - t);
      CHECK(info.window == k);
      CHECK(info.valence == static_cast<float>(trial_valence(t)));
      CHECK(info.arousal == static_cast<float>(trial_arousal(t)));
      CHECK(info.label(LabelScheme::deap4) == deap4_label(trial_valence(t), trial_arousal(t)));
      CHECK(info.label(LabelScheme::deap3_arousal) == deap3_label(trial_arousal(t)));
      s.read(i, frames.data(), eeg.data());
      CHECK(eeg[0] == sample_id(7, t, k));
      CHECK(eeg[4] == 2.0f - static_cast<float>(t));
      CHECK(frames[5] == static_cast<std::uint8_t>(35 + t * 31 + k));
    }
}

TEST_CASE("an empty shard is valid") {
  TempDir dir;
  const fs::path p = write_shard(dir / "s01.shard", 1, 0, 0);
  Shard s(p);
  CHECK(s.size() == 0);
}

TEST_CASE("corrupt shards are errors that name the file and the fault") {
  TempDir dir;
  const fs::path good = write_shard(dir / "s02.shard", 2, 2, 3);
  const std::vector<char> bytes = read_bytes(good);
  const fs::path bad = dir / "bad.shard";

  SUBCASE("nonexistent file") {
    check_open_fails(dir / "missing.shard", "no such file");
  }
  SUBCASE("truncated payload") {
    write_bytes(bad, {bytes.begin(), bytes.end() - 1});
    check_open_fails(bad, "truncated");
  }
  SUBCASE("truncated header") {
    write_bytes(bad, {bytes.begin(), bytes.begin() + 40});
    check_open_fails(bad, "truncated");
  }
  SUBCASE("empty file") {
    write_bytes(bad, {});
    check_open_fails(bad, "truncated");
  }
  SUBCASE("trailing bytes") {
    std::vector<char> b = bytes;
    b.push_back(0);
    write_bytes(bad, b);
    check_open_fails(bad, "trailing");
  }
  SUBCASE("bad magic") {
    std::vector<char> b = bytes;
    b[0] = 'X';
    write_bytes(bad, b);
    check_open_fails(bad, "magic");
  }
  SUBCASE("wrong version") {
    std::vector<char> b = bytes;
    b[8] = 2;
    write_bytes(bad, b);
    check_open_fails(bad, "version");
  }
  SUBCASE("header checksum mismatch") {
    std::vector<char> b = bytes;
    b[24] ^= 1;  // height
    write_bytes(bad, b);
    check_open_fails(bad, "header checksum");
  }
  SUBCASE("payload checksum mismatch") {
    std::vector<char> b = bytes;
    b[b.size() - 3] ^= 0x40;  // a frame byte of the last record
    write_bytes(bad, b);
    check_open_fails(bad, "payload checksum");
    // Skipping verification opens it: only the CRC could have noticed a flipped pixel.
    Shard s(bad, {.verify_checksum = false});
    CHECK(s.size() == 6);
  }
  SUBCASE("corrupt label is caught even without checksum verification") {
    std::vector<char> b = bytes;
    b[kShardHeaderBytes + 16] = 9;  // deap4 label of record 0
    write_bytes(bad, b);
    try {
      Shard s(bad, {.verify_checksum = false});
      FAIL("opened a shard with label 9");
    } catch (const milmer::Error& e) {
      CHECK(std::string(e.what()).find(bad.string()) != std::string::npos);
      CHECK(std::string(e.what()).find("deap4") != std::string::npos);
    }
  }
}

namespace {

// Rewrites the payload and header CRCs after a deliberate edit, as a writer would have.
void reseal(std::vector<char>& b) {
  const auto* u = reinterpret_cast<const unsigned char*>(b.data());
  const std::uint32_t payload =
      milmer::io::crc32_update(0, u + kShardHeaderBytes, b.size() - kShardHeaderBytes);
  std::memcpy(&b[56], &payload, 4);
  const std::uint32_t head = milmer::io::crc32_update(0, u, 60);
  std::memcpy(&b[60], &head, 4);
}

// A bare 64-byte header with the given dims and sample count, sealed with valid CRCs.
std::vector<char> header_only(ShardDims d, std::uint32_t samples, std::uint64_t payload) {
  std::vector<char> b(kShardHeaderBytes, 0);
  std::memcpy(b.data(), kShardMagic, 8);
  const std::uint32_t fields[] = {
      kShardVersion, 64, samples, d.frames, d.height, d.width, d.eeg_channels, d.eeg_samples, 5};
  std::memcpy(&b[8], fields, sizeof fields);
  const auto rb = static_cast<std::uint32_t>(d.record_bytes());
  std::memcpy(&b[44], &rb, 4);
  std::memcpy(&b[48], &payload, 8);
  reseal(b);
  return b;
}

}  // namespace

TEST_CASE("a header's sizes are checked before anything is allocated for them") {
  TempDir dir;
  const fs::path bad = dir / "s05.shard";
  SUBCASE("64 bytes claiming 4.28e9-byte records and no samples") {
    // 1000 frames of 1194 x 1194: a record of 4276957196 bytes, below 2^32.
    const ShardDims huge{1000, 1194, 1194, 32, 384};
    REQUIRE(huge.record_bytes() == 4276957196u);
    write_bytes(bad, header_only(huge, 0, 0));
    check_open_fails(bad, "argument 'record bytes': expected at most 1073741824");
  }
  SUBCASE("a sample count the file does not hold") {
    write_bytes(bad, header_only(kDims, 4000000000u, 4000000000ull * kDims.record_bytes()));
    check_open_fails(bad, "bytes (truncated)");
  }
  SUBCASE("a zero dim") {
    write_bytes(bad, header_only({2, 0, 6, 3, 5}, 0, 0));
    check_open_fails(bad, "all > 0");
  }
  SUBCASE("the writer keeps to the same limits") {
    try {
      ShardWriter w(bad, {1000, 1194, 1194, 32, 384}, 5);
      FAIL("a writer for 4.28e9-byte records");
    } catch (const milmer::Error& e) {
      CHECK(std::string(e.what()).find("record bytes") != std::string::npos);
    }
    CHECK(fs::is_empty(dir.path));  // no temporary file was left
  }
}

TEST_CASE("records larger than the scan's buffer are checksummed in pieces") {
  TempDir dir;
  const ShardDims big{3, 400, 400, 3, 5};  // 1.44 MB records: two chunks each
  REQUIRE(big.record_bytes() > kScanChunkBytes);
  const fs::path good = write_shard(dir / "s04.shard", 4, 1, 2, big);
  CHECK(Shard(good).size() == 2);
  std::vector<char> b = read_bytes(good);
  b[kShardHeaderBytes + big.record_bytes() + kScanChunkBytes + 100] ^= 0x10;
  write_bytes(good, b);
  check_open_fails(good, "payload checksum");
}

TEST_CASE("non-finite EEG is refused by the writer and the reader, naming the sample") {
  TempDir dir;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  SUBCASE("writer") {
    for (float v : {nan, inf, -inf}) {
      ShardWriter w(dir / "s02.shard", kDims, 2);
      std::vector<std::uint8_t> frames(kDims.frame_bytes());
      std::vector<float> eeg(kDims.eeg_floats(), 0.5f);
      w.add(SampleInfo::from_ratings(5, 5, 2, 1, 1, 0), frames.data(), eeg.data());
      eeg[7] = v;  // channel 1, sample 2
      try {
        w.add(SampleInfo::from_ratings(5, 5, 2, 6, 1, 3), frames.data(), eeg.data());
        FAIL("the writer took non-finite EEG");
      } catch (const milmer::Error& e) {
        const std::string m = e.what();
        CHECK_MESSAGE(m.find((dir / "s02.shard").string()) != std::string::npos, m);
        CHECK_MESSAGE(
            m.find("channel 1, sample 2 of participant 2, trial 6, window 3") != std::string::npos,
            m);
      }
      CHECK(w.samples() == 1);
    }
  }
  SUBCASE("reader") {
    const fs::path p = write_shard(dir / "s02.shard", 2, 2, 3);
    std::vector<char> b = read_bytes(p);
    // Record 4 is trial 2, window 1; its EEG value at channel 2, sample 1.
    const std::size_t at = kShardHeaderBytes + 4 * kDims.record_bytes() + kRecordMetaBytes +
                           4 * (2 * kDims.eeg_samples + 1);
    std::memcpy(&b[at], &inf, 4);
    const std::vector<char> corrupt = b;
    reseal(b);
    write_bytes(p, b);
    const std::string where = "inf at channel 2, sample 1 of participant 2, trial 2, window 1";
    check_open_fails(p, "argument 'record 4': expected finite EEG values, got " + where);
    // Unverified opening reads only the metadata; reading the record refuses it.
    Shard s(p, {.verify_checksum = false});
    std::vector<float> eeg(kDims.eeg_floats());
    s.read(3, nullptr, eeg.data());
    try {
      s.read(4, nullptr, eeg.data());
      FAIL("read non-finite EEG");
    } catch (const milmer::Error& e) {
      CHECK(std::string(e.what()).find(where) != std::string::npos);
    }
    // Without the writer's CRC the value is corruption, and the CRC is what is reported.
    write_bytes(p, corrupt);
    check_open_fails(p, "payload checksum");
  }
}

TEST_CASE("label schemes on boundary ratings") {
  CHECK(deap2_label(4.99) == 0);
  CHECK(deap2_label(5.0) == 1);
  CHECK(deap2_label(1.0) == 0);
  CHECK(deap2_label(9.0) == 1);

  CHECK(deap3_label(1.0) == 0);
  CHECK(deap3_label(3.0) == 0);
  CHECK(deap3_label(3.49) == 0);
  CHECK(deap3_label(3.5) == 1);
  CHECK(deap3_label(4.99) == 1);
  CHECK(deap3_label(5.0) == 1);
  CHECK(deap3_label(6.49) == 1);
  CHECK(deap3_label(6.5) == 2);
  CHECK(deap3_label(9.0) == 2);

  // 0 HAHV, 1 HALV, 2 LAHV, 3 LALV (valence, arousal)
  CHECK(deap4_label(5.0, 5.0) == 0);
  CHECK(deap4_label(4.99, 5.0) == 1);
  CHECK(deap4_label(5.0, 4.99) == 2);
  CHECK(deap4_label(4.99, 4.99) == 3);
  CHECK(deap4_label(6.5, 3.5) == 2);
  CHECK(deap4_label(3.49, 6.49) == 1);

  const SampleInfo s = SampleInfo::from_ratings(3.49, 6.5, 1, 1, 1, 0);
  CHECK(s.label(LabelScheme::deap2_valence) == 0);
  CHECK(s.label(LabelScheme::deap2_arousal) == 1);
  CHECK(s.label(LabelScheme::deap3_valence) == 0);
  CHECK(s.label(LabelScheme::deap3_arousal) == 2);
  CHECK(s.label(LabelScheme::deap4) == 1);
}

TEST_CASE("label scheme names") {
  for (int i = 0; i < 5; ++i) {
    const auto s = static_cast<LabelScheme>(i);
    CHECK(parse_label_scheme(label_scheme_name(s)) == s);
    CHECK(class_names(s).size() == static_cast<std::size_t>(num_classes(s)));
  }
  CHECK_THROWS_AS(parse_label_scheme("deap5"), milmer::Error);
}

TEST_CASE("a dataset refuses shards of different sizes, naming the odd file") {
  TempDir dir;
  write_shard(dir / "s01.shard", 1, 1, 2);
  ShardDims other = kDims;
  other.height = 8;
  write_shard(dir / "s02.shard", 2, 1, 2, other);
  try {
    Dataset::open_dir(dir.path);
    FAIL("mixed sizes accepted");
  } catch (const milmer::Error& e) {
    CHECK(std::string(e.what()).find("s02.shard") != std::string::npos);
  }
}

namespace {

// Three participants, 10 trials of 4 windows each.
struct ProtocolFixture {
  TempDir dir;
  Dataset ds;
  ProtocolFixture() {
    for (int p : {1, 2, 3}) write_shard(dir / ("s0" + std::to_string(p) + ".shard"), p, 10, 4);
    ds = Dataset::open_dir(dir.path);
  }
};

std::set<std::pair<int, int>> trials_of(const Dataset& ds, const std::vector<std::size_t>& idx) {
  std::set<std::pair<int, int>> t;
  for (std::size_t i : idx) t.insert({ds.info(i).participant, ds.info(i).trial});
  return t;
}

}  // namespace

TEST_CASE("subject-dependent folds never split a trial and cover it once") {
  ProtocolFixture fx;
  const Dataset& ds = fx.ds;
  REQUIRE(ds.size() == 120);
  for (LabelScheme scheme : {LabelScheme::deap2_valence, LabelScheme::deap4}) {
    const auto folds = subject_dependent_folds(ds, 2, scheme, 5, 42);
    REQUIRE(folds.size() == 5);
    std::multiset<std::size_t> tested;
    for (const Split& f : folds) {
      CHECK(f.train.size() + f.test.size() == 40);
      CHECK_FALSE(f.test.empty());
      for (std::size_t i : f.train) CHECK(ds.info(i).participant == 2);
      for (std::size_t i : f.test) CHECK(ds.info(i).participant == 2);
      const auto tr = trials_of(ds, f.train), te = trials_of(ds, f.test);
      for (const auto& t : te) CHECK(tr.count(t) == 0);
      tested.insert(f.test.begin(), f.test.end());
    }
    CHECK(tested.size() == 40);
    CHECK(std::set<std::size_t>(tested.begin(), tested.end()).size() == 40);
  }
  // Stratified: with deap2-valence both classes have >= 2 trials, so a 2-fold split puts
  // both classes on both sides.
  for (const Split& f : subject_dependent_folds(ds, 1, LabelScheme::deap2_valence, 2, 3)) {
    std::set<int> tr, te;
    for (std::size_t i : f.train) tr.insert(ds.label(i, LabelScheme::deap2_valence));
    for (std::size_t i : f.test) te.insert(ds.label(i, LabelScheme::deap2_valence));
    CHECK(tr.size() == 2);
    CHECK(te.size() == 2);
  }
  // Same seed, same folds; another seed, other folds.
  const auto a = subject_dependent_folds(ds, 3, LabelScheme::deap4, 5, 7);
  const auto b = subject_dependent_folds(ds, 3, LabelScheme::deap4, 5, 7);
  const auto c = subject_dependent_folds(ds, 3, LabelScheme::deap4, 5, 8);
  bool differs = false;
  for (std::size_t f = 0; f < 5; ++f) {
    CHECK(a[f].test == b[f].test);
    differs = differs || a[f].test != c[f].test;
  }
  CHECK(differs);

  CHECK_THROWS_AS(subject_dependent_folds(ds, 4, LabelScheme::deap4, 5, 0), milmer::Error);
  CHECK_THROWS_AS(subject_dependent_folds(ds, 1, LabelScheme::deap4, 11, 0), milmer::Error);
  CHECK_THROWS_AS(subject_dependent_folds(ds, 1, LabelScheme::deap4, 1, 0), milmer::Error);
}

TEST_CASE("the window-level split is what leaks: trials straddle it") {
  ProtocolFixture fx;
  const auto folds =
      subject_dependent_folds(fx.ds, 1, LabelScheme::deap4, 5, 0, SplitUnit::window_leaky);
  bool straddles = false;
  for (const Split& f : folds) {
    CHECK(f.train.size() + f.test.size() == 40);
    const auto tr = trials_of(fx.ds, f.train);
    for (const auto& t : trials_of(fx.ds, f.test)) straddles = straddles || tr.count(t);
  }
  CHECK(straddles);
}

TEST_CASE("leave-one-subject-out: one fold per participant, never on both sides") {
  ProtocolFixture fx;
  const auto folds = leave_one_subject_out(fx.ds);
  REQUIRE(folds.size() == 3);
  for (std::size_t f = 0; f < 3; ++f) {
    CHECK(folds[f].test_participant == static_cast<int>(f) + 1);
    CHECK(folds[f].test.size() == 40);
    CHECK(folds[f].train.size() == 80);
    for (std::size_t i : folds[f].test)
      CHECK(fx.ds.info(i).participant == folds[f].test_participant);
    for (std::size_t i : folds[f].train)
      CHECK(fx.ds.info(i).participant != folds[f].test_participant);
  }
}

namespace {

struct Buffers {
  std::vector<float> frames, eeg;
  std::vector<std::int32_t> labels;
  explicit Buffers(const Batcher& b)
      : frames(b.frames_floats()), eeg(b.eeg_floats()), labels(b.batch_size()) {}
  BatchBuffers view() { return {frames.data(), eeg.data(), labels.data()}; }
};

struct EpochRecord {
  std::vector<std::size_t> counts;
  std::vector<float> frames, eeg;
  std::vector<std::int32_t> labels;
  bool operator==(const EpochRecord&) const = default;
};

EpochRecord run_epoch(Batcher& b, std::uint64_t epoch) {
  Buffers buf(b);
  EpochRecord r;
  b.start_epoch(epoch);
  const std::size_t per_frames = buf.frames.size() / b.batch_size();
  const std::size_t per_eeg = buf.eeg.size() / b.batch_size();
  while (std::size_t n = b.next(buf.view())) {
    r.counts.push_back(n);
    r.frames.insert(r.frames.end(), buf.frames.begin(),
                    buf.frames.begin() + static_cast<std::ptrdiff_t>(n * per_frames));
    r.eeg.insert(r.eeg.end(), buf.eeg.begin(),
                 buf.eeg.begin() + static_cast<std::ptrdiff_t>(n * per_eeg));
    r.labels.insert(r.labels.end(), buf.labels.begin(),
                    buf.labels.begin() + static_cast<std::ptrdiff_t>(n));
  }
  CHECK(b.next(buf.view()) == 0);  // stays at the end
  return r;
}

std::vector<float> ids_of(const EpochRecord& r, std::size_t per_eeg) {
  std::vector<float> ids;
  for (std::size_t i = 0; i < r.eeg.size(); i += per_eeg) ids.push_back(r.eeg[i]);
  return ids;
}

}  // namespace

TEST_CASE("batches: layout, normalisation and labels") {
  ProtocolFixture fx;
  const Dataset& ds = fx.ds;
  Batcher b(
      ds, {5, 0},
      {.scheme = LabelScheme::deap3_valence, .batch_size = 2, .shuffle = false, .prefetch = false});
  Buffers buf(b);
  b.start_epoch(0);
  REQUIRE(b.next(buf.view()) == 2);
  std::vector<std::uint8_t> raw(kDims.frame_bytes());
  std::vector<float> eeg(kDims.eeg_floats());
  ds.read(0, raw.data(), eeg.data());
  const std::size_t H = kDims.height, W = kDims.width, F = kDims.frames;
  const float* second = buf.frames.data() + F * 3 * H * W;  // batch slot 1 = sample 0
  for (std::size_t f = 0; f < F; ++f)
    for (std::size_t c = 0; c < 3; ++c)
      for (std::size_t y = 0; y < H; ++y)
        for (std::size_t x = 0; x < W; ++x) {
          const float want =
              (static_cast<float>(raw[((f * H + y) * W + x) * 3 + c]) / 255.0f - kImageNetMean[c]) /
              kImageNetStd[c];
          CHECK(second[((f * 3 + c) * H + y) * W + x] == doctest::Approx(want).epsilon(1e-5));
        }
  for (std::size_t i = 0; i < eeg.size(); ++i) CHECK(buf.eeg[eeg.size() + i] == eeg[i]);
  CHECK(buf.labels[0] == ds.label(5, LabelScheme::deap3_valence));
  CHECK(buf.labels[1] == ds.label(0, LabelScheme::deap3_valence));
  CHECK(b.next(buf.view()) == 0);
}

TEST_CASE("seeded shuffling is reproducible and covers every sample once per epoch") {
  ProtocolFixture fx;
  std::vector<std::size_t> idx(fx.ds.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  const BatcherOptions opt{.batch_size = 7, .seed = 123, .prefetch = false};
  Batcher a(fx.ds, idx, opt), b(fx.ds, idx, opt);
  BatcherOptions other = opt;
  other.seed = 124;
  Batcher c(fx.ds, idx, other);

  const EpochRecord a0 = run_epoch(a, 0), b0 = run_epoch(b, 0), c0 = run_epoch(c, 0);
  const EpochRecord a1 = run_epoch(a, 1);
  CHECK(a0 == b0);
  CHECK_FALSE(a0 == c0);
  CHECK_FALSE(a0 == a1);
  CHECK(run_epoch(b, 1) == a1);
  CHECK(a0.counts.size() == a.batches_per_epoch());
  CHECK(a0.counts.back() == 120 % 7);

  const std::size_t per_eeg = kDims.eeg_floats();
  for (const EpochRecord* r : {&a0, &a1}) {
    const auto ids = ids_of(*r, per_eeg);
    CHECK(ids.size() == 120);
    CHECK(std::set<float>(ids.begin(), ids.end()).size() == 120);
  }
  CHECK(ids_of(a0, per_eeg) != ids_of(a1, per_eeg));

  BatcherOptions drop = opt;
  drop.drop_last = true;
  Batcher d(fx.ds, idx, drop);
  const EpochRecord d0 = run_epoch(d, 0);
  CHECK(d0.counts.size() == 120 / 7);
  for (std::size_t n : d0.counts) CHECK(n == 7);
}

TEST_CASE("the prefetch thread delivers the same batches as synchronous reading") {
  ProtocolFixture fx;
  const auto split = subject_dependent_folds(fx.ds, 2, LabelScheme::deap4, 4, 1)[0];
  for (std::size_t depth : {1, 3}) {
    BatcherOptions opt{
        .scheme = LabelScheme::deap2_arousal, .batch_size = 3, .seed = 9, .prefetch = false};
    Batcher sync(fx.ds, split.train, opt);
    opt.prefetch = true;
    opt.prefetch_depth = depth;
    Batcher pre(fx.ds, split.train, opt);
    for (std::uint64_t e = 0; e < 3; ++e) CHECK(run_epoch(sync, e) == run_epoch(pre, e));
  }
}

TEST_CASE("the prefetch thread shuts down cleanly mid-epoch") {
  ProtocolFixture fx;
  std::vector<std::size_t> idx(fx.ds.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  Batcher b(fx.ds, idx, {.batch_size = 4, .prefetch_depth = 2});
  Buffers buf(b);
  b.start_epoch(0);
  CHECK(b.next(buf.view()) == 4);
  b.start_epoch(1);  // abandons epoch 0 while the producer waits on a full queue
  CHECK(b.next(buf.view()) == 4);
  // The destructor stops the producer with batches still queued.
}

TEST_CASE("a read error on the prefetch thread reaches the consumer, naming the file") {
  TempDir dir;
  const fs::path p = write_shard(dir / "s05.shard", 5, 4, 4);
  Dataset ds = Dataset::open({p});
  // Cut the file after it was opened: reading the tail now fails on the producer thread.
  fs::resize_file(p, kShardHeaderBytes + 3 * kDims.record_bytes());
  std::vector<std::size_t> idx(ds.size());
  for (std::size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  Batcher b(ds, idx, {.batch_size = 2, .shuffle = false, .prefetch = true});
  Buffers buf(b);
  b.start_epoch(0);
  CHECK(b.next(buf.view()) == 2);  // records 0, 1
  try {
    b.next(buf.view());  // records 2, 3: 3 is gone
    FAIL("the truncated record was read");
  } catch (const milmer::Error& e) {
    CHECK(std::string(e.what()).find(p.string()) != std::string::npos);
  }
  CHECK(b.next(buf.view()) == 0);
}

TEST_CASE("reads the shard the Python writer made (tests/data/labels_fixture.shard)") {
  // Written by tests/python/test_data_tools.py: ratings on every label threshold, labels
  // computed by tools/deap_common.py. C++ must read the same bytes and agree on the labels.
#ifdef MILMER_SOURCE_DIR
  const fs::path p = fs::path(MILMER_SOURCE_DIR) / "tests" / "data" / "labels_fixture.shard";
#else
  const fs::path p = fs::path(__FILE__).parent_path() / "data" / "labels_fixture.shard";
#endif
  REQUIRE_MESSAGE(fs::exists(p), p.string());
  const std::vector<std::pair<double, double>> ratings = {{4.99, 5.0}, {5.0, 4.99}, {3.49, 3.5},
                                                          {3.5, 3.49}, {6.49, 6.5}, {6.5, 6.49},
                                                          {1.0, 9.0},  {9.0, 1.0}};
  Shard s(p);
  REQUIRE(s.size() == ratings.size());
  CHECK(s.dims() == ShardDims{2, 3, 4, 2, 5});
  CHECK(s.header().participant == 3);
  std::vector<std::uint8_t> frames(s.dims().frame_bytes());
  std::vector<float> eeg(s.dims().eeg_floats());
  for (std::size_t i = 0; i < ratings.size(); ++i) {
    const auto [v, a] = ratings[i];
    const SampleInfo& info = s.info(i);
    const SampleInfo want = SampleInfo::from_ratings(
        v, a, 3, 10 + static_cast<int>(i), 20 + static_cast<int>(i), static_cast<int>(i % 3));
    CHECK(info.labels == want.labels);
    CHECK(info.valence == want.valence);
    CHECK(info.arousal == want.arousal);
    CHECK(info.trial == want.trial);
    CHECK(info.presentation == want.presentation);
    CHECK(info.window == want.window);
    s.read(i, frames.data(), eeg.data());
    for (std::size_t k = 0; k < eeg.size(); ++k)
      CHECK(eeg[k] == static_cast<float>(k) * 0.25f - static_cast<float>(i));
    for (std::size_t k = 0; k < frames.size(); ++k)
      CHECK(frames[k] == static_cast<std::uint8_t>((k * 5 + i) % 256));
  }
}
