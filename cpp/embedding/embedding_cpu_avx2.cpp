// SPDX-License-Identifier: Apache-2.0
// Embedding-bag CPU kernels for avx2 + fma + f16c (see embedding_kernels_impl.h); chosen at run time. Off x86
// this namespace holds the portable kernels (never selected there). Every header comes before the pragma.
#include "embedding/embedding_kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#define RECOPS_EMB_ISA avx2
#include "embedding/embedding_kernels_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
