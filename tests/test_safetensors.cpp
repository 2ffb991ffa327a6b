// milmer::io safetensors: round trips, files written by Python's safetensors, every
// malformation the reader must refuse, and the all-or-nothing tensor loader.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "milmer/io/safetensors.hpp"
#include "support.hpp"

#ifndef MILMER_SOURCE_DIR
#define MILMER_SOURCE_DIR "."
#endif

namespace fs = std::filesystem;
using milmer::io::DType;
using milmer::io::Shape;
using milmer::io::Tensor;

namespace {

// A fresh directory under the system temp dir, removed with its contents afterwards.
struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           milmer::str("milmer_test_safetensors_", ::getpid(), "_", counter++);
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A file of the given header text and data bytes; `length` overrides the header length.
fs::path raw_file(const fs::path& dir, const std::string& name, const std::string& header,
                  std::size_t data_bytes, std::int64_t length = -1) {
  const fs::path p = dir / name;
  std::ofstream out(p, std::ios::binary);
  const std::uint64_t n = length < 0 ? header.size() : static_cast<std::uint64_t>(length);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header;
  out << std::string(data_bytes, '\x01');
  return p;
}

const std::string kGolden = std::string(MILMER_SOURCE_DIR) + "/tests/golden";

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, scalars, empty tensors and metadata") {
  TempDir dir;
  const fs::path p = dir.path / "t.safetensors";
  milmer::io::TensorMap in;
  in["a.weight"] = Tensor::from<float>({2, 3}, std::vector<float>{1, 2, 3, 4, 5, -6.5f});
  in["b"] = Tensor::from<double>({4}, std::vector<double>{0.1, 0.2, 1e-300, -3});
  in["idx"] = Tensor::from<std::int64_t>({}, std::vector<std::int64_t>{-7});
  in["i32"] = Tensor::from<std::int32_t>({3, 1}, std::vector<std::int32_t>{1, -2, 3});
  in["empty"] = Tensor::from<float>({0, 5}, std::vector<float>{});
  milmer::io::write_safetensors(p, in, {{"origin", "test"}});

  const auto f = milmer::io::read_safetensors(p);
  REQUIRE(f.tensors.size() == in.size());
  for (const auto& [name, t] : in) {
    CAPTURE(name);
    const Tensor& r = f.at(name);
    CHECK(r.dtype == t.dtype);
    CHECK(r.shape == t.shape);
    CHECK(r.bytes == t.bytes);
  }
  CHECK(f.metadata.at("origin") == "test");
  CHECK(f.values<double>("b")[2] == 1e-300);
  CHECK(f.values<std::int64_t>("idx", Shape{}) == std::vector<std::int64_t>{-7});
  // Header padded to 8 bytes; nothing but the file left in the directory.
  std::ifstream raw(p, std::ios::binary);
  std::uint64_t n = 0;
  raw.read(reinterpret_cast<char*>(&n), 8);
  CHECK(n % 8 == 0);
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);

  // Overwriting replaces the whole file.
  milmer::io::TensorMap small;
  small["x"] = Tensor::from<float>({1}, std::vector<float>{42});
  milmer::io::write_safetensors(p, small);
  const auto g = milmer::io::read_safetensors(p);
  CHECK(g.tensors.size() == 1);
  CHECK(g.values<float>("x")[0] == 42);
  CHECK(g.metadata.empty());
}

TEST_CASE("safetensors: reads files written by Python's safetensors") {
  const auto in = milmer::io::read_safetensors(kGolden + "/swin_tiny/inputs.safetensors");
  CHECK(in.at("pixel_values").dtype == DType::F32);
  CHECK(in.at("pixel_values").shape == Shape{2, 3, 16, 16});
  CHECK(in.metadata.count("provenance") == 1);
  const auto params = milmer::io::read_safetensors(kGolden + "/swin_tiny/params.safetensors");
  const auto& index = params.at("encoder.layers.0.blocks.1.attention.self.relative_position_index");
  CHECK(index.dtype == DType::I64);
  CHECK(index.shape == Shape{16, 16});
  // The standard Swin index: entry (i, j) for window 4 is (dh + 3) * 7 + (dw + 3).
  const auto v = index.values<std::int64_t>();
  CHECK(v[0] == 3 * 7 + 3);
  CHECK(v[15] == (0 - 3 + 3) * 7 + (0 - 3 + 3));
  const auto expected = milmer::io::read_safetensors(kGolden + "/milmer_tiny/expected.safetensors");
  CHECK(expected.at("ref64.loss").dtype == DType::F64);
  CHECK(expected.at("loss").shape.empty());
  const auto inputs = milmer::io::read_safetensors(kGolden + "/milmer_tiny/inputs.safetensors");
  CHECK(inputs.at("labels").dtype == DType::I64);
}

TEST_CASE("safetensors: malformed files are refused with the file and tensor named") {
  TempDir dir;
  const auto read = [](const fs::path& p) { (void)milmer::io::read_safetensors(p); };
  const std::string f32 = R"("dtype":"F32","shape":[2])";

  SUBCASE("shorter than the length field") {
    const fs::path p = dir.path / "short.safetensors";
    std::ofstream(p, std::ios::binary) << "abc";
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find(p.string()) != std::string::npos);
    CHECK(m.find("at least 8 bytes") != std::string::npos);
  }
  SUBCASE("header length past the end of the file") {
    const auto p = raw_file(dir.path, "len.safetensors", "{}", 0, 1000);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find(p.string()) != std::string::npos);
    CHECK(m.find("past the end of the file") != std::string::npos);
  }
  SUBCASE("missing file") {
    const auto m = milmer::test::error_message([&] { read(dir.path / "absent.safetensors"); });
    CHECK(m.find("absent.safetensors") != std::string::npos);
  }
  SUBCASE("header is not JSON") {
    const auto p = raw_file(dir.path, "json.safetensors", "{\"a\": [", 0);
    CHECK(milmer::test::error_message([&] { read(p); }).find("valid JSON") != std::string::npos);
  }
  SUBCASE("header is not an object") {
    const auto p = raw_file(dir.path, "arr.safetensors", "[1, 2]", 0);
    CHECK(milmer::test::error_message([&] { read(p); }).find("a JSON object") != std::string::npos);
  }
  SUBCASE("unsupported dtype") {
    const auto p = raw_file(dir.path, "bf16.safetensors",
                            R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}})", 4);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'w'") != std::string::npos);
    CHECK(m.find("BF16") != std::string::npos);
  }
  SUBCASE("byte size disagrees with dtype and shape") {
    const auto p = raw_file(dir.path, "size.safetensors",
                            R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}})", 12);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'w'") != std::string::npos);
    CHECK(m.find("16 bytes for F32 [2, 2]") != std::string::npos);
  }
  SUBCASE("offsets past the data buffer") {
    const auto p =
        raw_file(dir.path, "range.safetensors", "{\"w\":{" + f32 + ",\"data_offsets\":[4,12]}}", 8);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'w'") != std::string::npos);
    CHECK(m.find("inside the data buffer of 8 bytes") != std::string::npos);
  }
  SUBCASE("begin after end") {
    const auto p =
        raw_file(dir.path, "order.safetensors", "{\"w\":{" + f32 + ",\"data_offsets\":[8,0]}}", 8);
    CHECK(milmer::test::error_message([&] { read(p); }).find("begin <= end") != std::string::npos);
  }
  SUBCASE("overlapping tensors") {
    const auto p = raw_file(
        dir.path, "overlap.safetensors",
        "{\"a\":{" + f32 + ",\"data_offsets\":[0,8]},\"b\":{" + f32 + ",\"data_offsets\":[4,12]}}",
        12);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'b'") != std::string::npos);
    CHECK(m.find("overlapping 'a'") != std::string::npos);
  }
  SUBCASE("a gap between tensors") {
    const auto p = raw_file(
        dir.path, "gap.safetensors",
        "{\"a\":{" + f32 + ",\"data_offsets\":[0,8]},\"b\":{" + f32 + ",\"data_offsets\":[12,20]}}",
        20);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'b'") != std::string::npos);
    CHECK(m.find("no gap") != std::string::npos);
  }
  SUBCASE("trailing bytes no tensor uses") {
    const auto p =
        raw_file(dir.path, "trail.safetensors", "{\"a\":{" + f32 + ",\"data_offsets\":[0,8]}}", 9);
    CHECK(milmer::test::error_message([&] { read(p); }).find("1 trailing bytes") !=
          std::string::npos);
  }
  SUBCASE("duplicate tensor names") {
    const auto p = raw_file(
        dir.path, "dup.safetensors",
        "{\"a\":{" + f32 + ",\"data_offsets\":[0,8]},\"a\":{" + f32 + ",\"data_offsets\":[8,16]}}",
        16);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'a'") != std::string::npos);
    CHECK(m.find("duplicate") != std::string::npos);
  }
  SUBCASE("negative or fractional dims") {
    const auto p = raw_file(dir.path, "neg.safetensors",
                            R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,0]}})", 0);
    CHECK(milmer::test::error_message([&] { read(p); }).find("integers >= 0") != std::string::npos);
    const auto q = raw_file(dir.path, "frac.safetensors",
                            R"({"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", 4);
    CHECK(milmer::test::error_message([&] { read(q); }).find("integers >= 0") != std::string::npos);
  }
  SUBCASE("missing or unknown fields") {
    const auto p = raw_file(dir.path, "nooff.safetensors", "{\"w\":{" + f32 + "}}", 8);
    const auto m = milmer::test::error_message([&] { read(p); });
    CHECK(m.find("'w'") != std::string::npos);
    CHECK(m.find("data_offsets") != std::string::npos);
    const auto q = raw_file(dir.path, "extra.safetensors",
                            "{\"w\":{" + f32 + ",\"data_offsets\":[0,8],\"x\":1}}", 8);
    CHECK(milmer::test::error_message([&] { read(q); }).find("field 'x'") != std::string::npos);
  }
  SUBCASE("metadata values must be strings") {
    const auto p = raw_file(dir.path, "meta.safetensors", R"({"__metadata__":{"n":3}})", 0);
    CHECK(milmer::test::error_message([&] { read(p); }).find("__metadata__.n") !=
          std::string::npos);
  }
  SUBCASE("an empty header object is a valid empty file") {
    const auto p = raw_file(dir.path, "empty.safetensors", "{}      ", 0);
    CHECK(milmer::io::read_safetensors(p).tensors.empty());
  }
}

TEST_CASE("safetensors: the writer refuses inconsistent tensors and leaves nothing behind") {
  TempDir dir;
  milmer::io::TensorMap bad;
  bad["w"] = Tensor{DType::F32, {2, 2}, std::vector<std::byte>(12)};
  const fs::path p = dir.path / "bad.safetensors";
  const auto m = milmer::test::error_message([&] { milmer::io::write_safetensors(p, bad); });
  CHECK(m.find(p.string()) != std::string::npos);
  CHECK(m.find("'w'") != std::string::npos);
  CHECK(fs::is_empty(dir.path));
  milmer::io::TensorMap ok;
  ok["w"] = Tensor::from<float>({1}, std::vector<float>{1});
  CHECK(milmer::test::error_message([&] {
          milmer::io::write_safetensors(dir.path / "no" / "x.safetensors", ok);
        }).find("temporary file") != std::string::npos);
}

TEST_CASE("AtomicFile: the target changes only on commit, and no temporary file stays") {
  TempDir dir;
  const fs::path p = dir.path / "out.bin";
  const auto read_all = [](const fs::path& f) {
    std::ifstream in(f, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  milmer::io::write_text_file(p, "old");
  {
    milmer::io::AtomicFile f(p);
    CHECK(milmer::io::is_atomic_temp_name(f.temp_path().filename().string()));
    CHECK(f.temp_path().parent_path() == dir.path);
    f.write("a streamed ");
    f.write("file");
    CHECK(read_all(p) == "old");  // not committed: the old file stays
  }
  CHECK(read_all(p) == "old");
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
  {
    milmer::io::AtomicFile f(p);
    f.write("xxxx, then the rest");
    f.write_at(0, "head", 4);
    f.write("!");
    f.commit();
  }
  CHECK(read_all(p) == "head, then the rest!");
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
  CHECK((fs::status(p).permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
         fs::perms::others_read));
  // A failed step names the file and the step.
  const auto m = milmer::test::error_message(
      [&] { milmer::io::write_text_file(dir.path / "no" / "x.json", "{}"); });
  CHECK(m.find((dir.path / "no" / "x.json").string()) != std::string::npos);
  CHECK(m.find("argument 'file': expected a temporary file in") != std::string::npos);
  milmer::io::AtomicFile f(dir.path / "y.json");
  f.commit();
  CHECK(milmer::test::error_message([&] { f.write("late"); }).find("one already committed") !=
        std::string::npos);
}

TEST_CASE("safetensors: load_tensors fills every slot or none") {
  TempDir dir;
  const fs::path p = dir.path / "m.safetensors";
  milmer::io::TensorMap in;
  in["a"] = Tensor::from<float>({2, 2}, std::vector<float>{1, 2, 3, 4});
  in["b"] = Tensor::from<double>({3}, std::vector<double>{5, 6, 7});
  in["swin.relative_position_index"] =
      Tensor::from<std::int64_t>({1}, std::vector<std::int64_t>{0});
  milmer::io::write_safetensors(p, in);
  const auto file = milmer::io::read_safetensors(p);

  std::vector<float> a(4, -1);
  std::vector<double> b(3, -1);
  const auto untouched = [&] {
    CHECK(a == std::vector<float>(4, -1));
    CHECK(b == std::vector<double>(3, -1));
  };
  const auto is_index = [](const std::string& n) {
    return n.find("relative_position_index") != std::string::npos;
  };

  SUBCASE("exact set, with an ignored buffer") {
    std::vector<milmer::io::TensorSlot> slots{milmer::io::slot("a", {2, 2}, a.data()),
                                              milmer::io::slot("b", {3}, b.data())};
    milmer::io::load_tensors(p, slots, is_index);
    CHECK(a == std::vector<float>{1, 2, 3, 4});
    CHECK(b == std::vector<double>{5, 6, 7});
  }
  SUBCASE("an unexpected tensor") {
    std::vector<milmer::io::TensorSlot> slots{milmer::io::slot("a", {2, 2}, a.data()),
                                              milmer::io::slot("b", {3}, b.data())};
    const auto m = milmer::test::error_message([&] { milmer::io::load_tensors(file, slots); });
    CHECK(m.find(p.string()) != std::string::npos);
    CHECK(m.find("1 unexpected (swin.relative_position_index)") != std::string::npos);
    untouched();
  }
  SUBCASE("missing, wrong shape and wrong dtype are all named at once") {
    std::vector<float> c(2);
    std::vector<float> bf(3);
    std::vector<milmer::io::TensorSlot> slots{milmer::io::slot("a", {4}, a.data()),
                                              milmer::io::slot("b", {3}, bf.data()),
                                              milmer::io::slot("c", {2}, c.data())};
    const auto m =
        milmer::test::error_message([&] { milmer::io::load_tensors(file, slots, is_index); });
    CHECK(m.find("1 missing (c)") != std::string::npos);
    CHECK(m.find("a is F32 [2, 2], expected F32 [4]") != std::string::npos);
    CHECK(m.find("b is F64 [3], expected F32 [3]") != std::string::npos);
    untouched();
  }
  SUBCASE("a name requested twice") {
    std::vector<milmer::io::TensorSlot> slots{milmer::io::slot("a", {2, 2}, a.data()),
                                              milmer::io::slot("a", {2, 2}, a.data())};
    CHECK(milmer::test::error_message([&] {
            milmer::io::load_tensors(file, slots, is_index);
          }).find("duplicate slot") != std::string::npos);
  }
  SUBCASE("typed access checks dtype and shape") {
    CHECK(milmer::test::error_message([&] { (void)file.values<float>("b"); }).find("dtype F32") !=
          std::string::npos);
    CHECK(milmer::test::error_message([&] {
            (void)file.values<float>("a", Shape{4});
          }).find("shape [4]") != std::string::npos);
    CHECK(milmer::test::error_message([&] { (void)file.at("zzz"); }).find("'zzz'") !=
          std::string::npos);
  }
}

namespace {

// The JSON header of a safetensors file and the bytes after it.
struct RawFile {
  std::string header;
  std::string data;
};

RawFile split_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::uint64_t n = 0;
  in.read(reinterpret_cast<char*>(&n), 8);
  RawFile r{std::string(n, '\0'), {}};
  in.read(r.header.data(), static_cast<std::streamsize>(n));
  r.data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

void join_file(const fs::path& p, const RawFile& r) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  const std::uint64_t n = r.header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << r.header << r.data;
}

// Two tensors of one size, so their offsets can be swapped.
milmer::io::TensorMap two_tensors() {
  milmer::io::TensorMap t;
  t["a.weight"] = Tensor::from<float>({2, 2}, std::vector<float>{1, 2, 3, 4});
  t["b.weight"] = Tensor::from<float>({2, 2}, std::vector<float>{5, 6, 7, 8});
  t["c.index"] = Tensor::from<std::int64_t>({3}, std::vector<std::int64_t>{9, 10, 11});
  return t;
}

}  // namespace

TEST_CASE("safetensors: every tensor's CRC-32 is written and verified") {
  TempDir dir;
  const fs::path p = dir.path / "ck.safetensors";
  milmer::io::write_safetensors(p, two_tensors(), {{"step", "3"}});
  const RawFile raw = split_file(p);
  const auto header = milmer::io::json::parse(raw.header);
  const auto crcs = milmer::io::json::parse(
      header.at("__metadata__").at(milmer::io::kChecksumKey).get<std::string>());
  // CRC-32 of the float bytes 1, 2, 3, 4 (zlib.crc32(struct.pack("<4f", 1, 2, 3, 4))).
  CHECK(crcs.at("a.weight") == "8ba71454");
  CHECK(crcs.size() == 3);

  const auto f = milmer::io::read_safetensors(p);
  CHECK(f.checksums_verified);
  CHECK(f.metadata == std::map<std::string, std::string>{{"step", "3"}});
  CHECK(milmer::io::read_safetensors_header(p).checksums.size() == 3);

  SUBCASE("a flipped tensor byte is refused, naming the tensor") {
    RawFile bad = raw;
    bad.data[17] ^= 0x01;  // in b.weight's first float (tensors are in name order)
    join_file(p, bad);
    const auto m = milmer::test::error_message([&] { (void)milmer::io::read_safetensors(p); });
    CHECK(m.find(p.string()) != std::string::npos);
    CHECK(m.find("'b.weight'") != std::string::npos);
    CHECK(m.find("tensor data corrupt") != std::string::npos);
    // The header alone is intact: the header reader does not see the data.
    CHECK(milmer::io::read_safetensors_header(p).tensors.size() == 3);
  }
  SUBCASE("swapped offsets are refused, naming a tensor") {
    RawFile bad = raw;
    auto h = milmer::io::ordered_json::parse(bad.header);
    std::swap(h["a.weight"]["data_offsets"], h["b.weight"]["data_offsets"]);
    bad.header = h.dump();
    join_file(p, bad);
    const auto m = milmer::test::error_message([&] { (void)milmer::io::read_safetensors(p); });
    CHECK(m.find("'a.weight'") != std::string::npos);
    CHECK(m.find("CRC-32 8ba71454") != std::string::npos);
  }
  SUBCASE("the checksum map covers exactly the file's tensors") {
    auto edit = [&](const std::function<void(milmer::io::json&)>& change) {
      RawFile bad = raw;
      auto h = milmer::io::ordered_json::parse(bad.header);
      auto c =
          milmer::io::json::parse(h["__metadata__"][milmer::io::kChecksumKey].get<std::string>());
      change(c);
      h["__metadata__"][milmer::io::kChecksumKey] = c.dump();
      bad.header = h.dump();
      join_file(p, bad);
      return milmer::test::error_message([&] { (void)milmer::io::read_safetensors_header(p); });
    };
    auto m = edit([](auto& c) { c.erase("c.index"); });
    CHECK(m.find("'c.index'") != std::string::npos);
    CHECK(m.find("a CRC-32 in __metadata__.milmer.crc32") != std::string::npos);
    m = edit([](auto& c) { c["d"] = "00000000"; });
    CHECK(m.find("milmer.crc32.d") != std::string::npos);
    CHECK(m.find("for no tensor of the file") != std::string::npos);
    m = edit([](auto& c) { c["a.weight"] = 12; });
    CHECK(m.find("8 lowercase hex digits") != std::string::npos);
    m = edit([](auto& c) { c = milmer::io::json::array(); });
    CHECK(m.find("a JSON object of CRC-32s") != std::string::npos);
  }
  SUBCASE("the key is the writer's own") {
    const auto m = milmer::test::error_message([&] {
      milmer::io::write_safetensors(p, two_tensors(), {{milmer::io::kChecksumKey, "{}"}});
    });
    CHECK(m.find("milmer.crc32") != std::string::npos);
    CHECK(m.find("the writer computes the checksums") != std::string::npos);
  }
}

TEST_CASE("safetensors: a file without checksums (Python's writer) is read unverified") {
  const auto f = milmer::io::read_safetensors(kGolden + "/milmer_tiny/params.safetensors");
  CHECK_FALSE(f.checksums_verified);
  CHECK(f.tensors.size() > 10);
  CHECK(milmer::io::read_safetensors_header(kGolden + "/milmer_tiny/params.safetensors")
            .checksums.empty());
}

TEST_CASE("safetensors: sizes in a small file cannot ask for large allocations") {
  TempDir dir;
  struct Case {
    const char* name;
    std::string header;
    std::size_t data_bytes;
    std::int64_t length;  // the stated header length; -1: the header's own
    const char* expected;
  };
  const Case cases[] = {
      {"a header length of 2^62", "{}", 0, std::int64_t{1} << 62, "argument 'header length'"},
      {"a shape whose element count overflows",
       R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}})", 0, -1,
       "argument 'w': expected a representable number of bytes"},
      {"offsets far past the file",
       R"({"w":{"dtype":"F32","shape":[250000000000],"data_offsets":[0,1000000000000]}})", 8, -1,
       "argument 'w': expected data_offsets inside the data buffer of 8 bytes"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const auto p = raw_file(dir.path, "f.safetensors", c.header, c.data_bytes, c.length);
    const auto m = milmer::test::error_message([&] { (void)milmer::io::read_safetensors(p); });
    CHECK(m.find(p.string()) != std::string::npos);
    CHECK(m.find(c.expected) != std::string::npos);
  }
}
