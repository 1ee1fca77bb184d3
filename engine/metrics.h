// Evaluation metrics, computed as scikit-learn / SciPy do (the GLUE reference implementation).
// Classification metrics take class indices; correlations take real values. Inputs of different
// lengths, or empty inputs, are an mb::Error.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

namespace mb {

// Fraction of positions where pred == gold.
double accuracy(std::span<const int32_t> pred, std::span<const int32_t> gold);

// F1 of the positive class 1 (sklearn f1_score, average="binary"): 2TP / (2TP + FP + FN);
// 0 when there is neither a predicted nor a true positive (sklearn's zero_division result).
double f1_binary(std::span<const int32_t> pred, std::span<const int32_t> gold);

// Matthews correlation coefficient (sklearn matthews_corrcoef, multiclass form from the
// confusion matrix; the usual binary formula for two classes). 0 when undefined, i.e. when
// predictions or gold labels hold a single class.
double matthews_corrcoef(std::span<const int32_t> pred, std::span<const int32_t> gold);

// Pearson correlation (scipy.stats.pearsonr). NaN when either input is constant, as in SciPy.
double pearson(std::span<const double> x, std::span<const double> y);

// Spearman rank correlation (scipy.stats.spearmanr): Pearson of the ranks, tied values sharing
// their average rank. NaN when either input is constant.
double spearman(std::span<const double> x, std::span<const double> y);

// 1-based ranks with ties averaged (scipy.stats.rankdata, method="average").
std::vector<double> average_ranks(std::span<const double> x);

}  // namespace mb
