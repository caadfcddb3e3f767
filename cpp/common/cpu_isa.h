// SPDX-License-Identifier: Apache-2.0
// Run-time choice of the CPU instruction set, the one dispatch of every family with per-ISA kernels (one
// translation unit per ISA, compiled under `#pragma GCC target`, guarded for x86, after all of its includes).
// The environment variable RECOPS_CPU_ISA=generic|avx2 forces a narrower ISA than the CPU offers (a testing
// aid, read once per process); it never selects one the CPU lacks. Off x86 the choice is always generic.
//
// bfloat16 matrix units (the HSTU attention's bf16 path) are chosen apart from the vector ISA: AMX tiles
// (TDPBF16PS; CPUID and the Linux tile permission, requested once per process), else AVX512-BF16 (VDPBF16PS),
// else none (bf16 inputs are upcast to the float32 kernels). RECOPS_CPU_ISA=avx512_bf16 forces the AVX512-BF16
// path on an AMX CPU; avx512, avx2 and generic force the upcast path; amx (or unset) takes the best unit.
#pragma once

#include <atomic>
#include <cstdlib>
#include <string>
#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

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

enum class Bf16Unit { kNone, kAvx512Bf16, kAmx };

inline Bf16Unit detect_bf16_unit() {
#if defined(__linux__) && defined(__x86_64__)
  if (detect_isa() != Isa::kAvx512) return Bf16Unit::kNone;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5))) return Bf16Unit::kNone;  // AVX512-BF16
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return Bf16Unit::kAvx512Bf16;
  const bool amx = (d & (1u << 22)) && (d & (1u << 24));  // AMX-BF16, AMX-TILE
  // ARCH_REQ_XCOMP_PERM (0x1023) for XFEATURE_XTILEDATA (18): Linux keeps the tile state off until asked
  if (amx && syscall(SYS_arch_prctl, 0x1023, 18) == 0) return Bf16Unit::kAmx;
  return Bf16Unit::kAvx512Bf16;
#else
  return Bf16Unit::kNone;
#endif
}

// The unit in use: the best one, lowered by RECOPS_CPU_ISA at start-up or by force_bf16_unit later.
inline std::atomic<int>& bf16_unit_slot() {
  static std::atomic<int> unit{[] {
    const Bf16Unit best = detect_bf16_unit();
    const char* force = std::getenv("RECOPS_CPU_ISA");
    if (force) {
      const std::string f(force);
      if (f == "avx512_bf16") return static_cast<int>(best == Bf16Unit::kNone ? best : Bf16Unit::kAvx512Bf16);
      if (f == "avx512" || f == "avx2" || f == "generic") return static_cast<int>(Bf16Unit::kNone);
    }
    return static_cast<int>(best);
  }()};
  return unit;
}

inline Bf16Unit selected_bf16_unit() { return static_cast<Bf16Unit>(bf16_unit_slot().load(std::memory_order_relaxed)); }

// Benchmarks and tests: run later calls on `unit` (never one the CPU lacks: returns false and changes nothing).
inline bool force_bf16_unit(Bf16Unit unit) {
  if (static_cast<int>(unit) > static_cast<int>(detect_bf16_unit())) return false;
  bf16_unit_slot().store(static_cast<int>(unit), std::memory_order_relaxed);
  return true;
}

// "amx", "avx512_bf16" or "none".
inline const char* bf16_unit_name(Bf16Unit unit) {
  switch (unit) {
    case Bf16Unit::kAmx: return "amx";
    case Bf16Unit::kAvx512Bf16: return "avx512_bf16";
    default: return "none";
  }
}
inline const char* selected_bf16_unit_name() { return bf16_unit_name(selected_bf16_unit()); }

}  // namespace recops
