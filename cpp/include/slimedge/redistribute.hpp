// Failure-aware weight redistribution: which aggregation weights to use for the views
// that are still alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace slimedge {

enum class RedistributePolicy { Renormalize, Table };

RedistributePolicy parse_policy(const std::string& name);

// Bit v set = view v is dead. Views beyond 64 cannot be keyed (checked by callers).
using DeadMask = std::uint64_t;

DeadMask dead_mask_of(const std::uint8_t* live, std::size_t views);

// Renormalize: the dead views' weight is spread over the survivors in proportion to their
// own weight, so the total is preserved. If every survivor has zero weight, the total is
// shared equally among the survivors. All dead -> all zeros. Returns false if no view lives.
bool renormalize(const float* base, const std::uint8_t* live, std::size_t views, float* out);

// Contingency table: dead-view bitmask -> the weights to use for that failure set
// (fitted offline by the planner). Sets not in the table fall back to renormalize.
class ContingencyTable {
public:
    explicit ContingencyTable(std::size_t views);

    std::size_t views() const { return views_; }
    std::size_t size() const { return keys_.size(); }

    // Adds or replaces the row for `dead`. Throws std::invalid_argument for a negative or
    // non-finite weight, or a row that gives weight to a dead view.
    void set(DeadMask dead, const float* weights);

    // Returns the row for `dead`, or null when the set is not in the table.
    const float* find(DeadMask dead) const;

    std::vector<DeadMask> keys() const;

private:
    std::size_t views_;
    std::vector<DeadMask> keys_;      // kept sorted for binary search
    std::vector<float> rows_;         // keys_.size() x views_
};

// Weights for one frame under `policy`. `table` may be null for Renormalize.
// Returns false when no view is alive.
bool redistribute(const float* base, const std::uint8_t* live, std::size_t views,
                  RedistributePolicy policy, const ContingencyTable* table, float* out);

// Batch form: live (B, V) -> out (B, V). Returns the number of frames with no live view.
std::size_t redistribute_batch(const float* base, const std::uint8_t* live, std::size_t batch,
                               std::size_t views, RedistributePolicy policy,
                               const ContingencyTable* table, float* out);

}  // namespace slimedge
