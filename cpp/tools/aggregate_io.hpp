// The standalone aggregator's file format (version 1) and its one computation: redistribute
// the weights for each frame's live set, then pool the frame's int8 features with the core.
// The format is documented in cpp/tools/README.md; slimedge.runtime.frames writes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "slimedge/pool.hpp"
#include "slimedge/redistribute.hpp"

namespace slimedge::tools {

inline constexpr char kAggregateMagic[4] = {'S', 'E', 'A', 'G'};
inline constexpr std::uint16_t kAggregateVersion = 1;
inline constexpr std::size_t kAggregateHeaderBytes = 32;

// A file that cannot be used; the message names the file and the field at fault.
class InputError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct AggregateInput {
    std::uint32_t batch = 0;  // B frames
    std::uint32_t views = 0;  // V views, 1..64 (failure sets are 64-bit masks)
    std::uint32_t dim = 0;    // D features per view
    PoolMode mode = PoolMode::Max;
    RedistributePolicy policy = RedistributePolicy::Renormalize;
    std::vector<float> scale;              // (V,)
    std::vector<std::int32_t> zero_point;  // (V,)
    std::vector<std::uint8_t> live;        // (B, V), 0 or 1
    std::vector<float> base_weights;       // (V,)
    std::optional<ContingencyTable> table; // set when the file has table rows
    std::vector<std::int8_t> features;     // (B, V, D)
};

// Parses a whole file held in memory. `name` (the path) prefixes every error message.
AggregateInput parse_aggregate_input(const std::uint8_t* data, std::size_t size,
                                     const std::string& name);

// Reads and parses a file; an unreadable file is an InputError too.
AggregateInput read_aggregate_input(const std::string& path);

struct AggregateResult {
    std::vector<float> weights;       // (B, V) redistributed weights
    std::vector<std::uint8_t> from_table;  // (B,) 1 when the table had a row for the frame
    std::vector<float> pooled;        // (B, D)
    std::vector<std::uint8_t> empty;  // (B,) 1 for a frame without a usable view
};

AggregateResult aggregate(const AggregateInput& in);

// The text report: float32 values as their bit pattern in hex plus a rounded decimal, so the
// same input gives byte-identical text on every target.
std::string format_result(const AggregateInput& in, const AggregateResult& r);

}  // namespace slimedge::tools
