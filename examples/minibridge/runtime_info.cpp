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

// {precision: whose kernel runs it packed}, e.g. {"bf16": "engine", "int8": "engine"}.
nlohmann::json packed_kernels() {
  nlohmann::json j = nlohmann::json::object();
  for (mb::Precision p : {mb::Precision::F32, mb::Precision::BF16, mb::Precision::Int8})
    if (const std::string k = mb::packed_gemm_kernel(p); !k.empty()) j[mb::precision_name(p)] = k;
  return j;
}

}  // namespace

std::string packed_text(const nlohmann::json& packed) {
  std::string s;
  for (const auto& [precision, kernel] : packed.items())
    s += (s.empty() ? "" : ", ") + precision + " (" + kernel.get<std::string>() + ")";
  return s.empty() ? "none" : s;
}

std::string version_text() {
  std::string backends;
  for (mb::GemmBackend b : mb::available_gemm_backends())
    backends += std::string(backends.empty() ? "" : " ") + mb::gemm_backend_name(b);
  return std::string("minibridge " MB_VERSION "\n") + "cpu:    " + mb::cpu_summary() + "\n" +
         "gemm:   " + mb::gemm_backend_name(mb::gemm_backend()) + " (built: " + backends +
         "); packed weights: " + packed_text(packed_kernels()) + "\n" + "build:  " + build_kind() + ", " + build_target();
}

nlohmann::json runtime_json() {
  return {{"cpu_level", mb::cpu_level_name(mb::cpu_level())},
          {"cpu", mb::cpu_summary()},
          {"gemm", mb::gemm_backend_name(mb::gemm_backend())},
          {"packed", packed_kernels()},
          {"build", build_kind()}};
}

}  // namespace mbcli
