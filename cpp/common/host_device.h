// SPDX-License-Identifier: Apache-2.0
// RECOPS_HOST_DEVICE marks inline functions that compile for the host and, under nvcc, for the device too:
// rules shared by the CPU core and the CUDA kernels (masks, bucket formulas) are written once with it.
#pragma once

#if defined(__CUDACC__)
#define RECOPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define RECOPS_HOST_DEVICE inline
#endif
