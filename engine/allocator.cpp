#include "engine/allocator.h"

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

#include "engine/error.h"

namespace mb {

namespace {

constexpr size_t kMinCached = size_t(256) << 10;  // smaller blocks: malloc's own free lists do well
constexpr size_t kGranule = size_t(64) << 10;

size_t cache_limit() {
  static const size_t limit = [] {
    const char* env = std::getenv("MB_TENSOR_CACHE_MB");
    return (env && *env ? size_t(std::strtoull(env, nullptr, 10)) : size_t(4096)) << 20;
  }();
  return limit;
}

struct Cache {
  std::mutex mu;
  std::multimap<size_t, void*> free;  // capacity -> block
  size_t bytes = 0;
};

Cache& cache() {
  static Cache* c = new Cache;  // never destroyed: tensors may die during static destruction
  return *c;
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
  const size_t want = ((bytes + kGranule - 1) / kGranule) * kGranule;
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
  void* p = std::aligned_alloc(64, want);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  *capacity = want;
  return p;
}

void tensor_free(void* p, size_t capacity) {
  if (capacity >= kMinCached) {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    if (c.bytes + capacity <= cache_limit()) {
      c.free.emplace(capacity, p);
      c.bytes += capacity;
      return;
    }
  }
  std::free(p);
}

size_t tensor_cache_bytes() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  return c.bytes;
}

void tensor_cache_clear() {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mu);
  for (auto& [cap, p] : c.free) std::free(p);
  c.free.clear();
  c.bytes = 0;
}

}  // namespace mb
