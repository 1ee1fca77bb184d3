#!/usr/bin/env bash
# Each CPU level's kernel object (engine/kernels/cpu_kernels.cpp compiled for that level) must be
# self-contained: no weak or unique symbols (template and inline functions the linker would merge
# with another level's copy, so that a CPU could run code compiled for a level it lacks), one global
# symbol (the level's kernel_table), and calls out only to memcpy/memset.
# Usage: check_kernel_objects.sh OBJECT...
set -euo pipefail
status=0
for obj in "$@"; do
  name=$(basename "$(dirname "$(dirname "$(dirname "$obj")")")" .dir)  # CMakeFiles/mb_kernels_<level>.dir/...
  merged=$(nm -C --defined-only "$obj" | awk '$2 ~ /^[WwVvu]$/' || true)
  globals=$(nm -C --defined-only --extern-only "$obj" | awk '{$1=""; $2=""; print}' | sed 's/^ *//')
  calls=$(nm --undefined-only "$obj" | awk '{print $2}' | grep -v -E '^(memcpy|memset)$' || true)
  if [[ -n "$merged" ]]; then echo "$name: weak or unique symbols:"; echo "$merged"; status=1; fi
  if [[ "$globals" != *"::kernel_table(mb::CpuFeatures const&)" || $(wc -l <<<"$globals") -ne 1 ]]; then
    echo "$name: global symbols other than kernel_table:"; echo "$globals"; status=1
  fi
  if [[ -n "$calls" ]]; then echo "$name: calls outside the object:"; echo "$calls"; status=1; fi
  [[ $status -eq 0 ]] && echo "$name: self-contained ($(nm --defined-only "$obj" | wc -l) symbols, 1 global)"
done
exit $status
