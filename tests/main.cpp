// The test runner's entry point. Kernel tests run every kernel under all three emulator
// thread orders themselves (tests/support.hpp), so one run of this binary covers them.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
