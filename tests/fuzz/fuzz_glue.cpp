// GLUE TSV files: headers, column counts, labels, scores, BOM, CRLF, missing final newline, for
// every task's layout (the first input byte picks the task and the split), then the task's metrics
// on the labels read.
#include "io/data_dir.h"
#include "io/glue.h"
#include "tests/fuzz/fuzz_util.h"

using namespace mb;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::write_seeds_if_asked([](const std::string& dir) {
    // The first lines of each task's dev and train files in $MINIBRIDGE_DATA/glue, after the
    // task's index (glue_task_names() order) and the split byte.
    const auto names = glue_task_names();
    const std::string glue = find_data_dir() + "/glue";
    for (size_t i = 0; i < names.size(); ++i) {
      const GlueTask& t = glue_task(names[i]);
      for (const char* split : {"dev", "train"}) {
        std::ifstream f(glue + "/" + t.name + "/" + split + ".tsv", std::ios::binary);
        std::string text, line;
        for (int n = 0; n < 8 && std::getline(f, line); ++n) text += line + "\n";
        if (!text.empty())
          fuzz::write_file(dir + "/" + t.name + "_" + split, std::string(1, char(i)) + (split[0] == 'd' ? '\1' : '\0') + text);
      }
    }
    fuzz::write_file(dir + "/sst2_hand", std::string("\1\1") + "sentence\tlabel\r\nit 's good\t1\r\nbad\t0");
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const auto names = glue_task_names();
  const GlueTask& task = glue_task(names[data[0] % names.size()]);
  const std::string split = data[1] % 3 == 0 ? "train" : data[1] % 3 == 1 ? "dev" : "test";
  const std::string glue = fuzz::fresh_dir("glue");
  std::filesystem::create_directories(glue + "/" + task.name);
  fuzz::write_file(glue + "/" + task.name + "/" + split + ".tsv", fuzz::bytes(data + 2, size - 2));
  try {
    const GlueSplit s = read_glue_split(glue, task, split);
    if (s.labeled && !s.examples.empty()) {
      std::vector<float> predictions;
      for (const GlueExample& e : s.examples) predictions.push_back(task.regression ? e.score : float(e.label));
      (void)glue_metrics(task, predictions, s);
    }
  } catch (const Error&) {
  }
  return 0;
}
