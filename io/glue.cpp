#include "io/glue.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>

#include "engine/error.h"
#include "engine/metrics.h"

namespace mb {
namespace {

// How a task's files are laid out. Columns are found by header name; CoLA's train/dev files have
// no header, so they get the names of their four fixed columns instead.
struct TaskLayout {
  GlueTask task;
  std::vector<std::string> file_labels;  // labels as written in the files, in task.labels order
  std::string a, b, label;               // column names (b empty: single sentence)
  std::vector<std::string> implicit_header = {};  // labeled files without a header line
};

const std::vector<TaskLayout>& layouts() {
  static const std::vector<TaskLayout> all = {
      {{"CoLA", false, false, {"unacceptable", "acceptable"}, "mcc"}, {"0", "1"}, "sentence", "", "label",
       {"source", "label", "original_mark", "sentence"}},
      {{"SST-2", false, false, {"negative", "positive"}, "accuracy"}, {"0", "1"}, "sentence", "", "label"},
      {{"MRPC", true, false, {"not_equivalent", "equivalent"}, "f1"}, {"0", "1"}, "#1 String", "#2 String",
       "Quality"},
      {{"STS-B", true, true, {}, "pearson"}, {}, "sentence1", "sentence2", "score"},
      {{"RTE", true, false, {"entailment", "not_entailment"}, "accuracy"},
       {"entailment", "not_entailment"}, "sentence1", "sentence2", "label"},
      {{"WNLI", true, false, {"not_entailment", "entailment"}, "accuracy"}, {"0", "1"}, "sentence1",
       "sentence2", "label"},
      {{"QNLI", true, false, {"entailment", "not_entailment"}, "accuracy"},
       {"entailment", "not_entailment"}, "question", "sentence", "label"},
      {{"QQP", true, false, {"not_duplicate", "duplicate"}, "f1"}, {"0", "1"}, "question1", "question2",
       "is_duplicate"},
      {{"MNLI", true, false, {"entailment", "neutral", "contradiction"}, "accuracy"},
       {"entailment", "neutral", "contradiction"}, "sentence1", "sentence2", "gold_label"},
  };
  return all;
}

std::string canonical(std::string_view name) {
  std::string out;
  for (char c : name)
    if (c != '-' && c != '_') out += char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const TaskLayout& layout_of(const GlueTask& task) {
  for (const TaskLayout& l : layouts())
    if (l.task.name == task.name) return l;
  throw Error("GLUE task '" + task.name + "' has no known file layout");
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

std::vector<std::string_view> split_tabs(std::string_view line) {
  std::vector<std::string_view> out;
  for (size_t start = 0;;) {
    const size_t tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string_view::npos ? std::string_view::npos : tab - start));
    if (tab == std::string_view::npos) return out;
    start = tab + 1;
  }
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  MB_CHECK(std::filesystem::is_regular_file(path, ec), path + ": file not found");
  std::ifstream in(path, std::ios::binary);
  MB_CHECK(in, path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return std::move(ss).str();
}

}  // namespace

std::vector<std::string> glue_task_names() {
  std::vector<std::string> names;
  for (const TaskLayout& l : layouts()) names.push_back(l.task.name);
  return names;
}

const GlueTask& glue_task(const std::string& name) {
  for (const TaskLayout& l : layouts())
    if (canonical(l.task.name) == canonical(name)) return l.task;
  throw Error("unknown GLUE task '" + name + "' (known: " + join(glue_task_names()) + ")");
}

GlueSplit read_glue_split(const std::string& glue_dir, const GlueTask& task, const std::string& split) {
  const TaskLayout& layout = layout_of(task);
  GlueSplit out;
  out.path = (std::filesystem::path(glue_dir) / task.name / (split + ".tsv")).string();
  out.labeled = split.rfind("test", 0) != 0;
  const std::string text = read_file(out.path);

  std::string_view rest(text);
  if (rest.substr(0, 3) == "\xEF\xBB\xBF") rest.remove_prefix(3);  // MRPC's BOM
  size_t line_no = 0;
  auto where = [&] { return out.path + ":" + std::to_string(line_no) + ": "; };
  // Next non-blank line without its line end; false at the end of the file.
  auto next_line = [&](std::string_view& line) {
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      line = rest.substr(0, nl);
      rest.remove_prefix(nl == std::string_view::npos ? rest.size() : nl + 1);
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) return true;
    }
    return false;
  };

  std::vector<std::string> header = layout.implicit_header;
  std::string_view line;
  if (header.empty() || !out.labeled) {
    MB_CHECK(next_line(line), out.path + ": empty file (expected a header line)");
    header.clear();
    for (std::string_view f : split_tabs(line)) header.emplace_back(f);
  }
  auto column = [&](const std::string& name) -> size_t {
    if (name.empty()) return SIZE_MAX;
    const auto it = std::find(header.begin(), header.end(), name);
    MB_CHECK(it != header.end(), where() + "missing column '" + name + "' (header: " + join(header) + ")");
    return size_t(it - header.begin());
  };
  const size_t col_a = column(layout.a), col_b = column(layout.b);
  const size_t col_label = out.labeled ? column(layout.label) : SIZE_MAX;

  while (next_line(line)) {
    const std::vector<std::string_view> f = split_tabs(line);
    MB_CHECK(f.size() == header.size(), where() + std::to_string(f.size()) + " TAB-separated columns, expected " +
                                            std::to_string(header.size()));
    GlueExample& ex = out.examples.emplace_back();
    ex.a = f[col_a];
    if (col_b != SIZE_MAX) ex.b = f[col_b];
    if (col_label == SIZE_MAX) continue;
    const std::string_view value = f[col_label];
    if (task.regression) {
      const char* end = value.data() + value.size();
      const auto [ptr, ec] = std::from_chars(value.data(), end, ex.score);
      MB_CHECK(ec == std::errc() && ptr == end && std::isfinite(ex.score),
               where() + "score '" + std::string(value) + "' is not a number");
    } else {
      const auto it = std::find(layout.file_labels.begin(), layout.file_labels.end(), value);
      MB_CHECK(it != layout.file_labels.end(), where() + "label '" + std::string(value) + "' is not one of " +
                                                   join(layout.file_labels));
      ex.label = int32_t(it - layout.file_labels.begin());
    }
  }
  return out;
}

std::map<std::string, double> glue_metrics(const GlueTask& task, const std::vector<float>& predictions,
                                           const GlueSplit& gold) {
  MB_CHECK(gold.labeled, gold.path + ": has no labels to score against");
  MB_CHECK(predictions.size() == gold.examples.size(),
           gold.path + ": " + std::to_string(predictions.size()) + " predictions for " +
               std::to_string(gold.examples.size()) + " examples");
  if (task.regression) {
    std::vector<double> pred(predictions.begin(), predictions.end()), ref;
    for (const GlueExample& ex : gold.examples) ref.push_back(ex.score);
    return {{"pearson", pearson(pred, ref)}, {"spearman", spearman(pred, ref)}};
  }
  std::vector<int32_t> pred, ref;
  for (float p : predictions) pred.push_back(int32_t(std::lround(p)));
  for (const GlueExample& ex : gold.examples) ref.push_back(ex.label);
  if (task.main_metric == "mcc") return {{"mcc", matthews_corrcoef(pred, ref)}};
  if (task.main_metric == "f1") return {{"f1", f1_binary(pred, ref)}, {"accuracy", accuracy(pred, ref)}};
  return {{"accuracy", accuracy(pred, ref)}};
}

}  // namespace mb
