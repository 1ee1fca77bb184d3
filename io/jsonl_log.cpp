#include "io/jsonl_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "engine/error.h"
#include "io/atomic_file.h"

namespace mb {

JsonlLog::JsonlLog(std::string path) : path_(std::move(path)) { open(); }

JsonlLog::~JsonlLog() {
  if (fd_ >= 0) ::close(fd_);
}

void JsonlLog::open() {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
  MB_CHECK(fd_ >= 0, path_ + ": cannot open log for appending: " + std::strerror(errno));
  const off_t size = ::lseek(fd_, 0, SEEK_END);
  char last = '\n';
  if (size > 0 && ::pread(fd_, &last, 1, size - 1) == 1 && last != '\n') write_line("\n");
}

void JsonlLog::write_line(const std::string& line) {
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(fd_, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    MB_CHECK(w >= 0, path_ + ": write failed: " + std::strerror(errno));
    done += size_t(w);
  }
}

void JsonlLog::write(const nlohmann::json& record) {
  std::string line;
  try {
    line = record.dump() + "\n";
  } catch (const nlohmann::json::exception& e) {  // e.g. a string that is not valid UTF-8
    throw Error(path_ + ": cannot write log record: " + e.what());
  }
  write_line(line);
}

void JsonlLog::truncate_after_step(int64_t step) {
  std::ifstream in(path_, std::ios::binary);
  MB_CHECK(in, path_ + ": cannot read log");
  std::string line, kept;
  while (std::getline(in, line)) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) continue;
    const bool has_step = j.is_object() && j.contains("step") && j["step"].is_number();
    if (!has_step || j["step"].get<double>() <= double(step)) kept += line + "\n";
  }
  in.close();
  // The open descriptor would keep appending to the replaced inode: reopen on the new file.
  ::close(fd_);
  fd_ = -1;
  write_file_atomic(path_, kept);
  open();
}

}  // namespace mb
