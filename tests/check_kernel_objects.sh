#!/usr/bin/env bash
# Each CPU level's kernel objects (engine/kernels/*.cpp compiled for that level) must be
# self-contained: no weak or unique symbols (template and inline functions the linker would merge
# with another level's copy, so that a CPU could run code compiled for a level it lacks), global
# symbols only in the level's own namespace (its kernel_table and packed_gemm_kernels), and calls
# out only to memcpy/memset and to the level's own objects.
# Usage: check_kernel_objects.sh OBJECT...
set -euo pipefail
status=0
for obj in "$@"; do
  [[ $obj =~ mb_kernels_([a-z0-9]+)\.dir ]] || { echo "$obj: not in a CMakeFiles/mb_kernels_<level>.dir"; exit 2; }
  name=mb_kernels_${BASH_REMATCH[1]}
  ns=kernels_${BASH_REMATCH[1]}
  mangled="_ZN2mb${#ns}${ns}"     # how that namespace starts a mangled name
  what="$name/$(basename "$obj")"
  merged=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[WwVvu]$/' || true)
  globals=$(nm -C --defined-only --extern-only "$obj" | awk '{$1=""; $2=""; print}' | sed 's/^ *//')
  foreign=$(grep -v -E "^mb::${ns}::(kernel_table|packed_gemm_kernels)\(" <<<"$globals" || true)
  calls=$(nm --undefined-only "$obj" | awk '{print $2}' | grep -v -E "^(memcpy|memset|${mangled}.*)$" || true)
  if [[ -n "$merged" ]]; then echo "$what: weak or unique symbols:"; echo "$merged"; status=1; fi
  if [[ -z "$globals" || -n "$foreign" ]]; then
    echo "$what: global symbols outside mb::${ns}'s kernel_table and packed_gemm_kernels:"; echo "$globals"; status=1
  fi
  if [[ -n "$calls" ]]; then echo "$what: calls outside the level's objects:"; echo "$calls"; status=1; fi
  [[ $status -eq 0 ]] && echo "$what: self-contained ($(nm --defined-only "$obj" | wc -l) symbols, $(wc -l <<<"$globals") global)"
done
exit $status
