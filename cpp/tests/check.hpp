// The minimal check harness shared by the C++ test programs (no test framework needed, so the
// tests build and run the same way natively and cross-built under qemu).
#pragma once

#include <cmath>
#include <cstdio>

namespace slimedge::testing {
inline int failures = 0;

// Exit status for main(): prints the count of failed checks, if any.
inline int finish(const char* name) {
    if (failures) {
        std::fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    std::printf("%s: ok\n", name);
    return 0;
}
}  // namespace slimedge::testing

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            ++slimedge::testing::failures;                                              \
        }                                                                               \
    } while (0)

#define CHECK_NEAR(a, b, tol) CHECK(std::fabs((a) - (b)) <= (tol))
