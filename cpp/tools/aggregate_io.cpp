#include "aggregate_io.hpp"

#include <cinttypes>
#include <cstdint>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

namespace slimedge::tools {

namespace {

// Reads little-endian fields in order; every read names the field it is for, so a short
// file says which field it ran out in. Byte-wise assembly keeps it endian- and
// alignment-independent (32-bit ARM included).
class Reader {
public:
    Reader(const std::uint8_t* data, std::size_t size, const std::string& name)
        : data_(data), size_(size), name_(name) {}

    [[noreturn]] void fail(const std::string& msg) const { throw InputError(name_ + ": " + msg); }

    void need(std::uint64_t bytes, const std::string& field) const {
        if (bytes > size_ - pos_) {
            std::ostringstream s;
            s << "truncated: field '" << field << "' needs " << bytes << " bytes at offset "
              << pos_ << ", the file has " << size_ << " bytes";
            fail(s.str());
        }
    }

    std::uint64_t uint(unsigned bytes, const std::string& field) {
        need(bytes, field);
        std::uint64_t v = 0;
        for (unsigned i = 0; i < bytes; ++i) v |= std::uint64_t{data_[pos_ + i]} << (8 * i);
        pos_ += bytes;
        return v;
    }

    float f32(const std::string& field) {
        const auto bits = static_cast<std::uint32_t>(uint(4, field));
        float f;
        std::memcpy(&f, &bits, sizeof f);
        return f;
    }

    std::int32_t i32(const std::string& field) {
        const auto bits = static_cast<std::uint32_t>(uint(4, field));
        std::int32_t v;
        std::memcpy(&v, &bits, sizeof v);
        return v;
    }

    const std::uint8_t* bytes(std::size_t n, const std::string& field) {
        need(n, field);
        const std::uint8_t* p = data_ + pos_;
        pos_ += n;
        return p;
    }

    std::size_t pos() const { return pos_; }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t pos_ = 0;
    const std::string& name_;
};

std::string indexed(const char* field, std::size_t i) {
    return std::string(field) + "[" + std::to_string(i) + "]";
}

std::string indexed(const char* field, std::size_t i, std::size_t j) {
    return indexed(field, i) + "[" + std::to_string(j) + "]";
}

std::string float_str(float f) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(f));
    return buf;
}

}  // namespace

AggregateInput parse_aggregate_input(const std::uint8_t* data, std::size_t size,
                                     const std::string& name) {
    Reader r(data, size, name);
    AggregateInput in;

    const std::uint8_t* magic = r.bytes(4, "magic");
    if (std::memcmp(magic, kAggregateMagic, 4) != 0) {
        char got[24];
        std::snprintf(got, sizeof got, "%02x %02x %02x %02x", magic[0], magic[1], magic[2],
                      magic[3]);
        r.fail(std::string("field 'magic': not a SlimEdge aggregator input (expected bytes "
                           "'SEAG', got hex ") + got + ")");
    }
    const auto version = r.uint(2, "version");
    if (version != kAggregateVersion) {
        r.fail("field 'version': this program reads version " +
               std::to_string(kAggregateVersion) + ", the file is version " +
               std::to_string(version));
    }
    const auto mode = r.uint(1, "mode");
    switch (mode) {
        case 0: in.mode = PoolMode::Max; break;
        case 1: in.mode = PoolMode::Mean; break;
        case 2: in.mode = PoolMode::Weighted; break;
        default:
            r.fail("field 'mode': expected 0 (max), 1 (mean) or 2 (weighted), got " +
                   std::to_string(mode));
    }
    const auto policy = r.uint(1, "policy");
    switch (policy) {
        case 0: in.policy = RedistributePolicy::Renormalize; break;
        case 1: in.policy = RedistributePolicy::Table; break;
        default:
            r.fail("field 'policy': expected 0 (renormalize) or 1 (table), got " +
                   std::to_string(policy));
    }
    const std::uint64_t B = r.uint(4, "B"), V = r.uint(4, "V"), D = r.uint(4, "D");
    const std::uint64_t T = r.uint(4, "table_rows");
    const std::uint64_t reserved = r.uint(8, "reserved");
    if (reserved != 0) r.fail("field 'reserved': must be zero in version 1");
    if (B == 0) r.fail("field 'B': need at least one frame, got 0");
    if (V == 0 || V > 64) {
        r.fail("field 'V': expected 1..64 views (failure sets are 64-bit masks), got " +
               std::to_string(V));
    }
    if (D == 0) r.fail("field 'D': need at least one feature per view, got 0");
    if (in.policy == RedistributePolicy::Renormalize && T != 0) {
        r.fail("field 'table_rows': " + std::to_string(T) +
               " rows given but policy is 'renormalize' (use policy 'table')");
    }

    // Sizes in 64 bits before anything is allocated: size_t is 32 bits on armhf, and a
    // corrupt header must not turn into a huge allocation. V <= 64 keeps every section but
    // the features below 2^42 bytes; D is bounded by division.
    const std::uint64_t BV = B * V;
    const std::uint64_t before_features =
        kAggregateHeaderBytes + 4 * V + 4 * V + BV + 4 * V + T * (8 + 4 * V);
    if (D > (UINT64_MAX - before_features) / BV) {
        r.fail("field 'D': B=" + std::to_string(B) + ", V=" + std::to_string(V) + ", D=" +
               std::to_string(D) + " describe more bytes than any file holds");
    }
    const std::uint64_t expected = before_features + BV * D;
    const std::pair<const char*, std::uint64_t> sections[] = {
        {"scale", 4 * V}, {"zero_point", 4 * V}, {"live", BV}, {"base_weights", 4 * V},
        {"table", T * (8 + 4 * V)}, {"features", BV * D}};
    if (expected != size) {
        std::ostringstream s;
        s << (size < expected ? "truncated" : "wrong size") << ": the header (B=" << B
          << ", V=" << V << ", D=" << D << ", table_rows=" << T << ") describes " << expected
          << " bytes, the file has " << size << " bytes";
        if (size < expected) {
            std::uint64_t start = kAggregateHeaderBytes;
            for (const auto& sec : sections) {
                if (size < start + sec.second) {
                    s << ": it ends inside field '" << sec.first << "' (bytes " << start
                      << ".." << start + sec.second << ")";
                    break;
                }
                start += sec.second;
            }
        } else {
            s << ": " << size - expected << " unexpected bytes after field 'features'";
        }
        r.fail(s.str());
    }
    in.batch = static_cast<std::uint32_t>(B);
    in.views = static_cast<std::uint32_t>(V);
    in.dim = static_cast<std::uint32_t>(D);
    const std::size_t nB = in.batch, nV = in.views, nD = in.dim;

    in.scale.resize(nV);
    for (std::size_t v = 0; v < nV; ++v) {
        const float s = r.f32(indexed("scale", v));
        if (!std::isfinite(s) || !(s > 0.0f)) {
            r.fail("field '" + indexed("scale", v) + "': a quantization scale must be finite "
                   "and > 0, got " + float_str(s));
        }
        in.scale[v] = s;
    }
    in.zero_point.resize(nV);
    for (std::size_t v = 0; v < nV; ++v) {
        const std::int32_t zp = r.i32(indexed("zero_point", v));
        if (zp < -128 || zp > 127) {
            r.fail("field '" + indexed("zero_point", v) + "': an int8 zero point must be in "
                   "-128..127, got " + std::to_string(zp));
        }
        in.zero_point[v] = zp;
    }
    in.live.resize(nB * nV);
    const std::uint8_t* live = r.bytes(nB * nV, "live");
    for (std::size_t i = 0; i < nB * nV; ++i) {
        if (live[i] > 1) {
            r.fail("field '" + indexed("live", i / nV, i % nV) + "': expected 0 or 1, got " +
                   std::to_string(live[i]));
        }
        in.live[i] = live[i];
    }
    in.base_weights.resize(nV);
    for (std::size_t v = 0; v < nV; ++v) {
        const float w = r.f32(indexed("base_weights", v));
        if (!std::isfinite(w) || w < 0.0f) {
            r.fail("field '" + indexed("base_weights", v) + "': expected a finite weight >= 0, "
                   "got " + float_str(w));
        }
        in.base_weights[v] = w;
    }
    if (in.policy == RedistributePolicy::Table) in.table.emplace(nV);
    std::vector<float> row(nV);
    for (std::size_t t = 0; t < T; ++t) {
        const std::string field = indexed("table", t);
        const std::uint64_t dead = r.uint(8, field + ".dead_mask");
        for (std::size_t v = 0; v < nV; ++v) row[v] = r.f32(indexed(field.c_str(), v));
        if (in.table->find(dead) != nullptr) {
            r.fail("field '" + field + "': dead mask " + std::to_string(dead) +
                   " appears twice");
        }
        try {
            in.table->set(dead, row.data());
        } catch (const std::invalid_argument& e) {
            r.fail("field '" + field + "': " + e.what());
        }
    }
    const std::uint8_t* q = r.bytes(nB * nV * nD, "features");
    in.features.resize(nB * nV * nD);
    std::memcpy(in.features.data(), q, in.features.size());
    return in;
}

AggregateInput read_aggregate_input(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) throw InputError(path + ": cannot open for reading");
    std::vector<std::uint8_t> data((std::istreambuf_iterator<char>(f)),
                                   std::istreambuf_iterator<char>());
    if (f.bad()) throw InputError(path + ": read error");
    return parse_aggregate_input(data.data(), data.size(), path);
}

AggregateResult aggregate(const AggregateInput& in) {
    const std::size_t B = in.batch, V = in.views, D = in.dim;
    AggregateResult r;
    r.weights.resize(B * V);
    r.from_table.assign(B, 0);
    const ContingencyTable* table = in.table ? &*in.table : nullptr;
    redistribute_batch(in.base_weights.data(), in.live.data(), B, V, in.policy, table,
                       r.weights.data());
    if (table != nullptr) {
        for (std::size_t b = 0; b < B; ++b) {
            r.from_table[b] = table->find(dead_mask_of(in.live.data() + b * V, V)) ? 1 : 0;
        }
    }
    r.pooled.resize(B * D);
    r.empty.resize(B);
    PoolShape shape{B, V, D, /*mask_per_frame=*/true, /*weights_per_frame=*/true};
    pool_int8(in.features.data(), in.scale.data(), in.zero_point.data(), in.live.data(),
              r.weights.data(), shape, in.mode, r.pooled.data(), r.empty.data());
    return r;
}

namespace {

void put_value(std::string& out, const char* kind, std::size_t i, float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    char buf[96];
    std::snprintf(buf, sizeof buf, "%s %zu 0x%08" PRIx32 " %.6g\n", kind, i, bits,
                  static_cast<double>(f));
    out += buf;
}

}  // namespace

std::string format_result(const AggregateInput& in, const AggregateResult& r) {
    const std::size_t B = in.batch, V = in.views, D = in.dim;
    std::string out;
    char buf[160];
    std::snprintf(buf, sizeof buf, "slimedge-aggregate %u\nB=%zu V=%zu D=%zu mode=%s policy=%s\n",
                  static_cast<unsigned>(kAggregateVersion), B, V, D, pool_mode_name(in.mode),
                  in.policy == RedistributePolicy::Table ? "table" : "renormalize");
    out += buf;
    for (std::size_t b = 0; b < B; ++b) {
        std::string live;
        bool any_live = false;
        for (std::size_t v = 0; v < V; ++v) {
            live += in.live[b * V + v] ? '1' : '0';
            any_live = any_live || in.live[b * V + v];
        }
        std::snprintf(buf, sizeof buf,
                      "frame %zu live=%s dead_mask=0x%" PRIx64 " weights_from=%s empty=%u\n", b,
                      live.c_str(), dead_mask_of(in.live.data() + b * V, V),
                      r.from_table[b] ? "table" : (any_live ? "renormalize" : "none"),
                      static_cast<unsigned>(r.empty[b]));
        out += buf;
        for (std::size_t v = 0; v < V; ++v) put_value(out, "weight", v, r.weights[b * V + v]);
        for (std::size_t d = 0; d < D; ++d) put_value(out, "pooled", d, r.pooled[b * D + d]);
    }
    return out;
}

}  // namespace slimedge::tools
