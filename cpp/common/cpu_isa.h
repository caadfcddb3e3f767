// SPDX-License-Identifier: Apache-2.0
// Run-time choice of the CPU instruction set, the one dispatch of every family with per-ISA kernels (one
// translation unit per ISA, compiled under `#pragma GCC target`, guarded for x86, after all of its includes).
// The environment variable RECOPS_CPU_ISA=generic|avx2 forces a narrower ISA than the CPU offers (a testing
// aid, read once per process); it never selects one the CPU lacks. Off x86 the choice is always generic.
#pragma once

#include <cstdlib>
#include <string>

namespace recops {

enum class Isa { kGeneric, kAvx2, kAvx512 };

inline Isa detect_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kGeneric;
}

inline Isa selected_isa() {
  static const Isa isa = [] {
    const char* force = std::getenv("RECOPS_CPU_ISA");
    const Isa best = detect_isa();
    if (force) {
      const std::string f(force);
      if (f == "generic") return Isa::kGeneric;
      if (f == "avx2" && best != Isa::kGeneric) return Isa::kAvx2;
    }
    return best;
  }();
  return isa;
}

// The one dispatch of the core: the entry (a function pointer) of the selected ISA, from one per ISA.
template <typename Fn>
Fn isa_pick(Fn generic, Fn avx2, Fn avx512) {
  switch (selected_isa()) {
    case Isa::kAvx512: return avx512;
    case Isa::kAvx2: return avx2;
    default: return generic;
  }
}

// For families with no AVX-512 kernels: the AVX2 entry serves AVX-512 CPUs too.
template <typename Fn>
Fn isa_pick(Fn generic, Fn avx2) {
  return isa_pick(generic, avx2, avx2);
}

// The selected ISA's name: "avx512", "avx2" or "generic".
inline const char* selected_isa_name() { return isa_pick("generic", "avx2", "avx512"); }

}  // namespace recops
