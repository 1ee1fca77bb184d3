#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "engine/error.h"

namespace mb {

namespace {

std::string errno_str() { return std::strerror(errno); }

// fsync the directory so the rename itself survives a crash. Best effort: some filesystems
// refuse to open or sync directories, and the data is already safely in place.
void sync_parent_dir(const std::string& path) {
  std::string dir = std::filesystem::path(path).parent_path().string();
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  // Same directory as the target so rename() never crosses filesystems. The pid + counter keep
  // concurrent writers (threads or processes) apart; O_EXCL never shares a file, so a stale temp
  // from a crashed run with the same pid just means trying the next name. Mode 0666 lets the
  // umask decide, as for any normally created file.
  static std::atomic<unsigned> counter{0};
  for (int attempt = 0; attempt < 100 && fd_ < 0; ++attempt) {
    tmp_ = path_ + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && errno != EEXIST) break;
  }
  if (fd_ < 0) throw Error(path_ + ": cannot create temporary file " + tmp_ + ": " + errno_str());
}

AtomicFile::~AtomicFile() { discard(); }

// Closes and removes the temp file if it is still ours (tmp_ is cleared once renamed into place).
void AtomicFile::discard() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!tmp_.empty()) ::unlink(tmp_.c_str());
  tmp_.clear();
}

void AtomicFile::fail(const std::string& what) {
  std::string msg = path_ + ": " + what + ": " + errno_str();
  discard();
  throw Error(msg);
}

void AtomicFile::write(const void* data, size_t n) {
  MB_CHECK(fd_ >= 0, path_ + ": write after commit");
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) fail("write failed");
    p += w;
    n -= size_t(w);
  }
}

void AtomicFile::commit() {
  MB_CHECK(fd_ >= 0, path_ + ": commit called twice");
  if (::fsync(fd_) != 0) fail("fsync failed");
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) fail("close failed");  // close can report deferred write errors (NFS)
  if (::rename(tmp_.c_str(), path_.c_str()) != 0) fail("cannot rename " + tmp_ + " into place");
  tmp_.clear();
  sync_parent_dir(path_);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFile f(path);
  f.write(bytes);
  f.commit();
}

void create_output_dir(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) throw Error(path + ": cannot create directory: " + ec.message());
}

}  // namespace mb
