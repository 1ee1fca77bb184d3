// Tensor memory. Blocks from 16 KiB up are recycled instead of returned to the system: BERT allocates
// the same activation sizes on every step, and fresh pages cost a page fault each (measured
// ~2 GB/s for fresh memory vs ~35 GB/s for reused memory on these machines).
#pragma once
#include <cstddef>

namespace mb {

// 64-byte aligned; *capacity receives the usable size (>= bytes). Throws mb::Error when out of memory.
void* tensor_alloc(size_t bytes, size_t* capacity);
void tensor_free(void* p, size_t capacity);
// Bytes currently held for reuse (not in use by any tensor).
size_t tensor_cache_bytes();
// Returns every cached block to the system.
void tensor_cache_clear();

}  // namespace mb
