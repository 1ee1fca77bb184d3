// What the CPU can do, and which level of the engine's own SIMD kernels runs on it.
//
// One binary serves every CPU of its architecture: the library is compiled for the architecture's
// baseline, and the hand-written kernels (engine/kernels/) are compiled once per level and chosen
// here at start-up from what the CPU reports (cpuid on x86-64, the kernel's hwcaps on aarch64), as
// oneDNN, OpenBLAS's DYNAMIC_ARCH and llama.cpp choose theirs. MB_CPU forces a lower level.
#pragma once
#include <string>
#include <vector>

namespace mb {

// x86-64: Baseline is SSE2 (every x86-64 CPU), AVX2 adds AVX2+FMA+F16C (x86-64-v3: Haswell, Zen),
// AVX512 is AVX-512 F/BW/DQ/VL (x86-64-v4: Skylake-SP, Ice Lake, Zen 4/5). aarch64: Baseline is
// NEON (every ARMv8-A CPU); the others do not exist there.
enum class CpuLevel { Baseline = 0, AVX2 = 1, AVX512 = 2 };

struct CpuFeatures {
  // x86-64
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512dq = false, avx512vl = false;
  bool avx512bf16 = false, avx512vnni = false, avxvnni = false;
  bool amxbf16 = false, amxint8 = false;  // oneDNN picks its AMX kernels itself (gemm.h: onednn_uses_amx)
  bool intel = false;  // the vendor: "GenuineIntel" (engine/gemm.h: bf16_products_beat_widening)
  // aarch64
  bool neon = false, dotprod = false, bf16 = false, i8mm = false;
};

// What this CPU (and its operating system) supports, read once.
const CpuFeatures& cpu_features();

// "avx512", "avx2", "baseline" (x86-64) or "neon" (aarch64, the baseline there).
const char* cpu_level_name(CpuLevel level);
// The levels this build has kernels for and this CPU can run, best first.
std::vector<CpuLevel> supported_cpu_levels();
// Parses a level name (also "baseline" on aarch64); throws mb::Error for an unknown one or one
// this CPU cannot run, naming what it lacks.
CpuLevel parse_cpu_level(const std::string& name);

// The level the kernels run at: MB_CPU when set (an error when unknown or not supported here),
// else the best supported level. Chosen once, on first use.
CpuLevel cpu_level();
// For tests and A/B runs: switch every kernel to another supported level.
void set_cpu_level(CpuLevel level);

// One line for --version and info: the architecture, the level in use and the features that
// matter for the kernels, e.g. "x86-64, kernels avx512 (cpu: avx2 fma avx512f ... avx512bf16 avx512vnni)".
std::string cpu_summary();

}  // namespace mb
