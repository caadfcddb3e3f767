// SPDX-License-Identifier: Apache-2.0
// The id -> row map of dynamic embedding tables (see dynamic_table.h for the rules).
#include "embedding/dynamic_table.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/parallel.h"

namespace recops::embedding {
namespace {

constexpr int64_t kMaxRows = int64_t{1} << 40;  // slots stay addressable (2 per row, 16 bytes each)
constexpr uint32_t kFreqMax = uint32_t{1} << 31;  // LFU counts saturate here

uint64_t next_pow2(uint64_t x) {
  uint64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

inline uint64_t sketch_salt(int d) { return 0x5851f42d4c957f2dULL * static_cast<uint64_t>(d + 1); }

template <typename T>
inline void relaxed_store(T* p, T v) {
  __atomic_store(p, &v, __ATOMIC_RELAXED);
}

// Small open-addressing set of the absent ids of one call: key -> index in first-occurrence order.
class Dedup {
 public:
  explicit Dedup(int64_t n) {
    const uint64_t size = next_pow2(static_cast<uint64_t>(std::max<int64_t>(n, 1)) * 2);
    keys_.resize(size);
    idx_.assign(size, -1);
    mask_ = size - 1;
  }
  // Index of key, inserting it as `next` when new; sets fresh.
  int64_t get(int64_t key, int64_t next, bool* fresh) {
    uint64_t s = mix64(static_cast<uint64_t>(key)) & mask_;
    while (idx_[s] >= 0) {
      if (keys_[s] == key) {
        *fresh = false;
        return idx_[s];
      }
      s = (s + 1) & mask_;
    }
    keys_[s] = key;
    idx_[s] = next;
    *fresh = true;
    return next;
  }

 private:
  std::vector<int64_t> keys_, idx_;
  uint64_t mask_ = 0;
};

}  // namespace

void check_dynamic_config(const char* op, const DynamicMapConfig& c) {
  RECOPS_CHECK(c.capacity >= 1 && c.capacity <= kMaxRows, op, ": capacity must be in [1, 2^40], got ", c.capacity);
  RECOPS_CHECK(c.max_capacity >= c.capacity && c.max_capacity <= kMaxRows, op,
               ": max_capacity must be in [capacity, 2^40], got ", c.max_capacity, " with capacity ", c.capacity);
  RECOPS_CHECK(c.admit_after >= 1 && c.admit_after <= 255, op, ": admit_after must be in [1, 255], got ",
               c.admit_after);
  RECOPS_CHECK(!c.has_ttl || (c.ttl >= 0 && std::isfinite(c.ttl)), op, ": ttl must be finite and >= 0, got ", c.ttl);
  RECOPS_CHECK(c.eviction == Eviction::kLru || c.eviction == Eviction::kLfu, op,
               ": eviction must be 0 (lru) or 1 (lfu), got ", static_cast<int>(c.eviction));
  if (c.admit_after > 1) {
    RECOPS_CHECK(c.sketch_width >= 64 && c.sketch_width <= (int64_t{1} << 36) &&
                     (c.sketch_width & (c.sketch_width - 1)) == 0,
                 op, ": sketch_width must be a power of two in [64, 2^36], got ", c.sketch_width);
    RECOPS_CHECK(c.sketch_depth >= 1 && c.sketch_depth <= 8, op, ": sketch_depth must be in [1, 8], got ",
                 c.sketch_depth);
  }
}

DynamicIdMap::DynamicIdMap(const char* op, const DynamicMapConfig& config) : cfg_(config) {
  check_dynamic_config(op, cfg_);
  const int64_t cap = cfg_.capacity;
  cfg_.capacity = 0;
  rehash(cap);
  if (cfg_.admit_after > 1) {
    sketch_.assign(static_cast<size_t>(cfg_.sketch_depth * cfg_.sketch_width), 0);
  }
}

void DynamicIdMap::rehash(int64_t capacity) {
  const int64_t old = cfg_.capacity;
  row_key_.resize(static_cast<size_t>(capacity), 0);
  last_use_.resize(static_cast<size_t>(capacity), -1);
  if (cfg_.has_ttl) last_seen_.resize(static_cast<size_t>(capacity), 0.0);
  if (cfg_.eviction == Eviction::kLfu) freq_.resize(static_cast<size_t>(capacity), 0);
  // New rows join the free heap; rows above every old one keep it a valid min-heap when appended in order.
  for (int64_t r = old; r < capacity; ++r) free_.push_back(r);
  cfg_.capacity = capacity;
  const uint64_t size = next_pow2(static_cast<uint64_t>(capacity) * 2);
  if (size != slots_.size()) {
    std::vector<Slot> fresh(size, Slot{0, -1});
    slots_.swap(fresh);
    mask_ = size - 1;
    for (int64_t r = 0; r < old; ++r) {
      if (last_use_[r] >= 0) insert(row_key_[r], r);
    }
  }
}

int64_t DynamicIdMap::find(int64_t key) const {
  uint64_t s = mix64(static_cast<uint64_t>(key)) & mask_;
  while (slots_[s].row >= 0) {
    if (slots_[s].key == key) return static_cast<int64_t>(s);
    s = (s + 1) & mask_;
  }
  return -1;
}

void DynamicIdMap::insert(int64_t key, int64_t row) {
  uint64_t s = mix64(static_cast<uint64_t>(key)) & mask_;
  while (slots_[s].row >= 0) s = (s + 1) & mask_;
  slots_[s] = Slot{key, row};
}

// Backward-shift deletion: later members of the probe run move into the hole when their home slot allows it.
void DynamicIdMap::erase_slot(int64_t slot) {
  uint64_t hole = static_cast<uint64_t>(slot);
  uint64_t s = hole;
  for (;;) {
    s = (s + 1) & mask_;
    if (slots_[s].row < 0) break;
    const uint64_t home = mix64(static_cast<uint64_t>(slots_[s].key)) & mask_;
    // s may move to hole unless home lies cyclically in (hole, s]
    const bool stays = hole <= s ? (home > hole && home <= s) : (home > hole || home <= s);
    if (!stays) {
      slots_[hole] = slots_[s];
      hole = s;
    }
  }
  slots_[hole].row = -1;
}

void DynamicIdMap::push_free(int64_t row) {
  free_.push_back(row);
  std::push_heap(free_.begin(), free_.end(), std::greater<int64_t>());
}

int64_t DynamicIdMap::pop_free() {
  std::pop_heap(free_.begin(), free_.end(), std::greater<int64_t>());
  const int64_t r = free_.back();
  free_.pop_back();
  return r;
}

void DynamicIdMap::release_row(int64_t row) {
  const int64_t slot = find(row_key_[row]);
  if (slot >= 0) erase_slot(slot);
  last_use_[row] = -1;
  --used_;
  push_free(row);
}

bool DynamicIdMap::expired(int64_t row, double now) const {
  return cfg_.has_ttl && now - last_seen_[row] > cfg_.ttl;
}

int64_t DynamicIdMap::reclaim_expired(double now) {
  if (!cfg_.has_ttl) return 0;
  int64_t n = 0;
  for (int64_t r = 0; r < cfg_.capacity; ++r) {
    if (last_use_[r] >= 0 && expired(r, now)) {
      release_row(r);
      ++n;
    }
  }
  return n;
}

uint32_t DynamicIdMap::estimate(int64_t key) const {
  uint32_t m = 255;
  const uint64_t wmask = static_cast<uint64_t>(cfg_.sketch_width - 1);
  for (int d = 0; d < cfg_.sketch_depth; ++d) {
    const uint64_t c = mix64(static_cast<uint64_t>(key) ^ sketch_salt(d)) & wmask;
    m = std::min<uint32_t>(m, sketch_[static_cast<size_t>(d * cfg_.sketch_width) + c]);
  }
  return m;
}

void DynamicIdMap::count(int64_t key, int64_t occurrences) {
  const uint32_t target =
      static_cast<uint32_t>(std::min<int64_t>(255, static_cast<int64_t>(estimate(key)) + occurrences));
  const uint64_t wmask = static_cast<uint64_t>(cfg_.sketch_width - 1);
  for (int d = 0; d < cfg_.sketch_depth; ++d) {  // conservative update: raise each counter only up to the target
    uint8_t& c = sketch_[static_cast<size_t>(d * cfg_.sketch_width) +
                         (mix64(static_cast<uint64_t>(key) ^ sketch_salt(d)) & wmask)];
    c = static_cast<uint8_t>(std::max<uint32_t>(c, target));
  }
}

ResolveResult DynamicIdMap::resolve(const int64_t* ids, int64_t n, int64_t* rows, bool training, double now,
                                    int num_threads, int64_t* new_rows, int64_t* new_ids) {
  ResolveResult res;
  const int64_t zero_row = cfg_.capacity;
  const bool ttl = cfg_.has_ttl;
  // 1. lookups (read-only), 16 ids at a time with their slots prefetched.
  parallel_for(0, n, 4096, num_threads, [&](int64_t b, int64_t e) {
    constexpr int64_t kBlock = 16;
    uint64_t home[kBlock];
    for (int64_t i0 = b; i0 < e; i0 += kBlock) {
      const int64_t m = std::min(kBlock, e - i0);
      for (int64_t j = 0; j < m; ++j) {
        home[j] = mix64(static_cast<uint64_t>(ids[i0 + j])) & mask_;
        __builtin_prefetch(&slots_[home[j]]);
      }
      for (int64_t j = 0; j < m; ++j) {
        const int64_t key = ids[i0 + j];
        uint64_t s = home[j];
        int64_t row = -1;
        while (slots_[s].row >= 0) {
          if (slots_[s].key == key) {
            row = slots_[s].row;
            break;
          }
          s = (s + 1) & mask_;
        }
        if (row >= 0 && ttl && now - last_seen_[row] > cfg_.ttl) row = -1;
        rows[i0 + j] = row;
      }
    }
  });
  if (!training) {
    parallel_for(0, n, 1 << 14, num_threads, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        if (rows[i] < 0) rows[i] = zero_row;
      }
    });
    return res;
  }

  // 2. the absent ids, deduplicated in first-occurrence order, with their occurrence counts.
  int64_t misses = 0;
  for (int64_t i = 0; i < n; ++i) misses += rows[i] < 0;
  std::vector<int64_t> uniq, occ, miss_pos, miss_idx;
  if (misses > 0) {
    Dedup dedup(misses);
    miss_pos.reserve(static_cast<size_t>(misses));
    miss_idx.reserve(static_cast<size_t>(misses));
    for (int64_t i = 0; i < n; ++i) {
      if (rows[i] >= 0) continue;
      bool fresh = false;
      const int64_t u = dedup.get(ids[i], static_cast<int64_t>(uniq.size()), &fresh);
      if (fresh) {
        uniq.push_back(ids[i]);
        occ.push_back(0);
      }
      ++occ[static_cast<size_t>(u)];
      miss_pos.push_back(i);
      miss_idx.push_back(u);
    }
  }
  const int64_t nu = static_cast<int64_t>(uniq.size());
  std::vector<uint8_t> admit(static_cast<size_t>(nu), 1);
  int64_t wanted = nu;
  if (cfg_.admit_after > 1) {
    wanted = 0;
    for (int64_t u = 0; u < nu; ++u) {
      admit[u] = static_cast<int64_t>(estimate(uniq[u])) + occ[u] >= cfg_.admit_after;
      wanted += admit[u];
    }
  }
  // Expired rows of ids that came back are released first (their ids count as absent), then, when the free rows
  // cannot hold every admitted id, all expired rows; when they still cannot, grow if allowed.
  if (ttl) {
    for (int64_t u = 0; u < nu; ++u) {
      const int64_t slot = find(uniq[u]);
      if (slot >= 0) release_row(slots_[slot].row);
    }
  }
  if (wanted > static_cast<int64_t>(free_.size())) {
    reclaim_expired(now);
    const int64_t need = used_ + wanted;
    if (need > cfg_.capacity && cfg_.capacity < cfg_.max_capacity) {
      int64_t to = cfg_.capacity;
      while (to < need && to < cfg_.max_capacity) to = std::min(cfg_.max_capacity, to * 2);
      res.grow_to = to;
      return res;
    }
  }
  ++serial_;
  const int64_t stamp = serial_;
  // Stamp the rows found in step 1, so they are not eviction victims (freq counts every occurrence).
  const bool lfu = cfg_.eviction == Eviction::kLfu;
  parallel_for(0, n, 1 << 13, num_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t r = rows[i];
      if (r < 0) continue;
      relaxed_store(&last_use_[r], stamp);
      if (ttl) relaxed_store(&last_seen_[r], now);
      // saturating near 2^31 instead of wrapping (the check and the add race by at most a few threads)
      if (lfu && __atomic_load_n(&freq_[r], __ATOMIC_RELAXED) < kFreqMax) {
        __atomic_fetch_add(&freq_[r], 1u, __ATOMIC_RELAXED);
      }
    }
  });
  if (cfg_.admit_after > 1) {
    for (int64_t u = 0; u < nu; ++u) count(uniq[u], occ[u]);
  }
  // Evict when the free rows do not suffice: victims in ascending policy key among rows not used in this call.
  if (wanted > static_cast<int64_t>(free_.size())) {
    const int64_t short_by = wanted - static_cast<int64_t>(free_.size());
    if (short_by > 0) {
      std::vector<std::pair<std::pair<int64_t, int64_t>, int64_t>> cand;  // ((freq or 0, last_use), row)
      cand.reserve(static_cast<size_t>(used_));
      for (int64_t r = 0; r < cfg_.capacity; ++r) {
        const int64_t lu = last_use_[r];
        if (lu >= 0 && lu != stamp) cand.push_back({{lfu ? static_cast<int64_t>(freq_[r]) : 0, lu}, r});
      }
      const int64_t k = std::min<int64_t>(short_by, static_cast<int64_t>(cand.size()));
      if (k < static_cast<int64_t>(cand.size())) {
        std::nth_element(cand.begin(), cand.begin() + k, cand.end());
      }
      for (int64_t j = 0; j < k; ++j) release_row(cand[static_cast<size_t>(j)].second);
    }
  }
  std::vector<int64_t> urow(static_cast<size_t>(nu), zero_row);
  for (int64_t u = 0; u < nu; ++u) {
    if (!admit[u] || free_.empty()) continue;
    const int64_t r = pop_free();
    insert(uniq[u], r);
    row_key_[r] = uniq[u];
    last_use_[r] = stamp;
    if (ttl) last_seen_[r] = now;
    if (lfu) freq_[r] = static_cast<uint32_t>(std::min<int64_t>(occ[u], kFreqMax));
    ++used_;
    urow[u] = r;
    new_rows[res.num_new] = r;
    new_ids[res.num_new] = uniq[u];
    ++res.num_new;
  }
  for (size_t j = 0; j < miss_pos.size(); ++j) rows[miss_pos[j]] = urow[static_cast<size_t>(miss_idx[j])];
  return res;
}

void DynamicIdMap::grow(int64_t new_capacity) {
  RECOPS_CHECK(new_capacity > cfg_.capacity && new_capacity <= cfg_.max_capacity, "DynamicTable",
               ": grow needs a capacity in (", cfg_.capacity, ", ", cfg_.max_capacity, "], got ", new_capacity);
  rehash(new_capacity);
}

int64_t DynamicIdMap::num_live(double now) const {
  int64_t n = 0;
  for (int64_t r = 0; r < cfg_.capacity; ++r) n += last_use_[r] >= 0 && !expired(r, now);
  return n;
}

void DynamicIdMap::dump(int64_t* ids, int64_t* rows, int64_t* last_use, double* last_seen, int64_t* freq) const {
  int64_t j = 0;
  for (int64_t r = 0; r < cfg_.capacity; ++r) {
    if (last_use_[r] < 0) continue;
    ids[j] = row_key_[r];
    rows[j] = r;
    last_use[j] = last_use_[r];
    last_seen[j] = cfg_.has_ttl ? last_seen_[r] : 0.0;
    freq[j] = cfg_.eviction == Eviction::kLfu ? static_cast<int64_t>(freq_[r]) : 0;
    ++j;
  }
}

void DynamicIdMap::load(const char* op, const int64_t* ids, const int64_t* rows, const int64_t* last_use,
                        const double* last_seen, const int64_t* freq, int64_t n, int64_t serial) {
  RECOPS_CHECK(n >= 0 && n <= cfg_.capacity, op, ": a dynamic table of capacity ", cfg_.capacity,
               " cannot hold ", n, " ids");
  RECOPS_CHECK(serial >= 0, op, ": the serial counter must be >= 0, got ", serial);
  std::vector<uint8_t> taken(static_cast<size_t>(cfg_.capacity), 0);
  for (int64_t j = 0; j < n; ++j) {
    RECOPS_CHECK(rows[j] >= 0 && rows[j] < cfg_.capacity, op, ": rows[", j, "] must be in [0, ", cfg_.capacity,
                 "), got ", rows[j]);
    RECOPS_CHECK(!taken[rows[j]], op, ": rows[", j, "] = ", rows[j], " is held by two ids");
    taken[rows[j]] = 1;
    RECOPS_CHECK(last_use[j] >= 0 && last_use[j] <= serial, op, ": last_use[", j, "] must be in [0, ", serial,
                 "], got ", last_use[j]);
    RECOPS_CHECK(freq[j] >= 0, op, ": freq[", j, "] must be >= 0, got ", freq[j]);
    RECOPS_CHECK(std::isfinite(last_seen[j]), op, ": last_seen[", j, "] must be finite, got ", last_seen[j]);
  }
  {  // distinct ids
    std::vector<int64_t> sorted(ids, ids + n);
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    RECOPS_CHECK(dup == sorted.end(), op, ": id ", dup == sorted.end() ? 0 : *dup, " is listed twice");
  }
  clear();
  std::fill(sketch_.begin(), sketch_.end(), uint8_t{0});  // the caller loads it next
  free_.clear();
  for (int64_t j = 0; j < n; ++j) {
    const int64_t r = rows[j];
    row_key_[r] = ids[j];
    last_use_[r] = last_use[j];
    if (cfg_.has_ttl) last_seen_[r] = last_seen[j];
    if (cfg_.eviction == Eviction::kLfu) {
      freq_[r] = static_cast<uint32_t>(std::min<int64_t>(freq[j], kFreqMax));
    }
    insert(ids[j], r);
  }
  for (int64_t r = 0; r < cfg_.capacity; ++r) {
    if (!taken[r]) free_.push_back(r);  // ascending: a valid min-heap
  }
  used_ = n;
  serial_ = serial;
}

void DynamicIdMap::restamp(double now) {
  if (!cfg_.has_ttl) return;
  for (int64_t r = 0; r < cfg_.capacity; ++r) {
    if (last_use_[r] >= 0) last_seen_[r] = now;
  }
}

void DynamicIdMap::clear() {
  for (auto& s : slots_) s.row = -1;
  std::fill(last_use_.begin(), last_use_.end(), int64_t{-1});
  std::fill(last_seen_.begin(), last_seen_.end(), 0.0);
  std::fill(freq_.begin(), freq_.end(), 0u);
  std::fill(sketch_.begin(), sketch_.end(), uint8_t{0});
  free_.clear();
  for (int64_t r = 0; r < cfg_.capacity; ++r) free_.push_back(r);
  used_ = 0;
  serial_ = 0;
}

void dynamic_init_values(const int64_t* ids, int64_t n, int64_t dim, uint64_t seed, double bound, float* out,
                         int num_threads) {
  parallel_for(0, n, std::max<int64_t>(1, 4096 / std::max<int64_t>(dim, 1)), num_threads, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const uint64_t base = mix64(seed ^ static_cast<uint64_t>(ids[i]));
      for (int64_t j = 0; j < dim; ++j) {
        const double u = static_cast<double>(mix64(base + static_cast<uint64_t>(j)) >> 11) * 0x1.0p-53;
        out[i * dim + j] = static_cast<float>((2.0 * u - 1.0) * bound);
      }
    }
  });
}

}  // namespace recops::embedding
