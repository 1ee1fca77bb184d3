#include "engine/cpu.h"

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "engine/cpu_kernels.h"
#include "engine/error.h"

#if defined(__x86_64__)
#include <cpuid.h>
#elif defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace mb {

// Each level's table, from engine/kernels/cpu_kernels.cpp compiled for that level (CMakeLists.txt).
#define MB_DECLARE_KERNELS(ns) \
  namespace ns {               \
  void kernel_table(const CpuFeatures& cpu, CpuKernels* table); \
  }
#ifdef MB_KERNELS_AVX512
MB_DECLARE_KERNELS(kernels_avx512)
#endif
#ifdef MB_KERNELS_AVX2
MB_DECLARE_KERNELS(kernels_avx2)
#endif
#ifdef MB_KERNELS_BASELINE
MB_DECLARE_KERNELS(kernels_baseline)
#endif
#ifdef MB_KERNELS_NEON
MB_DECLARE_KERNELS(kernels_neon)
#endif
#undef MB_DECLARE_KERNELS

namespace {

#if defined(__x86_64__)
std::string cpu_brand() {
  unsigned a, b, c, d;
  if (!__get_cpuid(0x80000000u, &a, &b, &c, &d) || a < 0x80000004u) return "";
  char brand[49] = {};
  for (unsigned leaf = 0; leaf < 3; ++leaf) {
    __get_cpuid(0x80000002u + leaf, &a, &b, &c, &d);
    std::memcpy(brand + 16 * leaf, &a, 4);
    std::memcpy(brand + 16 * leaf + 4, &b, 4);
    std::memcpy(brand + 16 * leaf + 8, &c, 4);
    std::memcpy(brand + 16 * leaf + 12, &d, 4);
  }
  std::string s(brand);
  const size_t first = s.find_first_not_of(' '), last = s.find_last_not_of(' ');
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (__get_cpuid(0, &a, &b, &c, &d)) {  // the vendor string is EBX, EDX, ECX
    char vendor[13] = {};
    std::memcpy(vendor, &b, 4);
    std::memcpy(vendor + 4, &d, 4);
    std::memcpy(vendor + 8, &c, 4);
    f.intel = std::strcmp(vendor, "GenuineIntel") == 0;
  }
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), avx = c & (1u << 28);
  f.fma = c & (1u << 12);
  f.f16c = c & (1u << 29);
  // The OS must save the vector registers on a context switch: XCR0 bits 1-2 (SSE, AVX state)
  // for AVX, and bits 5-7 (opmask, upper ZMM halves, ZMM16-31) as well for AVX-512.
  uint64_t xcr0 = 0;
  if (osxsave) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = (uint64_t(hi) << 32) | lo;
  }
  const bool os_avx = avx && (xcr0 & 0x6) == 0x6;
  const bool os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
  const bool os_amx = (xcr0 & 0x60000) == 0x60000;  // bits 17-18: tile config and tile data
  f.fma = f.fma && os_avx;
  f.f16c = f.f16c && os_avx;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = os_avx && (b & (1u << 5));
    f.avx512f = os_avx512 && (b & (1u << 16));
    f.avx512dq = os_avx512 && (b & (1u << 17));
    f.avx512bw = os_avx512 && (b & (1u << 30));
    f.avx512vl = os_avx512 && (b & (1u << 31));
    f.avx512vnni = os_avx512 && (c & (1u << 11));
    const bool amx_tile = os_amx && (d & (1u << 24));
    f.amxbf16 = amx_tile && (d & (1u << 22));
    f.amxint8 = amx_tile && (d & (1u << 25));
    const unsigned subleaves = a;
    if (subleaves >= 1) {
      __cpuid_count(7, 1, a, b, c, d);
      f.avxvnni = os_avx && (a & (1u << 4));
      f.avx512bf16 = os_avx512 && (a & (1u << 5));
    }
  }
  return f;
}
#elif defined(__aarch64__)
CpuFeatures detect() {
  CpuFeatures f;
  const unsigned long hw = getauxval(AT_HWCAP), hw2 = getauxval(AT_HWCAP2);
  f.neon = hw & HWCAP_ASIMD;
  f.dotprod = hw & HWCAP_ASIMDDP;
#ifdef HWCAP2_BF16
  f.bf16 = hw2 & HWCAP2_BF16;
#endif
#ifdef HWCAP2_I8MM
  f.i8mm = hw2 & HWCAP2_I8MM;
#endif
  (void)hw2;
  return f;
}
#else
CpuFeatures detect() { return {}; }
#endif

// The features the kernels care about, in the order they are reported, each with the lowest level
// whose kernels need it (kReportedOnly: none needs it; it is reported).
constexpr int kReportedOnly = 3;
struct Feature {
  bool CpuFeatures::*has;
  const char* name;
  int needed_from;
};
#if defined(__aarch64__)
constexpr const char* kArch = "aarch64";
constexpr Feature kFeatures[] = {{&CpuFeatures::neon, "neon", kReportedOnly},
                                 {&CpuFeatures::dotprod, "dotprod", kReportedOnly},
                                 {&CpuFeatures::bf16, "bf16", kReportedOnly},
                                 {&CpuFeatures::i8mm, "i8mm", kReportedOnly}};
#else
constexpr const char* kArch = "x86-64";
constexpr Feature kFeatures[] = {{&CpuFeatures::avx2, "avx2", 1},
                                 {&CpuFeatures::fma, "fma", 1},
                                 {&CpuFeatures::f16c, "f16c", 1},
                                 {&CpuFeatures::avx512f, "avx512f", 2},
                                 {&CpuFeatures::avx512bw, "avx512bw", 2},
                                 {&CpuFeatures::avx512dq, "avx512dq", 2},
                                 {&CpuFeatures::avx512vl, "avx512vl", 2},
                                 {&CpuFeatures::avx512bf16, "avx512bf16", kReportedOnly},
                                 {&CpuFeatures::avx512vnni, "avx512vnni", kReportedOnly},
                                 {&CpuFeatures::avxvnni, "avxvnni", kReportedOnly},
                                 {&CpuFeatures::amxbf16, "amxbf16", kReportedOnly},
                                 {&CpuFeatures::amxint8, "amxint8", kReportedOnly}};
#endif

// What a level's kernels need that this CPU lacks, space-separated; empty where the level runs.
std::string lacking(CpuLevel level, const CpuFeatures& f) {
  std::string s;
  for (const Feature& x : kFeatures)
    if (x.needed_from <= int(level) && !(f.*x.has)) s += std::string(s.empty() ? "" : " ") + x.name;
  return s;
}

// The level's table, filled once (by the level's own object) for this CPU's features.
const CpuKernels* table_of(CpuLevel level) {
  struct Tables {
    CpuKernels of[3];
    bool present[3] = {false, false, false};
  };
  static const Tables tables = [] {
    Tables t;
    const CpuFeatures& f = cpu_features();
    auto fill = [&](CpuLevel l, void (*kernel_table)(const CpuFeatures&, CpuKernels*)) {
      if (!lacking(l, f).empty()) return;  // never run a level's code on a CPU without it
      kernel_table(f, &t.of[int(l)]);
      t.present[int(l)] = true;
    };
#ifdef MB_KERNELS_AVX512
    fill(CpuLevel::AVX512, kernels_avx512::kernel_table);
#endif
#ifdef MB_KERNELS_AVX2
    fill(CpuLevel::AVX2, kernels_avx2::kernel_table);
#endif
#ifdef MB_KERNELS_BASELINE
    fill(CpuLevel::Baseline, kernels_baseline::kernel_table);
#endif
#ifdef MB_KERNELS_NEON
    fill(CpuLevel::Baseline, kernels_neon::kernel_table);
#endif
    (void)fill;
    return t;
  }();
  return tables.present[int(level)] ? &tables.of[int(level)] : nullptr;
}

std::atomic<const CpuKernels*> g_kernels{nullptr};
std::once_flag g_kernels_once;

void choose_level() {
  CpuLevel level = supported_cpu_levels().front();
  if (const char* env = std::getenv("MB_CPU"); env && *env) {
    try {
      level = parse_cpu_level(env);
    } catch (const Error& e) {
      throw Error(std::string("MB_CPU: ") + e.what());
    }
  }
  g_kernels = table_of(level);
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const char* cpu_level_name(CpuLevel level) {
  switch (level) {
    case CpuLevel::AVX512: return "avx512";
    case CpuLevel::AVX2: return "avx2";
    case CpuLevel::Baseline:
#if defined(__aarch64__)
      return "neon";
#else
      return "baseline";
#endif
  }
  return "?";
}

std::vector<CpuLevel> supported_cpu_levels() {
  std::vector<CpuLevel> levels;
  for (CpuLevel l : {CpuLevel::AVX512, CpuLevel::AVX2, CpuLevel::Baseline})
    if (table_of(l)) levels.push_back(l);
  return levels;
}

CpuLevel parse_cpu_level(const std::string& name) {
  for (CpuLevel l : {CpuLevel::AVX512, CpuLevel::AVX2, CpuLevel::Baseline}) {
    if (name != cpu_level_name(l) && !(l == CpuLevel::Baseline && name == "baseline")) continue;
    if (table_of(l)) return l;
    const std::string missing = lacking(l, cpu_features());
    throw Error("the CPU level '" + name + "' cannot run here: " +
                (missing.empty() ? std::string("this build has no kernels for it") : "this CPU lacks " + missing));
  }
  std::string have;
  for (CpuLevel l : supported_cpu_levels()) have += std::string(have.empty() ? "" : ", ") + cpu_level_name(l);
  throw Error("unknown CPU level '" + name + "' (this CPU runs: " + have + ")");
}

const CpuKernels& cpu_kernels() {
  std::call_once(g_kernels_once, choose_level);
  return *g_kernels.load(std::memory_order_relaxed);
}

const CpuKernels* cpu_kernels_at(CpuLevel level) { return table_of(level); }

CpuLevel cpu_level() { return cpu_kernels().level; }

void set_cpu_level(CpuLevel level) {
  cpu_kernels();  // the MB_CPU choice first, so that it cannot overwrite this one later
  const CpuKernels* t = table_of(level);
  MB_CHECK(t, std::string("the CPU level '") + cpu_level_name(level) + "' cannot run here");
  g_kernels = t;
}

std::string cpu_summary() {
  const CpuFeatures& f = cpu_features();
  std::string features;
  for (const Feature& x : kFeatures)
    if (f.*x.has) features.append(" ").append(x.name);  // (" " + string: a GCC 12 -Wrestrict false alarm)
#if defined(__x86_64__)
  const std::string brand = cpu_brand();
#else
  const std::string brand;
#endif
  std::string s = std::string(kArch) + ", kernels " + cpu_level_name(cpu_level());
  s += " (cpu:" + (features.empty() ? std::string(" no SIMD extensions") : features);
  if (!brand.empty()) s += "; " + brand;
  return s + ")";
}

}  // namespace mb
