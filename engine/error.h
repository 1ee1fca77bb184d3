// One exception type for every user-facing failure: the message names the file (or input line)
// and what is wrong. The CLI prints it once and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace mb {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// MB_CHECK(cond, msg): throws mb::Error(msg) when cond is false. msg is only built on failure.
#define MB_CHECK(cond, msg)                         \
  do {                                              \
    if (!(cond)) throw ::mb::Error(std::string(msg)); \
  } while (0)

}  // namespace mb
