// Tensor memory. Blocks from 16 KiB up are recycled instead of returned to the system: BERT allocates
// the same activation sizes on every step, and fresh pages cost a page fault each (measured
// ~2 GB/s for fresh memory vs ~35 GB/s for reused memory on these machines).
#pragma once
#include <cstddef>

namespace mb {

// 64-byte aligned (blocks from 2 MiB up: 2 MiB aligned, in huge pages; see huge_page_alloc);
// *capacity receives the usable size (>= bytes). Throws mb::Error when out of memory.
void* tensor_alloc(size_t bytes, size_t* capacity);
void tensor_free(void* p, size_t capacity);
// Bytes currently held for reuse (not in use by any tensor).
size_t tensor_cache_bytes();
// Returns every cached block to the system.
void tensor_cache_clear();
// The most bytes the cache holds: MB_TENSOR_CACHE_MB MiB, default 4096. Setting it releases the
// largest cached blocks until the cache fits; returns the previous limit. For a command whose
// passes allocate many different sizes that are seldom reused (K-prune's sample batches), where the
// cache would only add to the peak. tensor_cache_limit_from_env(): the user set MB_TENSOR_CACHE_MB
// (a command's own limit should then leave it alone).
size_t tensor_cache_limit();
size_t tensor_cache_set_limit(size_t bytes);
bool tensor_cache_limit_from_env();
// A command's own cache limit for its scope, restored after; none when MB_TENSOR_CACHE_MB is set
// (the user's choice stands).
class TensorCacheLimitScope {
 public:
  explicit TensorCacheLimitScope(size_t bytes);
  ~TensorCacheLimitScope();
  TensorCacheLimitScope(const TensorCacheLimitScope&) = delete;
  TensorCacheLimitScope& operator=(const TensorCacheLimitScope&) = delete;

 private:
  bool set_;
  size_t previous_ = 0;
};

// Memory from the system aligned to 2 MiB and advised for transparent huge pages (Linux's
// MADV_HUGEPAGE; the "madvise" THP mode these machines run leaves other memory in 4 KiB pages).
// For the packed inference weights, which every pass streams through: huge pages mean 512× fewer
// TLB entries and page faults, and the kernel's periodic memory scan (DAMON, every 0.5 s on these
// machines) no longer stalls a pass on thousands of small pages: BERT-base batch 1, p90 pass time
// 128 → 84 ms and median −2 % (interleaved A/B, 8 rounds). tensor_alloc uses it too for blocks
// from 2 MiB up (activations at BERT-base batch 8 and up): batch 8 forward −1.5 to −2 % (A/B, 14
// rounds, 12 won), bf16 and bert-mini −1 %, batch 1 (no such blocks), int8 and a training step
// within noise. (An earlier try with every recycled block from 16 KiB up in huge pages made a
// training step 5–7 % slower.) Throws mb::Error when out of memory; huge_page_free takes the
// size given to huge_page_alloc.
void* huge_page_alloc(size_t bytes);
void huge_page_free(void* p, size_t bytes);

// The machine's physical memory in bytes (sysconf), or the address-space limit (RLIMIT_AS) when
// that is lower. What a model built from a config may at most ask for (BertModel::init_random).
size_t physical_memory_bytes();

}  // namespace mb
