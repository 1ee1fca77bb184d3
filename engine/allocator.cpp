#include "engine/allocator.h"

#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "engine/error.h"

namespace mb {

namespace {

// Blocks from 16 KiB up are recycled. Smaller ones go to malloc, whose free lists serve them
// well; blocks in between freed back to malloc coalesce into the top of its heap, which it then
// trims (brk shrinks: a TLB shoot-down on every core) and regrows (a page fault per page) on the
// next forward pass: at bert-tiny's 64 KiB activations that was 16% of a batch-1 forward.
constexpr size_t kMinCached = size_t(16) << 10;

constexpr size_t kHugePage = size_t(2) << 20, kSmallPage = size_t(4) << 10;

// Blocks of a huge page and up (a layer's activations at BERT-base batch sizes) are mapped in
// huge pages: the products stream them as often as the weights, which are in huge pages too.
// A smaller block could not fill one.
constexpr size_t kHugeBlock = kHugePage;

// Blocks from 256 KiB up are mapped on their own rather than taken from malloc's heap, so that a
// block released by the cache goes back to the system at once. From malloc's heap it would leave a
// hole that glibc keeps (it only trims the heap's top): a run whose blocks outlive each other in
// changing orders, as K-prune's per-batch carried inputs do, then grows its heap past what it
// holds (K-prune of BERT-base at 100k sample tokens, cache capped at 256 MiB, 2 threads: after 2
// of 24 steps a 1.56 GB heap and a 2.65 GiB peak; with these blocks mapped 0.16 GB and 2.10 GiB).
// Blocks the cache keeps are reused as before.
constexpr size_t kMappedBlock = size_t(256) << 10;

void* map_block(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void release(void* p, size_t capacity) {
  if (capacity >= kHugeBlock) huge_page_free(p, capacity);
  else if (capacity >= kMappedBlock) munmap(p, capacity);
  else std::free(p);
}

// Capacity rounding: 4 KiB steps below 256 KiB, 64 KiB steps above, so that the sizes one
// model's passes request map to a few reusable capacities.
size_t rounded_capacity(size_t bytes) {
  const size_t granule = bytes < (size_t(256) << 10) ? size_t(4) << 10 : size_t(64) << 10;
  return ((bytes + granule - 1) / granule) * granule;
}

const char* cache_limit_env() {
  const char* env = std::getenv("MB_TENSOR_CACHE_MB");
  return env && *env ? env : nullptr;
}

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free;  // capacity -> block
  size_t bytes = 0;
  size_t limit = [] {
    const char* env = cache_limit_env();
    return (env ? size_t(std::strtoull(env, nullptr, 10)) : size_t(4096)) << 20;
  }();
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: tensors may die during static destruction
  return *c;
}

// Releases the largest cached blocks until the cache holds at most c.limit bytes. Caller holds c.mu.
void trim_to_limit(Cache& c) {
  while (c.bytes > c.limit && !c.free.empty()) {
    auto last = std::prev(c.free.end());
    c.bytes -= last->first;
    release(last->second, last->first);
    c.free.erase(last);
  }
}

}  // namespace

void* tensor_alloc(size_t bytes, size_t* capacity) {
  if (bytes < kMinCached) {
    const size_t cap = ((bytes + 63) / 64) * 64 + (bytes == 0 ? 64 : 0);
    void* p = std::aligned_alloc(64, cap);
    if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
    *capacity = cap;
    return p;
  }
  const size_t want = rounded_capacity(bytes);
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    auto it = c.free.lower_bound(want);
    // Reuse a block at most 1.5x the request: bigger ones are kept for bigger requests.
    if (it != c.free.end() && it->first <= want + want / 2) {
      *capacity = it->first;
      void* p = it->second;
      c.bytes -= it->first;
      c.free.erase(it);
      return p;
    }
  }
  // (want is a multiple of 64 KiB from 256 KiB up: whole pages for map_block.)
  void* p = want >= kHugeBlock ? huge_page_alloc(want) : want >= kMappedBlock ? map_block(want) : std::aligned_alloc(64, want);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  *capacity = want;
  return p;
}

void tensor_free(void* p, size_t capacity) {
  if (capacity >= kMinCached) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.bytes + capacity <= c.limit) {
      c.free.emplace(capacity, p);
      c.bytes += capacity;
      return;
    }
  }
  release(p, capacity);
}

size_t tensor_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.bytes;
}

size_t tensor_cache_limit() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.limit;
}

size_t tensor_cache_set_limit(size_t bytes) {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  const size_t previous = c.limit;
  c.limit = bytes;
  trim_to_limit(c);
  return previous;
}

bool tensor_cache_limit_from_env() { return cache_limit_env() != nullptr; }

TensorCacheLimitScope::TensorCacheLimitScope(size_t bytes) : set_(!tensor_cache_limit_from_env()) {
  if (set_) previous_ = tensor_cache_set_limit(bytes);
}
TensorCacheLimitScope::~TensorCacheLimitScope() {
  if (set_) tensor_cache_set_limit(previous_);
}

void tensor_cache_clear() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [cap, p] : c.free) release(p, cap);
  c.free.clear();
  c.bytes = 0;
}

namespace {
size_t page_rounded(size_t bytes) { return (std::max<size_t>(bytes, 1) + kSmallPage - 1) / kSmallPage * kSmallPage; }
}  // namespace

void* huge_page_alloc(size_t bytes) {
  const size_t len = page_rounded(bytes);
  // Over-map by one huge page, then cut the ends so that the block starts on a 2 MiB boundary
  // (a huge page can only back an aligned 2 MiB range; a tail under 2 MiB stays in small pages).
  void* raw = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw Error("out of memory mapping " + std::to_string(bytes) + " bytes");
  const uintptr_t r = uintptr_t(raw), a = (r + kHugePage - 1) / kHugePage * kHugePage;
  if (a > r) munmap(raw, a - r);
  if (r + kHugePage > a) munmap(reinterpret_cast<void*>(a + len), r + kHugePage - a);
  void* p = reinterpret_cast<void*>(a);
#ifdef MADV_HUGEPAGE
  madvise(p, len, MADV_HUGEPAGE);  // advice only: where THP is off, these are small pages
#endif
  return p;
}

void huge_page_free(void* p, size_t bytes) {
  if (p) munmap(p, page_rounded(bytes));
}

size_t physical_memory_bytes() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  size_t bytes = pages > 0 && page > 0 ? size_t(pages) * size_t(page) : SIZE_MAX;
  struct rlimit as;
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) bytes = std::min(bytes, size_t(as.rlim_cur));
  return bytes;
}

}  // namespace mb
