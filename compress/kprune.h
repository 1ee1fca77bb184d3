// K-prune (Park, Choi & Kang, ICLR 2024): retraining-free structured pruning of a fine-tuned BERT
// under a FLOPs budget. See ../shared/docs/METHODS.md section 2.
//
// The model is pruned sublayer by sublayer (MHA₀, FFN₀, MHA₁, ...). At each step: measure the
// knowledge (predictive + representational) of every unit in the remaining sublayers on a sample
// of training sentences, choose the target sublayer's kept units by the global ranking (KPMS),
// re-fit its output projection by least squares so that its output matches the original model's
// (KPWT), and remove the dropped units physically. No gradient step ever changes a weight.
//
// Masks sit on the inputs of the output projections: one per dimension of the concatenated head
// contexts (a head = its d_h contiguous dimensions) and one per post-GELU FFN activation.
// Sequences are packed without padding, so every token statistic below is over real tokens only
// (the paper's "exclude padding" holds by construction).
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/tensor.h"
#include "models/bert.h"

namespace mb {

class JsonlLog;

struct KpruneOptions {
  double constraint = 0.5;      // fraction of the FLOPs to remove
  double lambda_rep = 2.5e-4;   // weight of the representational knowledge
  double lambda_pred = 1.0;     // weight of the predictive knowledge
  double mu = 64;               // head scores are multiplied by mu (= d_h for BERT-base)
  double temperature = 2.0;     // of the predictive KL loss
  double seq_len = 128;         // s of f_head(s), f_neuron(s): the task's average sequence length
  bool weight_tuning = true;     // KPWT; off (an ablation): the kept columns of the old output projection stay
  // The forward and backward passes' linear products in bfloat16 (engine/functional.h:
  // set_linear_precision); the knowledge scores, KPMS and the KPWT solve stay f32/f64.
  bool bf16 = false;
  bool progress = true;         // per-sublayer progress on stderr
  // Non-empty: after every sublayer the pruned model so far and the remaining budget are
  // checkpointed here (io/checkpoint.h), and a run that finds a checkpoint continues at the next
  // sublayer, making the same decisions as an uninterrupted run.
  std::string checkpoint_dir;
};

// Sublayer j: layer j / 2; even j: multi-head attention, odd j: FFN.
inline int64_t sublayer_layer(int64_t j) { return j / 2; }
inline bool sublayer_is_mha(int64_t j) { return j % 2 == 0; }
std::string sublayer_name(int64_t j);  // "MHA 0", "FFN 0", ...
// Units of sublayer j in m: heads (MHA) or neurons (FFN).
int64_t sublayer_units(const BertModel& m, int64_t j);

// Activations of one sublayer (one batch), for KPWT.
struct SublayerCapture {
  Tensor input;    // X [T, H]: the sublayer's input
  Tensor proj_in;  // A [T, n]: the output projection's input (context dims or post-GELU activations)
  Tensor sum;      // X + A·W_outᵀ + b_out [T, H]: the sum before the sublayer's LayerNorm
  Tensor output;   // LN(sum) [T, H]: the next sublayer's input
};

// The instrumented forward pass: BertModel's, sublayer by sublayer, with optional masks.
struct MaskedForward {
  std::vector<Var> masks;                  // per sublayer (2·layers); undefined = no mask (all ones)
  std::vector<Var>* proj_inputs = nullptr; // receives each sublayer's A (before its mask); undefined when removed
  int64_t stop_after = -1;                 // >= 0: stop after this sublayer and fill *capture
  SublayerCapture* capture = nullptr;
  // > 0: start at this sublayer from `input`, its input [T, H] (the layers before it are not run).
  // K-prune never changes a sublayer it has passed, so its input on the sample set is computed
  // once and carried from step to step (sublayer_inputs, advance_sublayer).
  int64_t start_at = 0;
  Tensor input;
};
// Stop after sublayer j and capture its activations, starting at sublayer start_at from `input`.
inline MaskedForward capture_at(int64_t j, SublayerCapture* capture, int64_t start_at = 0, Tensor input = {}) {
  MaskedForward f;
  f.stop_after = j;
  f.capture = capture;
  f.start_at = start_at;
  f.input = std::move(input);
  return f;
}
// Classifier logits [num_seqs, labels] (eval mode), or an undefined Var when it stopped early.
Var masked_forward(const BertModel& m, const Batch& b, const MaskedForward& f);

// The input of sublayer j of m on each batch (the embeddings for j = 0).
std::vector<Tensor> sublayer_inputs(const BertModel& m, const std::vector<Batch>& batches, int64_t j);
// hidden[i], the input of sublayer j on batches[i], becomes its output: the input of sublayer j + 1.
void advance_sublayer(const BertModel& m, const std::vector<Batch>& batches, int64_t j, std::vector<Tensor>& hidden);

// Per-unit knowledge of sublayers >= first (empty vectors for those before it), unit level
// (heads already averaged over their dimensions).
struct Knowledge {
  std::vector<std::vector<double>> predictive, representational;
};
// Measures on `batches` (the sample set) how much each unit of the current model knows.
// orig_logits[i] are the original model's logits on batches[i]. first_inputs, when given, holds the
// input of sublayer `first` on each batch (sublayer_inputs), and the pass starts there.
// original: cur is the original model (step 0: nothing pruned or tuned yet), so the predictive
// knowledge is exactly 0 and its backward pass is skipped. (Without it the pass is skipped only
// where the logits repeat orig_logits bit for bit; where the recorded pass sums in another order,
// as on AVX-512, the scores come out as rounding noise, ~1e-20.)
Knowledge measure_knowledge(const BertModel& cur, const std::vector<Batch>& batches,
                            const std::vector<Tensor>& orig_logits, int64_t first, const KpruneOptions& opt,
                            const std::vector<Tensor>* first_inputs = nullptr, bool original = false);

// KPMS: candidates with a score and a FLOPs cost; returns the indices of the kept ones: sorted by
// score descending (ties: lower index first), the longest prefix whose summed FLOPs is strictly
// below `budget`.
struct UnitCandidate {
  double score = 0, flops = 0;
};
std::vector<size_t> kpms_select(const std::vector<UnitCandidate>& candidates, double budget);

// Least squares min_W ‖A·W − R‖² accumulated batch by batch: AᵀA and AᵀR in double, memory
// O(n² + n·H). Solved by LDLT; column-pivoting QR when AᵀA is ill-conditioned; a tiny ridge only
// when it is singular.
class LeastSquares {
 public:
  LeastSquares(int64_t n, int64_t outputs);
  void add(const float* A, const float* R, int64_t rows);  // A [rows, n], R [rows, outputs], row-major
  // W [n, outputs] (row-major floats).
  Tensor solve() const;
  // How the last solve() went: "ldlt", "qr" or "ridge".
  const std::string& method() const { return method_; }

 private:
  int64_t n_, outputs_;
  std::vector<double> ata_, atr_;
  mutable std::string method_;
};

// KPWT for sublayer j of `cur` keeping `kept_units` (indices of heads or neurons): the output
// projection W [H, n_keep·(d_h or 1)] that best reproduces the original model's pre-LayerNorm sum
// Y from the current model's input X and kept activations A:  min ‖A·Wᵀ − (Y − X − b_out)‖².
// cur_inputs and orig_inputs are sublayer j's inputs on each batch in the two models.
Tensor kpwt_solve(const BertModel& cur, const BertModel& orig, int64_t j, const std::vector<int64_t>& kept_units,
                  const std::vector<Batch>& batches, const std::vector<Tensor>& cur_inputs,
                  const std::vector<Tensor>& orig_inputs, std::string* method = nullptr);
// The same, computing both models' inputs of sublayer j from the embeddings.
Tensor kpwt_solve(const BertModel& cur, const BertModel& orig, int64_t j, const std::vector<int64_t>& kept_units,
                  const std::vector<Batch>& batches, std::string* method = nullptr);

// Physically removes the units of sublayer j not in kept_units (sorted ascending): the dropped
// heads' rows of Q/K/V and columns of W_O, or the dropped neurons' rows of W₁ and columns of W₂.
// new_out_w, when defined ([H, kept width]), becomes the output projection instead of the kept
// columns of the old one. Nothing left: the sublayer is removed: LN(x) (its output bias becomes 0).
void prune_sublayer(BertModel& m, int64_t j, const std::vector<int64_t>& kept_units, const Tensor& new_out_w = {});

// The whole K-prune loop on a model. Returns the pruned model; fills per-step records in log (when
// it resumes from opt.checkpoint_dir, after cutting log back to the sublayers the checkpoint holds).
struct KpruneStats {
  double flops_before = 0, flops_budget = 0, flops_after = 0;
  std::vector<std::map<std::string, double>> steps;
};
BertModel kprune(const BertModel& teacher, const std::vector<Batch>& batches, const KpruneOptions& opt,
                 KpruneStats* stats = nullptr, JsonlLog* log = nullptr);

// The `minibridge compress kprune` job: sample set from the task's training split, pruning, dev
// metrics before and after, OUT/ as a model directory with results.json and kprune_log.jsonl.
struct KpruneJob {
  std::string teacher_dir, task, data_dir, out_dir;
  KpruneOptions kprune;
  int64_t num_tokens = 100000;
  uint64_t seed = 0;
  int max_len = 128;
  int batch_size = 32;
  bool evaluate = true;  // dev metrics before/after
};
// Returns the results.json object.
nlohmann::json run_kprune(const KpruneJob& job);

}  // namespace mb
