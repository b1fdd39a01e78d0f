#include "slimedge/pool.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

namespace slimedge {

PoolMode parse_pool_mode(const std::string& name) {
    if (name == "max") return PoolMode::Max;
    if (name == "mean") return PoolMode::Mean;
    if (name == "weighted") return PoolMode::Weighted;
    throw std::invalid_argument("unknown pooling mode '" + name +
                                "' (expected 'max', 'mean' or 'weighted')");
}

const char* pool_mode_name(PoolMode mode) {
    switch (mode) {
        case PoolMode::Max: return "max";
        case PoolMode::Mean: return "mean";
        case PoolMode::Weighted: return "weighted";
    }
    return "?";
}

namespace {

// Dequantizes one view's int8 row: the value a device meant to send.
struct Int8Row {
    const std::int8_t* __restrict q;
    float scale;
    std::int32_t zero_point;
};

struct F32Row {
    const float* __restrict x;
};

// The inner loops are written so the compiler vectorizes them over D (no branches on data).
inline void max_into(float* __restrict acc, const Int8Row& r, std::size_t dim) {
    const float s = r.scale;
    const std::int32_t zp = r.zero_point;
    for (std::size_t d = 0; d < dim; ++d) {
        const float x = s * static_cast<float>(static_cast<std::int32_t>(r.q[d]) - zp);
        acc[d] = acc[d] > x ? acc[d] : x;
    }
}

inline void max_into(float* __restrict acc, const F32Row& r, std::size_t dim) {
    for (std::size_t d = 0; d < dim; ++d) {
        const float x = r.x[d];
        acc[d] = acc[d] > x ? acc[d] : x;
    }
}

inline void axpy_into(float* __restrict acc, float w, const Int8Row& r, std::size_t dim) {
    const float s = r.scale;
    const std::int32_t zp = r.zero_point;
    for (std::size_t d = 0; d < dim; ++d) {
        acc[d] += w * (s * static_cast<float>(static_cast<std::int32_t>(r.q[d]) - zp));
    }
}

inline void axpy_into(float* __restrict acc, float w, const F32Row& r, std::size_t dim) {
    for (std::size_t d = 0; d < dim; ++d) acc[d] += w * r.x[d];
}

// Pools one frame. `row(v)` gives view v's row; returns false if the frame has no usable view.
template <typename RowOf>
bool pool_frame(RowOf row, const std::uint8_t* live, const float* weights, std::size_t views,
                std::size_t dim, PoolMode mode, float* __restrict out) {
    if (mode == PoolMode::Max) {
        bool any = false;
        for (std::size_t v = 0; v < views; ++v) {
            if (!live[v]) continue;
            if (!any) {
                std::fill(out, out + dim, -std::numeric_limits<float>::infinity());
                any = true;
            }
            max_into(out, row(v), dim);
        }
        if (!any) std::fill(out, out + dim, 0.0f);
        return any;
    }
    std::fill(out, out + dim, 0.0f);
    // Weight totals in double, as renormalize() computes them: one precision for weights.
    double total = 0.0;
    for (std::size_t v = 0; v < views; ++v) {
        if (!live[v]) continue;
        const float w = (mode == PoolMode::Mean) ? 1.0f : weights[v];
        if (w == 0.0f) continue;
        axpy_into(out, w, row(v), dim);
        total += w;
    }
    if (total <= 0.0) {
        std::fill(out, out + dim, 0.0f);
        return false;
    }
    const float inv = static_cast<float>(1.0 / total);
    for (std::size_t d = 0; d < dim; ++d) out[d] *= inv;
    return true;
}

template <typename RowOfFrame>
std::size_t pool_batch(RowOfFrame row_of_frame, const std::uint8_t* mask, const float* weights,
                       const PoolShape& s, PoolMode mode, float* out, std::uint8_t* empty) {
    if (mode == PoolMode::Weighted && weights == nullptr) {
        throw std::invalid_argument("weighted pooling needs weights");
    }
    std::size_t n_empty = 0;
    for (std::size_t b = 0; b < s.batch; ++b) {
        const std::uint8_t* live = s.mask_per_frame ? mask + b * s.views : mask;
        const float* w = weights == nullptr ? nullptr
                         : (s.weights_per_frame ? weights + b * s.views : weights);
        const bool ok = pool_frame(row_of_frame(b), live, w, s.views, s.dim, mode, out + b * s.dim);
        if (empty != nullptr) empty[b] = ok ? 0 : 1;
        n_empty += ok ? 0 : 1;
    }
    return n_empty;
}

}  // namespace

void check_int8_zero_points(const std::int32_t* zero_point, std::size_t views) {
    for (std::size_t v = 0; v < views; ++v) {
        if (zero_point[v] < -128 || zero_point[v] > 127) {
            throw std::invalid_argument("zero_point: view " + std::to_string(v) + " has " +
                                        std::to_string(zero_point[v]) +
                                        "; an int8 zero point must be in -128..127");
        }
    }
}

std::size_t pool_int8(const std::int8_t* features, const float* scale,
                      const std::int32_t* zero_point, const std::uint8_t* mask,
                      const float* weights, const PoolShape& shape, PoolMode mode, float* out,
                      std::uint8_t* empty) {
    const std::size_t V = shape.views, D = shape.dim;
    check_int8_zero_points(zero_point, V);
    auto row_of_frame = [&](std::size_t b) {
        const std::int8_t* frame = features + b * V * D;
        return [=](std::size_t v) { return Int8Row{frame + v * D, scale[v], zero_point[v]}; };
    };
    return pool_batch(row_of_frame, mask, weights, shape, mode, out, empty);
}

std::size_t pool_f32(const float* features, const std::uint8_t* mask, const float* weights,
                     const PoolShape& shape, PoolMode mode, float* out, std::uint8_t* empty) {
    const std::size_t V = shape.views, D = shape.dim;
    auto row_of_frame = [&](std::size_t b) {
        const float* frame = features + b * V * D;
        return [=](std::size_t v) { return F32Row{frame + v * D}; };
    };
    return pool_batch(row_of_frame, mask, weights, shape, mode, out, empty);
}

}  // namespace slimedge
