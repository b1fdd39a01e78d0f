// Unit tests of the standalone aggregator's file reader and report, run by ctest (under qemu
// for cross builds): `test_aggregate <group>`.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "aggregate_io.hpp"
#include "check.hpp"

using namespace slimedge;
using namespace slimedge::tools;


// Little-endian writer, independent of the reader under test.
struct Bytes {
    std::vector<std::uint8_t> b;
    void u(std::uint64_t v, int n) {
        for (int i = 0; i < n; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
    }
    void f(float x) {
        std::uint32_t bits;
        std::memcpy(&bits, &x, 4);
        u(bits, 4);
    }
};

// B=2 frames, V=3 views, D=2 dims, weighted pooling, table policy with one row.
static std::vector<std::uint8_t> valid_file() {
    Bytes w;
    for (char c : {'S', 'E', 'A', 'G'}) w.u(static_cast<std::uint8_t>(c), 1);
    w.u(1, 2);                       // version
    w.u(2, 1);                       // mode: weighted
    w.u(1, 1);                       // policy: table
    w.u(2, 4); w.u(3, 4); w.u(2, 4); // B V D
    w.u(1, 4);                       // table rows
    w.u(0, 8);                       // reserved
    for (float s : {0.5f, 0.25f, 2.0f}) w.f(s);
    for (std::int32_t zp : {0, -128, 1}) w.u(static_cast<std::uint32_t>(zp), 4);
    for (int l : {1, 1, 1, 1, 0, 1}) w.u(static_cast<std::uint64_t>(l), 1);  // frame 1: view 1 dead
    for (float x : {1.0f, 2.0f, 1.0f}) w.f(x);
    w.u(0b010, 8);                   // table row for "view 1 dead"
    for (float x : {3.0f, 0.0f, 1.0f}) w.f(x);
    for (int q : {10, -128, 127, 5, -3, 0, 2, 4, 0, 0, 1, 3}) {
        w.u(static_cast<std::uint8_t>(static_cast<std::int8_t>(q)), 1);
    }
    return w.b;
}

static std::string error_of(const std::vector<std::uint8_t>& data) {
    try {
        parse_aggregate_input(data.data(), data.size(), "in.bin");
    } catch (const InputError& e) {
        return e.what();
    }
    return "";
}

static bool has(const std::string& s, const std::string& part) {
    return s.find(part) != std::string::npos;
}

static void test_parse() {
    const auto data = valid_file();
    const auto in = parse_aggregate_input(data.data(), data.size(), "in.bin");
    CHECK(in.batch == 2 && in.views == 3 && in.dim == 2);
    CHECK(in.mode == PoolMode::Weighted && in.policy == RedistributePolicy::Table);
    CHECK(in.scale[1] == 0.25f && in.zero_point[1] == -128 && in.zero_point[2] == 1);
    CHECK(in.live[4] == 0 && in.base_weights[1] == 2.0f);
    CHECK(in.table && in.table->size() == 1 && in.table->find(0b010) != nullptr);
    CHECK(in.features[1] == -128 && in.features[11] == 3);

    const auto r = aggregate(in);
    // Frame 0, all live, base weights 1:2:1. Dequantized rows: v0 (5, -64), v1 (63.75, 33.25),
    // v2 (-8, -2). Weighted mean: (5 + 127.5 - 8) / 4, (-64 + 66.5 - 2) / 4.
    CHECK(r.from_table[0] == 0 && r.empty[0] == 0);
    CHECK(r.weights[0] == 1.0f && r.weights[1] == 2.0f && r.weights[2] == 1.0f);
    CHECK(r.pooled[0] == 31.125f && r.pooled[1] == 0.125f);
    // Frame 1, view 1 dead: the table row 3:0:1. v0 (1, 2), v2 (0, 4) -> (0.75, 2.5).
    CHECK(r.from_table[1] == 1);
    CHECK(r.weights[3] == 3.0f && r.weights[4] == 0.0f && r.weights[5] == 1.0f);
    CHECK(r.pooled[2] == 0.75f && r.pooled[3] == 2.5f);

    const std::string text = format_result(in, r);
    CHECK(has(text, "slimedge-aggregate 1\nB=2 V=3 D=2 mode=weighted policy=table\n"));
    CHECK(has(text, "frame 1 live=101 dead_mask=0x2 weights_from=table empty=0\n"));
    CHECK(has(text, "pooled 0 0x41f90000 31.125\n"));
    CHECK(has(text, "pooled 0 0x3f400000 0.75\n"));
}

static void test_errors() {
    const auto good = valid_file();

    // Every truncation is caught and names a field.
    for (std::size_t n = 0; n < good.size(); ++n) {
        const std::vector<std::uint8_t> cut(good.begin(), good.begin() + static_cast<long>(n));
        const std::string e = error_of(cut);
        CHECK(has(e, "in.bin: truncated") && has(e, "field '"));
    }
    CHECK(has(error_of(std::vector<std::uint8_t>(good.begin(), good.begin() + 6)),
              "field 'mode' needs 1 bytes at offset 6"));
    CHECK(has(error_of(std::vector<std::uint8_t>(good.begin(), good.end() - 1)),
              "ends inside field 'features'"));
    CHECK(has(error_of(std::vector<std::uint8_t>(good.begin(), good.begin() + 40)),
              "ends inside field 'scale'"));

    auto extra = good;
    extra.push_back(0);
    CHECK(has(error_of(extra), "wrong size") && has(error_of(extra), "1 unexpected bytes"));

    // Patch one header or body byte and expect the field to be named.
    auto patched = [&](std::size_t at, std::uint8_t value) {
        auto d = good;
        d[at] = value;
        return error_of(d);
    };
    CHECK(has(patched(0, 'X'), "field 'magic'"));
    CHECK(has(patched(4, 2), "field 'version'") && has(patched(4, 2), "version 2"));
    CHECK(has(patched(6, 3), "field 'mode'"));
    CHECK(has(patched(7, 2), "field 'policy'"));
    CHECK(has(patched(8, 0), "field 'B'"));
    CHECK(has(patched(12, 0), "field 'V'"));
    CHECK(has(patched(12, 65), "field 'V'"));
    CHECK(has(patched(16, 0), "field 'D'"));
    CHECK(has(patched(16, 3), "describes"));  // D no longer matches the payload
    CHECK(has(patched(24, 1), "field 'reserved'"));
    CHECK(has(patched(35, 0x80), "field 'scale[0]'"));         // 0.5 -> -0.0
    CHECK(has(patched(44, 200), "field 'zero_point[0]'"));     // 200
    CHECK(has(patched(56, 2), "field 'live[0][0]'"));
    CHECK(has(patched(61, 2), "field 'live[1][2]'"));
    CHECK(has(patched(65, 0xc0), "field 'base_weights[0]'"));  // 1.0 -> -4.0
    CHECK(has(patched(74, 0b011), "field 'table[0]'"));  // view 0 dead but weighted 3
    CHECK(has(patched(89, 0x40), "field 'table[0]'"));   // weight 2 given to dead view 1

    auto huge = good;
    for (int i = 16; i < 20; ++i) huge[static_cast<std::size_t>(i)] = 0xff;  // D = 2^32 - 1
    CHECK(has(error_of(huge), "describes"));

    auto renorm_with_rows = good;
    renorm_with_rows[7] = 0;
    CHECK(has(error_of(renorm_with_rows), "field 'table_rows'"));

    bool threw = false;
    try {
        read_aggregate_input("/nonexistent/in.bin");
    } catch (const InputError& e) {
        threw = has(e.what(), "/nonexistent/in.bin: cannot open");
    }
    CHECK(threw);
}

int main(int argc, char** argv) {
    return slimedge::testing::run_groups("test_aggregate", argc, argv,
                                         {{"parse", test_parse}, {"errors", test_errors}});
}
