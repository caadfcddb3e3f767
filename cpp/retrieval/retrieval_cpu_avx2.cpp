// SPDX-License-Identifier: Apache-2.0
// Retrieval CPU kernels (fused top-k, IVF scan) for the avx2 instruction set; chosen at run time. Off x86
// this namespace holds portable code (never selected there). Every header comes before the pragma.
#include <cstdint>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "retrieval/retrieval_plan.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define RECOPS_TOPK_ISA avx2
#define RECOPS_TOPK_VBYTES 32
#include "retrieval/retrieval_kernels_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
