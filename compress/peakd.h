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
// 3 wrong and unsure. The student is first trained on these with a fresh 4-way head; the
// checkpoint with the lowest dev PTP loss is kept and the 4-way head dropped.
//
// KD stage (PKD loss): α·T²·KL(teacher ‖ student) + (1−α)·CE + β·MSE(norm(h_s^CLS), norm(h_t^CLS))
// over the student's layers 1..M−1 (M = layers it runs) matched to teacher layers i·L/M (rounded):
// 2, 4, 6, 8, 10 for an SPS student (M = 6) of a 12-layer teacher, 4, 8 for a plain 3-layer one.
//
// run_peakd trains the students the comparison needs (plain KD: no SPS, no PTP; SPS only; SPS +
// PTP), each into OUT/<name>/ (a model directory), and writes OUT/results.json. The teacher's
// outputs on the training set are computed once and shared by every student and epoch.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compress/distill.h"
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

// The paper's shared layers: all N (first_shared 0), except the 6-layer variant L1..L6, L4*..L6*.
int default_first_shared(int unique);

// The PKD pairs of a student that runs `student_layers` layers under a `teacher_layers`-layer
// teacher, as hidden-state indices (i = output of layer i): student i ↔ teacher round(i·L/M),
// i = 1..M−1. Distinct teacher layers are required (a teacher at least as deep as the student).
std::vector<HiddenPair> pkd_pairs(int student_layers, int teacher_layers);

// A student of the comparison: kd (no SPS, no PTP), sps, sps_ptp, or ptp (PTP without SPS).
struct PeakdStudent {
  std::string name;
  bool sps = false, ptp = false;
};
PeakdStudent peakd_student(bool sps, bool ptp);

struct PeakdOptions {
  std::string teacher_dir, task, data_dir, out_dir;
  int student_layers = 3;       // N unique layers
  int first_shared = -1;        // -1: default_first_shared(N)
  std::vector<PeakdStudent> students = {peakd_student(false, false), peakd_student(true, false),
                                        peakd_student(true, true)};
  double t1 = -1, t2 = -1;      // PTP thresholds; < 0: the paper's for the task
  double alpha = 0.7, temperature = 10.0, beta = 100.0;
  int epochs = 3;               // KD stage
  int ptp_epochs = 2;           // PTP stage
  int ptp_evals_per_epoch = 4;  // dev PTP loss this many times an epoch; the lowest is kept
  TrainOptions train;           // lr, batch size, seed, warm-up, ... (both stages)
  int max_len = 128;
  int eval_batch_size = 64;
  int64_t max_train_examples = 0;  // > 0: a fixed random subset of the training set
  bool progress = true;
};

// Runs the comparison; a student whose OUT/<name>/student.json exists is complete and not redone.
// Returns what OUT/results.json holds: {"task", "teacher": {...}, "students": {name: {...}},
// "options": {...}}, each model with params, flops_seq128, metric (the task's main metric on dev),
// metrics and seconds.
nlohmann::json run_peakd(const PeakdOptions& opt);

}  // namespace mb
