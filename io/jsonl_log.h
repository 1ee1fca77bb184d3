// Machine-readable results of long jobs: one JSON object per line, appended and flushed line by
// line, so a resumed run continues the same file and a killed run loses at most the line in flight.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace mb {

class JsonlLog {
 public:
  // Opens `path` for appending (creating it). A last line cut short by a kill is terminated so
  // that the next record starts on its own line.
  explicit JsonlLog(std::string path);
  ~JsonlLog();
  JsonlLog(const JsonlLog&) = delete;
  JsonlLog& operator=(const JsonlLog&) = delete;

  // Appends record.dump() + "\n" with a single write(2): no user-space buffer to lose.
  void write(const nlohmann::json& record);

  // For resuming from the checkpoint taken at `step`: atomically rewrites the file keeping only the
  // lines whose "step" is <= step or that have no numeric "step" (headers, config); lines that are
  // not valid JSON (cut by a kill) are dropped.
  void truncate_after_step(int64_t step);

  const std::string& path() const { return path_; }

 private:
  void open();
  void write_line(const std::string& line);
  std::string path_;
  int fd_ = -1;
};

}  // namespace mb
