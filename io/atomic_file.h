// Atomic file replacement: write a temp file beside the target, fsync it, rename it over the target,
// fsync the directory. Readers see either the old file or the complete new one, never a prefix; on
// any failure the temp file is removed and the target is left untouched.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace mb {

// Streaming form, for large outputs written in pieces without building one buffer:
//   AtomicFile f(path); f.write(a, n); f.write(b, m); f.commit();
// Destroying it without commit() (e.g. an exception) discards the temp file.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(const void* data, size_t n);
  void write(std::string_view s) { write(s.data(), s.size()); }
  void commit();

  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(const std::string& what);  // discards the temp file, throws mb::Error
  void discard();

  std::string path_, tmp_;
  int fd_ = -1;
};

// Whole-buffer form (config.json and other small files).
void write_file_atomic(const std::string& path, std::string_view bytes);

// Creates the directory `path` and its parents when missing. Throws mb::Error
// "PATH: cannot create directory: REASON" (a file in the way, no permission, a full disk).
void create_output_dir(const std::string& path);

}  // namespace mb
