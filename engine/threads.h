// One thread setting for OpenMP, OpenBLAS and oneDNN (which runs on the OpenMP runtime).
#pragma once

namespace mb {

// n <= 0: MB_NUM_THREADS if set, else the number of hardware threads.
void set_num_threads(int n);
int num_threads();
// Resolves the default (MB_NUM_THREADS or hardware) without applying it.
int default_num_threads();

}  // namespace mb
