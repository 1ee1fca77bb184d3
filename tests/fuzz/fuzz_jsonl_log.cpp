// The JSON-lines log a resumed run rewrites (train_log.jsonl, pretrain's log): lines cut by a
// kill, invalid JSON, "step" of any type. After truncate_after_step(step) every line left must be
// valid JSON whose numeric "step" is <= step, and a record appended after it starts on its own line.
#include <sstream>

#include "io/jsonl_log.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    fuzz::write_file(dir + "/log", std::string(1, '\x05') + R"({"event": "start", "config": {"lr": 0.0001}}
{"step": 2, "loss": 0.7}
{"step": 4, "loss": 0.6, "lr": 1e-05}
{"step": 6, "loss": 0.5}
{"step": 8, "lo)");
  });
  return 0;
}

// Input: the first byte is the step to resume at, the rest the log file.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int64_t step = data[0];
  const std::string path = fuzz::scratch_dir() + "/train_log.jsonl";
  fuzz::write_file(path, fuzz::bytes(data + 1, size - 1));
  try {
    {
      JsonlLog log(path);
      log.truncate_after_step(step);
      log.write({{"step", step + 1}, {"event", "resumed"}});
    }
    std::istringstream lines(fuzz::read_file(path));
    std::string line;
    double last_step = -1;
    while (std::getline(lines, line)) {
      const nlohmann::json j = nlohmann::json::parse(line);  // throws (a finding) if not valid JSON
      if (j.is_object() && j.contains("step") && j["step"].is_number()) last_step = j["step"].get<double>();
      if (last_step > double(step) && !(j.is_object() && j.value("event", "") == "resumed")) std::abort();
    }
    if (last_step != double(step + 1)) std::abort();
  } catch (const Error&) {
  }
  return 0;
}
