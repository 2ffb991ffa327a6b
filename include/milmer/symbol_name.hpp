// The name of a function from its address (a kernel, for messages): the dynamic symbol table
// (the host target links with -rdynamic), demangled; "kernel@<address>" when no symbol is found.
#pragma once

#include <cxxabi.h>
#include <dlfcn.h>

#include <cstdlib>
#include <string>

#include "milmer/error.hpp"

namespace milmer {

inline std::string symbol_name(const void* fn) {
  Dl_info info{};
  if (dladdr(fn, &info) && info.dli_sname) {
    int status = 0;
    char* d = abi::__cxa_demangle(info.dli_sname, nullptr, nullptr, &status);
    std::string s = status == 0 && d ? d : info.dli_sname;
    std::free(d);
    return s;
  }
  return str("kernel@", fn);
}

}  // namespace milmer
