// The CPU features the engine detects by cpuid and xgetbv (engine/cpu.cpp) against the flags the
// Linux kernel reports for the same CPU in /proc/cpuinfo: each one the kernel lists, and no other,
// is detected, and the reported ones are named in `minibridge --version`'s cpu line.
#include <doctest/doctest.h>

#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "engine/cpu.h"

#if defined(__x86_64__) && defined(__linux__)
namespace {

std::set<std::string> kernel_cpu_flags() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line.substr(line.find(':') + 1));
      std::set<std::string> flags;
      for (std::string w; words >> w;) flags.insert(w);
      return flags;
    }
  return {};
}

}  // namespace

TEST_CASE("cpu_features matches the kernel's /proc/cpuinfo flags") {
  const std::set<std::string> flags = kernel_cpu_flags();
  REQUIRE_MESSAGE(!flags.empty(), "no flags line in /proc/cpuinfo");
  const mb::CpuFeatures& f = mb::cpu_features();
  std::string summary = mb::cpu_summary();
  for (char& c : summary)
    if (c == '(' || c == ')' || c == ';') c = ' ';
  std::set<std::string> summary_words;
  std::istringstream words(summary);
  for (std::string w; words >> w;) summary_words.insert(w);
  struct Named {
    bool detected;
    const char* kernel_name;  // /proc/cpuinfo's spelling
    const char* our_name;     // cpu_summary's
  };
  const Named features[] = {{f.avx2, "avx2", "avx2"},
                            {f.fma, "fma", "fma"},
                            {f.f16c, "f16c", "f16c"},
                            {f.avx512f, "avx512f", "avx512f"},
                            {f.avx512bw, "avx512bw", "avx512bw"},
                            {f.avx512dq, "avx512dq", "avx512dq"},
                            {f.avx512vl, "avx512vl", "avx512vl"},
                            {f.avx512bf16, "avx512_bf16", "avx512bf16"},
                            {f.avx512vnni, "avx512_vnni", "avx512vnni"},
                            {f.avxvnni, "avx_vnni", "avxvnni"},
                            {f.amxbf16, "amx_bf16", "amxbf16"},
                            {f.amxint8, "amx_int8", "amxint8"}};
  for (const Named& n : features) {
    INFO(n.kernel_name);
    CHECK(n.detected == (flags.count(n.kernel_name) == 1));
    CHECK(n.detected == (summary_words.count(n.our_name) == 1));
  }
}
#endif  // elsewhere the kernel's flags are named differently (aarch64: hwcaps) or not at all
