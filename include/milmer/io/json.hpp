// milmer::io JSON helpers: reading a JSON file and typed field access that fail with a
// milmer::Error naming the file and the key (nlohmann's own exceptions name neither).
//
//   auto j = io::read_json_file("config.json");
//   int d = io::get_int(j, "embed_dim", "config.json: swin");
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "milmer/error.hpp"
#include "milmer/io/atomic_file.hpp"  // write_text_file

namespace milmer::io {

using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

// The JSON type of a value in words, for error messages.
inline std::string json_type(const json& v) {
  if (v.is_number_integer()) return str("integer ", v.dump());
  if (v.is_number_float()) return str("number ", v.dump());
  return v.is_primitive() ? str(v.type_name(), " ", v.dump()) : std::string(v.type_name());
}

inline json parse_json(const std::string& text, const std::string& source) {
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number beyond double (e.g. 2e333)
    throw Error(source, "json", "valid JSON", e.what());
  }
}

inline json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path.string(), "file", "a readable file", "cannot open");
  std::ostringstream s;
  s << in.rdbuf();
  return parse_json(s.str(), path.string());
}

inline const json& get_field(const json& obj, const std::string& key, const std::string& ctx) {
  check(obj.is_object(), ctx, key, "a JSON object around it", json_type(obj));
  auto it = obj.find(key);
  if (it == obj.end()) throw Error(ctx, key, "present", "missing");
  return *it;
}

inline std::int64_t as_int(const json& v, const std::string& key, const std::string& ctx) {
  if (v.is_number_integer()) return v.get<std::int64_t>();
  // 4.0 is accepted as 4: JSON writers may print integral values as floats.
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::abs(d) < 9.0e15)
      return static_cast<std::int64_t>(d);
  }
  throw Error(ctx, key, "an integer", json_type(v));
}

inline int as_int32(const json& v, const std::string& key, const std::string& ctx) {
  const std::int64_t i = as_int(v, key, ctx);
  check(i >= std::numeric_limits<int>::min() && i <= std::numeric_limits<int>::max(), ctx, key,
        "a 32-bit integer", str(i));
  return static_cast<int>(i);
}

inline double as_double(const json& v, const std::string& key, const std::string& ctx) {
  check(v.is_number(), ctx, key, "a number", json_type(v));
  return v.get<double>();
}

inline bool as_bool(const json& v, const std::string& key, const std::string& ctx) {
  check(v.is_boolean(), ctx, key, "true or false", json_type(v));
  return v.get<bool>();
}

inline std::string as_string(const json& v, const std::string& key, const std::string& ctx) {
  check(v.is_string(), ctx, key, "a string", json_type(v));
  return v.get<std::string>();
}

inline std::vector<int> as_int_list(const json& v, const std::string& key, const std::string& ctx) {
  check(v.is_array(), ctx, key, "a list of integers", json_type(v));
  std::vector<int> out;
  for (std::size_t i = 0; i < v.size(); ++i)
    out.push_back(as_int32(v[i], str(key, "[", i, "]"), ctx));
  return out;
}

inline int get_int(const json& obj, const std::string& key, const std::string& ctx) {
  return as_int32(get_field(obj, key, ctx), key, ctx);
}
inline double get_double(const json& obj, const std::string& key, const std::string& ctx) {
  return as_double(get_field(obj, key, ctx), key, ctx);
}
inline bool get_bool(const json& obj, const std::string& key, const std::string& ctx) {
  return as_bool(get_field(obj, key, ctx), key, ctx);
}

}  // namespace milmer::io
