// SPDX-License-Identifier: Apache-2.0
// Retrieval CPU kernels (fused top-k, IVF scan) for the generic instruction set; chosen at run time.
#include <cstdint>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "common/parallel.h"
#include "retrieval/retrieval_plan.h"

#define RECOPS_TOPK_ISA generic
#define RECOPS_TOPK_VBYTES 16
#include "retrieval/retrieval_kernels_impl.h"
