// What this binary runs on: the CPU level of the engine's kernels, the GEMM back-end and which packed
// precisions it has here. Printed by --version and info, recorded by bench.
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "engine/cpu.h"
#include "engine/gemm.h"

namespace mbcli {

namespace {

const char* build_kind() {
#if defined(MB_BUILD_STATIC)
  return "static";
#else
  return "dynamic";
#endif
}

const char* build_target() {
#if defined(MB_BUILD_NATIVE)
  return "native (-march=native: this build runs only on CPUs like the one that built it)";
#else
  return "portable (kernels chosen at run time)";
#endif
}

std::string packed_precisions() {
  std::string s;
  for (mb::Precision p : {mb::Precision::F32, mb::Precision::BF16, mb::Precision::Int8})
    if (mb::packed_gemm_available(p)) s += std::string(s.empty() ? "" : " ") + mb::precision_name(p);
  return s.empty() ? "none" : s;
}

}  // namespace

std::string version_text() {
  std::string backends;
  for (mb::GemmBackend b : mb::available_gemm_backends())
    backends += std::string(backends.empty() ? "" : " ") + mb::gemm_backend_name(b);
  return std::string("minibridge " MB_VERSION "\n") + "cpu:    " + mb::cpu_summary() + "\n" +
         "gemm:   " + mb::gemm_backend_name(mb::gemm_backend()) + " (built: " + backends +
         "); packed weights: " + packed_precisions() + "\n" + "build:  " + build_kind() + ", " + build_target();
}

nlohmann::json runtime_json() {
  return {{"cpu_level", mb::cpu_level_name(mb::cpu_level())},
          {"cpu", mb::cpu_summary()},
          {"gemm", mb::gemm_backend_name(mb::gemm_backend())},
          {"packed", packed_precisions()},
          {"build", build_kind()}};
}

}  // namespace mbcli
