// SPDX-License-Identifier: Apache-2.0
// Embedding-bag CPU kernels, compiled once per instruction set: the including .cpp defines RECOPS_EMB_ISA (the
// namespace) and sets `#pragma GCC target`. Rows are processed as plain loops over D that the compiler
// vectorises for the target; 16-bit storage converts to float in registers (F16C with the avx2 target).
// Thread mapping: forward = contiguous chunks of bags; backward = contiguous chunks of unique rows (segments
// of the row-sorted positions), so no two threads ever write the same row or state and no locks are needed.
// Every header it needs comes from embedding_kernels.h, which the ISA file includes before its target pragma.
#include "embedding/embedding_kernels.h"

// _Float16 in C++: GCC >= 12 on x86 (aarch64 GCC 12 has it only in C); elsewhere the bit-level fallback.
#if defined(__FLT16_MAX__) && (defined(__x86_64__) || defined(__i386__))
#define RECOPS_EMB_HAS_FLOAT16 1
#endif

namespace recops::embedding::RECOPS_EMB_ISA {
namespace {

inline float half_to_float(uint16_t b) {
#ifdef RECOPS_EMB_HAS_FLOAT16
  _Float16 h;
  std::memcpy(&h, &b, 2);
  return static_cast<float>(h);
#else
  const uint32_t sign = (b & 0x8000u) << 16, exp = (b >> 10) & 0x1f, man = b & 0x3ff;
  float f;
  if (exp == 0) {
    f = std::ldexp(static_cast<float>(man), -24);
  } else if (exp == 31) {
    f = man ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    f = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  }
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= sign;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

inline uint16_t float_to_half(float f) {
#ifdef RECOPS_EMB_HAS_FLOAT16
  const _Float16 h = static_cast<_Float16>(f);
  uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
#else
  // Round to nearest even via the float -> half bit construction (rarely used fallback).
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const float a = std::fabs(f);
  if (std::isnan(f)) return static_cast<uint16_t>(sign | 0x7e00u);
  if (a >= 65520.f) return static_cast<uint16_t>(sign | 0x7c00u);
  if (a < 6.103515625e-05f) return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.f)));
  int e;
  const float m = std::frexp(a, &e);  // a = m * 2^e, m in [0.5, 1)
  uint32_t mant = static_cast<uint32_t>(std::nearbyint(m * 2048.f));  // 11 bits with the implicit one
  if (mant == 2048) { mant = 1024; ++e; }
  return static_cast<uint16_t>(sign | (static_cast<uint32_t>(e + 14) << 10) | (mant & 0x3ff));
#endif
}

inline float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; `noise` (16 random bits, stochastic rounding) replaces the half-way bias when set.
inline uint16_t float_to_bf16(float f, uint32_t noise, bool stochastic) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN stays NaN
  u += stochastic ? (noise & 0xffffu) : (0x7fffu + ((u >> 16) & 1u));
  return static_cast<uint16_t>(u >> 16);
}

inline uint32_t mix(uint64_t x) {  // splitmix64 finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>(x ^ (x >> 31));
}

// Element loads and stores in the accumulation type.
template <typename T> struct Elem {
  static T load(const T* p, int64_t d) { return p[d]; }
  static void store(T* p, int64_t d, T v, uint32_t, bool) { p[d] = v; }
};
template <> struct Elem<Half> {
  static float load(const Half* p, int64_t d) { return half_to_float(p[d].bits); }
  static void store(Half* p, int64_t d, float v, uint32_t, bool) { p[d].bits = float_to_half(v); }
};
template <> struct Elem<BFloat16> {
  static float load(const BFloat16* p, int64_t d) { return bf16_to_float(p[d].bits); }
  static void store(BFloat16* p, int64_t d, float v, uint32_t noise, bool sr) {
    p[d].bits = float_to_bf16(v, noise, sr);
  }
};

// Rows are gathered at random, so each lookup is a cache miss; prefetching kPrefetch lookups ahead (within the
// same feature, hence the same table) keeps enough misses in flight to approach memory bandwidth.
constexpr int64_t kPrefetch = 16;
// The backward prefetches whole unique rows (weights, state and a gradient row: about twice the lines of a forward
// lookup), so it looks fewer rows ahead; 4, 8 and 16 measured within this VM's noise of each other, 8 kept.
constexpr int64_t kPrefetchSegments = 8;

inline void prefetch_row(const void* row, int64_t bytes) {
  const char* c = static_cast<const char*>(row);
  for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(c + o, 0, 3);
}

// The forward prefetches only the first line of a row ahead: the L2 streamer fetches the rest of the row without
// holding an L1 fill buffer per line (3-6% faster than whole rows on the VM in interleaved A/B runs, never
// slower). The index is not checked yet, so the address is formed in integers (a prefetch never faults).
template <typename weight_t, typename index_t>
inline void prefetch_lookup(const weight_t* table, index_t index, int64_t stride) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(table) + static_cast<uintptr_t>(static_cast<int64_t>(index)) *
                                                               static_cast<uintptr_t>(stride * sizeof(weight_t));
  __builtin_prefetch(reinterpret_cast<const void*>(a), 0, 3);
}

// Whether `index` is a row of a table with `rows` rows (one unsigned compare catches negative ids too).
template <typename index_t>
inline bool in_range(index_t index, uint64_t rows) {
  return static_cast<uint64_t>(static_cast<int64_t>(index)) < rows;
}

// acc[d] (+)= coef * row[d] for d < dim; the int8 row carries its scale and bias after the codes.
template <typename weight_t, typename acc_t>
inline void axpy_row(const weight_t* row, int64_t dim, acc_t coef, acc_t* acc) {
  if constexpr (std::is_same_v<weight_t, uint8_t>) {
    float sb[2];
    std::memcpy(sb, row + dim, 8);
    const float s = coef * sb[0], c = coef * sb[1];
    for (int64_t d = 0; d < dim; ++d) acc[d] += s * static_cast<float>(row[d]) + c;
  } else {
    for (int64_t d = 0; d < dim; ++d) acc[d] += coef * Elem<weight_t>::load(row, d);
  }
}

template <typename weight_t, typename acc_t>
inline acc_t load_one(const weight_t* row, int64_t dim, int64_t d) {
  if constexpr (std::is_same_v<weight_t, uint8_t>) {
    float sb[2];
    std::memcpy(sb, row + dim, 8);
    return static_cast<float>(row[d]) * sb[0] + sb[1];
  } else {
    return Elem<weight_t>::load(row, d);
  }
}

template <typename out_t, typename acc_t>
inline void store_out(out_t* out, int64_t d, acc_t v) {
  if constexpr (std::is_same_v<out_t, Half> || std::is_same_v<out_t, BFloat16>) {
    Elem<out_t>::store(out, d, v, 0, false);
  } else {
    out[d] = static_cast<out_t>(v);
  }
}

// float32 rows of 8, 16, 32, 64 or 128 elements: the bag's sum stays in vector registers (GCC vector types, 8
// floats each; AVX2 ymm registers in the avx2 build) and is written, scaled, straight to the output row. 128 runs
// as two 64-wide passes over the bag (16 accumulators would spill; the second pass finds the rows in L1).
// pf_end: prefetching stops there (the end of the calling thread's chunk). Returns false for other widths.
typedef float v8f __attribute__((vector_size(32)));
typedef float v8f_u __attribute__((vector_size(32), aligned(4), may_alias));  // unaligned, aliases float

template <int NV, typename index_t>
inline void sum_rows_fixed(const float* table, int64_t stride, uint64_t rows, const index_t* indices, int64_t start,
                           int64_t end, int64_t pf_end, const float* psw, float scale, float* out, bool& bad) {
  v8f sum[NV];
  for (int v = 0; v < NV; ++v) sum[v] = v8f{};
  for (int64_t i = start; i < end; ++i) {
    if (i + kPrefetch < pf_end) prefetch_lookup(table, indices[i + kPrefetch], stride);
    if (!in_range(indices[i], rows)) {
      bad = true;
      continue;
    }
    const float* row = table + static_cast<int64_t>(indices[i]) * stride;
    const float c = psw ? psw[i] : 1.0f;
    for (int v = 0; v < NV; ++v) {
      v8f r;
      std::memcpy(&r, row + 8 * v, 32);
      sum[v] += c * r;
    }
  }
  for (int v = 0; v < NV; ++v) {
    const v8f o = sum[v] * scale;
    std::memcpy(out + 8 * v, &o, 32);
  }
}

template <typename index_t>
inline bool sum_rows_in_registers(const float* table, int64_t stride, uint64_t rows, int64_t dim,
                                  const index_t* indices, int64_t start, int64_t end, int64_t pf_end, const float* psw,
                                  float scale, float* out, bool& bad) {
  switch (dim) {
    case 8: sum_rows_fixed<1>(table, stride, rows, indices, start, end, pf_end, psw, scale, out, bad); return true;
    case 16: sum_rows_fixed<2>(table, stride, rows, indices, start, end, pf_end, psw, scale, out, bad); return true;
    case 32: sum_rows_fixed<4>(table, stride, rows, indices, start, end, pf_end, psw, scale, out, bad); return true;
    case 64: sum_rows_fixed<8>(table, stride, rows, indices, start, end, pf_end, psw, scale, out, bad); return true;
    case 128:
      sum_rows_fixed<8>(table, stride, rows, indices, start, end, pf_end, psw, scale, out, bad);
      sum_rows_fixed<8>(table + 64, stride, rows, indices, start, end, 0, psw, scale, out + 64, bad);
      return true;
    default: return false;
  }
}

// The low word of a backward key: the index into grad_offset / coef / is_max (a bag or a position).
inline uint64_t key_id(uint64_t key) { return key & 0xffffffffu; }

// Backward: sum[v] = sum over sorted keys k in [first, last) of coef[id] * (the gradient row at grad_offset[id]),
// id = key_id(keys[k]), for a float row of 8 * NV elements held in NV vector registers.
template <int NV>
inline void sum_grad_rows(const float* grad_out, const int64_t* grad_offset, const float* coef, const uint64_t* keys,
                          int64_t first, int64_t last, v8f* sum) {
  for (int v = 0; v < NV; ++v) sum[v] = v8f{};
  for (int64_t k = first; k < last; ++k) {
    const uint64_t id = key_id(keys[k]);
    const float* go = grad_out + grad_offset[id];
    const float c = coef[id];
    for (int v = 0; v < NV; ++v) sum[v] += c * *reinterpret_cast<const v8f_u*>(go + 8 * v);
  }
}

// The gradient of one unique float row of 8..128 elements, summed in registers and written to g once; false for
// other widths.
template <int NV>
inline void grad_rows_fixed(const float* grad_out, const int64_t* grad_offset, const float* coef, const uint64_t* keys,
                            int64_t first, int64_t last, float* g) {
  v8f sum[NV];
  sum_grad_rows<NV>(grad_out, grad_offset, coef, keys, first, last, sum);
  // One 32-byte store per vector: sum_squares and the update reload g right away in 32-byte loads, and a copy
  // GCC merges into 16-byte pieces (what std::memcpy of the sum[] array became) stalls every reload on store
  // forwarding (a quarter of the backward's time at 8 x 1M x 64).
  for (int v = 0; v < NV; ++v) *reinterpret_cast<v8f_u*>(g + 8 * v) = sum[v];
}

inline bool grad_rows_in_registers(int64_t dim, const float* grad_out, const int64_t* grad_offset, const float* coef,
                                   const uint64_t* keys, int64_t first, int64_t last, float* g) {
  switch (dim) {
    case 8: grad_rows_fixed<1>(grad_out, grad_offset, coef, keys, first, last, g); return true;
    case 16: grad_rows_fixed<2>(grad_out, grad_offset, coef, keys, first, last, g); return true;
    case 32: grad_rows_fixed<4>(grad_out, grad_offset, coef, keys, first, last, g); return true;
    case 64: grad_rows_fixed<8>(grad_out, grad_offset, coef, keys, first, last, g); return true;
    case 128: grad_rows_fixed<16>(grad_out, grad_offset, coef, keys, first, last, g); return true;
    default: return false;
  }
}

// SGD or rowwise Adagrad of one float row of 8 * NV elements, entirely in vector registers: the gradient summed
// over the row's positions, its mean square, the state step and the row update (st: null for SGD). Same
// arithmetic and order as the general path (grad_rows_fixed + sum_squares + the update loop).
template <int NV>
inline void fused_row_update(const float* grad_out, const int64_t* grad_offset, const float* coef, const uint64_t* keys,
                             int64_t first, int64_t last, float* row, float* st, float lr, float eps) {
  v8f sum[NV];
  sum_grad_rows<NV>(grad_out, grad_offset, coef, keys, first, last, sum);
  float mult = lr;
  if (st) {
    v8f acc{};
    for (int v = 0; v < NV; ++v) acc += sum[v] * sum[v];
    const float sq = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    *st += sq / static_cast<float>(8 * NV);
    mult = lr / (std::sqrt(*st) + eps);
  }
  for (int v = 0; v < NV; ++v) {
    v8f_u* r = reinterpret_cast<v8f_u*>(row + 8 * v);
    *r = *r - mult * sum[v];
  }
}

// fused_row_update for rows of 8, 16, 32, 64 or 128 floats; false for other widths.
inline bool fused_row_update(int64_t dim, const float* grad_out, const int64_t* grad_offset, const float* coef,
                             const uint64_t* keys, int64_t first, int64_t last, float* row, float* st, float lr,
                             float eps) {
  switch (dim) {
    case 8: fused_row_update<1>(grad_out, grad_offset, coef, keys, first, last, row, st, lr, eps); return true;
    case 16: fused_row_update<2>(grad_out, grad_offset, coef, keys, first, last, row, st, lr, eps); return true;
    case 32: fused_row_update<4>(grad_out, grad_offset, coef, keys, first, last, row, st, lr, eps); return true;
    case 64: fused_row_update<8>(grad_out, grad_offset, coef, keys, first, last, row, st, lr, eps); return true;
    case 128: fused_row_update<16>(grad_out, grad_offset, coef, keys, first, last, row, st, lr, eps); return true;
    default: return false;
  }
}

// sum of g[d]^2; float rows with dim % 8 == 0 use 8 vector lanes (a fixed order, so still deterministic).
template <typename acc_t>
inline acc_t sum_squares(const acc_t* g, int64_t dim) {
  if constexpr (std::is_same_v<acc_t, float>) {
    if (dim % 8 == 0) {
      v8f acc{};
      for (int64_t d = 0; d < dim; d += 8) {
        v8f r;
        std::memcpy(&r, g + d, 32);
        acc += r * r;
      }
      return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    }
  }
  acc_t sq = 0;
  for (int64_t d = 0; d < dim; ++d) sq += g[d] * g[d];
  return sq;
}

// Runs fn(begin, end, scratch) over chunks of `chunk` items handed out dynamically: under contention (another
// process busy on one core) a slowed thread no longer holds up the call, the others take its remaining chunks.
// scratch: scratch_size acc_t per thread, each thread's on its own cache lines (128-byte aligned and padded: two
// threads writing neighbouring scratch rows would otherwise bounce a shared line on every bag / row).
template <typename acc_t, typename Fn>
void for_chunks(int64_t n, int64_t chunk, int num_threads, int64_t scratch_size, const Fn& fn) {
  constexpr int64_t kLine = 128;
  const int64_t tasks = (n + chunk - 1) / chunk;
  const int64_t nt = std::max(1, num_threads);
  const int64_t bytes = std::max<int64_t>(scratch_size, 1) * static_cast<int64_t>(sizeof(acc_t));
  const int64_t stride = (bytes + kLine - 1) / kLine * kLine;
  std::vector<unsigned char> raw(static_cast<size_t>(nt * stride + kLine));
  unsigned char* base = raw.data() + (kLine - reinterpret_cast<uintptr_t>(raw.data()) % kLine) % kLine;
  parallel_tasks(tasks, num_threads, [&](int64_t t, int tid) {
    fn(t * chunk, std::min(n, (t + 1) * chunk), reinterpret_cast<acc_t*>(base + tid * stride));
  });
}

}  // namespace

template <typename weight_t, typename index_t>
void forward_kernel(const Batch<weight_t, index_t>& p, int num_threads) {
  using acc_t = typename Traits<weight_t>::acc_t;
  const int64_t num_bags = p.num_features * p.batch;
  // Chunks of about 2048 lookups, at most a quarter of a thread's share of the bags, at least 32 bags; each thread
  // prefetches only inside its chunk, the first kPrefetch rows at the chunk's start.
  const int64_t num_indices = num_bags > 0 ? static_cast<int64_t>(p.offsets[num_bags]) : 0;
  const int64_t per_bag = std::max<int64_t>(1, num_indices / std::max<int64_t>(num_bags, 1));
  const int64_t share = num_bags / (4 * std::max(1, num_threads));
  const int64_t chunk = std::max<int64_t>(32, std::min<int64_t>(2048 / per_bag, share));
  for_chunks<acc_t>(num_bags, chunk, num_threads, p.max_dim, [&](int64_t jb, int64_t je, acc_t* acc) {
    bool bad = false;  // an index out of range: its row is skipped and the caller raises afterwards
    const int64_t pf_end = p.offsets[je];
    int64_t f = p.batch > 0 ? jb / p.batch : 0, b = p.batch > 0 ? jb % p.batch : 0;
    {  // the chunk's first rows (of its first feature)
      const int64_t* m = p.meta + f * kMetaCols;
      const weight_t* table = p.weights + m[kWeightOffset];
      const int64_t begin = p.offsets[jb];
      const int64_t e = std::min({pf_end, static_cast<int64_t>(p.offsets[(f + 1) * p.batch]), begin + kPrefetch});
      for (int64_t i = begin; i < e; ++i) prefetch_lookup(table, p.indices[i], m[kRowStride]);
    }
    for (int64_t j = jb; j < je; ++j, ++b) {
      if (b == p.batch) {
        b = 0;
        ++f;
      }
      const int64_t* m = p.meta + f * kMetaCols;
      const int64_t dim = m[kDim], stride = m[kRowStride];
      const uint64_t rows = static_cast<uint64_t>(m[kNumRows]);
      const weight_t* table = p.weights + m[kWeightOffset];
      const auto pooling = static_cast<Pooling>(m[kPooling]);
      const int64_t start = p.offsets[j], end = p.offsets[j + 1];
      const int64_t feature_end = std::min<int64_t>(pf_end, p.offsets[(f + 1) * p.batch]);  // prefetch limit
      auto* out = p.out + b * p.total_dim + m[kOutColumn];
      if (pooling == Pooling::kMax) {
        int64_t* am = p.argmax ? p.argmax + b * p.total_dim + m[kOutColumn] : nullptr;
        std::fill(acc, acc + dim, -std::numeric_limits<acc_t>::infinity());
        if (am) std::fill(am, am + dim, int64_t{-1});
        for (int64_t i = start; i < end; ++i) {
          if (i + kPrefetch < feature_end) prefetch_lookup(table, p.indices[i + kPrefetch], stride);
          if (!in_range(p.indices[i], rows)) {
            bad = true;
            continue;
          }
          const weight_t* row = table + static_cast<int64_t>(p.indices[i]) * stride;
          for (int64_t d = 0; d < dim; ++d) {
            const acc_t v = load_one<weight_t, acc_t>(row, dim, d);
            // First maximum wins; a NaN propagates like torch's max.
            if (v > acc[d] || (v != v && acc[d] == acc[d])) {
              acc[d] = v;
              if (am) am[d] = i;
            }
          }
        }
        if (start == end) std::fill(acc, acc + dim, acc_t(0));
      } else {
        if (p.argmax) std::fill_n(p.argmax + b * p.total_dim + m[kOutColumn], dim, int64_t{-1});
        if constexpr (std::is_same_v<weight_t, float>) {
          const float scale = pooling == Pooling::kMean && end > start ? 1.0f / static_cast<float>(end - start) : 1.0f;
          if (sum_rows_in_registers(table, stride, rows, dim, p.indices, start, end, feature_end, p.psw, scale, out,
                                    bad)) {
            continue;
          }
        }
        std::fill(acc, acc + dim, acc_t(0));
        for (int64_t i = start; i < end; ++i) {
          if (i + kPrefetch < feature_end) prefetch_lookup(table, p.indices[i + kPrefetch], stride);
          if (!in_range(p.indices[i], rows)) {
            bad = true;
            continue;
          }
          const acc_t coef = p.psw ? p.psw[i] : acc_t(1);
          axpy_row(table + static_cast<int64_t>(p.indices[i]) * stride, dim, coef, acc);
        }
        if (pooling == Pooling::kMean && end > start) {
          const acc_t scale = acc_t(1) / static_cast<acc_t>(end - start);
          for (int64_t d = 0; d < dim; ++d) acc[d] *= scale;
        }
      }
      for (int64_t d = 0; d < dim; ++d) store_out(out, d, acc[d]);
    }
    if (bad) p.bad_index->store(true, std::memory_order_relaxed);
  });
}

template <typename weight_t, typename index_t>
void backward_kernel(const Batch<weight_t, index_t>& p, int num_threads) {
  using acc_t = typename Traits<weight_t>::acc_t;
  using out_t = typename Traits<weight_t>::out_t;
  if constexpr (std::is_same_v<weight_t, uint8_t>) {
    (void)p;
    (void)num_threads;
  } else {
    const UpdateParams& up = p.params;
    const TableRef* const tables_end = p.tables + p.num_tables;
    // The table holding global row `row`: the last one whose first_row <= row.
    auto table_of = [&](int64_t row) {
      return std::upper_bound(p.tables, tables_end, row,
                              [](int64_t r, const TableRef& t) { return r < t.first_row; }) - 1;
    };
    // Chunks of 256..2048 unique rows (at least 4 per thread): each thread prefetches only rows of its own chunk
    // (the first kPrefetchSegments rows at the chunk's start), never rows another thread is updating.
    const int64_t per_thread = p.num_segments / (4 * std::max(1, num_threads));
    const int64_t chunk = std::min<int64_t>(2048, std::max<int64_t>(256, per_thread));
    for_chunks<acc_t>(p.num_segments, chunk, num_threads, p.max_dim, [&](int64_t sb, int64_t se, acc_t* g) {
      const auto row_of = [&](int64_t s) { return static_cast<int64_t>(p.sorted_keys[p.segments[s]] >> 32); };
      // Row, state and first gradient row of segment s, into cache; tp walks the tables forward.
      const TableRef* tp = table_of(row_of(sb));
      auto prefetch_segment = [&](int64_t s) {
        const int64_t pr = row_of(s);
        while (tp + 1 < tables_end && tp[1].first_row <= pr) ++tp;
        const int64_t pe = tp->weight_offset + (pr - tp->first_row) * tp->stride;
        prefetch_row(p.weights + pe, tp->dim * static_cast<int64_t>(sizeof(weight_t)));
        if (up.kind == Update::kRowwiseAdagrad) {
          __builtin_prefetch(p.state0 + pr, 1, 3);
        } else if (p.state0) {
          prefetch_row(p.state0 + pe, tp->dim * 4);
        }
        if (p.state1) prefetch_row(p.state1 + pe, tp->dim * 4);
        prefetch_row(p.grad_out + p.grad_offset[key_id(p.sorted_keys[p.segments[s]])],
                     tp->dim * static_cast<int64_t>(sizeof(out_t)));
      };
      const TableRef* t = tp;
      for (int64_t s = sb; s < std::min(se, sb + kPrefetchSegments); ++s) prefetch_segment(s);
      for (int64_t s = sb; s < se; ++s) {
        const int64_t first = p.segments[s], last = p.segments[s + 1];
        const int64_t row_id = row_of(s);
        while (t + 1 < tables_end && t[1].first_row <= row_id) ++t;
        const int64_t dim = t->dim;
        const int64_t elem = t->weight_offset + (row_id - t->first_row) * t->stride;
        if (s + kPrefetchSegments < se) prefetch_segment(s + kPrefetchSegments);
        weight_t* row = p.weights + elem;
        if constexpr (std::is_same_v<weight_t, float>) {
          // The common case without a detour through g: the update straight from registers (-15% kernel time
          // at 8 x 1M x 64).
          if (!p.grad_psw && !p.is_max && (up.kind == Update::kSgd || up.kind == Update::kRowwiseAdagrad) &&
              fused_row_update(dim, p.grad_out, p.grad_offset, p.coef, p.sorted_keys, first, last, row,
                               up.kind == Update::kRowwiseAdagrad ? p.state0 + row_id : nullptr, up.lr, up.eps)) {
            continue;
          }
        }
        bool done = false;
        if constexpr (std::is_same_v<weight_t, float>) {
          if (!p.grad_psw && !p.is_max) {
            done = grad_rows_in_registers(dim, p.grad_out, p.grad_offset, p.coef, p.sorted_keys, first, last, g);
          }
        }
        if (!done) std::fill(g, g + dim, acc_t(0));
        for (int64_t k = done ? last : first; k < last; ++k) {
          const int64_t i = static_cast<int64_t>(key_id(p.sorted_keys[k]));
          const out_t* gout = p.grad_out + p.grad_offset[i];
          if (k + 1 < last) {
            prefetch_row(p.grad_out + p.grad_offset[key_id(p.sorted_keys[k + 1])],
                         dim * static_cast<int64_t>(sizeof(out_t)));
          }
          if (p.grad_psw) {
            acc_t dot = 0;
            for (int64_t d = 0; d < dim; ++d) dot += Elem<weight_t>::load(row, d) * load_one<out_t, acc_t>(gout, dim, d);
            p.grad_psw[i] = dot;
          }
          if (p.is_max && p.is_max[i]) {
            const int64_t* am = p.argmax + p.grad_offset[i];
            for (int64_t d = 0; d < dim; ++d) g[d] += am[d] == i ? load_one<out_t, acc_t>(gout, dim, d) : acc_t(0);
          } else {
            const acc_t coef = p.coef[i];
            for (int64_t d = 0; d < dim; ++d) g[d] += coef * load_one<out_t, acc_t>(gout, dim, d);
          }
        }
        const bool sr = up.stochastic_rounding;
        const uint64_t salt = up.seed ^ (static_cast<uint64_t>(elem) * 0x9e3779b97f4a7c15ull);
        auto put = [&](int64_t d, acc_t v) {
          Elem<weight_t>::store(row, d, v, sr ? mix(salt + static_cast<uint64_t>(d)) : 0u, sr);
        };
        switch (up.kind) {
          case Update::kDenseGrad:
            for (int64_t d = 0; d < dim; ++d) Elem<weight_t>::store(p.grad_weights + elem, d, g[d], 0, false);
            break;
          case Update::kSgd:
            for (int64_t d = 0; d < dim; ++d) put(d, Elem<weight_t>::load(row, d) - acc_t(up.lr) * g[d]);
            break;
          case Update::kAdagrad: {
            float* st = p.state0 + elem;
            for (int64_t d = 0; d < dim; ++d) {
              st[d] += static_cast<float>(g[d] * g[d]);
              put(d, Elem<weight_t>::load(row, d) - acc_t(up.lr) * g[d] / (std::sqrt(acc_t(st[d])) + acc_t(up.eps)));
            }
            break;
          }
          case Update::kRowwiseAdagrad: {
            const acc_t sq = sum_squares(g, dim);
            float& st = p.state0[row_id];
            if (dim > 0) st += static_cast<float>(sq / static_cast<acc_t>(dim));
            const acc_t mult = acc_t(up.lr) / (std::sqrt(acc_t(st)) + acc_t(up.eps));
            for (int64_t d = 0; d < dim; ++d) put(d, Elem<weight_t>::load(row, d) - mult * g[d]);
            break;
          }
          case Update::kAdam: {
            float* mo = p.state0 + elem;
            float* ve = p.state1 + elem;
            for (int64_t d = 0; d < dim; ++d) {
              mo[d] += (1.f - up.beta1) * (static_cast<float>(g[d]) - mo[d]);
              ve[d] += (1.f - up.beta2) * (static_cast<float>(g[d] * g[d]) - ve[d]);
              put(d, Elem<weight_t>::load(row, d) -
                         acc_t(up.step_size) * acc_t(mo[d]) / (std::sqrt(acc_t(ve[d])) + acc_t(up.eps)));
            }
            break;
          }
        }
      }
    });
  }
}

#define RECOPS_EMB_INSTANTIATE(W)                                                               \
  template void forward_kernel<W, int32_t>(const Batch<W, int32_t>&, int);                     \
  template void forward_kernel<W, int64_t>(const Batch<W, int64_t>&, int);                     \
  template void backward_kernel<W, int32_t>(const Batch<W, int32_t>&, int);                    \
  template void backward_kernel<W, int64_t>(const Batch<W, int64_t>&, int);
RECOPS_EMB_INSTANTIATE(float)
RECOPS_EMB_INSTANTIATE(double)
RECOPS_EMB_INSTANTIATE(Half)
RECOPS_EMB_INSTANTIATE(BFloat16)
RECOPS_EMB_INSTANTIATE(uint8_t)
#undef RECOPS_EMB_INSTANTIATE

}  // namespace recops::embedding::RECOPS_EMB_ISA
