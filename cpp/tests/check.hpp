// The minimal check harness shared by the C++ test programs (no test framework needed, so the
// tests build and run the same way natively and cross-built under qemu).
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

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

// main() of a test program: runs the group named by argv[1] (every group for "all" or none
// given) and returns finish()'s status. An unknown group name fails, so a typo in a ctest
// registration cannot pass by running nothing.
inline int run_groups(const char* program, int argc, char** argv,
                      const std::vector<std::pair<std::string, void (*)()>>& groups) {
    const std::string group = argc > 1 ? argv[1] : "all";
    bool ran = false;
    for (const auto& [name, fn] : groups) {
        if (group == name || group == "all") {
            fn();
            ran = true;
        }
    }
    if (!ran) {
        std::fprintf(stderr, "%s: unknown test group '%s'\n", program, group.c_str());
        return 2;
    }
    return finish((std::string(program) + " " + group).c_str());
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
