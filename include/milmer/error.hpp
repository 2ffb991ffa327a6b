// milmer::Error: the one exception type of the library.
//
// Every check names the op (or file), the argument, what was expected and what came, so a
// user reading the message knows where to look without a debugger:
//   layernorm_forward: argument 'x': expected last dim 768, got 384
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace milmer {

class Error : public std::runtime_error {
 public:
  Error(std::string op, std::string argument, std::string expected, std::string got)
      : std::runtime_error(format(op, argument, expected, got)),
        op_(std::move(op)),
        argument_(std::move(argument)),
        expected_(std::move(expected)),
        got_(std::move(got)) {}

  const std::string& op() const noexcept { return op_; }
  const std::string& argument() const noexcept { return argument_; }
  const std::string& expected() const noexcept { return expected_; }
  const std::string& got() const noexcept { return got_; }

 private:
  static std::string format(const std::string& op, const std::string& argument,
                            const std::string& expected, const std::string& got) {
    std::ostringstream s;
    s << op << ": argument '" << argument << "': expected " << expected << ", got " << got;
    return s.str();
  }
  std::string op_, argument_, expected_, got_;
};

// Builds a string from any streamable values: MILMER_STR("shape ", n, "x", m).
template <class... T>
std::string str(const T&... v) {
  std::ostringstream s;
  (s << ... << v);
  return s.str();
}

// Throws Error when cond is false. Use for argument validation in launchers and loaders.
// Its four strings are built before the call, pass or fail; on hot paths (every launch) use
// MILMER_CHECK, which builds them only when the check fails.
inline void check(bool cond, const std::string& op, const std::string& argument,
                  const std::string& expected, const std::string& got) {
  if (!cond) throw Error(op, argument, expected, got);
}

}  // namespace milmer

// check() with lazy formatting: `expected` and `got` (and op and argument) are expressions
// evaluated only when cond is false, so a passing check costs the comparison alone:
//   MILMER_CHECK(n <= cap, op, "x", str("at most ", cap, " elements"), str(n));
#define MILMER_CHECK(cond, op, argument, expected, got)                      \
  do {                                                                       \
    if (!(cond)) throw ::milmer::Error((op), (argument), (expected), (got)); \
  } while (0)
