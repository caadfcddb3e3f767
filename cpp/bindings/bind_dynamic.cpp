// SPDX-License-Identifier: Apache-2.0
// Binding of the dynamic-table id map (cpp/embedding/dynamic_table.h): a Python object owning one map; arrays
// cross as host int64 / float64 / uint8 vectors checked here. The GIL stays held: one map is never resolved by
// two Python threads at once.
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/vector.h>

#include <cstdint>
#include <cmath>
#include <cstring>
#include <string>
#include <optional>
#include <utility>
#include <vector>

#include "bindings/checks.h"
#include "embedding/dynamic_table.h"
#ifdef RECOPS_WITH_CUDA
#include "embedding/embedding_cuda.h"
#endif

namespace recops::bindings {
namespace {

namespace emb = recops::embedding;
constexpr const char* kOp = "DynamicTable";
// Routing salt: the owner hash differs from the slot hash, so one rank's ids still fill all of its slots.
constexpr uint64_t kRouteSalt = 0x2545f4914f6cdd1dULL;

template <typename T>
T* host_out(const char* arg, Array& a, int64_t len) {
  if (is_cuda(a) || a.dtype() != nb::dtype<T>() || a.ndim() != 1) {
    type_error(kOp, ": ", arg, " must be a 1-D cpu ", dtype_name(nb::dtype<T>()), " array, got ",
               dtype_name(a.dtype()), " on ", device_name(a));
  }
  check_dim(kOp, arg, a, 0, len);
  check_contiguous(kOp, arg, a);
  return static_cast<T*>(a.data());
}

std::pair<int64_t, int64_t> resolve(emb::DynamicIdMap& map, Array ids, Array rows, bool training, double now,
                                    int num_threads, Array new_rows, Array new_ids) {
  const int64_t* in = host_vec<int64_t>(kOp, "ids", ids);
  const int64_t n = static_cast<int64_t>(ids.shape(0));
  int64_t* out = host_out<int64_t>("rows", rows, n);
  int64_t* nr = host_out<int64_t>("new_rows", new_rows, training ? n : static_cast<int64_t>(new_rows.shape(0)));
  int64_t* ni = host_out<int64_t>("new_ids", new_ids, training ? n : static_cast<int64_t>(new_ids.shape(0)));
  if (!std::isfinite(now)) value_error(kOp, ": now must be finite, got ", std::to_string(now));
  const emb::ResolveResult r = map.resolve(in, n, out, training, now, num_threads, nr, ni);
  return {r.grow_to, r.num_new};
}

std::pair<int64_t, int64_t> resolve_many(const std::vector<emb::DynamicIdMap*>& maps, Array ids, Array bounds,
                                         Array rows, bool training, double now, int num_threads, Array new_rows,
                                         Array new_ids, Array new_counts) {
  const int64_t n = static_cast<int64_t>(ids.shape(0));
  const int64_t nm = static_cast<int64_t>(maps.size());
  const int64_t* in = host_vec<int64_t>(kOp, "ids", ids);
  const int64_t* bd = host_vec<int64_t>(kOp, "bounds", bounds, nm + 1);
  for (int64_t t = 0; t < nm; ++t) {
    if (maps[t] == nullptr) type_error(kOp, ": maps[", std::to_string(t), "] is None");
  }
  if (bd[0] != 0 || bd[nm] != n) {
    value_error(kOp, ": bounds must start at 0 and end at len(ids)=", std::to_string(n));
  }
  for (int64_t t = 0; t < nm; ++t) {
    if (bd[t + 1] < bd[t]) value_error(kOp, ": bounds must be non-decreasing, got bounds[", std::to_string(t), "]=",
                                       std::to_string(bd[t]), " > ", std::to_string(bd[t + 1]));
  }
  int64_t* out = host_out<int64_t>("rows", rows, n);
  int64_t* nr = host_out<int64_t>("new_rows", new_rows, n);
  int64_t* ni = host_out<int64_t>("new_ids", new_ids, n);
  int64_t* nc = host_out<int64_t>("new_counts", new_counts, nm);
  if (!std::isfinite(now)) value_error(kOp, ": now must be finite, got ", std::to_string(now));
  return emb::resolve_many(maps.data(), nm, in, bd, out, training, now, num_threads, nr, ni, nc);
}

void dump(const emb::DynamicIdMap& map, Array ids, Array rows, Array last_use, Array last_seen, Array freq) {
  const int64_t n = map.num_used();
  map.dump(host_out<int64_t>("ids", ids, n), host_out<int64_t>("rows", rows, n),
           host_out<int64_t>("last_use", last_use, n), host_out<double>("last_seen", last_seen, n),
           host_out<int64_t>("freq", freq, n));
}

void load(emb::DynamicIdMap& map, Array ids, Array rows, Array last_use, Array last_seen, Array freq, int64_t serial,
          Array sketch) {
  const int64_t n = static_cast<int64_t>(ids.shape(0));
  const int64_t* i = host_vec<int64_t>(kOp, "ids", ids);
  const int64_t* r = host_vec<int64_t>(kOp, "rows", rows, n);
  const int64_t* u = host_vec<int64_t>(kOp, "last_use", last_use, n);
  const double* s = host_vec<double>(kOp, "last_seen", last_seen, n);
  const int64_t* f = host_vec<int64_t>(kOp, "freq", freq, n);
  const uint8_t* sk = host_vec<uint8_t>(kOp, "sketch", sketch, map.sketch_size());
  map.load(kOp, i, r, u, s, f, n, serial);
  if (map.sketch_size()) std::memcpy(map.sketch_mut(), sk, static_cast<size_t>(map.sketch_size()));
}

void get_sketch(const emb::DynamicIdMap& map, Array out) {
  uint8_t* o = host_out<uint8_t>("out", out, map.sketch_size());
  if (map.sketch_size()) std::memcpy(o, map.sketch(), static_cast<size_t>(map.sketch_size()));
}

void init_values(Array ids, int64_t dim, uint64_t seed, double bound, Array out, int num_threads) {
  const int64_t* in = host_vec<int64_t>("dynamic_init_values", "ids", ids);
  const int64_t n = static_cast<int64_t>(ids.shape(0));
  if (dim < 0) value_error("dynamic_init_values: dim must be >= 0, got ", std::to_string(dim));
  if (is_cuda(out) || out.dtype() != nb::dtype<float>() || out.size() != static_cast<size_t>(n * dim)) {
    type_error("dynamic_init_values: out must be a cpu float32 array of ", std::to_string(n * dim), " elements");
  }
  check_contiguous("dynamic_init_values", "out", out);
  emb::dynamic_init_values(in, n, dim, seed, bound, static_cast<float*>(out.data()), num_threads);
}

void copy_slots(const emb::DynamicIdMap& map, Array out) {
  const int64_t bytes = map.num_slots() * static_cast<int64_t>(sizeof(emb::DynamicSlot));
  std::memcpy(host_out<uint8_t>("out", out, bytes), map.slots(), static_cast<size_t>(bytes));
}

void copy_last_seen(const emb::DynamicIdMap& map, Array out) {
  if (!map.config().has_ttl) value_error(kOp, ": copy_last_seen needs a table with a ttl");
  std::memcpy(host_out<double>("out", out, map.capacity()), map.last_seen(),
              static_cast<size_t>(map.capacity()) * sizeof(double));
}

#ifdef RECOPS_WITH_CUDA
void lookup_cuda(Array slots, int64_t num_slots, Array ids, Array rows, int64_t zero_row,
                 std::optional<Array> last_seen, double now, double ttl, uintptr_t stream) {
  constexpr const char* op = "dynamic_lookup_cuda";
  for (const Array* a : {&slots, &ids, &rows}) {
    if (!is_cuda(*a)) type_error(op, ": slots, ids and rows must be CUDA arrays");
    check_contiguous(op, "array", *a);
  }
  if (num_slots < 1 || (num_slots & (num_slots - 1)) != 0 ||
      static_cast<int64_t>(slots.nbytes()) != num_slots * static_cast<int64_t>(sizeof(emb::DynamicSlot))) {
    value_error(op, ": slots must hold num_slots (a power of two) 16-byte slots, got ", std::to_string(num_slots));
  }
  if (ids.dtype() != nb::dtype<int64_t>() || rows.dtype() != nb::dtype<int64_t>() || ids.ndim() != 1 ||
      rows.ndim() != 1 || ids.shape(0) != rows.shape(0)) {
    type_error(op, ": ids and rows must be 1-D int64 arrays of one length");
  }
  const double* seen = nullptr;
  if (last_seen) {
    if (!is_cuda(*last_seen) || last_seen->dtype() != nb::dtype<double>() ||
        static_cast<int64_t>(last_seen->size()) != zero_row) {
      type_error(op, ": last_seen must be a CUDA float64 array of one entry per row");
    }
    seen = static_cast<const double*>(last_seen->data());
  }
  recops::cuda::launch_dynamic_lookup(slots.data(), static_cast<uint64_t>(num_slots - 1),
                                      static_cast<const int64_t*>(ids.data()), static_cast<int64_t>(ids.shape(0)),
                                      static_cast<int64_t*>(rows.data()), zero_row, seen, now, ttl,
                                      as_stream(stream));
}
#endif

void route(Array ids, int64_t world, Array out) {
  const int64_t* in = host_vec<int64_t>("dynamic_route", "ids", ids);
  const int64_t n = static_cast<int64_t>(ids.shape(0));
  if (world < 1) value_error("dynamic_route: world must be >= 1, got ", std::to_string(world));
  int64_t* o = host_out<int64_t>("out", out, n);
  const uint64_t w = static_cast<uint64_t>(world);
  for (int64_t i = 0; i < n; ++i) o[i] = static_cast<int64_t>(emb::mix64(static_cast<uint64_t>(in[i]) ^ kRouteSalt) % w);
}

}  // namespace

void bind_dynamic(nb::module_& m) {
  using namespace nb::literals;
  nb::class_<emb::DynamicIdMap>(m, "DynamicIdMap",
                                "Raw int64 id -> row map of one dynamic embedding table "
                                "(cpp/embedding/dynamic_table.h).")
      .def("__init__",
           [](emb::DynamicIdMap* self, int64_t capacity, int64_t max_capacity, int64_t admit_after,
              std::optional<double> ttl, int eviction, int64_t sketch_width, int sketch_depth) {
             emb::DynamicMapConfig c;
             c.capacity = capacity;
             c.max_capacity = max_capacity;
             c.admit_after = admit_after;
             c.has_ttl = ttl.has_value();
             c.ttl = ttl.value_or(0.0);
             c.eviction = static_cast<emb::Eviction>(eviction);
             c.sketch_width = sketch_width;
             c.sketch_depth = sketch_depth;
             new (self) emb::DynamicIdMap(kOp, c);
           },
           "capacity"_a, "max_capacity"_a, "admit_after"_a, "ttl"_a.none(), "eviction"_a, "sketch_width"_a,
           "sketch_depth"_a)
      .def_prop_ro("capacity", &emb::DynamicIdMap::capacity)
      .def_prop_ro("serial", &emb::DynamicIdMap::serial)
      .def_prop_ro("num_used", &emb::DynamicIdMap::num_used)
      .def_prop_ro("sketch_size", &emb::DynamicIdMap::sketch_size)
      .def("resolve", &resolve, "ids"_a.noconvert(), "rows"_a.noconvert(), "training"_a, "now"_a, "num_threads"_a,
           "new_rows"_a.noconvert(), "new_ids"_a.noconvert(),
           "rows of ids (the zero row `capacity` for ids without one); training admits, evicts and stamps. "
           "Returns (grow_to, num_new): grow_to > 0 means nothing changed, grow and call again.")
      .def("grow", &emb::DynamicIdMap::grow, "capacity"_a)
      .def("num_live", &emb::DynamicIdMap::num_live, "now"_a)
      .def("dump", &dump, "ids"_a.noconvert(), "rows"_a.noconvert(), "last_use"_a.noconvert(),
           "last_seen"_a.noconvert(), "freq"_a.noconvert(), "Every held row (num_used of them) in row order.")
      .def("load", &load, "ids"_a.noconvert(), "rows"_a.noconvert(), "last_use"_a.noconvert(),
           "last_seen"_a.noconvert(), "freq"_a.noconvert(), "serial"_a, "sketch"_a.noconvert())
      .def("get_sketch", &get_sketch, "out"_a.noconvert())
      .def_prop_ro("num_slots", &emb::DynamicIdMap::num_slots)
      .def_prop_ro("version", &emb::DynamicIdMap::version)
      .def("copy_slots", &copy_slots, "out"_a.noconvert(), "The slots as bytes (num_slots * 16), for a device mirror.")
      .def("copy_last_seen", &copy_last_seen, "out"_a.noconvert())
      .def("restamp", &emb::DynamicIdMap::restamp, "now"_a)
      .def("clear", &emb::DynamicIdMap::clear);
  m.def("dynamic_init_values", &init_values, "ids"_a.noconvert(), "dim"_a, "seed"_a, "bound"_a,
        "out"_a.noconvert(), "num_threads"_a = 1,
        "Deterministic uniform(-bound, bound) initial rows of new ids (cpp/embedding/dynamic_table.h).");
  m.def("dynamic_resolve_many", &resolve_many, "maps"_a, "ids"_a.noconvert(), "bounds"_a.noconvert(),
        "rows"_a.noconvert(), "training"_a, "now"_a, "num_threads"_a, "new_rows"_a.noconvert(),
        "new_ids"_a.noconvert(), "new_counts"_a.noconvert(),
        "resolve of maps[t] over ids[bounds[t]:bounds[t+1]], lookups in one parallel region. Returns (t, grow_to): "
        "t = -1 when done, else map t must grow and the call resume from it.");
#ifdef RECOPS_WITH_CUDA
  m.def("dynamic_lookup_cuda", &lookup_cuda, "slots"_a.noconvert(), "num_slots"_a, "ids"_a.noconvert(),
        "rows"_a.noconvert(), "zero_row"_a, "last_seen"_a.noconvert().none(), "now"_a, "ttl"_a, "stream"_a,
        "Eval lookups on the GPU through a device mirror of a DynamicIdMap's slots.");
#endif
  m.def("dynamic_route", &route, "ids"_a.noconvert(), "world"_a, "out"_a.noconvert(),
        "out[i] = the rank owning raw id ids[i] among `world`: mix64(id ^ salt) % world.");
}

}  // namespace recops::bindings
