// slimedge._core: thin pybind11 layer over the C++ aggregation core.
// Large arrays are used in place when they are C-contiguous and of the right dtype;
// every shape/dtype problem is a ValueError naming the argument and what was seen.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "slimedge/pool.hpp"
#include "slimedge/redistribute.hpp"

namespace py = pybind11;
using namespace slimedge;

namespace {

std::string shape_str(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t i = 0; i < a.ndim(); ++i) {
        if (i) s << ", ";
        s << a.shape(i);
    }
    if (a.ndim() == 1) s << ",";
    s << ")";
    return s.str();
}

std::string dtype_str(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

[[noreturn]] void fail(const std::string& msg) { throw py::value_error(msg); }

py::array as_array(const py::handle& obj, const char* name) {
    if (obj.is_none()) fail(std::string(name) + ": expected an array, got None");
    // ensure() returns a null handle (Python error cleared) when numpy cannot convert.
    py::array a = py::array::ensure(obj);
    if (!a) fail(std::string(name) + ": could not be read as an array");
    return a;
}

// A C-contiguous array of T: the same buffer when possible, else one copy.
template <typename T>
using CArray = py::array_t<T, py::array::c_style | py::array::forcecast>;

template <typename T>
CArray<T> contiguous(const py::array& a) {
    return CArray<T>::ensure(a);
}

// Live mask as uint8 (nonzero = live). bool/uint8 are viewed in place.
CArray<std::uint8_t> mask_u8(const py::handle& obj, const char* name) {
    py::array a = as_array(obj, name);
    const char kind = a.dtype().kind();
    if (kind != 'b' && kind != 'u' && kind != 'i') {
        fail(std::string(name) + ": expected a bool or integer live mask, got dtype " + dtype_str(a) +
             " with shape " + shape_str(a));
    }
    if (a.dtype().itemsize() == 1 && (a.flags() & py::array::c_style)) {
        return CArray<std::uint8_t>(
            a.attr("view")(py::dtype::of<std::uint8_t>()));
    }
    py::array nz = py::reinterpret_steal<py::array>(
        py::module_::import("numpy").attr("not_equal")(a, 0).release());
    return contiguous<std::uint8_t>(nz.attr("view")(py::dtype::of<std::uint8_t>()));
}

CArray<float> float_vector(const py::handle& obj, const char* name,
                                                    bool nonnegative) {
    py::array a = as_array(obj, name);
    const char kind = a.dtype().kind();
    if (kind != 'f' && kind != 'i' && kind != 'u') {
        fail(std::string(name) + ": expected real numbers, got dtype " + dtype_str(a));
    }
    auto f = CArray<float>::ensure(a);
    if (!f) fail(std::string(name) + ": could not be converted to float32");
    const float* p = f.data();
    for (py::ssize_t i = 0; i < f.size(); ++i) {
        if (!std::isfinite(p[i]) || (nonnegative && p[i] < 0.0f)) {
            std::ostringstream s;
            s << name << ": entry " << i << " is " << p[i] << "; expected a finite"
              << (nonnegative ? " value >= 0" : " value");
            fail(s.str());
        }
    }
    return f;
}

void expect_shape(const py::array& a, const char* name, std::vector<py::ssize_t> want,
                  const std::string& meaning) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(want.size());
    for (std::size_t i = 0; ok && i < want.size(); ++i) ok = a.shape(i) == want[i];
    if (!ok) fail(std::string(name) + ": expected shape " + meaning + ", got " + shape_str(a));
}

// Zero points as int32 without silent truncation: wide integers are read at full width
// and any value an int32 cannot hold is refused, naming its view (range: pool_int8).
CArray<std::int32_t> zero_points_i32(const py::array& raw) {
    const bool is_unsigned = raw.dtype().kind() == 'u';
    auto wide_i = is_unsigned ? CArray<std::int64_t>() : contiguous<std::int64_t>(raw);
    auto wide_u = is_unsigned ? contiguous<std::uint64_t>(raw) : CArray<std::uint64_t>();
    CArray<std::int32_t> out(raw.size());
    std::int32_t* o = out.mutable_data();
    for (py::ssize_t v = 0; v < raw.size(); ++v) {
        const bool fits = is_unsigned
            ? wide_u.data()[v] <= static_cast<std::uint64_t>(std::numeric_limits<std::int32_t>::max())
            : (wide_i.data()[v] >= std::numeric_limits<std::int32_t>::min() &&
               wide_i.data()[v] <= std::numeric_limits<std::int32_t>::max());
        if (!fits) {
            fail("zero_point: view " + std::to_string(v) + " has " +
                 (is_unsigned ? std::to_string(wide_u.data()[v]) : std::to_string(wide_i.data()[v])) +
                 "; an int8 zero point must be in -128..127");
        }
        o[v] = static_cast<std::int32_t>(is_unsigned ? static_cast<std::int64_t>(wide_u.data()[v])
                                                     : wide_i.data()[v]);
    }
    return out;
}

struct Shapes {
    bool single;  // one frame (V, D) rather than a batch (B, V, D)
    PoolShape s;
};

py::tuple pool(const py::handle& features_obj, const py::handle& mask_obj,
               const py::handle& weights_obj, const std::string& mode_name,
               const py::handle& scale_obj, const py::handle& zero_point_obj) {
    const PoolMode mode = [&] {
        try {
            return parse_pool_mode(mode_name);
        } catch (const std::invalid_argument& e) {
            fail(std::string("mode: ") + e.what());
        }
    }();
    py::array feats = as_array(features_obj, "features");
    if (feats.ndim() != 2 && feats.ndim() != 3) {
        fail("features: expected shape (V, D) for one frame or (B, V, D) for a batch, got " +
             shape_str(feats));
    }
    const bool single = feats.ndim() == 2;
    PoolShape s;
    s.batch = single ? 1 : static_cast<std::size_t>(feats.shape(0));
    s.views = static_cast<std::size_t>(feats.shape(single ? 0 : 1));
    s.dim = static_cast<std::size_t>(feats.shape(single ? 1 : 2));
    if (s.views == 0) fail("features: need at least one view, got shape " + shape_str(feats));
    const auto B = static_cast<py::ssize_t>(s.batch), V = static_cast<py::ssize_t>(s.views);
    const std::string vd = single ? "(V, D)" : "(B, V, D)";

    auto mask = mask_u8(mask_obj, "mask");
    if (mask.ndim() == 1) {
        expect_shape(mask, "mask", {V}, "(V,) = (" + std::to_string(V) + ",) for features " +
                                            shape_str(feats));
        s.mask_per_frame = false;
    } else if (!single && mask.ndim() == 2) {
        expect_shape(mask, "mask", {B, V}, "(B, V) = (" + std::to_string(B) + ", " +
                                               std::to_string(V) + ") for features " +
                                               shape_str(feats));
        s.mask_per_frame = true;
    } else {
        fail(std::string("mask: expected shape ") + (single ? "(V,)" : "(V,) or (B, V)") +
             " for features " + shape_str(feats) + ", got " + shape_str(mask));
    }

    std::optional<CArray<float>> weights;
    if (!weights_obj.is_none()) {
        weights = float_vector(weights_obj, "weights", true);
        if (weights->ndim() == 1) {
            expect_shape(*weights, "weights", {V}, "(V,) = (" + std::to_string(V) + ",)");
        } else if (!single && weights->ndim() == 2) {
            expect_shape(*weights, "weights", {B, V}, "(B, V) = (" + std::to_string(B) + ", " +
                                                          std::to_string(V) + ")");
            s.weights_per_frame = true;
        } else {
            fail("weights: expected shape (V,) or (B, V), got " + shape_str(*weights));
        }
    } else if (mode == PoolMode::Weighted) {
        fail("weights: mode 'weighted' needs per-view weights of shape (V,) or (B, V)");
    }
    const float* wptr = weights ? weights->data() : nullptr;

    py::array_t<float> out(single ? std::vector<py::ssize_t>{static_cast<py::ssize_t>(s.dim)}
                                  : std::vector<py::ssize_t>{B, static_cast<py::ssize_t>(s.dim)});
    py::array_t<bool> empty(std::vector<py::ssize_t>{B});
    auto* empty_ptr = reinterpret_cast<std::uint8_t*>(empty.mutable_data());
    float* out_ptr = out.mutable_data();

    const char kind = feats.dtype().kind();
    const auto itemsize = feats.dtype().itemsize();
    if (kind == 'i' && itemsize == 1) {
        if (scale_obj.is_none() || zero_point_obj.is_none()) {
            fail("scale, zero_point: int8 features need per-view scale and zero_point of shape (V,)");
        }
        auto scale = float_vector(scale_obj, "scale", true);
        expect_shape(scale, "scale", {V}, "(V,) = (" + std::to_string(V) + ",)");
        for (py::ssize_t v = 0; v < V; ++v) {
            if (!(scale.data()[v] > 0.0f)) {
                fail("scale: entry " + std::to_string(v) + " must be > 0 (a quantization scale)");
            }
        }
        py::array zp_raw = as_array(zero_point_obj, "zero_point");
        if (zp_raw.dtype().kind() != 'i' && zp_raw.dtype().kind() != 'u') {
            fail("zero_point: expected integers, got dtype " + dtype_str(zp_raw));
        }
        expect_shape(zp_raw, "zero_point", {V}, "(V,) = (" + std::to_string(V) + ",)");
        auto zp = zero_points_i32(zp_raw);
        try {
            check_int8_zero_points(zp.data(), s.views);
        } catch (const std::invalid_argument& e) {
            fail(e.what());
        }
        auto q = contiguous<std::int8_t>(feats);
        py::gil_scoped_release nogil;
        pool_int8(q.data(), scale.data(), zp.data(), mask.data(), wptr, s, mode, out_ptr, empty_ptr);
    } else if (kind == 'f' && itemsize == 4) {
        if (!scale_obj.is_none() || !zero_point_obj.is_none()) {
            fail("scale, zero_point: only int8 features take quantization parameters; features are "
                 "float32");
        }
        auto x = contiguous<float>(feats);
        py::gil_scoped_release nogil;
        pool_f32(x.data(), mask.data(), wptr, s, mode, out_ptr, empty_ptr);
    } else {
        fail("features: expected dtype int8 or float32, got " + dtype_str(feats) + " with shape " +
             shape_str(feats) + " " + vd);
    }
    if (single) return py::make_tuple(out, py::bool_(empty_ptr[0] != 0));
    return py::make_tuple(out, empty);
}

RedistributePolicy policy_of(const std::string& name) {
    try {
        return parse_policy(name);
    } catch (const std::invalid_argument& e) {
        fail(std::string("policy: ") + e.what());
    }
}

// A dead-view bitmask from Python: any integer (int, numpy integer) in 0 .. 2**64 - 1.
// Unsigned 64-bit throughout, so view 63 can be marked dead. nullopt when out of range.
std::optional<DeadMask> dead_mask_arg(const py::handle& dead) {
    py::object index;
    try {
        index = py::module_::import("operator").attr("index")(dead);
    } catch (const py::error_already_set&) {
        fail("dead mask must be an integer, got " +
             py::str(py::type::of(dead).attr("__name__")).cast<std::string>());
    }
    if (index < py::int_(0) || index > py::int_(std::numeric_limits<DeadMask>::max())) {
        return std::nullopt;
    }
    return index.cast<DeadMask>();
}

void set_row(ContingencyTable& t, const py::handle& dead, const py::handle& weights) {
    const auto maybe = dead_mask_arg(dead);
    if (!maybe) {
        fail("dead mask must be in 0 .. 2**64 - 1, got " + py::str(dead).cast<std::string>());
    }
    const DeadMask mask = *maybe;
    auto w = float_vector(weights, "weights", true);
    expect_shape(w, "weights", {static_cast<py::ssize_t>(t.views())},
                 "(V,) = (" + std::to_string(t.views()) + ",)");
    try {
        t.set(static_cast<DeadMask>(mask), w.data());
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
}

py::array_t<float> redistribute_py(const py::handle& base_obj, const py::handle& live_obj,
                                   const std::string& policy_name,
                                   const ContingencyTable* table) {
    const RedistributePolicy policy = policy_of(policy_name);
    auto base = float_vector(base_obj, "base_weights", true);
    if (base.ndim() != 1 || base.shape(0) == 0) {
        fail("base_weights: expected shape (V,), got " + shape_str(base));
    }
    const auto V = base.shape(0);
    auto live = mask_u8(live_obj, "live");
    if (policy == RedistributePolicy::Table) {
        if (table == nullptr) fail("table: policy 'table' needs a ContingencyTable");
        if (static_cast<py::ssize_t>(table->views()) != V) {
            fail("table: built for " + std::to_string(table->views()) + " views, base_weights has " +
                 std::to_string(V));
        }
    }
    const bool vector_live = live.ndim() == 1;
    if (vector_live) {
        expect_shape(live, "live", {V}, "(V,) = (" + std::to_string(V) + ",)");
    } else if (live.ndim() != 2 || live.shape(1) != V) {
        fail("live: expected shape (V,) or (B, V) with V = " + std::to_string(V) + ", got " +
             shape_str(live));
    }
    const py::ssize_t B = vector_live ? 1 : live.shape(0);
    py::array_t<float> out(vector_live ? std::vector<py::ssize_t>{V}
                                       : std::vector<py::ssize_t>{B, V});
    float* o = out.mutable_data();
    {
        // The table is a Python-owned, mutable object whose set() (run under the GIL) may
        // reallocate its rows: while C++ reads a table the GIL stays held, so no set() can
        // run meanwhile. Without a table nothing Python-owned is read: the GIL is released.
        std::optional<py::gil_scoped_release> nogil;
        if (policy != RedistributePolicy::Table) nogil.emplace();
        redistribute_batch(base.data(), live.data(), static_cast<std::size_t>(B),
                           static_cast<std::size_t>(V), policy, table, o);
    }
    return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "SlimEdge C++ aggregation core: masked view pooling and failure-aware weights.";

    m.def("pool", &pool, py::arg("features"), py::arg("mask"), py::arg("weights") = py::none(),
          py::kw_only(), py::arg("mode") = "max", py::arg("scale") = py::none(),
          py::arg("zero_point") = py::none(),
          R"doc(Pool per-view features over the live views.

features: (V, D) one frame or (B, V, D) a batch, int8 (with per-view `scale` and
`zero_point` of shape (V,)) or float32. mask: (V,) or (B, V), nonzero = live.
weights: (V,) or (B, V), >= 0; required for mode 'weighted'.
mode: 'max' | 'mean' | 'weighted' (weighted mean over live views).

Returns (pooled, empty): pooled (B, D) float32 (or (D,) for one frame); empty (B,) bool
(or one bool) flags frames without a usable view, whose pooled row is zeros.)doc");

    m.def("dead_mask", [](const py::handle& live_obj) {
              auto live = mask_u8(live_obj, "live");
              if (live.ndim() != 1 || live.shape(0) > 64) {
                  fail("live: expected shape (V,) with V <= 64, got " + shape_str(live));
              }
              return dead_mask_of(live.data(), static_cast<std::size_t>(live.shape(0)));
          },
          py::arg("live"), "Bitmask of dead views (bit v set = view v dead).");

    py::class_<ContingencyTable>(m, "ContingencyTable",
                                 "Failure set (dead-view bitmask) -> aggregation weights.")
        .def(py::init([](std::size_t views, const py::object& rows) {
                 std::unique_ptr<ContingencyTable> t;
                 try {
                     t = std::make_unique<ContingencyTable>(views);
                 } catch (const std::invalid_argument& e) {
                     fail(std::string("views: ") + e.what());
                 }
                 if (!rows.is_none()) {
                     for (auto item : rows.cast<py::dict>()) set_row(*t, item.first, item.second);
                 }
                 return t;
             }),
             py::arg("views"), py::arg("rows") = py::none())
        .def("set", &set_row, py::arg("dead"), py::arg("weights"))
        .def("get",
             [](const ContingencyTable& t, const py::handle& dead_obj) -> py::object {
                 const auto dead = dead_mask_arg(dead_obj);
                 if (!dead) return py::none();
                 const float* row = t.find(*dead);
                 if (row == nullptr) return py::none();
                 py::array_t<float> out(static_cast<py::ssize_t>(t.views()));
                 std::copy(row, row + t.views(), out.mutable_data());
                 return out;
             },
             py::arg("dead"))
        .def("keys", &ContingencyTable::keys)
        .def_property_readonly("views", &ContingencyTable::views)
        .def("__len__", &ContingencyTable::size)
        .def("__contains__", [](const ContingencyTable& t, const py::handle& dead_obj) {
            const auto dead = dead_mask_arg(dead_obj);
            return dead && t.find(*dead) != nullptr;
        });

    m.def("redistribute", &redistribute_py, py::arg("base_weights"), py::arg("live"),
          py::arg("policy") = "renormalize", py::arg("table") = nullptr,
          R"doc(Aggregation weights for the live views.

base_weights: (V,) >= 0. live: (V,) or (B, V), nonzero = live.
policy 'renormalize': the dead views' weight is spread over the survivors in proportion
(survivors with zero total weight share it equally). policy 'table': the row of `table`
for the dead-view set, falling back to renormalize for sets not in the table.
A frame with no live view gets all-zero weights.)doc");
}
