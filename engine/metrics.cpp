#include "engine/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <string>

#include "engine/error.h"

namespace mb {
namespace {

template <class T>
void check_sizes(const char* metric, std::span<const T> a, std::span<const T> b) {
  MB_CHECK(a.size() == b.size(), std::string(metric) + ": " + std::to_string(a.size()) + " predictions for " +
                                     std::to_string(b.size()) + " gold values");
  MB_CHECK(!a.empty(), std::string(metric) + ": no examples");
}

}  // namespace

double accuracy(std::span<const int32_t> pred, std::span<const int32_t> gold) {
  check_sizes("accuracy", pred, gold);
  size_t hits = 0;
  for (size_t i = 0; i < pred.size(); ++i) hits += pred[i] == gold[i];
  return double(hits) / double(pred.size());
}

double f1_binary(std::span<const int32_t> pred, std::span<const int32_t> gold) {
  check_sizes("f1", pred, gold);
  size_t tp = 0, fp = 0, fn = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    const bool p = pred[i] == 1, g = gold[i] == 1;
    tp += p && g;
    fp += p && !g;
    fn += !p && g;
  }
  return tp ? 2.0 * double(tp) / double(2 * tp + fp + fn) : 0.0;
}

double matthews_corrcoef(std::span<const int32_t> pred, std::span<const int32_t> gold) {
  check_sizes("mcc", pred, gold);
  // sklearn's formula: with t_k / p_k how often class k is true / predicted, c correct, s total,
  // MCC = (c s - sum t_k p_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)).
  std::map<int32_t, std::pair<double, double>> counts;  // class k -> (t_k, p_k)
  double c = 0;
  for (size_t i = 0; i < pred.size(); ++i) {
    counts[gold[i]].first += 1;
    counts[pred[i]].second += 1;
    c += pred[i] == gold[i];
  }
  const double s = double(pred.size());
  double tp = 0, pp = 0, tt = 0;
  for (const auto& [k, n] : counts) tp += n.first * n.second, pp += n.second * n.second, tt += n.first * n.first;
  const double denom = (s * s - pp) * (s * s - tt);
  return denom == 0 ? 0.0 : (c * s - tp) / std::sqrt(denom);
}

double pearson(std::span<const double> x, std::span<const double> y) {
  check_sizes("pearson", x, y);
  const double n = double(x.size());
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double dx = x[i] - mx, dy = y[i] - my;
    sxy += dx * dy, sxx += dx * dx, syy += dy * dy;
  }
  if (sxx == 0 || syy == 0) return std::numeric_limits<double>::quiet_NaN();
  // Rounding can push |r| a hair above 1; SciPy clips too.
  return std::clamp(sxy / std::sqrt(sxx * syy), -1.0, 1.0);
}

std::vector<double> average_ranks(std::span<const double> x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> rank(x.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i + 1;
    while (j < order.size() && x[order[j]] == x[order[i]]) ++j;
    const double r = 0.5 * double(i + 1 + j);  // mean of the 1-based ranks i+1 .. j
    for (size_t k = i; k < j; ++k) rank[order[k]] = r;
    i = j;
  }
  return rank;
}

double spearman(std::span<const double> x, std::span<const double> y) {
  check_sizes("spearman", x, y);
  const std::vector<double> rx = average_ranks(x), ry = average_ranks(y);
  return pearson(rx, ry);
}

}  // namespace mb
