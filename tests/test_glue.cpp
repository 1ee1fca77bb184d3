// GLUE readers on the real TSV files (row counts, first/last rows, quirks), the GLUE metrics, and
// one small bad file per error case.
#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "engine/error.h"
#include "io/glue.h"
#include "tests/test_util.h"

namespace {

std::string glue_dir() { return mbtest::data_dir() + "/glue"; }

// Writes DIR/<task>/<split>.tsv and returns DIR.
std::string write_split(const std::string& test, const std::string& task, const std::string& split,
                        const std::string& text) {
  const std::string dir = mbtest::scratch_dir("glue_" + test);
  std::filesystem::create_directories(dir + "/" + task);
  std::ofstream(dir + "/" + task + "/" + split + ".tsv", std::ios::binary) << text;
  return dir;
}

}  // namespace

TEST_CASE("GLUE task table") {
  CHECK(mb::glue_task("cola").name == "CoLA");
  CHECK(mb::glue_task("SST-2").name == "SST-2");
  CHECK(mb::glue_task("sst2").name == "SST-2");
  CHECK(mb::glue_task("stsb").regression);
  CHECK(mb::glue_task("STS-B").num_labels() == 1);
  CHECK(mb::glue_task("mrpc").pair);
  CHECK_FALSE(mb::glue_task("CoLA").pair);
  CHECK(mb::glue_task("rte").labels == std::vector<std::string>{"entailment", "not_entailment"});
  CHECK(mb::glue_task("wnli").labels == std::vector<std::string>{"not_entailment", "entailment"});
  CHECK(mb::glue_task("CoLA").main_metric == "mcc");
  const std::string msg = mbtest::error_of([] { mb::glue_task("squad"); });
  CHECK(msg.find("unknown GLUE task 'squad'") != std::string::npos);
  CHECK(msg.find("CoLA, SST-2, MRPC, STS-B, RTE, WNLI") != std::string::npos);
}

TEST_CASE("GLUE real files: row counts and labels") {
  struct Expect {
    const char* task;
    size_t train, dev, test;
  };
  for (const Expect& e : {Expect{"CoLA", 8551, 1043, 1063}, Expect{"SST-2", 67349, 872, 1821},
                          Expect{"MRPC", 3668, 408, 1725}, Expect{"RTE", 2490, 277, 3000},
                          Expect{"STS-B", 5749, 1500, 1379}, Expect{"WNLI", 635, 71, 146}}) {
    CAPTURE(e.task);
    const mb::GlueTask& task = mb::glue_task(e.task);
    const mb::GlueSplit train = mb::read_glue_split(glue_dir(), task, "train");
    const mb::GlueSplit dev = mb::read_glue_split(glue_dir(), task, "dev");
    const mb::GlueSplit test = mb::read_glue_split(glue_dir(), task, "test");
    CHECK(train.examples.size() == e.train);
    CHECK(dev.examples.size() == e.dev);
    CHECK(test.examples.size() == e.test);
    CHECK(train.labeled);
    CHECK_FALSE(test.labeled);
    for (const mb::GlueSplit* split : {&train, &dev, &test}) {
      size_t bad = 0;  // rows breaking an invariant (one CHECK per split, not per row)
      for (const mb::GlueExample& ex : split->examples) {
        bool ok = !ex.a.empty() && ex.b.empty() != task.pair && ex.a.find_first_of("\t\r\n") == std::string::npos &&
                  ex.b.find_first_of("\t\r\n") == std::string::npos;
        if (split->labeled && task.regression) ok = ok && ex.score >= 0 && ex.score <= 5;
        if (split->labeled && !task.regression) ok = ok && ex.label >= 0 && ex.label < task.num_labels();
        if (!split->labeled || task.regression) ok = ok && ex.label == -1;
        bad += !ok;
      }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("GLUE real files: contents") {
  const mb::GlueSplit cola = mb::read_glue_split(glue_dir(), mb::glue_task("CoLA"), "train");
  CHECK(cola.examples[0].a == "Our friends won't buy this analysis, let alone the next one we propose.");
  CHECK(cola.examples[0].label == 1);
  // dev.tsv has no final newline: the last row is still read whole.
  const mb::GlueSplit cola_dev = mb::read_glue_split(glue_dir(), mb::glue_task("CoLA"), "dev");
  CHECK(cola_dev.examples.back().a == "John talked to Bill about himself.");
  CHECK(mb::read_glue_split(glue_dir(), mb::glue_task("CoLA"), "test").examples[0].a ==
        "Bill whistled past the house.");

  const mb::GlueSplit mrpc = mb::read_glue_split(glue_dir(), mb::glue_task("MRPC"), "dev");  // BOM header
  CHECK(mrpc.examples[0].label == 1);
  CHECK(mrpc.examples[0].a.rfind("He said the foodservice pie business", 0) == 0);
  CHECK(mrpc.examples[0].b == "\" The foodservice pie business does not fit our long-term growth strategy .");

  const mb::GlueSplit stsb = mb::read_glue_split(glue_dir(), mb::glue_task("STS-B"), "dev");
  CHECK(stsb.examples[0].a == "A man with a hard hat is dancing.");
  CHECK(stsb.examples[0].b == "A man wearing a hard hat is dancing.");
  CHECK(stsb.examples[0].score == 5.0f);
  CHECK(stsb.examples[1].score == 4.75f);

  const mb::GlueSplit rte = mb::read_glue_split(glue_dir(), mb::glue_task("RTE"), "dev");
  CHECK(rte.examples[0].label == 1);  // not_entailment
  CHECK(rte.examples[0].b == "Christopher Reeve had an accident.");

  const mb::GlueSplit wnli = mb::read_glue_split(glue_dir(), mb::glue_task("WNLI"), "dev");
  CHECK(wnli.examples[1].label == 1);  // entailment

  const auto t0 = std::chrono::steady_clock::now();
  const mb::GlueSplit sst = mb::read_glue_split(glue_dir(), mb::glue_task("SST-2"), "train");
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("SST-2 train read in " << seconds << " s");  // reported, not asserted: speed is for benchmarks
  CHECK(sst.examples[0].a == "hide new secretions from the parental units ");
  CHECK(sst.examples[0].label == 0);
  size_t positive = 0;
  for (const mb::GlueExample& ex : sst.examples) positive += ex.label == 1;
  CHECK(positive == 37569);
}

TEST_CASE("GLUE metrics per task") {
  const mb::GlueTask& cola = mb::glue_task("CoLA");
  const mb::GlueSplit dev = mb::read_glue_split(glue_dir(), cola, "dev");
  std::vector<float> perfect, all_ones(dev.examples.size(), 1.f);
  for (const mb::GlueExample& ex : dev.examples) perfect.push_back(float(ex.label));
  CHECK(mb::glue_metrics(cola, perfect, dev) == std::map<std::string, double>{{"mcc", 1.0}});
  CHECK(mb::glue_metrics(cola, all_ones, dev).at("mcc") == 0.0);  // constant predictions

  // MRPC: f1 and accuracy on a small hand-made split.
  mb::GlueSplit gold{"x.tsv", true, {}};
  for (int label : {1, 0, 0, 1, 1}) gold.examples.push_back({"a", "b", label, 0.f});
  const auto mrpc = mb::glue_metrics(mb::glue_task("MRPC"), {1, 1, 0, 0, 1}, gold);
  CHECK(mrpc.size() == 2);
  CHECK(mrpc.at("f1") == doctest::Approx(4.0 / 6.0));
  CHECK(mrpc.at("accuracy") == doctest::Approx(0.6));
  CHECK(mb::glue_metrics(mb::glue_task("RTE"), {1, 1, 0, 0, 1}, gold) ==
        std::map<std::string, double>{{"accuracy", 0.6}});

  const mb::GlueTask& stsb = mb::glue_task("STS-B");
  const mb::GlueSplit sts_dev = mb::read_glue_split(glue_dir(), stsb, "dev");
  std::vector<float> scores;
  for (const mb::GlueExample& ex : sts_dev.examples) scores.push_back(2 * ex.score + 1);  // linear: r = 1
  const auto m = mb::glue_metrics(stsb, scores, sts_dev);
  CHECK(m.size() == 2);
  CHECK(m.at("pearson") == doctest::Approx(1.0));
  CHECK(m.at("spearman") == doctest::Approx(1.0));

  CHECK(mbtest::error_of([&] { mb::glue_metrics(cola, {1, 0}, dev); }).find("2 predictions for 1043 examples") !=
        std::string::npos);
  const mb::GlueSplit test = mb::read_glue_split(glue_dir(), cola, "test");
  CHECK(mbtest::error_of([&] { mb::glue_metrics(cola, {}, test); }).find("has no labels") != std::string::npos);
}

TEST_CASE("GLUE quirks: BOM, CRLF, no final newline, quotes, blank lines") {
  const std::string dir = write_split("quirks", "MRPC", "train",
                                      "\xEF\xBB\xBFQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n"
                                      "1\t11\t12\t\"Quoted, with comma\t\"half quote\r\n"
                                      "\r\n"
                                      "0\t13\t14\tThird line\tlast one");
  const mb::GlueSplit s = mb::read_glue_split(dir, mb::glue_task("MRPC"), "train");
  REQUIRE(s.examples.size() == 2);
  CHECK(s.examples[0].a == "\"Quoted, with comma");
  CHECK(s.examples[0].b == "\"half quote");
  CHECK(s.examples[0].label == 1);
  CHECK(s.examples[1].b == "last one");
  CHECK(s.examples[1].label == 0);

  // Other layouts, read by header names.
  const std::string mnli = write_split("mnli", "MNLI", "dev_matched",
                                       "index\tsentence1\tsentence2\tgold_label\n0\tA\tB\tneutral\n");
  const mb::GlueSplit m = mb::read_glue_split(mnli, mb::glue_task("mnli"), "dev_matched");
  REQUIRE(m.examples.size() == 1);
  CHECK(m.labeled);
  CHECK(m.examples[0].label == 1);
}

TEST_CASE("GLUE errors name the file and line") {
  struct Bad {
    const char* name;
    const char* task;
    const char* split;
    const char* text;
    const char* where;  // expected after the path
    const char* what;
  };
  for (const Bad& b : {
           Bad{"columns", "SST-2", "train", "sentence\tlabel\ngood\t1\nno label here\n", ":3: ",
               "1 TAB-separated columns, expected 2"},
           Bad{"label", "SST-2", "dev", "sentence\tlabel\ngood\t1\nbad\t2\n", ":3: ", "label '2' is not one of 0, 1"},
           Bad{"rte_label", "RTE", "train", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentails\n", ":2: ",
               "label 'entails' is not one of entailment, not_entailment"},
           Bad{"score", "STS-B", "train",
               "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
               "0\tg\tf\ty\t0\tn\tn\ta\tb\t4.5\n1\tg\tf\ty\t0\tn\tn\ta\tb\t4,5\n",
               ":3: ", "score '4,5' is not a number"},
           Bad{"header", "SST-2", "train", "text\tlabel\nx\t1\n", ":1: ", "missing column 'sentence'"},
           Bad{"test_header", "RTE", "test", "index\tsentence1\n0\ta\n", ":1: ", "missing column 'sentence2'"},
           Bad{"cola_columns", "CoLA", "train", "gj04\t1\t\tfine\r\ngj04\t1\tno sentence\r\n", ":2: ",
               "3 TAB-separated columns, expected 4"},
           Bad{"crlf_label", "WNLI", "train", "index\tsentence1\tsentence2\tlabel\r\n0\ta\tb\t1\r\n1\ta\tb\tx\r\n",
               ":3: ", "label 'x'"},
       }) {
    CAPTURE(b.name);
    const std::string dir = write_split(b.name, b.task, b.split, b.text);
    const std::string path = dir + "/" + b.task + "/" + b.split + ".tsv";
    const std::string msg = mbtest::error_of([&] { mb::read_glue_split(dir, mb::glue_task(b.task), b.split); });
    CHECK(msg.find(path + b.where) == 0);
    CHECK(msg.find(b.what) != std::string::npos);
  }

  const std::string dir = mbtest::scratch_dir("glue_missing");
  const std::string msg = mbtest::error_of([&] { mb::read_glue_split(dir, mb::glue_task("RTE"), "dev"); });
  CHECK(msg == dir + "/RTE/dev.tsv: file not found");
  const std::string empty = write_split("empty", "RTE", "dev", "");
  CHECK(mbtest::error_of([&] { mb::read_glue_split(empty, mb::glue_task("RTE"), "dev"); }).find("RTE/dev.tsv: empty file") !=
        std::string::npos);
}
