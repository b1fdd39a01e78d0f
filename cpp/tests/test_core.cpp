// C++ unit tests of the aggregation core, run by ctest: `test_core <group>`.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.hpp"
#include "slimedge/pool.hpp"
#include "slimedge/redistribute.hpp"

using namespace slimedge;



template <typename F>
static bool throws_invalid(F f) {
    try {
        f();
    } catch (const std::invalid_argument&) {
        return true;
    }
    return false;
}

static void test_pool() {
    // 2 frames, 3 views, 2 dims.
    const std::vector<float> x = {
        1, -1,   4, 0,   2, 5,   // frame 0
        -3, -2,  -1, -7, 0, 0,   // frame 1
    };
    const std::vector<std::uint8_t> mask = {1, 0, 1, 0, 0, 0};
    std::vector<float> out(4, 123.0f);
    std::vector<std::uint8_t> empty(2, 9);
    PoolShape s{2, 3, 2, true, false};

    CHECK(pool_f32(x.data(), mask.data(), nullptr, s, PoolMode::Max, out.data(), empty.data()) == 1);
    CHECK(out[0] == 2.0f && out[1] == 5.0f);  // view 1 (4, 0) is dead
    CHECK(empty[0] == 0 && empty[1] == 1);
    CHECK(out[2] == 0.0f && out[3] == 0.0f);  // no live view: zeros, never NaN

    pool_f32(x.data(), mask.data(), nullptr, s, PoolMode::Mean, out.data(), empty.data());
    CHECK_NEAR(out[0], 1.5f, 1e-6);
    CHECK_NEAR(out[1], 2.0f, 1e-6);
    CHECK(!std::isnan(out[2]) && out[2] == 0.0f);

    const std::vector<float> w = {3, 100, 1};
    pool_f32(x.data(), mask.data(), w.data(), s, PoolMode::Weighted, out.data(), empty.data());
    CHECK_NEAR(out[0], (3 * 1 + 1 * 2) / 4.0f, 1e-6);
    CHECK_NEAR(out[1], (3 * -1 + 1 * 5) / 4.0f, 1e-6);

    // Shared (V,) mask; weights that zero every live view flag the frame.
    const std::vector<std::uint8_t> shared = {1, 0, 0};
    const std::vector<float> w0 = {0, 1, 1};
    PoolShape s2{2, 3, 2, false, false};
    CHECK(pool_f32(x.data(), shared.data(), w0.data(), s2, PoolMode::Weighted, out.data(),
                   empty.data()) == 2);
    CHECK(out[0] == 0.0f && empty[0] == 1);

    CHECK(throws_invalid([&] {
        pool_f32(x.data(), shared.data(), nullptr, s2, PoolMode::Weighted, out.data(), nullptr);
    }));

    // int8 with per-view quantization: x = scale * (q - zp).
    const std::vector<std::int8_t> q = {10, -128, 127, 5, -3, 0};  // 1 frame, 3 views, 2 dims
    const std::vector<float> scale = {0.5f, 0.25f, 2.0f};
    const std::vector<std::int32_t> zp = {0, -128, 1};
    const std::vector<std::uint8_t> all = {1, 1, 1};
    PoolShape s3{1, 3, 2, false, false};
    pool_int8(q.data(), scale.data(), zp.data(), all.data(), nullptr, s3, PoolMode::Max, out.data(),
              empty.data());
    // view0: (5, -64); view1: (63.75, 33.25); view2: (-8, -2)
    CHECK_NEAR(out[0], 63.75f, 1e-6);
    CHECK_NEAR(out[1], 33.25f, 1e-6);
    pool_int8(q.data(), scale.data(), zp.data(), all.data(), nullptr, s3, PoolMode::Mean, out.data(),
              empty.data());
    CHECK_NEAR(out[0], (5 + 63.75f - 8) / 3.0f, 1e-5);
    CHECK_NEAR(out[1], (-64 + 33.25f - 2) / 3.0f, 1e-5);

    // A zero point outside int8 would overflow int32(q) - zp: refused, whatever the mode.
    const std::vector<std::int32_t> bad_zp = {0, std::numeric_limits<std::int32_t>::min(), 1};
    CHECK(throws_invalid([&] {
        pool_int8(q.data(), scale.data(), bad_zp.data(), all.data(), nullptr, s3, PoolMode::Max,
                  out.data(), empty.data());
    }));
    CHECK(throws_invalid([&] { check_int8_zero_points(std::vector<std::int32_t>{128}.data(), 1); }));
    check_int8_zero_points(std::vector<std::int32_t>{-128, 127}.data(), 2);

    // Weight totals in double: 2^25 + 1 + 1 + 1 is 2^25 in float, 2^25 + 3 in double.
    const std::vector<float> one_dim = {0, 1, 1, 1};
    const std::vector<float> big_w = {33554432.0f, 1, 1, 1};
    const std::vector<std::uint8_t> four = {1, 1, 1, 1};
    PoolShape s5{1, 4, 1, false, false};
    pool_f32(one_dim.data(), four.data(), big_w.data(), s5, PoolMode::Weighted, out.data(),
             empty.data());
    CHECK(out[0] == 3.0f * static_cast<float>(1.0 / (33554432.0 + 3.0)));

    // Max of very negative values is not clipped at zero.
    const std::vector<float> neg = {-5, -6, -7, -8};
    const std::vector<std::uint8_t> m2 = {1, 1};
    PoolShape s4{1, 2, 2, false, false};
    pool_f32(neg.data(), m2.data(), nullptr, s4, PoolMode::Max, out.data(), empty.data());
    CHECK(out[0] == -5.0f && out[1] == -6.0f);

    CHECK(parse_pool_mode("weighted") == PoolMode::Weighted);
    CHECK(throws_invalid([] { parse_pool_mode("median"); }));
}

static void test_redistribute() {
    const std::vector<float> base = {1, 2, 3, 4};
    std::vector<float> out(4);
    const std::vector<std::uint8_t> live = {1, 0, 1, 1};
    CHECK(renormalize(base.data(), live.data(), 4, out.data()));
    // total 10, live total 8: factor 1.25
    CHECK_NEAR(out[0], 1.25f, 1e-6);
    CHECK(out[1] == 0.0f);
    CHECK_NEAR(out[2], 3.75f, 1e-6);
    CHECK_NEAR(out[3], 5.0f, 1e-6);
    CHECK_NEAR(out[0] + out[2] + out[3], 10.0f, 1e-5);

    const std::vector<std::uint8_t> none = {0, 0, 0, 0};
    CHECK(!renormalize(base.data(), none.data(), 4, out.data()));
    CHECK(out[0] == 0 && out[1] == 0 && out[2] == 0 && out[3] == 0);

    // Survivors with zero weight share the total equally.
    const std::vector<float> zb = {0, 6, 0, 0};
    CHECK(renormalize(zb.data(), live.data(), 4, out.data()));
    CHECK_NEAR(out[0], 2.0f, 1e-6);
    CHECK_NEAR(out[3], 2.0f, 1e-6);
    CHECK(out[1] == 0.0f);

    CHECK(dead_mask_of(live.data(), 4) == 0b0010u);

    std::vector<std::uint8_t> lives = {1, 1, 1, 1, 0, 0, 0, 0};
    std::vector<float> outs(8);
    CHECK(redistribute_batch(base.data(), lives.data(), 2, 4, RedistributePolicy::Renormalize,
                             nullptr, outs.data()) == 1);
    CHECK(outs[3] == 4.0f && outs[7] == 0.0f);
}

static void test_table() {
    ContingencyTable t(4);
    const std::vector<float> row = {0.5f, 0, 0.2f, 0.3f};
    t.set(0b0010, row.data());
    CHECK(t.size() == 1);
    CHECK(t.find(0b0010) != nullptr);
    CHECK(t.find(0b0100) == nullptr);

    const std::vector<float> row2 = {0.1f, 0, 0.1f, 0.8f};
    t.set(0b0010, row2.data());  // replace
    CHECK(t.size() == 1);
    t.set(0b0001, std::vector<float>{0, 1, 1, 1}.data());
    CHECK(t.size() == 2);
    CHECK(t.keys()[0] == 0b0001 && t.keys()[1] == 0b0010);

    const std::vector<float> base = {1, 1, 1, 1};
    std::vector<float> out(4);
    const std::vector<std::uint8_t> live = {1, 0, 1, 1};
    CHECK(redistribute(base.data(), live.data(), 4, RedistributePolicy::Table, &t, out.data()));
    CHECK_NEAR(out[3], 0.8f, 1e-6);
    // Not in the table: renormalize.
    const std::vector<std::uint8_t> live2 = {1, 1, 0, 1};
    redistribute(base.data(), live2.data(), 4, RedistributePolicy::Table, &t, out.data());
    CHECK_NEAR(out[0], 4.0f / 3.0f, 1e-6);
    CHECK(out[2] == 0.0f);

    // Bad rows are rejected.
    CHECK(throws_invalid([&] { t.set(0b0001, std::vector<float>{1, 1, 1, 1}.data()); }));
    CHECK(throws_invalid([&] { t.set(0, std::vector<float>{-1, 1, 1, 1}.data()); }));
    CHECK(throws_invalid([&] {
        t.set(0, std::vector<float>{std::numeric_limits<float>::quiet_NaN(), 1, 1, 1}.data());
    }));
    CHECK(throws_invalid([&] { t.set(1u << 5, std::vector<float>{1, 1, 1, 1}.data()); }));
    CHECK(throws_invalid([] { ContingencyTable bad(65); }));
    CHECK(throws_invalid([] { ContingencyTable bad(0); }));
    CHECK(throws_invalid([&] {
        redistribute(base.data(), live.data(), 4, RedistributePolicy::Table, nullptr, out.data());
    }));
    CHECK(throws_invalid([] { parse_policy("uniform"); }));

    // 64 views: the top bit is usable.
    ContingencyTable big(64);
    std::vector<float> r64(64, 1.0f);
    r64[63] = 0.0f;
    big.set(DeadMask{1} << 63, r64.data());
    CHECK(big.find(DeadMask{1} << 63) != nullptr);
}

int main(int argc, char** argv) {
    return slimedge::testing::run_groups(
        "test_core", argc, argv,
        {{"pool", test_pool}, {"redistribute", test_redistribute}, {"table", test_table}});
}
