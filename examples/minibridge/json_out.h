// Fast JSON-lines output for numeric arrays: floats in their shortest round-trip form.
#pragma once
#include <charconv>
#include <cstdint>
#include <string>

namespace mbcli {

inline void append_float(std::string& out, float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

template <class T>
inline void append_int(std::string& out, T v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, r.ptr);
}

template <class It, class Fn>
inline void append_array(std::string& out, It begin, It end, Fn each) {
  out += '[';
  for (It it = begin; it != end; ++it) {
    if (it != begin) out += ',';
    each(out, *it);
  }
  out += ']';
}

inline void append_floats(std::string& out, const float* p, int64_t n) {
  append_array(out, p, p + n, [](std::string& o, float v) { append_float(o, v); });
}

template <class V>
inline void append_ints(std::string& out, const V& v) {
  append_array(out, v.begin(), v.end(), [](std::string& o, auto x) { append_int(o, x); });
}

}  // namespace mbcli
