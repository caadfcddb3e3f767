// SPDX-License-Identifier: Apache-2.0
// Ordinal-loss pre-pass for AVX2 + FMA (see ordinal_math_impl.h); chosen at run time. Off x86 this namespace
// holds the portable code (never selected there). Every header comes before the pragma.
#include "losses/ordinal_math.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define RECOPS_LOSS_ISA avx2
#include "losses/ordinal_math_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
