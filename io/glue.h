// GLUE tasks: the TSV files as distributed ($MINIBRIDGE_DATA/glue/<TASK>/{train,dev,test}.tsv),
// their labels with the names Hugging Face uses, and each task's official metrics.
// The files are plain TAB-separated text, not quoted CSV (sentences contain bare quotes). Kept
// quirks: CoLA train/dev have no header, MRPC starts with a UTF-8 BOM, STS-B scores are floats,
// some files lack a final newline; CRLF line ends are accepted too.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace mb {

struct GlueTask {
  std::string name;                 // directory name: "CoLA", "SST-2", "MRPC", ...
  bool pair = false;                // sentence pairs (a, b) rather than single sentences
  bool regression = false;          // STS-B: a score in [0, 5] instead of a class
  std::vector<std::string> labels;  // id2label as in HF's GLUE models; empty for regression
  std::string main_metric;          // the metric GLUE ranks by ("mcc", "accuracy", "f1", "pearson")

  int num_labels() const { return regression ? 1 : int(labels.size()); }
};

// Known: CoLA, SST-2, MRPC, STS-B, RTE, WNLI, QNLI, QQP, MNLI. Matching ignores case, '-' and
// '_' ("sst2", "STS-B", "stsb"). Unknown names are an mb::Error listing the known ones.
const GlueTask& glue_task(const std::string& name);
std::vector<std::string> glue_task_names();

struct GlueExample {
  std::string a, b;    // b is empty for single-sentence tasks
  int32_t label = -1;  // index into GlueTask::labels; -1 when unlabeled or regression
  float score = 0.f;   // STS-B similarity
};

struct GlueSplit {
  std::string path;
  bool labeled = false;  // test splits carry no labels
  std::vector<GlueExample> examples;
};

// Reads GLUE_DIR/<task.name>/<split>.tsv. split: "train", "dev", "test" (or any file stem, e.g.
// MNLI's "dev_matched"; stems starting with "test" are read as unlabeled). Errors are one
// mb::Error "PATH:LINE: what is wrong": missing file, missing header columns, wrong column count,
// a label outside the task's set, an unparsable score.
GlueSplit read_glue_split(const std::string& glue_dir, const GlueTask& task, const std::string& split);

// The task's GLUE metrics for predictions against gold's labels: CoLA {mcc}; SST-2, RTE, WNLI,
// QNLI, MNLI {accuracy}; MRPC, QQP {f1, accuracy}; STS-B {pearson, spearman}. predictions hold a
// class index per example (classification) or a score (regression).
std::map<std::string, double> glue_metrics(const GlueTask& task, const std::vector<float>& predictions,
                                           const GlueSplit& gold);

}  // namespace mb
