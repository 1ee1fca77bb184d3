// A map that holds at most `capacity` entries and drops the least recently used one to make room.
// For things that are costly to make and costly to keep: oneDNN's matmul primitives, one per
// product shape (engine/packed_gemm.cpp), each holding ~100 KiB of generated code. Not thread safe:
// the owner locks.
#pragma once
#include <cstddef>
#include <list>
#include <map>
#include <utility>

#include "engine/error.h"

namespace mb {

template <class Key, class Value>
class LruCache {
 public:
  explicit LruCache(size_t capacity) : capacity_(capacity) {
    MB_CHECK(capacity > 0, "LruCache: capacity must be positive");
  }

  // The value of key, made by make() when absent (then, when full, the least recently used entry
  // goes first). The reference stays valid until the entry is dropped. If make() throws, nothing
  // changes.
  template <class Make>
  const Value& get_or_make(const Key& key, Make&& make) {
    auto it = where_.find(key);
    if (it != where_.end()) {
      order_.splice(order_.begin(), order_, it->second);  // now the most recently used
      return it->second->second;
    }
    Value value = make();
    if (order_.size() >= capacity_) {
      where_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(key, std::move(value));
    where_.emplace(key, order_.begin());
    return order_.front().second;
  }

  bool contains(const Key& key) const { return where_.count(key) != 0; }
  size_t size() const { return order_.size(); }
  size_t capacity() const { return capacity_; }

 private:
  using Order = std::list<std::pair<Key, Value>>;  // most recently used first
  size_t capacity_;
  Order order_;
  std::map<Key, typename Order::iterator> where_;
};

}  // namespace mb
