// SPDX-License-Identifier: Apache-2.0
// Dropout kernel for the avx512 instruction set (see dropout_impl.h); chosen at run time. Every header comes before
// the pragma.
#include <cstdint>

#include "common/parallel.h"
#include "hstu/attention_dropout.h"
#include "nn/dropout.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512vl,avx512bw,avx512dq,fma,avx2")
#endif
#define RECOPS_DROPOUT_ISA avx512
#define RECOPS_DROPOUT_VBYTES 64
#include "nn/dropout_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
