// milmer::io safetensors: reading and writing the checkpoint format of Hugging Face
// `safetensors`, and loading a fixed set of named tensors into caller buffers.
//
// File layout (little-endian):
//   u64 N | N bytes of JSON header | data buffer
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} with
// offsets relative to the data buffer, plus an optional "__metadata__" map of strings. The
// reader checks everything the format promises before it trusts an offset: the header
// length fits the file, the JSON is an object without duplicate names, each entry has a
// supported dtype (F32, F64, I64, I32), a shape whose byte size equals end - begin, and
// offsets inside the buffer; the tensors tile the buffer exactly, without overlap or holes
// (as the reference implementation requires). Every size the header states is checked
// against the file's size before anything is allocated for it. Every failure is a
// milmer::Error naming the file and the tensor.
//
// Checksums: the writer stores each tensor's CRC-32 (zlib's, milmer/io/crc32.hpp) in the
// metadata, under kChecksumKey, as one JSON object {"tensor name": "8 hex digits", ...}. The
// reader checks that object covers exactly the file's tensors and verifies every tensor it
// reads; a mismatch is an Error naming the file and the tensor. A file without the key (one
// written by Python's safetensors, e.g. tests/golden or tools/convert_swin.py's output) is
// read unverified: the format has no checksum of its own.
//
// The writer puts the tensors in name order, contiguously, pads the header with spaces to a
// multiple of 8 bytes, and writes through io::AtomicFile (milmer/io/atomic_file.hpp): a
// reader sees the old file or the new one, never a part.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "milmer/error.hpp"
#include "milmer/io/atomic_file.hpp"
#include "milmer/io/crc32.hpp"
#include "milmer/io/json.hpp"

namespace milmer::io {

static_assert(std::endian::native == std::endian::little,
              "safetensors is little-endian and is read by memcpy");

enum class DType : std::uint8_t { F32, F64, I64, I32 };

inline constexpr std::size_t dtype_size(DType t) {
  return (t == DType::F64 || t == DType::I64) ? 8 : 4;
}

// The format's dtype names, in DType order.
inline constexpr std::array<const char*, 4> kDTypeNames = {"F32", "F64", "I64", "I32"};

inline constexpr const char* dtype_name(DType t) {
  const auto i = static_cast<std::size_t>(t);
  return i < kDTypeNames.size() ? kDTypeNames[i] : "?";
}

template <class T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return DType::F32;
  else if constexpr (std::is_same_v<T, double>)
    return DType::F64;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return DType::I64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return DType::I32;
  else
    static_assert(sizeof(T) == 0,
                  "safetensors: element type must be float, double, int64 or int32");
}

using Shape = std::vector<std::int64_t>;

inline std::string shape_string(const Shape& s) {
  std::string out = "[";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Product of the dims; -1 when a dim is negative or the product overflows.
inline std::int64_t shape_numel(const Shape& s) {
  std::int64_t n = 1;
  for (auto d : s) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

// One tensor in host memory: raw little-endian bytes of its dtype, row-major.
struct Tensor {
  DType dtype = DType::F32;
  Shape shape;
  std::vector<std::byte> bytes;

  std::int64_t numel() const { return shape_numel(shape); }

  template <class T>
  static Tensor from(Shape shape, std::span<const T> values) {
    Tensor t{dtype_of<T>(), std::move(shape), {}};
    check(t.numel() == static_cast<std::int64_t>(values.size()), "Tensor::from", "values",
          str(t.numel(), " elements for shape ", shape_string(t.shape)), str(values.size()));
    t.bytes.resize(values.size_bytes());
    if (!values.empty()) std::memcpy(t.bytes.data(), values.data(), values.size_bytes());
    return t;
  }
  template <class T>
  static Tensor from(Shape shape, const std::vector<T>& values) {
    return from(std::move(shape), std::span<const T>(values));
  }

  // The elements as T; T must be the tensor's dtype (no silent conversion).
  template <class T>
  std::vector<T> values() const {
    check(dtype == dtype_of<T>(), "Tensor::values", "T", dtype_name(dtype),
          dtype_name(dtype_of<T>()));
    std::vector<T> out(bytes.size() / sizeof(T));
    if (!out.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
    return out;
  }
};

using TensorMap = std::map<std::string, Tensor>;

// The contents of one safetensors file.
struct SafetensorsFile {
  std::string path;  // for error messages
  TensorMap tensors;
  std::map<std::string, std::string> metadata;  // without kChecksumKey
  bool checksums_verified = false;              // the file had checksums, and they matched

  bool contains(const std::string& name) const { return tensors.count(name) != 0; }

  const Tensor& at(const std::string& name) const {
    auto it = tensors.find(name);
    if (it == tensors.end())
      throw Error("safetensors " + path, name, "a tensor of that name", "none");
    return it->second;
  }

  // The tensor's elements, checking dtype and (when given) shape.
  template <class T>
  std::vector<T> values(const std::string& name, const Shape* shape = nullptr) const {
    const Tensor& t = at(name);
    check(t.dtype == dtype_of<T>(), "safetensors " + path, name,
          str("dtype ", dtype_name(dtype_of<T>())), dtype_name(t.dtype));
    if (shape)
      check(t.shape == *shape, "safetensors " + path, name, str("shape ", shape_string(*shape)),
            shape_string(t.shape));
    return t.values<T>();
  }
  template <class T>
  std::vector<T> values(const std::string& name, const Shape& shape) const {
    return values<T>(name, &shape);
  }
};

// The metadata key of the per-tensor CRC-32s (see the top of this file).
inline constexpr const char* kChecksumKey = "milmer.crc32";

// One tensor as the header describes it: offsets [begin, end) into the data buffer.
struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  std::uint64_t begin = 0, end = 0;
};

// Everything but the tensor data: what read_safetensors_header checks and returns.
struct SafetensorsHeader {
  std::string path;  // for error messages
  std::uint64_t file_bytes = 0;
  std::uint64_t data_start = 0;                    // 8 + header length
  std::vector<TensorEntry> tensors;                // in name order
  std::map<std::string, std::string> metadata;     // without kChecksumKey
  std::map<std::string, std::uint32_t> checksums;  // empty when the file has none
};

inline std::string crc_hex(std::uint32_t crc) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%08x", crc);
  return buf;
}

namespace detail {

// The format's own limit on the header size; also bounds what a corrupt length makes us read.
inline constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

inline DType parse_dtype(const std::string& s, const std::string& op, const std::string& name) {
  for (std::size_t i = 0; i < kDTypeNames.size(); ++i)
    if (s == kDTypeNames[i]) return static_cast<DType>(i);
  throw Error(op, name, "dtype F32, F64, I64 or I32", "dtype " + s);
}

inline std::vector<TensorEntry> parse_header(const std::string& text, std::uint64_t data_bytes,
                                             const std::string& op,
                                             std::map<std::string, std::string>& metadata) {
  // nlohmann keeps the last of duplicate keys; the format forbids them, so spot them here.
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t on_event = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth == 1 && event == json::parse_event_t::key && duplicate.empty()) {
      const std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(text, on_event);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 2e333
    throw Error(op, "header", "valid JSON", e.what());
  }
  check(header.is_object(), op, "header", "a JSON object", json_type(header));
  if (!duplicate.empty()) throw Error(op, duplicate, "one entry per tensor", "a duplicate entry");

  std::vector<TensorEntry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      check(v.is_object(), op, name, "an object of strings", json_type(v));
      for (auto m = v.begin(); m != v.end(); ++m) {
        check(m.value().is_string(), op, "__metadata__." + m.key(), "a string",
              json_type(m.value()));
        metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    check(!name.empty(), op, "header", "non-empty tensor names", "an empty name");
    check(v.is_object(), op, name, "an object {dtype, shape, data_offsets}", json_type(v));
    for (auto f = v.begin(); f != v.end(); ++f)
      check(f.key() == "dtype" || f.key() == "shape" || f.key() == "data_offsets", op, name,
            "only fields dtype, shape, data_offsets", "field '" + f.key() + "'");
    TensorEntry e;
    e.name = name;
    const std::string ctx = op + ": tensor '" + name + "'";
    e.dtype = parse_dtype(as_string(get_field(v, "dtype", ctx), "dtype", ctx), op, name);
    const json& shape = get_field(v, "shape", ctx);
    check(shape.is_array(), op, name, "shape as a list of integers", json_type(shape));
    for (const json& d : shape) {
      check(d.is_number_integer() && d.get<std::int64_t>() >= 0, op, name,
            "shape dims that are integers >= 0", json_type(d));
      e.shape.push_back(d.get<std::int64_t>());
    }
    const json& off = get_field(v, "data_offsets", ctx);
    check(off.is_array() && off.size() == 2, op, name, "data_offsets [begin, end]", json_type(off));
    for (const json& o : off)
      check(o.is_number_unsigned(), op, name, "data_offsets that are integers >= 0", json_type(o));
    e.begin = off[0].get<std::uint64_t>();
    e.end = off[1].get<std::uint64_t>();
    check(e.begin <= e.end, op, name, "data_offsets begin <= end",
          str("[", e.begin, ", ", e.end, "]"));
    check(e.end <= data_bytes, op, name,
          str("data_offsets inside the data buffer of ", data_bytes, " bytes"),
          str("[", e.begin, ", ", e.end, "]"));
    const std::int64_t numel = shape_numel(e.shape);
    std::uint64_t want = 0;
    const bool ok = numel >= 0 && !__builtin_mul_overflow(static_cast<std::uint64_t>(numel),
                                                          dtype_size(e.dtype), &want);
    check(ok && want == e.end - e.begin, op, name,
          str(ok ? std::to_string(want) : std::string("a representable number of"), " bytes for ",
              dtype_name(e.dtype), " ", shape_string(e.shape)),
          str(e.end - e.begin, " bytes (data_offsets [", e.begin, ", ", e.end, "])"));
    entries.push_back(std::move(e));
  }

  // The tensors must tile the data buffer: sorted by offset, each starts where the last ended.
  std::vector<const TensorEntry*> order;
  for (const auto& e : entries) order.push_back(&e);
  std::stable_sort(order.begin(), order.end(), [](const TensorEntry* a, const TensorEntry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t pos = 0;
  const TensorEntry* prev = nullptr;
  for (const TensorEntry* e : order) {
    if (e->begin < pos)
      throw Error(op, e->name, "data that overlaps no other tensor",
                  str("bytes [", e->begin, ", ", e->end, ") overlapping '", prev->name, "' [",
                      prev->begin, ", ", prev->end, ")"));
    if (e->begin > pos)
      throw Error(op, e->name, str("data starting at byte ", pos, " (no gap)"),
                  str("data starting at byte ", e->begin));
    pos = e->end;
    prev = e;
  }
  check(pos == data_bytes, op, "data buffer", str(data_bytes, " bytes, all used by tensors"),
        str(data_bytes - pos, " trailing bytes no tensor uses"));
  return entries;
}

}  // namespace detail

namespace detail {

// The kChecksumKey metadata: a JSON object with one 8-hex-digit CRC-32 per tensor of the file.
inline std::map<std::string, std::uint32_t> parse_checksums(const std::string& text,
                                                            const std::vector<TensorEntry>& tensors,
                                                            const std::string& op) {
  const std::string arg = str("__metadata__.", kChecksumKey);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 2e333
    throw Error(op, arg, "a JSON object of CRC-32s", e.what());
  }
  check(j.is_object(), op, arg, "a JSON object of CRC-32s", json_type(j));
  std::map<std::string, std::uint32_t> crcs;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string v = it.value().is_string() ? it.value().get<std::string>() : "";
    const bool hex = v.size() == 8 && v.find_first_not_of("0123456789abcdef") == std::string::npos;
    check(hex, op, str(arg, ".", it.key()), "a CRC-32 as 8 lowercase hex digits",
          it.value().dump());
    crcs[it.key()] = static_cast<std::uint32_t>(std::stoul(v, nullptr, 16));
  }
  std::set<std::string> names;
  for (const auto& t : tensors) {
    check(crcs.count(t.name) != 0, op, t.name, str("a CRC-32 in ", arg), "none");
    names.insert(t.name);
  }
  for (const auto& [name, crc] : crcs)
    check(names.count(name) != 0, op, str(arg, ".", name), "a CRC-32 of a tensor the file holds",
          "a CRC-32 for no tensor of the file");
  return crcs;
}

}  // namespace detail

// Reads and checks a safetensors file's header (everything but the tensor data): the header
// length against the file size, then every entry and the checksums as described at the top.
inline SafetensorsHeader read_safetensors_header(const std::filesystem::path& path) {
  const std::string op = str("safetensors ", path.string());
  std::error_code ec;
  check(std::filesystem::is_regular_file(path, ec), op, "file", "an existing file", "no such file");
  const std::uint64_t file_bytes = std::filesystem::file_size(path, ec);
  if (ec) throw Error(op, "file", "a readable file", ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(op, "file", "a readable file", "cannot open");
  check(file_bytes >= 8, op, "file", "at least 8 bytes (the header length)",
        str(file_bytes, " bytes"));

  std::uint64_t header_bytes = 0;
  in.read(reinterpret_cast<char*>(&header_bytes), 8);
  check(header_bytes <= file_bytes - 8, op, "header length",
        str("at most ", file_bytes - 8, " bytes (the rest of the file)"),
        str(header_bytes, " bytes, past the end of the file"));
  check(header_bytes <= detail::kMaxHeaderBytes, op, "header length",
        str("at most ", detail::kMaxHeaderBytes, " bytes"), str(header_bytes));
  std::string text(header_bytes, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_bytes));
  check(static_cast<bool>(in), op, "header", str(header_bytes, " bytes"), "a short read");

  SafetensorsHeader h;
  h.path = path.string();
  h.file_bytes = file_bytes;
  h.data_start = 8 + header_bytes;
  h.tensors = detail::parse_header(text, file_bytes - h.data_start, op, h.metadata);
  if (auto it = h.metadata.find(kChecksumKey); it != h.metadata.end()) {
    h.checksums = detail::parse_checksums(it->second, h.tensors, op);
    h.metadata.erase(it);
  }
  return h;
}

// Reads a whole safetensors file, verifying each tensor's checksum when the file has them.
// Throws milmer::Error on any malformation.
inline SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  const SafetensorsHeader h = read_safetensors_header(path);
  const std::string op = str("safetensors ", h.path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(op, "file", "a readable file", "cannot open");
  SafetensorsFile out;
  out.path = h.path;
  out.metadata = h.metadata;
  out.checksums_verified = !h.checksums.empty();
  for (const auto& e : h.tensors) {
    // e.end - e.begin lies inside the file (checked with the header).
    Tensor t{e.dtype, e.shape, std::vector<std::byte>(e.end - e.begin)};
    if (!t.bytes.empty()) {
      in.seekg(static_cast<std::streamoff>(h.data_start + e.begin));
      in.read(reinterpret_cast<char*>(t.bytes.data()),
              static_cast<std::streamsize>(t.bytes.size()));
      check(static_cast<bool>(in), op, e.name, str(t.bytes.size(), " bytes of data"),
            "a short read");
    }
    if (auto c = h.checksums.find(e.name); c != h.checksums.end()) {
      const std::uint32_t crc = crc32_update(0, t.bytes.data(), t.bytes.size());
      check(crc == c->second, op, e.name,
            str("CRC-32 ", crc_hex(c->second), " (", kChecksumKey, " in the metadata)"),
            str(crc_hex(crc), " (tensor data corrupt)"));
    }
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

// Writes `tensors` (and string metadata) to `path` atomically.
inline void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  const std::string op = str("write_safetensors ", path.string());
  check(metadata.count(kChecksumKey) == 0, op, str("metadata '", kChecksumKey, "'"),
        "no such key (the writer computes the checksums)", "a caller-supplied value");
  ordered_json entries = ordered_json::object(), crcs = ordered_json::object();
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    check(!name.empty() && name != "__metadata__", op, name, "a tensor name", "a reserved name");
    const std::int64_t numel = t.numel();
    check(numel >= 0, op, name, "a shape with dims >= 0", shape_string(t.shape));
    const std::uint64_t want = static_cast<std::uint64_t>(numel) * dtype_size(t.dtype);
    check(t.bytes.size() == want, op, name,
          str(want, " bytes for ", dtype_name(t.dtype), " ", shape_string(t.shape)),
          str(t.bytes.size(), " bytes"));
    entries[name] = {{"dtype", dtype_name(t.dtype)},
                     {"shape", t.shape},
                     {"data_offsets", {offset, offset + want}}};
    crcs[name] = crc_hex(crc32_update(0, t.bytes.data(), t.bytes.size()));
    offset += want;
  }
  ordered_json header = ordered_json::object();
  if (!metadata.empty() || !tensors.empty()) {
    header["__metadata__"] = metadata;
    if (!tensors.empty()) header["__metadata__"][kChecksumKey] = crcs.dump();
  }
  header.update(entries);
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::uint64_t n = text.size();

  AtomicFile file(path, op);
  file.write(&n, 8);
  file.write(text);
  for (const auto& [name, t] : tensors)
    if (!t.bytes.empty()) file.write(t.bytes.data(), t.bytes.size());
  file.commit();
}

// ---------------------------------------------------------------------------------------
// Loading an exact set of tensors into caller buffers.

// Where one expected tensor goes: `data` receives numel(shape) elements of `dtype`.
struct TensorSlot {
  std::string name;
  Shape shape;
  DType dtype = DType::F32;
  void* data = nullptr;
};

template <class T>
TensorSlot slot(std::string name, Shape shape, T* data) {
  return TensorSlot{std::move(name), std::move(shape), dtype_of<T>(), data};
}

// Names in the file that may be present and are skipped (e.g. Swin's relative_position_index
// buffers, which the model computes itself).
using IgnoreFn = std::function<bool(const std::string&)>;

// Copies every slot's tensor from `file`. Before writing anything it checks that the file
// holds exactly the slots' tensors (besides ignored ones), each with the slot's shape and
// dtype; otherwise it throws one Error listing every missing, extra and mismatched tensor,
// with all caller buffers untouched.
inline void load_tensors(const SafetensorsFile& file, std::span<const TensorSlot> slots,
                         const IgnoreFn& ignore = {}) {
  const std::string op = "load_tensors " + file.path;
  std::vector<std::string> missing, mismatched, extra;
  std::set<std::string> wanted;
  for (const auto& s : slots) {
    check(wanted.insert(s.name).second, op, s.name, "one slot per tensor", "a duplicate slot");
    check(s.data != nullptr || shape_numel(s.shape) == 0, op, s.name, "a destination buffer",
          "null");
    auto it = file.tensors.find(s.name);
    if (it == file.tensors.end()) {
      missing.push_back(s.name);
    } else if (it->second.shape != s.shape || it->second.dtype != s.dtype) {
      mismatched.push_back(str(s.name, " is ", dtype_name(it->second.dtype), " ",
                               shape_string(it->second.shape), ", expected ", dtype_name(s.dtype),
                               " ", shape_string(s.shape)));
    }
  }
  for (const auto& [name, t] : file.tensors)
    if (!wanted.count(name) && !(ignore && ignore(name))) extra.push_back(name);
  if (!missing.empty() || !mismatched.empty() || !extra.empty()) {
    auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
      return s;
    };
    std::string got;
    if (!missing.empty()) got += str(missing.size(), " missing (", join(missing), ")");
    if (!mismatched.empty())
      got +=
          str(got.empty() ? "" : "; ", mismatched.size(), " mismatched (", join(mismatched), ")");
    if (!extra.empty())
      got += str(got.empty() ? "" : "; ", extra.size(), " unexpected (", join(extra), ")");
    throw Error(op, "tensors", str("exactly the ", slots.size(), " requested tensors"), got);
  }
  for (const auto& s : slots) {
    const Tensor& t = file.tensors.at(s.name);
    if (!t.bytes.empty()) std::memcpy(s.data, t.bytes.data(), t.bytes.size());
  }
}

inline void load_tensors(const std::filesystem::path& path, std::span<const TensorSlot> slots,
                         const IgnoreFn& ignore = {}) {
  load_tensors(read_safetensors(path), slots, ignore);
}

}  // namespace milmer::io
