// slimedge_aggregate: the aggregator's pooling step without Python, for boards that run the
// C++ core alone. Reads one batch of int8 view features (format: cpp/tools/README.md),
// redistributes the weights over each frame's live views and pools them; prints a text
// report that is byte-identical on every target for the same input.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "aggregate_io.hpp"

namespace {

constexpr const char* kUsage =
    "usage: slimedge_aggregate INPUT\n"
    "  INPUT  a SlimEdge aggregator input file, format version 1 (see cpp/tools/README.md;\n"
    "         slimedge.runtime.frames.write_aggregate_input writes one)\n"
    "Prints, per frame, the redistributed weights and the pooled features (float32 bits in\n"
    "hex, then the value rounded to 6 significant digits). Exit status: 0 ok, 1 bad input,\n"
    "2 usage.\n";

}  // namespace

int main(int argc, char** argv) {
    if (argc == 2 && (std::strcmp(argv[1], "-h") == 0 || std::strcmp(argv[1], "--help") == 0)) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    if (argc != 2) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    try {
        const auto in = slimedge::tools::read_aggregate_input(argv[1]);
        const auto result = slimedge::tools::aggregate(in);
        const std::string text = slimedge::tools::format_result(in, result);
        if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() ||
            std::fflush(stdout) != 0) {
            std::fprintf(stderr, "slimedge_aggregate: cannot write the report to stdout\n");
            return 1;
        }
    } catch (const slimedge::tools::InputError& e) {
        std::fprintf(stderr, "slimedge_aggregate: error: %s\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "slimedge_aggregate: error: %s: %s\n", argv[1], e.what());
        return 1;
    }
    return 0;
}
