// MiniBridgeBERT (docs/METHODS.md §1): stepwise block pruning with Low-Rank Bridges and
// progressive knowledge distillation.
//
// Step k (1..steps) replaces one more encoder layer (the even-numbered ones, 1-based 2, 4, …;
// top-down by default) with a LoRB of rank r, initialised by reduced-rank regression on the
// replaced layer's inputs/outputs (or skip-init), and trains the whole student with KD from
// step k−1's frozen student (step 1: the fine-tuned teacher). Each step's model is a normal model
// directory OUT/step_k/; OUT/results.jsonl gets one line per step (step 0 = the teacher) and
// OUT/results.md a table. A step whose OUT/step_k/step.json exists is complete and not redone.
//
// Ablations (the paper's second table): no-kd (CE only after each replacement), one-shot (all
// bridges at once, distilled from the full teacher for steps × epochs_per_step epochs) and
// distil-baseline (DistilBERT-style: the same blocks removed, no bridges, KD from the full teacher
// for steps × epochs_per_step epochs).
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "compress/distill.h"
#include "models/bert.h"

namespace mb {

enum class MbbertAblation { None, NoKd, OneShot, DistilBaseline };
MbbertAblation parse_mbbert_ablation(const std::string& name);  // none | no-kd | one-shot | distil-baseline
const char* mbbert_ablation_name(MbbertAblation a);

struct MbbertOptions {
  std::string teacher_dir, task, data_dir, out_dir;
  int steps = 6;
  int64_t rank = 256;
  bool top_down = true;             // replace the highest even-numbered block first
  bool regression_init = true;      // false: skip-init (B = 0)
  BridgeForm form = BridgeForm::ResidualLayerNorm;
  double alpha = 0.7, temperature = 2.0, beta = 1.0;
  int epochs_per_step = 1;
  MbbertAblation ablation = MbbertAblation::None;
  TrainOptions train;               // lr, batch size, seed, ... (train.resume is not used: see above)
  int max_len = 128;
  int eval_batch_size = 64;
  int64_t max_train_examples = 0;   // > 0: a fixed random subset of the training set
  int64_t fit_tokens = 16384;       // training tokens (at least) for the regression init
  int latency_examples = 64;        // dev examples timed one at a time for the latency column
  bool progress = true;
  // Called after each compression step with the teacher that step distilled from (null when the
  // step used none) and the kept student; tests check the progressive chain with it.
  std::function<void(int step, const BertModel* teacher, const BertModel& student)> on_step;
};

// The 0-based layers to replace, in order: the even-numbered blocks (1-based 2, 4, …), top-down
// (from the last) or bottom-up; `steps` of them (at most num_layers / 2).
std::vector<int> mbbert_blocks(int64_t num_layers, int steps, bool top_down);

// The config of `base` with the given 0-based layers turned into bridges (for counting).
BertConfig config_with_bridges(const BertConfig& base, const std::vector<int>& layers, int64_t rank, BridgeForm form);

// Layer `layer` of `model` on input x (eval mode): its output before the final LayerNorm, i.e. the
// residual stream h + FFN(h) that the layer's output LayerNorm normalises.
Var layer_pre_layernorm_output(const BertModel& model, int layer, const Var& x, const Batch& batch);

// A bridge that stands in for `model.layers[layer]`, fitted on `batches` (the model's own
// activations, eval mode):
//   regression (default): residual_layernorm form: X = layer input, Y = the layer's pre-LayerNorm
//     output, fit M, b minimising ‖(X·M + 1·b) − (Y − X)‖² (b = the intercept; centred least
//     squares, a tiny ridge because LayerNorm outputs make XᵀX singular), reduce M to rank r by
//     reduced-rank regression (project onto the top-r principal directions of the fitted values
//     X·M), and set A = U_r Σ_r^½, B = Σ_r^½ V_rᵀ from the SVD of the rank-r M. The bridge's
//     LayerNorm is the layer's output LayerNorm, so LN(x + xAB + b) ≈ the layer's output.
//     linear form: the target is the layer's output itself (Y, after its LayerNorm).
//   skip-init: A ~ N(0, initializer_range), B = 0, b = 0 (LayerNorm as above): LoRB(x) = LN(x).
BertLayer fit_bridge(const BertModel& model, int layer, const std::vector<Batch>& batches, int64_t rank,
                     BridgeForm form, bool regression, uint64_t seed);

struct MbbertSummary {
  std::vector<nlohmann::json> results;  // the lines of results.jsonl
};

MbbertSummary run_mbbert(const MbbertOptions& opt);

}  // namespace mb
