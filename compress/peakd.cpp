#include "compress/peakd.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "compress/distill.h"
#include "engine/error.h"
#include "models/layer_structure.h"

namespace mb {

PtpThresholds ptp_thresholds(const std::string& task) {
  static const std::map<std::string, PtpThresholds> paper = {
      {"RTE", {0.80, 0.60}}, {"MRPC", {0.95, 0.75}}, {"SST-2", {0.98, 0.80}}, {"QNLI", {0.98, 0.70}}, {"CoLA", {0.95, 0.70}}};
  auto it = paper.find(task);
  MB_CHECK(it != paper.end(), "Pea-KD: the paper gives no PTP thresholds for " + task +
                                  " (it does for RTE, MRPC, SST-2, QNLI, CoLA); pass --t1 and --t2");
  return it->second;
}

int32_t ptp_label(const float* z, int64_t C, int32_t gold, const PtpThresholds& t) {
  MB_CHECK(C >= 2, "PTP labels need a classifier with at least 2 classes");
  MB_CHECK(gold >= 0 && gold < C, "PTP: gold label " + std::to_string(gold) + " is outside the " +
                                      std::to_string(C) + " classes");
  // Softmax at T = 1: the confidence is the largest probability, 1 / Σ exp(z_c − z_max).
  const int64_t pred = std::max_element(z, z + C) - z;
  double sum = 0;
  for (int64_t c = 0; c < C; ++c) sum += std::exp(double(z[c]) - double(z[pred]));
  const double confidence = 1.0 / sum;
  if (pred == gold) return confidence > t.t1 ? 0 : 1;
  return confidence > t.t2 ? 2 : 3;
}

std::vector<int32_t> ptp_labels(const Tensor& logits, const std::vector<int32_t>& gold, const PtpThresholds& t) {
  MB_CHECK(logits.dim(0) == int64_t(gold.size()), "PTP: " + std::to_string(logits.dim(0)) + " teacher outputs for " +
                                                      std::to_string(gold.size()) + " labels");
  const int64_t C = logits.dim(1);
  std::vector<int32_t> out(gold.size());
  for (size_t i = 0; i < gold.size(); ++i) out[i] = ptp_label(logits.f32() + int64_t(i) * C, C, gold[i], t);
  return out;
}

BertModel make_sps_student(const BertModel& teacher, int unique, bool sps, int first_shared) {
  MB_CHECK(unique >= 1 && unique <= int(teacher.layers.size()),
           "Pea-KD: the student's " + std::to_string(unique) + " layers must come from the teacher's " +
               std::to_string(teacher.layers.size()));
  MB_CHECK(!sps || (first_shared >= 0 && first_shared < unique),
           "Pea-KD: shared layers must start at one of the student's layers (0.." + std::to_string(unique - 1) + ")");
  std::vector<LayerStructure> layers;
  for (int l = 0; l < unique; ++l) {
    MB_CHECK(teacher.layers[size_t(l)].kind == LayerKind::Encoder,
             "Pea-KD: teacher layer " + std::to_string(l) + " is not a plain encoder layer");
    layers.push_back(teacher.layers[size_t(l)].structure());
  }
  if (sps)
    for (int l = first_shared; l < unique; ++l) layers.push_back(LayerStructure::shared(l, true));

  // The teacher's tensors the student keeps (copied), under the student's own structure.
  std::map<std::string, Tensor> tensors;
  const std::string limit = "encoder.layer.";
  for (const auto& [name, t] : teacher.named_tensors()) {
    const size_t at = name.find(limit);
    if (at != std::string::npos) {
      const int layer = std::stoi(name.substr(at + limit.size()));
      if (layer >= unique) continue;
    }
    tensors[name] = t.clone();
  }
  BertConfig c = teacher.config;
  write_layer_structure(c, layers);
  return BertModel::from_tensors(c, tensors, "Pea-KD student");
}

}  // namespace mb
