// SPDX-License-Identifier: Apache-2.0
// Sampled-softmax kernels for the avx2 instruction set (see sampled_softmax_impl.h); chosen at run time.
// Off x86 this namespace holds the portable code (never selected there). Every header comes before the pragma.
#include <cmath>
#include <cstdint>
#include <limits>

#include "common/parallel.h"
#include "losses/sampled_softmax.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define RECOPS_SSM_ISA avx2
#define RECOPS_SSM_VBYTES 32
#include "losses/sampled_softmax_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
