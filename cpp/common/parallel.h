// SPDX-License-Identifier: Apache-2.0
// The one way the core runs in parallel on the CPU.
//
// parallel_for(begin, end, grain, num_threads, fn) calls fn(chunk_begin, chunk_end) over disjoint chunks that
// cover [begin, end). It uses at most num_threads threads (the caller passes torch.get_num_threads()), and no
// more chunks than (end - begin) / grain, so small problems stay serial and pay no fork/join. One parallel
// region per call: with an oversubscribed machine every region can cost a scheduler quantum, so callers put a
// whole op in one parallel_for instead of one per table or per row.
//
// fn must not throw (exceptions cannot cross an OpenMP region); validate inputs before calling.
// Without OpenMP (RECOPS_OPENMP=OFF) it is a plain serial loop.
#pragma once

#include <algorithm>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace recops {

template <typename Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, int num_threads, const Fn& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int64_t nt = std::min<int64_t>(std::max(num_threads, 1), max_chunks);
#ifdef _OPENMP
  if (nt > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(static_cast<int>(nt))
    {
      const int64_t tid = omp_get_thread_num();
      const int64_t team = omp_get_num_threads();
      const int64_t chunk = (n + team - 1) / team;
      const int64_t b = begin + tid * chunk;
      const int64_t e = std::min(end, b + chunk);
      if (b < e) fn(b, e);
    }
    return;
  }
#endif
  (void)nt;
  fn(begin, end);
}

}  // namespace recops

namespace recops {

// Runs fn(task, thread_index) for every task in [0, num_tasks), handing tasks out dynamically one at a time
// (callers order tasks longest first). thread_index is in [0, num_threads) and indexes per-thread scratch.
// One parallel region per call; fn must not throw.
template <typename Fn>
void parallel_tasks(int64_t num_tasks, int num_threads, const Fn& fn) {
  if (num_tasks <= 0) return;
  const int64_t nt = std::min<int64_t>(std::max(num_threads, 1), num_tasks);
#ifdef _OPENMP
  if (nt > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(static_cast<int>(nt))
    {
      const int tid = omp_get_thread_num();
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < num_tasks; ++t) fn(t, tid);
    }
    return;
  }
#endif
  (void)nt;
  for (int64_t t = 0; t < num_tasks; ++t) fn(t, 0);
}

}  // namespace recops
