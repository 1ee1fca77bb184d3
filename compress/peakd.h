// Pea-KD (Cho & Kang, PLOS ONE 2022): Shuffled Parameter Sharing (SPS) students and the labels of
// Pretraining with the Teacher's Predictions (PTP). See ../shared/docs/METHODS.md section 3.
//
// SPS: a student with N unique layers runs 2N: L1 … LN, L1* … LN*, where Li* is Li's own tensors
// with the query and key projections exchanged (models/layer_structure.h, kind "shared"). The
// 6-layer variant runs L1 … L6, L4*, L5*, L6*. Parameters: a plain N-layer BERT; compute: every
// layer run.
//
// PTP: each training example gets one of four labels from the teacher's prediction (softmax at
// T = 1): 0 correct and confident (c > t1), 1 correct and unsure, 2 wrong and confident (c > t2),
// 3 wrong and unsure. The student is first trained on these with a fresh 4-way head.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "models/bert.h"

namespace mb {

struct PtpThresholds {
  double t1 = 0, t2 = 0;
};

// The paper's (t1, t2) for RTE, MRPC, SST-2, QNLI and CoLA; throws mb::Error naming the task and
// asking for --t1/--t2 for any other.
PtpThresholds ptp_thresholds(const std::string& task);

// The PTP label of one example from the teacher's logits (row of C values) and the gold class.
int32_t ptp_label(const float* teacher_logits, int64_t num_classes, int32_t gold, const PtpThresholds& t);
// Every row of logits [N, C].
std::vector<int32_t> ptp_labels(const Tensor& teacher_logits, const std::vector<int32_t>& gold, const PtpThresholds& t);

// The student's layer structure: `unique` encoder layers, then (when sps) shared, query/key-swapped
// copies of layers first_shared … unique−1 (Pea-KD: first_shared = 0 for N = 3, i.e. L1 L2 L3
// L1* L2* L3*; 3 for the 6-layer variant L1 … L6 L4* L5* L6*).
// A student initialised from the teacher: its embeddings, pooler, classifier and layers
// 0 … unique−1 (copies: training the student never touches the teacher), plus the shared layers.
BertModel make_sps_student(const BertModel& teacher, int unique, bool sps, int first_shared);

}  // namespace mb
