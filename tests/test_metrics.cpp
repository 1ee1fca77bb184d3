// Metrics: hand-computed values and edge cases, then random data against independent NumPy
// implementations (tests/reference/metrics_reference.py).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "engine/metrics.h"
#include "engine/rng.h"
#include "tests/test_util.h"

using V = std::vector<int32_t>;
using D = std::vector<double>;

TEST_CASE("accuracy and binary F1") {
  CHECK(mb::accuracy(V{1, 0, 1, 1}, V{1, 1, 1, 0}) == doctest::Approx(0.5));
  CHECK(mb::accuracy(V{2}, V{2}) == 1.0);
  // TP 2, FP 1, FN 1: 2*2 / (2*2 + 1 + 1).
  CHECK(mb::f1_binary(V{1, 1, 0, 0, 1}, V{1, 0, 0, 1, 1}) == doctest::Approx(4.0 / 6.0));
  CHECK(mb::f1_binary(V{0, 0}, V{0, 0}) == 0.0);  // no positives anywhere: sklearn's zero_division
  CHECK(mb::f1_binary(V{1, 1}, V{0, 0}) == 0.0);
  CHECK(mb::f1_binary(V{1, 1}, V{1, 1}) == 1.0);
}

TEST_CASE("Matthews correlation") {
  // TP 2, TN 1, FP 1, FN 1: (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6.
  CHECK(mb::matthews_corrcoef(V{1, 1, 0, 0, 1}, V{1, 0, 0, 1, 1}) == doctest::Approx(1.0 / 6.0));
  CHECK(mb::matthews_corrcoef(V{0, 1, 1, 0}, V{0, 1, 1, 0}) == doctest::Approx(1.0));
  CHECK(mb::matthews_corrcoef(V{1, 0, 0, 1}, V{0, 1, 1, 0}) == doctest::Approx(-1.0));
  // Undefined (one class predicted, or one class in gold): 0 as in sklearn.
  CHECK(mb::matthews_corrcoef(V{1, 1, 1}, V{0, 1, 0}) == 0.0);
  CHECK(mb::matthews_corrcoef(V{0, 1, 0}, V{1, 1, 1}) == 0.0);
  // Three classes, sklearn's formula: c=3, s=5, t=(2,2,1), p=(2,1,2):
  // (3*5 - (4+2+2)) / sqrt((25 - 9) * (25 - 9)) = 7/16.
  CHECK(mb::matthews_corrcoef(V{0, 0, 1, 2, 2}, V{0, 1, 1, 2, 0}) == doctest::Approx(7.0 / 16.0));
}

TEST_CASE("Pearson and Spearman") {
  CHECK(mb::pearson(D{1, 2, 3, 4, 5}, D{2, 4, 6, 8, 10}) == doctest::Approx(1.0));
  CHECK(mb::pearson(D{1, 2, 3, 4, 5}, D{5, 4, 3, 2, 1}) == doctest::Approx(-1.0));
  CHECK(mb::pearson(D{1, 2, 3}, D{1, 3, 2}) == doctest::Approx(0.5));
  CHECK(std::isnan(mb::pearson(D{1, 2, 3}, D{7, 7, 7})));  // constant input: NaN, as SciPy
  CHECK(std::isnan(mb::spearman(D{4, 4}, D{1, 2})));

  CHECK(mb::average_ranks(D{10, 30, 20, 20}) == D{1, 4, 2.5, 2.5});
  CHECK(mb::average_ranks(D{5, 5, 5}) == D{2, 2, 2});
  // Spearman is Pearson on ranks: y's ranks (1, 2, 3.5, 5, 3.5) against 1..5 give 8 / sqrt(10 * 9.5).
  CHECK(mb::spearman(D{1, 2, 3, 4, 5}, D{5, 6, 7, 8, 7}) == doctest::Approx(8.0 / std::sqrt(95.0)));
  CHECK(mb::spearman(D{1, 2, 3, 4}, D{1, 10, 100, 1000}) == doctest::Approx(1.0));  // monotone
}

TEST_CASE("metrics reject mismatched or empty inputs") {
  CHECK_THROWS_AS(mb::accuracy(V{1, 0}, V{1}), mb::Error);
  CHECK_THROWS_AS(mb::f1_binary(V{}, V{}), mb::Error);
  CHECK_THROWS_AS(mb::matthews_corrcoef(V{1}, V{}), mb::Error);
  CHECK_THROWS_AS(mb::pearson(D{1, 2}, D{1, 2, 3}), mb::Error);
  CHECK_THROWS_AS(mb::spearman(D{}, D{}), mb::Error);
}

TEST_CASE("metrics match NumPy on random data") {
  const std::string python = mbtest::env_or("MB_TORCH_PYTHON", "/usr/bin/python3");
  if (!std::filesystem::exists(python)) {
    MESSAGE("skipped: no Python at " << python);
    return;
  }
  mb::Rng rng(7);
  nlohmann::json cases = nlohmann::json::array();
  std::vector<std::pair<V, V>> labels;
  std::vector<std::pair<D, D>> values;
  for (int c = 0; c < 20; ++c) {
    const size_t n = 10 + rng.below(300);
    V pred(n), gold(n);
    D x(n), y(n);
    for (size_t i = 0; i < n; ++i) {
      gold[i] = int32_t(rng.below(2));
      pred[i] = rng.uniform() < 0.7 ? gold[i] : 1 - gold[i];
      // Rounded to one decimal so that ties are common (Spearman's average ranks).
      x[i] = std::round(rng.normal() * 10) / 10;
      y[i] = std::round((x[i] + rng.normal()) * 10) / 10;
    }
    cases.push_back({{"pred", pred}, {"gold", gold}, {"x", x}, {"y", y}});
    labels.emplace_back(pred, gold);
    values.emplace_back(x, y);
  }
  const std::string dir = mbtest::scratch_dir("metrics_reference");
  std::ofstream(dir + "/in.json") << cases.dump();
  const std::string cmd = python + " " + MB_SOURCE_DIR + "/tests/reference/metrics_reference.py " + dir +
                          "/in.json " + dir + "/out.json";
  REQUIRE(std::system(cmd.c_str()) == 0);
  const nlohmann::json ref = nlohmann::json::parse(std::ifstream(dir + "/out.json"));
  REQUIRE(ref.size() == labels.size());
  for (size_t c = 0; c < labels.size(); ++c) {
    CAPTURE(c);
    const auto& [pred, gold] = labels[c];
    const auto& [x, y] = values[c];
    CHECK(mb::accuracy(pred, gold) == doctest::Approx(ref[c]["accuracy"].get<double>()).epsilon(1e-12));
    CHECK(mb::f1_binary(pred, gold) == doctest::Approx(ref[c]["f1"].get<double>()).epsilon(1e-12));
    CHECK(mb::matthews_corrcoef(pred, gold) == doctest::Approx(ref[c]["mcc"].get<double>()).epsilon(1e-10));
    CHECK(mb::pearson(x, y) == doctest::Approx(ref[c]["pearson"].get<double>()).epsilon(1e-10));
    CHECK(mb::spearman(x, y) == doctest::Approx(ref[c]["spearman"].get<double>()).epsilon(1e-10));
  }
}
