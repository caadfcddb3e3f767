// SPDX-License-Identifier: Apache-2.0
// HSTU attention: validation, work plan, run-time ISA dispatch and the deterministic bias-gradient reduction.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <limits>
#include <numeric>
#include <string>
#include <stdexcept>
#include <vector>

#include "common/check.h"
#include "common/checked_math.h"
#include "common/cpu_isa.h"
#include "common/parallel.h"
#include "hstu/hstu_attention.h"
#include "hstu/hstu_plan.h"
#include "jagged/jagged.h"

namespace recops::hstu {

void throw_alloc_failure(const char* op) {
  throw std::runtime_error(std::string(op) + ": could not allocate kernel scratch memory");
}

namespace {
constexpr int kPoolBlocks = 16;                       // free blocks kept
constexpr int64_t kPoolBytes = int64_t(1) << 30;      // and at most this many bytes in them
struct ScratchPool {
  std::mutex mu;
  void* block[kPoolBlocks] = {};
  int64_t size[kPoolBlocks] = {};
  int64_t total = 0;
  ~ScratchPool() {
    for (int i = 0; i < kPoolBlocks; ++i) std::free(block[i]);
  }
};
ScratchPool& pool() {
  static ScratchPool p;
  return p;
}
}  // namespace

void* scratch_get(int64_t bytes, int64_t* size) {
  bytes = std::max<int64_t>(bytes, 64);
  {
    ScratchPool& p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    int best = -1;  // the smallest free block that fits
    for (int i = 0; i < kPoolBlocks; ++i) {
      if (p.block[i] && p.size[i] >= bytes && (best < 0 || p.size[i] < p.size[best])) best = i;
    }
    if (best >= 0) {
      void* b = p.block[best];
      *size = p.size[best];
      p.total -= p.size[best];
      p.block[best] = nullptr;
      return b;
    }
  }
  void* b = nullptr;
  if (posix_memalign(&b, 64, static_cast<size_t>(bytes)) != 0) b = nullptr;
  *size = b ? bytes : 0;
  return b;
}

void scratch_put(void* block, int64_t size) {
  if (!block) return;
  ScratchPool& p = pool();
  {
    std::lock_guard<std::mutex> lock(p.mu);
    if (size <= kPoolBytes) {
      // a free slot, else replace the smallest kept block if this one is larger
      int slot = -1;
      for (int i = 0; i < kPoolBlocks && slot < 0; ++i) {
        if (!p.block[i]) slot = i;
      }
      if (slot < 0) {
        int small = 0;
        for (int i = 1; i < kPoolBlocks; ++i) {
          if (p.size[i] < p.size[small]) small = i;
        }
        if (p.size[small] < size) slot = small;
      }
      if (slot >= 0) {
        void* old = p.block[slot];
        const int64_t old_size = old ? p.size[slot] : 0;
        if (p.total - old_size + size <= kPoolBytes) {
          p.block[slot] = block;
          p.size[slot] = size;
          p.total += size - old_size;
          block = old;  // freed below (outside the lock), or null
        }
      }
    }
  }
  std::free(block);
}

namespace {

int64_t seq_len(const int64_t* offsets, int64_t b) { return offsets[b + 1] - offsets[b]; }

// Largest error of the kernels' first bucket guess, log2(x) ~ exponent + (mantissa - 1), in log2 units.
constexpr double kGuessErrorLog2 = 0.0861;

void validate(const HstuFwdParams& a, const char* op) {
  RECOPS_CHECK(a.num_seqs >= 0 && a.total_len >= 0 && a.num_heads >= 0 && a.dqk >= 0 && a.dv >= 0, op,
               ": sizes must be non-negative");
  RECOPS_CHECK(a.max_seq_len >= 1, op, ": max_seq_len must be >= 1, got ", a.max_seq_len);
  checked_mul(checked_mul(a.total_len, a.num_heads, op), std::max(a.dqk, a.dv), op);
  checked_mul(2, a.max_seq_len, op);
  check_hstu_lengths(op, a.offsets, a.num_seqs, a.total_len, a.max_seq_len, a.num_targets);
  RECOPS_CHECK(a.contextual_len >= 0, op, ": contextual_len must be >= 0, got ", a.contextual_len);
  RECOPS_CHECK(a.max_attn_len >= 0, op, ": max_attn_len must be >= 0, got ", a.max_attn_len);
  RECOPS_CHECK(a.min_full_attn_seq_len >= 0, op, ": min_full_attn_seq_len must be >= 0, got ",
               a.min_full_attn_seq_len);
  if (a.time_bias) {
    RECOPS_CHECK(a.timestamps != nullptr || a.total_len == 0, op, ": time_bias needs timestamps");
    RECOPS_CHECK(a.num_buckets >= 1, op, ": time_bias must have at least 1 element, got ", a.num_buckets);
    RECOPS_CHECK(a.time_bucket_base > 0 && std::isfinite(a.time_bucket_base), op,
                 ": time_bucket_base must be > 0, got ", a.time_bucket_base);
  }
  RECOPS_CHECK(std::isfinite(a.alpha), op, ": alpha must be finite, got ", a.alpha);
  if (a.q_offsets) {  // incremental inference: each sequence's q rows are its last ones
    jagged::check_offsets(op, a.q_offsets, a.num_seqs, a.q_total_len);
    for (int64_t b = 0; b < a.num_seqs; ++b) {
      const int64_t nq = seq_len(a.q_offsets, b), n = seq_len(a.offsets, b);
      RECOPS_CHECK(nq <= n, op, ": q_offsets gives sequence ", b, " ", nq, " query rows, more than its ", n,
                   " key rows");
    }
  }
  if (a.kind == AttnKind::kSoftmax) {
    RECOPS_CHECK(a.dropout_p >= 0.0 && a.dropout_p < 1.0, op, ": dropout_p must be in [0, 1), got ", a.dropout_p);
    RECOPS_CHECK(!a.pos_bias && !a.time_bias && !a.row_scale, op, ": softmax attention takes no biases or row scales");
    RECOPS_CHECK(a.lse != nullptr || a.total_len == 0, op, ": softmax attention needs the lse buffer");
  } else {
    RECOPS_CHECK(a.kind == AttnKind::kSilu, op, ": unknown attention kind ", static_cast<int>(a.kind));
    RECOPS_CHECK(a.dropout_p == 0.0, op, ": dropout_p is a softmax-attention option, got ", a.dropout_p);
  }
}

const char* op_name(const HstuFwdParams& a, bool backward) {
  if (a.kind == AttnKind::kSoftmax) return backward ? "jagged_attention_backward" : "jagged_attention";
  return backward ? "hstu_attention_backward" : "hstu_attention";
}

// thr[k] = the smallest integer x >= 1 with floor(ln(x) / base) >= k (k = 1 .. nb - 1); thr[0] = 1,
// thr[nb] = +inf. Uses the formula's own double log, so the kernels' bucket equals the formula's.
std::vector<double> compute_thresholds(int64_t nb, double base) {
  std::vector<double> thr(nb + 1, std::numeric_limits<double>::infinity());
  thr[0] = 1.0;
  auto bucket = [base](double x) { return std::floor(std::log(x) / base); };
  for (int64_t k = 1; k < nb; ++k) {
    const double guess = std::ceil(std::exp(static_cast<double>(k) * base));
    if (!(guess < 9.0e15)) break;  // beyond exactly representable integers: unreachable buckets stay +inf
    double x = std::max(guess, 1.0);
    while (x > 1.0 && bucket(x - 1.0) >= static_cast<double>(k)) x -= 1.0;
    while (bucket(x) < static_cast<double>(k)) x += 1.0;
    thr[k] = x;
  }
  return thr;
}

// The thresholds of the last (num_buckets, base) asked for, kept: a model calls with the same table every step.
std::vector<double> bucket_thresholds(int64_t nb, double base) {
  static std::mutex mu;
  static int64_t last_nb = -1;
  static double last_base = 0.0;
  static std::vector<double> last;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (nb == last_nb && base == last_base) return last;
  }
  std::vector<double> thr = compute_thresholds(nb, base);
  std::lock_guard<std::mutex> lock(mu);
  last_nb = nb;
  last_base = base;
  last = thr;
  return thr;
}


}  // namespace

void check_hstu_lengths(const char* op, const int64_t* offsets, int64_t num_seqs, int64_t total_len,
                        int64_t max_seq_len, const int64_t* num_targets) {
  jagged::check_offsets(op, offsets, num_seqs, total_len);
  for (int64_t b = 0; b < num_seqs; ++b) {
    const int64_t n = offsets[b + 1] - offsets[b];
    RECOPS_CHECK(n <= max_seq_len, op, ": sequence lengths must be <= max_seq_len=", max_seq_len,
                 ", got length ", n, " for sequence ", b);
    if (num_targets) {
      RECOPS_CHECK(num_targets[b] >= 0 && num_targets[b] <= n, op, ": num_targets[", b,
                   "] must be in [0, length=", n, "], got ", num_targets[b]);
    }
  }
}

const char* hstu_cpu_isa() { return selected_isa_name(); }
const char* hstu_bf16_unit() { return selected_bf16_unit_name(); }

void hstu_force_bf16_unit(const char* unit) {
  const std::string u(unit);
  const Bf16Unit want = u == "amx" ? Bf16Unit::kAmx : u == "avx512_bf16" ? Bf16Unit::kAvx512Bf16 : Bf16Unit::kNone;
  RECOPS_CHECK(u == "amx" || u == "avx512_bf16" || u == "none", "force_bf16_unit: unit must be amx, avx512_bf16 or "
               "none, got '", u, "'");
  RECOPS_CHECK(force_bf16_unit(want), "force_bf16_unit: this CPU has no ", u, " unit (best: ",
               bf16_unit_name(detect_bf16_unit()), ")");
}

namespace {

// float -> bf16 bits, round to nearest even (NaN stays NaN)
uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

void check_bf16_unit(const char* op) {
  RECOPS_CHECK(selected_bf16_unit() != Bf16Unit::kNone, op,
               ": bfloat16 inputs need AMX or AVX512-BF16 on the CPU (this one has neither, or RECOPS_CPU_ISA "
               "forced them off)");
}

// The forward's plan, then run(a, plan, threads).
template <typename Run>
void fwd_plan_run(const HstuFwdParams& a, int num_threads, Run run) {
  // (softmax with dv = 0 still writes lse)
  if (a.total_len == 0 || a.num_heads == 0 || (a.dv == 0 && a.kind != AttnKind::kSoftmax)) return;
  if (a.q_offsets && a.q_total_len == 0) return;
  // Work of query block qb ~ the key rows it may see (all n without the causal mask). Sequences are cut into chunks of consecutive query
  // blocks of about total / (4 * threads) work, so long sequences spread over threads while each chunk packs
  // its sequence's K/V only once; chunks run most-work first.
  auto block_cost = [&](int64_t n, int64_t qb) {
    if (!a.causal || a.q_offsets) return n;  // (incremental: the new rows are the last ones, they see ~all)
    return std::min(n, (qb + 1) * kBlockQ) + (a.contextual_len > 0 && qb == 0 ? n : 0);
  };
  int64_t total = 0, max_len = 0;
  // q rows of sequence b: all n, or its last nq with q_offsets
  auto q_len = [&](int64_t b, int64_t n) { return a.q_offsets ? seq_len(a.q_offsets, b) : n; };
  for (int64_t b = 0; b < a.num_seqs; ++b) {
    const int64_t n = seq_len(a.offsets, b);
    max_len = std::max(max_len, n);
    for (int64_t qb = 0; qb * kBlockQ < q_len(b, n); ++qb) total += block_cost(n, qb);
  }
  const int64_t target = std::max<int64_t>(1, total / (4 * std::max(num_threads, 1)));
  std::vector<int64_t> seq, qbegin, qend, cost;
  for (int64_t b = 0; b < a.num_seqs; ++b) {
    const int64_t n = seq_len(a.offsets, b), nq = q_len(b, n);
    int64_t acc = 0, start = 0;
    for (int64_t qb = 0; qb * kBlockQ < nq; ++qb) {
      acc += block_cost(n, qb);
      if (acc >= target || (qb + 1) * kBlockQ >= nq) {
        seq.push_back(b);
        qbegin.push_back(start);
        qend.push_back(qb + 1);
        cost.push_back(acc);
        start = qb + 1;
        acc = 0;
      }
    }
  }
  std::vector<int64_t> order(seq.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return cost[x] > cost[y]; });
  std::vector<int64_t> task_seq(order.size()), task_qbegin(order.size()), task_qend(order.size());
  for (size_t t = 0; t < order.size(); ++t) {
    task_seq[t] = seq[order[t]];
    task_qbegin[t] = qbegin[order[t]];
    task_qend[t] = qend[order[t]];
  }
  const std::vector<double> thr = bucket_thresholds(std::max<int64_t>(a.num_buckets, 1), a.time_bucket_base);
  HstuPlan plan;
  plan.task_seq = task_seq.data();
  plan.task_qbegin = task_qbegin.data();
  plan.task_qend = task_qend.data();
  plan.num_tasks = static_cast<int64_t>(task_seq.size());
  plan.max_len = max_len;
  plan.bucket_thr = thr.data();
  plan.log2_to_bucket = std::log(2.0) / a.time_bucket_base;
  plan.time_bucket_base = a.time_bucket_base;
  plan.single_step_buckets = plan.log2_to_bucket * kGuessErrorLog2 < 0.9;
  plan.amx = selected_bf16_unit() == Bf16Unit::kAmx;
  run(a, plan, num_threads);
}

// The backward's plan, run(a, plan, threads) and the fixed-order reductions; T: the type of dq and the bias
// gradients (float for the bf16 kernels, whose dq is reduced here in float and rounded once).
template <typename T, typename Run>
void bwd_plan_run(const HstuBwdParams& a, int num_threads, Run run, bool bf16_dq = false) {
  RECOPS_CHECK(a.kind != AttnKind::kSoftmax || a.total_len == 0 || a.dv == 0 || (a.out && a.lse), op_name(a, true),
               ": the softmax backward needs the forward's out and lse");
  const int64_t npos = 2 * a.max_seq_len - 1;
  T* d_pos = typed<T>(a.d_pos_bias);
  T* d_time = typed<T>(a.d_time_bias);
  if (d_pos) std::fill(d_pos, d_pos + npos, T(0));
  if (d_time) std::fill(d_time, d_time + a.num_buckets, T(0));
  // Every dk, dv row has one owner task (its key block's); a sequence cut into parts gets its dq from the
  // parts' partial buffers, added below in part order.
  if (a.total_len == 0 || a.num_heads == 0) return;
  const char* op = op_name(a, true);
  if (a.kind == AttnKind::kSoftmax && a.dv == 0) {  // empty values: out is empty, so dq = dk = 0
    const int64_t count = checked_mul(checked_mul(a.total_len, a.num_heads, op), a.dqk, op);
    const size_t bytes = static_cast<size_t>(count) * (bf16_dq ? sizeof(uint16_t) : sizeof(T));
    if (count) {
      std::memset(a.dq, 0, bytes);
      std::memset(a.dk, 0, bytes);
    }
    return;
  }
  std::vector<int64_t> t_seq, t_kb0, t_kb1, t_dq, t_cost;
  int64_t dq_elems = 0, max_len = 0;
  const int64_t row_elems = checked_mul(a.num_heads, a.dqk, op);
  for (int64_t b = 0; b < a.num_seqs; ++b) {
    const int64_t n = seq_len(a.offsets, b), nkb = (n + kBlockK - 1) / kBlockK;
    max_len = std::max(max_len, n);
    for (int64_t kb0 = 0, part = 0; kb0 < std::max<int64_t>(nkb, 1); kb0 += kBwdKeyBlocksPerPart, ++part) {
      t_seq.push_back(b);
      t_kb0.push_back(kb0);
      t_kb1.push_back(std::min(nkb, kb0 + kBwdKeyBlocksPerPart));
      const bool own = part == 0 && !(bf16_dq && nkb > kBwdKeyBlocksPerPart);  // writes dq itself
      t_dq.push_back(own ? -1 : dq_elems);
      if (!own) dq_elems = checked_add(dq_elems, checked_mul(n, row_elems, op), op);
      t_cost.push_back(n * (std::min(nkb, kb0 + kBwdKeyBlocksPerPart) - kb0));
    }
  }
  // tasks are numbered in (sequence, part) order, the order of the reductions below; they run most work first
  const int64_t tasks = static_cast<int64_t>(t_seq.size());
  std::vector<int64_t> order(tasks);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return t_cost[x] > t_cost[y]; });
  std::vector<T> dq_part(static_cast<size_t>(dq_elems));
  std::vector<T> pos_part(a.d_pos_bias ? checked_mul(tasks, npos, op) : 0, T(0));
  std::vector<T> time_part(a.d_time_bias ? checked_mul(tasks, a.num_buckets, op) : 0, T(0));
  const std::vector<double> thr = bucket_thresholds(std::max<int64_t>(a.num_buckets, 1), a.time_bucket_base);
  HstuPlan plan;
  plan.task_order = order.data();
  plan.task_seq_b = t_seq.data();
  plan.task_kb0 = t_kb0.data();
  plan.task_kb1 = t_kb1.data();
  plan.task_dq = t_dq.data();
  plan.dq_partials = dq_part.data();
  plan.num_seq_tasks = tasks;
  plan.max_len = max_len;  // sizes the per-sequence scratch
  plan.bucket_thr = thr.data();
  plan.log2_to_bucket = std::log(2.0) / a.time_bucket_base;
  plan.time_bucket_base = a.time_bucket_base;
  plan.single_step_buckets = plan.log2_to_bucket * kGuessErrorLog2 < 0.9;
  plan.pos_partials = pos_part.data();
  plan.time_partials = time_part.data();
  plan.amx = selected_bf16_unit() == Bf16Unit::kAmx;
  run(a, plan, num_threads);
  // Fixed-order reductions (the parts' dq in part order; bias partials in task order): bitwise identical for any
  // thread count. Serial: they are O(L * H * D) and O(tasks * N), far below the kernel, and a second parallel
  // region costs more than it saves on a busy machine.
  for (int64_t t = 0, first = -1; t < tasks; ++t) {
    if (t_dq[t] < 0) continue;
    const int64_t b = t_seq[t], count = seq_len(a.offsets, b) * row_elems;
    const T* src = dq_part.data() + t_dq[t];
    if (bf16_dq) {  // part 0's float partial takes the others, then becomes the bf16 rows
      if (t == 0 || t_seq[t - 1] != b) first = t;
      T* acc = dq_part.data() + t_dq[first];
      if (t != first) {
        for (int64_t e = 0; e < count; ++e) acc[e] += src[e];
      }
      if (t + 1 == tasks || t_seq[t + 1] != b) {
        uint16_t* dst = typed<uint16_t>(a.dq) + a.offsets[b] * row_elems;
        for (int64_t e = 0; e < count; ++e) dst[e] = to_bf16(static_cast<float>(acc[e]));
      }
      continue;
    }
    T* dst = typed<T>(a.dq) + a.offsets[b] * row_elems;
    for (int64_t e = 0; e < count; ++e) dst[e] += src[e];
  }
  auto reduce = [&](const std::vector<T>& part, int64_t width, T* out) {
    for (int64_t t = 0; t < tasks; ++t) {
      for (int64_t e = 0; e < width; ++e) out[e] += part[t * width + e];
    }
  };
  if (d_pos) reduce(pos_part, npos, d_pos);
  if (d_time) reduce(time_part, a.num_buckets, d_time);
}

}  // namespace

template <typename T>
void hstu_attention_fwd(const HstuFwdParams& a, int num_threads) {
  validate(a, op_name(a, false));
  fwd_plan_run(a, num_threads, isa_pick(&generic::run_fwd<T>, &avx2::run_fwd<T>, &avx512::run_fwd<T>));
}

template <typename T>
void hstu_attention_bwd(const HstuBwdParams& a, int num_threads) {
  validate(a, op_name(a, true));
  RECOPS_CHECK(!a.q_offsets, op_name(a, true), ": q_offsets (incremental inference) has no backward");
  bwd_plan_run<T>(a, num_threads, isa_pick(&generic::run_bwd<T>, &avx2::run_bwd<T>, &avx512::run_bwd<T>));
}

void hstu_attention_fwd_bf16(const HstuFwdParams& a, int num_threads) {
  validate(a, op_name(a, false));
  check_bf16_unit(op_name(a, false));
  fwd_plan_run(a, num_threads, &bf16::run_fwd<float>);
}

void hstu_attention_bwd_bf16(const HstuBwdParams& a, int num_threads) {
  const char* op = op_name(a, true);
  validate(a, op);
  check_bf16_unit(op);
  RECOPS_CHECK(!a.q_offsets, op, ": q_offsets (incremental inference) has no backward");
  bwd_plan_run<float>(a, num_threads, &bf16::run_bwd<float>, /*bf16_dq=*/true);
}

template void hstu_attention_fwd<float>(const HstuFwdParams&, int);
template void hstu_attention_fwd<double>(const HstuFwdParams&, int);
template void hstu_attention_bwd<float>(const HstuBwdParams&, int);
template void hstu_attention_bwd<double>(const HstuBwdParams&, int);

}  // namespace recops::hstu
