#include "slimedge/redistribute.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace slimedge {

RedistributePolicy parse_policy(const std::string& name) {
    if (name == "renormalize") return RedistributePolicy::Renormalize;
    if (name == "table") return RedistributePolicy::Table;
    throw std::invalid_argument("unknown redistribution policy '" + name +
                                "' (expected 'renormalize' or 'table')");
}

DeadMask dead_mask_of(const std::uint8_t* live, std::size_t views) {
    DeadMask dead = 0;
    for (std::size_t v = 0; v < views; ++v) {
        if (!live[v]) dead |= (DeadMask{1} << v);
    }
    return dead;
}

bool renormalize(const float* base, const std::uint8_t* live, std::size_t views, float* out) {
    double total = 0.0, live_total = 0.0;
    std::size_t n_live = 0;
    for (std::size_t v = 0; v < views; ++v) {
        total += base[v];
        if (live[v]) {
            live_total += base[v];
            ++n_live;
        }
    }
    if (n_live == 0) {
        std::fill(out, out + views, 0.0f);
        return false;
    }
    if (live_total <= 0.0) {
        // Survivors carried no weight: share the total (or 1 if it is zero) equally.
        const double share = (total > 0.0 ? total : 1.0) / static_cast<double>(n_live);
        for (std::size_t v = 0; v < views; ++v) out[v] = live[v] ? static_cast<float>(share) : 0.0f;
        return true;
    }
    const double factor = total / live_total;
    for (std::size_t v = 0; v < views; ++v) {
        out[v] = live[v] ? static_cast<float>(base[v] * factor) : 0.0f;
    }
    return true;
}

ContingencyTable::ContingencyTable(std::size_t views) : views_(views) {
    if (views == 0 || views > 64) {
        throw std::invalid_argument("a contingency table keys failure sets by a 64-bit mask: "
                                    "views must be 1..64, got " + std::to_string(views));
    }
}

void ContingencyTable::set(DeadMask dead, const float* weights) {
    if (views_ < 64 && (dead >> views_) != 0) {
        throw std::invalid_argument("dead mask " + std::to_string(dead) + " names a view >= " +
                                    std::to_string(views_));
    }
    for (std::size_t v = 0; v < views_; ++v) {
        const float w = weights[v];
        if (!std::isfinite(w) || w < 0.0f) {
            throw std::invalid_argument("contingency row for dead mask " + std::to_string(dead) +
                                        ": weight of view " + std::to_string(v) +
                                        " must be finite and >= 0, got " + std::to_string(w));
        }
        if (w != 0.0f && ((dead >> v) & 1u)) {
            throw std::invalid_argument("contingency row for dead mask " + std::to_string(dead) +
                                        " gives weight " + std::to_string(w) + " to dead view " +
                                        std::to_string(v));
        }
    }
    auto it = std::lower_bound(keys_.begin(), keys_.end(), dead);
    const std::size_t i = static_cast<std::size_t>(it - keys_.begin());
    if (it != keys_.end() && *it == dead) {
        std::copy(weights, weights + views_, rows_.begin() + static_cast<std::ptrdiff_t>(i * views_));
        return;
    }
    keys_.insert(it, dead);
    rows_.insert(rows_.begin() + static_cast<std::ptrdiff_t>(i * views_), weights, weights + views_);
}

const float* ContingencyTable::find(DeadMask dead) const {
    auto it = std::lower_bound(keys_.begin(), keys_.end(), dead);
    if (it == keys_.end() || *it != dead) return nullptr;
    return rows_.data() + static_cast<std::size_t>(it - keys_.begin()) * views_;
}

std::vector<DeadMask> ContingencyTable::keys() const { return keys_; }

bool redistribute(const float* base, const std::uint8_t* live, std::size_t views,
                  RedistributePolicy policy, const ContingencyTable* table, float* out) {
    if (policy == RedistributePolicy::Table) {
        if (table == nullptr) throw std::invalid_argument("policy 'table' needs a contingency table");
        if (table->views() != views) {
            throw std::invalid_argument("contingency table is for " + std::to_string(table->views()) +
                                        " views, weights have " + std::to_string(views));
        }
        const DeadMask dead = dead_mask_of(live, views);
        if (const float* row = table->find(dead)) {
            bool any_live = false;
            for (std::size_t v = 0; v < views; ++v) any_live = any_live || live[v];
            std::copy(row, row + views, out);
            if (any_live) return true;
            std::fill(out, out + views, 0.0f);
            return false;
        }
    }
    return renormalize(base, live, views, out);
}

std::size_t redistribute_batch(const float* base, const std::uint8_t* live, std::size_t batch,
                               std::size_t views, RedistributePolicy policy,
                               const ContingencyTable* table, float* out) {
    std::size_t n_empty = 0;
    for (std::size_t b = 0; b < batch; ++b) {
        if (!redistribute(base, live + b * views, views, policy, table, out + b * views)) ++n_empty;
    }
    return n_empty;
}

}  // namespace slimedge
