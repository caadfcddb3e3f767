// SPDX-License-Identifier: Apache-2.0
// Dropout kernel for the avx2 instruction set (see dropout_impl.h); chosen at run time. Every header comes before
// the pragma.
#include <cstdint>

#include "common/parallel.h"
#include "hstu/attention_dropout.h"
#include "nn/dropout.h"

#if defined(__x86_64__) || defined(__i386__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define RECOPS_DROPOUT_ISA avx2
#define RECOPS_DROPOUT_VBYTES 32
#include "nn/dropout_impl.h"
#if defined(__x86_64__) || defined(__i386__)
#pragma GCC pop_options
#endif
