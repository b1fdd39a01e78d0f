// Masked view pooling: the one implementation of how per-view features become one
// feature vector per frame. The planner's evaluator and the runtime aggregator both call it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace slimedge {

enum class PoolMode { Max, Mean, Weighted };

// Parses "max" / "mean" / "weighted"; throws std::invalid_argument otherwise.
PoolMode parse_pool_mode(const std::string& name);
const char* pool_mode_name(PoolMode mode);

// Shape and layout of one pooling call. All arrays are C-contiguous.
//   features: (B, V, D), int8 or float32
//   mask:     (B, V) if mask_per_frame, else (V,) shared by every frame; nonzero = live
//   weights:  (B, V) if weights_per_frame, else (V,); may be null for Max/Mean
//   out:      (B, D) float32
//   empty:    (B,) set to 1 for a frame without a usable view (its output row is zeros)
struct PoolShape {
    std::size_t batch = 0;
    std::size_t views = 0;
    std::size_t dim = 0;
    bool mask_per_frame = false;
    bool weights_per_frame = false;
};

// Weighted mode: sum_v w_v x_v / sum_v w_v over live views; a frame whose live weights sum
// to zero has no usable view. Weights must be finite and >= 0 (checked by callers).
//
// int8 features are dequantized per view: x = scale[v] * (q - zero_point[v]), scale > 0 and
// zero_point in -128..127 (checked: std::invalid_argument naming the view otherwise).
// Returns the number of frames flagged empty.
std::size_t pool_int8(const std::int8_t* features, const float* scale,
                      const std::int32_t* zero_point, const std::uint8_t* mask,
                      const float* weights, const PoolShape& shape, PoolMode mode,
                      float* out, std::uint8_t* empty);

// Throws std::invalid_argument naming the first view whose zero point is outside -128..127.
void check_int8_zero_points(const std::int32_t* zero_point, std::size_t views);

std::size_t pool_f32(const float* features, const std::uint8_t* mask, const float* weights,
                     const PoolShape& shape, PoolMode mode, float* out, std::uint8_t* empty);

}  // namespace slimedge
