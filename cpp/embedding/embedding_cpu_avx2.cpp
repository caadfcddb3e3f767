// SPDX-License-Identifier: Apache-2.0
// Embedding-bag CPU kernels for avx2 + fma + f16c (see embedding_kernels_impl.h); chosen at run time.
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#define RECOPS_EMB_ISA avx2
#include "embedding/embedding_kernels_impl.h"
#pragma GCC pop_options
#else
#define RECOPS_EMB_ISA avx2
#include "embedding/embedding_kernels_impl.h"
#endif
