#include "compress/kprune.h"

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>

#include "engine/allocator.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/memory_usage.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "compress/distill.h"
#include "io/atomic_file.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/glue.h"
#include "io/jsonl_log.h"
#include "io/tokenizer.h"
#include "models/counting.h"
#include "models/finetune.h"

namespace mb {

namespace fs = std::filesystem;

std::string sublayer_name(int64_t j) {
  return std::string(sublayer_is_mha(j) ? "MHA " : "FFN ") + std::to_string(sublayer_layer(j));
}

int64_t sublayer_units(const BertModel& m, int64_t j) {
  const BertLayer& L = m.layers[size_t(sublayer_layer(j))];
  return sublayer_is_mha(j) ? L.num_heads : L.intermediate_size;
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Input dimensions of sublayer j's output projection that belong to `units` (a head = d_h dims).
std::vector<int64_t> unit_columns(const BertModel& m, int64_t j, const std::vector<int64_t>& units) {
  const int64_t width = sublayer_is_mha(j) ? m.head_dim() : 1;
  std::vector<int64_t> cols;
  cols.reserve(units.size() * size_t(width));
  for (int64_t u : units)
    for (int64_t d = 0; d < width; ++d) cols.push_back(u * width + d);
  return cols;
}

// Rows `rows` of a [R, C] tensor (or elements of a vector).
Tensor take_rows(const Tensor& t, const std::vector<int64_t>& rows) {
  const int64_t C = t.ndim() == 2 ? t.dim(1) : 1;
  Shape shape = t.shape();
  shape[0] = int64_t(rows.size());
  Tensor out = Tensor::empty(shape);
  for (size_t r = 0; r < rows.size(); ++r) std::copy_n(t.f32() + rows[r] * C, C, out.f32() + int64_t(r) * C);
  return out;
}

// Columns `cols` of a [R, C] tensor.
Tensor take_cols(const Tensor& t, const std::vector<int64_t>& cols) {
  const int64_t R = t.dim(0), C = t.dim(1), K = int64_t(cols.size());
  Tensor out = Tensor::empty({R, K});
  for (int64_t r = 0; r < R; ++r)
    for (int64_t k = 0; k < K; ++k) out.f32()[r * K + k] = t.f32()[r * C + cols[size_t(k)]];
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The instrumented forward: the same ops as BertModel::layer_forward (eval mode), with a mask on
// the input of each output projection and taps on the activations K-prune measures.

Var masked_forward(const BertModel& m, const Batch& b, const MaskedForward& f) {
  const BertConfig& c = m.config;
  const float eps = float(c.layer_norm_eps);
  const int64_t n_sub = 2 * int64_t(m.layers.size());
  MB_CHECK(f.masks.empty() || int64_t(f.masks.size()) == n_sub, "masked_forward: one mask slot per sublayer expected");
  MB_CHECK(f.stop_after < 0 || f.capture, "masked_forward: stop_after needs a capture");
  if (f.proj_inputs) f.proj_inputs->assign(size_t(n_sub), Var());
  auto mask_of = [&](int64_t j) { return f.masks.empty() ? Var() : f.masks[size_t(j)]; };

  // One sublayer: x -> LN(x + W_out·mask(a) + b_out), where a is the output projection's input
  // (context or post-GELU activations); an undefined a means the sublayer was removed: LN(x + b_out).
  auto sublayer = [&](int64_t j, const Var& x, const Var& a, const Var& w_out, const Var& b_out, const Var& ln_w,
                      const Var& ln_b) -> Var {
    if (!a.defined()) {
      Var sum = add_bias(x, b_out);
      Var out = layernorm(sum, ln_w, ln_b, eps);
      if (f.stop_after == j) *f.capture = {x.value(), Tensor(), sum.value(), out.value()};
      return out;
    }
    if (f.proj_inputs) (*f.proj_inputs)[size_t(j)] = a;
    const Var mask = mask_of(j);
    Var proj = linear(mask.defined() ? mask_columns(a, mask) : a, w_out, b_out);
    Var out = layernorm(proj, ln_w, ln_b, eps, x);
    if (f.stop_after == j) *f.capture = {x.value(), a.value(), add(proj, x).value(), out.value()};
    return out;
  };

  MB_CHECK(f.start_at >= 0 && f.start_at < n_sub, "masked_forward: start_at outside the sublayers");
  MB_CHECK(f.start_at == 0 || f.input.defined(), "masked_forward: start_at needs the sublayer's input");
  MB_CHECK(f.stop_after < 0 || f.stop_after >= f.start_at, "masked_forward: stop_after before start_at");
  Var x = f.input.defined() ? Var(f.input) : m.embed(b);
  if (f.input.defined())
    MB_CHECK(f.input.ndim() == 2 && f.input.dim(0) == b.num_tokens() && f.input.dim(1) == c.hidden_size,
             "masked_forward: input has shape " + shape_str(f.input.shape()));
  for (size_t l = size_t(f.start_at / 2); l < m.layers.size(); ++l) {
    const BertLayer& L = m.layers[l];
    const int64_t j = 2 * int64_t(l);
    Var h;
    if (j < f.start_at) {
      h = x;  // starts at this layer's FFN
    } else {
      Var ctx;
      if (L.num_heads > 0) {
        Var q = linear(x, L.q_w, L.q_b), k = linear(x, L.k_w, L.k_b), v = linear(x, L.v_w, L.v_b);
        ctx = attention(q, k, v, b.offsets, L.num_heads);
      }
      h = sublayer(j, x, ctx, L.attn_out_w, L.attn_out_b, L.attn_ln_w, L.attn_ln_b);
      if (f.stop_after == j) return Var();
    }
    Var inter;
    if (L.intermediate_size > 0) {
      inter = linear(h, L.ffn_in_w, L.ffn_in_b);
      inter = c.hidden_act == "gelu" ? gelu(inter) : gelu_tanh(inter);
    }
    x = sublayer(j + 1, h, inter, L.ffn_out_w, L.ffn_out_b, L.ffn_ln_w, L.ffn_ln_b);
    if (f.stop_after == j + 1) return Var();
  }
  return m.classifier_logits(m.pooled_output(b, x));
}

std::vector<Tensor> sublayer_inputs(const BertModel& m, const std::vector<Batch>& batches, int64_t j) {
  NoGrad no_grad;
  const FrozenWeightsBf16Scope bf16_once;  // with --bf16: each weight converted once, not per batch
  std::vector<Tensor> hidden;
  hidden.reserve(batches.size());
  for (const Batch& b : batches) {
    if (j == 0) {
      hidden.push_back(m.embed(b).value());
      continue;
    }
    SublayerCapture c;
    masked_forward(m, b, capture_at(j - 1, &c));
    hidden.push_back(c.output);
  }
  return hidden;
}

void advance_sublayer(const BertModel& m, const std::vector<Batch>& batches, int64_t j, std::vector<Tensor>& hidden) {
  MB_CHECK(hidden.size() == batches.size(), "advance_sublayer: one input per batch expected");
  NoGrad no_grad;
  const FrozenWeightsBf16Scope bf16_once;
  for (size_t i = 0; i < batches.size(); ++i) {
    SublayerCapture c;
    masked_forward(m, batches[i], capture_at(j, &c, j, hidden[i]));
    hidden[i] = c.output;
  }
}

// ---------------------------------------------------------------------------------------------
// Knowledge measurement.

Knowledge measure_knowledge(const BertModel& cur, const std::vector<Batch>& batches,
                            const std::vector<Tensor>& orig_logits, int64_t first, const KpruneOptions& opt,
                            const std::vector<Tensor>* first_inputs, bool original) {
  MB_CHECK(batches.size() == orig_logits.size(), "measure_knowledge: one set of original logits per batch expected");
  MB_CHECK(!first_inputs || first_inputs->size() == batches.size(), "measure_knowledge: one input per batch expected");
  const int64_t n_sub = 2 * int64_t(cur.layers.size());
  const bool regression = cur.config.is_regression();
  // Column-level sums: ½g² (predictive) and Σ_t a² (representational).
  std::vector<std::vector<double>> pred_cols(static_cast<size_t>(n_sub)), rep_cols(static_cast<size_t>(n_sub));
  // With --bf16, each weight converted once for all the batches (the model is fixed here; only
  // the masks take gradients).
  const FrozenWeightsBf16Scope bf16_once;
  MaskedForward f;
  f.masks.assign(size_t(n_sub), Var());
  std::vector<Var> taps;
  f.proj_inputs = &taps;
  for (int64_t j = first; j < n_sub; ++j) {
    const int64_t width = sublayer_units(cur, j) * (sublayer_is_mha(j) ? cur.head_dim() : 1);
    if (width == 0) continue;
    Tensor ones = Tensor::empty({width});
    std::fill_n(ones.f32(), width, 1.0f);
    f.masks[size_t(j)] = Var(ones, true);
    pred_cols[size_t(j)].assign(size_t(width), 0.0);
    rep_cols[size_t(j)].assign(size_t(width), 0.0);
  }

  int64_t samples = 0, tokens = 0;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const Batch& b = batches[bi];
    samples += b.num_seqs();
    tokens += b.num_tokens();
    if (first_inputs) {
      f.start_at = first;
      f.input = (*first_inputs)[bi];
    }
    Var logits = masked_forward(cur, b, f);
    // The original model, or logits equal to the original ones bit for bit, give a loss gradient
    // of exactly 0, so the backward pass is skipped: P stays 0.
    const Tensor& want = orig_logits[bi];
    const bool same = original || (logits.value().numel() == want.numel() &&
                                   std::equal(logits.data(), logits.data() + want.numel(), want.f32()));
    if (same) {
      clear_tape();  // backward() would have
    } else {
      Var loss = regression ? mse_loss(logits, want) : kl_div_with_temperature(logits, want, float(opt.temperature));
      backward(loss);
    }
    for (int64_t j = first; j < n_sub; ++j) {
      const Var& mask = f.masks[size_t(j)];
      if (!mask.defined()) continue;
      std::vector<double>& P = pred_cols[size_t(j)];
      std::vector<double>& R = rep_cols[size_t(j)];
      if (mask.has_grad()) {
        const float* g = mask.grad().f32();
        for (size_t i = 0; i < P.size(); ++i) P[i] += 0.5 * double(g[i]) * double(g[i]);
        mask.zero_grad();
      }
      // Σ_t a² column by column, the columns split over the threads (each column's sum in the
      // same order whatever their number).
      const Var& a = taps[size_t(j)];
      const int64_t T = a.dim(0), C = a.dim(1);
      const float* pa = a.data();
      double* r = R.data();
      parallel_chunks(C, std::max<int64_t>(64, 65536 / std::max<int64_t>(T, 1)), [&](int64_t c0, int64_t c1) {
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = c0; i < c1; ++i) r[i] += double(pa[t * C + i]) * double(pa[t * C + i]);
      });
    }
  }

  Knowledge k;
  k.predictive.resize(size_t(n_sub));
  k.representational.resize(size_t(n_sub));
  for (int64_t j = first; j < n_sub; ++j) {
    const std::vector<double>& P = pred_cols[size_t(j)];
    const std::vector<double>& R = rep_cols[size_t(j)];
    if (P.empty()) continue;
    const BertLayer& L = cur.layers[size_t(sublayer_layer(j))];
    const Tensor& w_out = (sublayer_is_mha(j) ? L.attn_out_w : L.ffn_out_w).value();  // [H, width]
    const int64_t H = w_out.dim(0), width = w_out.dim(1);
    const int64_t per_unit = sublayer_is_mha(j) ? cur.head_dim() : 1;
    std::vector<double>& kp = k.predictive[size_t(j)];
    std::vector<double>& kr = k.representational[size_t(j)];
    kp.assign(size_t(width / per_unit), 0.0);
    kr.assign(size_t(width / per_unit), 0.0);
    std::vector<double> w2sum(size_t(width), 0.0);  // Σ_k W_out[k, i]², walking W_out's rows
    for (int64_t r = 0; r < H; ++r)
      for (int64_t i = 0; i < width; ++i) w2sum[size_t(i)] += double(w_out.f32()[r * width + i]) * double(w_out.f32()[r * width + i]);
    for (int64_t i = 0; i < width; ++i) {
      const double w2 = w2sum[size_t(i)] / double(H);  // mean_k W_out[k, i]²
      kp[size_t(i / per_unit)] += P[size_t(i)] / double(samples) / double(per_unit);
      kr[size_t(i / per_unit)] += R[size_t(i)] * w2 / double(tokens) / double(per_unit);
    }
  }
  return k;
}

// ---------------------------------------------------------------------------------------------
// KPMS.

std::vector<size_t> kpms_select(const std::vector<UnitCandidate>& cands, double budget) {
  std::vector<size_t> order(cands.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return cands[a].score > cands[b].score; });
  std::vector<size_t> kept;
  double used = 0;
  for (size_t i : order) {
    if (!(used + cands[i].flops < budget)) break;
    used += cands[i].flops;
    kept.push_back(i);
  }
  std::sort(kept.begin(), kept.end());
  return kept;
}

// ---------------------------------------------------------------------------------------------
// KPWT.

LeastSquares::LeastSquares(int64_t n, int64_t outputs)
    : n_(n), outputs_(outputs), ata_(size_t(n * n), 0.0), atr_(size_t(n * outputs), 0.0) {}

void LeastSquares::add(const float* A, const float* R, int64_t rows) {
  // In double (the normal equations square the activations' range), on the level's kernel and all
  // threads: AᵀA's lower triangle and AᵀR, both row-major.
  std::vector<double> a(size_t(rows * n_)), r(size_t(rows * outputs_));
  std::copy(A, A + rows * n_, a.begin());
  std::copy(R, R + rows * outputs_, r.begin());
  gemm_tn_f64(n_, n_, rows, a.data(), n_, a.data(), n_, ata_.data(), n_, /*lower=*/true);
  gemm_tn_f64(n_, outputs_, rows, a.data(), n_, r.data(), outputs_, atr_.data(), outputs_);
}

Tensor LeastSquares::solve() const {
  using RowMajorD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const RowMajorD> ata_lower(ata_.data(), n_, n_), atr(atr_.data(), n_, outputs_);
  const Eigen::MatrixXd ata = ata_lower.selfadjointView<Eigen::Lower>();  // add() fills the lower triangle
  Eigen::MatrixXd w;
  Eigen::LDLT<Eigen::MatrixXd> ldlt(ata);
  // AᵀA is positive semi-definite; it is numerically singular when a pivot of its (pivoted)
  // LDLᵀ is negligible next to the largest.
  const Eigen::VectorXd d = ldlt.vectorD();
  if (ldlt.info() == Eigen::Success && d.minCoeff() > 1e-12 * d.maxCoeff()) {
    w = ldlt.solve(atr);
    method_ = "ldlt";
  } else {
    Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(ata);
    if (qr.rank() == n_) {
      w = qr.solve(atr);
      method_ = "qr";
    } else {
      // Singular (e.g. an activation that is always zero on the sample): a ridge of 1e-6 of the
      // mean diagonal picks the minimum-norm-like solution among the equivalent ones.
      const double scale = std::max(ata.diagonal().mean(), 1e-30);
      Eigen::MatrixXd reg = ata;
      reg.diagonal().array() += 1e-6 * scale;
      w = reg.ldlt().solve(atr);
      method_ = "ridge";
    }
  }
  Tensor out = Tensor::empty({n_, outputs_});
  for (int64_t i = 0; i < n_; ++i)
    for (int64_t k = 0; k < outputs_; ++k) out.f32()[i * outputs_ + k] = float(w(i, k));
  return out;
}

Tensor kpwt_solve(const BertModel& cur, const BertModel& orig, int64_t j, const std::vector<int64_t>& kept_units,
                  const std::vector<Batch>& batches, std::string* method) {
  return kpwt_solve(cur, orig, j, kept_units, batches, sublayer_inputs(cur, batches, j), sublayer_inputs(orig, batches, j),
                    method);
}

Tensor kpwt_solve(const BertModel& cur, const BertModel& orig, int64_t j, const std::vector<int64_t>& kept_units,
                  const std::vector<Batch>& batches, const std::vector<Tensor>& cur_inputs,
                  const std::vector<Tensor>& orig_inputs, std::string* method) {
  MB_CHECK(cur_inputs.size() == batches.size() && orig_inputs.size() == batches.size(),
           "kpwt_solve: one input per batch expected in each model");
  const std::vector<int64_t> cols = unit_columns(cur, j, kept_units);
  const int64_t H = cur.config.hidden_size, n = int64_t(cols.size());
  MB_CHECK(n > 0, "kpwt_solve: nothing kept in " + sublayer_name(j));
  const BertLayer& L = cur.layers[size_t(sublayer_layer(j))];
  const Tensor& b_out = (sublayer_is_mha(j) ? L.attn_out_b : L.ffn_out_b).value();
  LeastSquares ls(n, H);
  NoGrad no_grad;
  const FrozenWeightsBf16Scope bf16_once;
  for (size_t bi = 0; bi < batches.size(); ++bi) {
    const Batch& b = batches[bi];
    SublayerCapture now, then;
    masked_forward(cur, b, capture_at(j, &now, j, cur_inputs[bi]));
    masked_forward(orig, b, capture_at(j, &then, j, orig_inputs[bi]));
    const int64_t T = b.num_tokens();
    // Target: the original pre-LN sum minus what the residual and the (unchanged) bias give.
    Tensor target = Tensor::empty({T, H});
    for (int64_t t = 0; t < T; ++t)
      for (int64_t k = 0; k < H; ++k)
        target.f32()[t * H + k] = then.sum.f32()[t * H + k] - now.input.f32()[t * H + k] - b_out.f32()[k];
    const Tensor a = take_cols(now.proj_in, cols);
    ls.add(a.f32(), target.f32(), T);
  }
  const Tensor w = ls.solve();  // [n, H]
  if (method) *method = ls.method();
  Tensor out = Tensor::empty({H, n});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < H; ++k) out.f32()[k * n + i] = w.f32()[i * H + k];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Physical removal.

void prune_sublayer(BertModel& m, int64_t j, const std::vector<int64_t>& kept_units, const Tensor& new_out_w) {
  BertLayer& L = m.layers[size_t(sublayer_layer(j))];
  MB_CHECK(std::is_sorted(kept_units.begin(), kept_units.end()), "prune_sublayer: kept units must be sorted");
  const int64_t units = sublayer_units(m, j);
  for (int64_t u : kept_units) MB_CHECK(u >= 0 && u < units, "prune_sublayer: unit out of range in " + sublayer_name(j));
  const std::vector<int64_t> cols = unit_columns(m, j, kept_units);
  if (new_out_w.defined())
    MB_CHECK(new_out_w.ndim() == 2 && new_out_w.dim(0) == m.config.hidden_size && new_out_w.dim(1) == int64_t(cols.size()),
             "prune_sublayer: new output projection has shape " + shape_str(new_out_w.shape()));
  const bool empty = kept_units.empty();
  auto rows = [&](const Var& v) { return empty ? Var() : Var(take_rows(v.value(), cols)); };
  Var out_w = empty ? Var() : new_out_w.defined() ? Var(new_out_w.clone()) : Var();
  if (sublayer_is_mha(j)) {
    if (!empty && !new_out_w.defined()) out_w = Var(take_cols(L.attn_out_w.value(), cols));
    L.q_w = rows(L.q_w), L.q_b = rows(L.q_b), L.k_w = rows(L.k_w), L.k_b = rows(L.k_b);
    L.v_w = rows(L.v_w), L.v_b = rows(L.v_b);
    L.attn_out_w = out_w;
    L.num_heads = int64_t(kept_units.size());
  } else {
    if (!empty && !new_out_w.defined()) out_w = Var(take_cols(L.ffn_out_w.value(), cols));
    L.ffn_in_w = rows(L.ffn_in_w), L.ffn_in_b = rows(L.ffn_in_b);
    L.ffn_out_w = out_w;
    L.intermediate_size = int64_t(kept_units.size());
  }
  // A sublayer with nothing left computes LN(x), as METHODS.md and the authors' code (their
  // prune_heads / prune_neurons drop the whole output dense) define it: its output bias goes too.
  // The bias tensor stays, as zeros, so the model's format does not change.
  if (empty) {
    Var& b_out = sublayer_is_mha(j) ? L.attn_out_b : L.ffn_out_b;
    b_out = Var(Tensor::zeros({m.config.hidden_size}));
  }
}

// ---------------------------------------------------------------------------------------------
// The loop.

BertModel kprune(const BertModel& teacher, const std::vector<Batch>& batches, const KpruneOptions& opt,
                 KpruneStats* stats, JsonlLog* log) {
  MB_CHECK(opt.constraint >= 0 && opt.constraint < 1, "kprune: the constraint must be in [0, 1)");
  MB_CHECK(teacher.has_classifier() && teacher.has_pooler(), "kprune: the teacher needs a pooler and a classifier");
  MB_CHECK(!batches.empty(), "kprune: empty sample set");
  const int64_t n_sub = 2 * int64_t(teacher.layers.size());
  const int64_t H = teacher.config.hidden_size, dh = teacher.head_dim();
  const double f_head = flops_per_head(opt.seq_len, H, dh), f_neuron = flops_per_neuron(opt.seq_len, H);

  KpruneStats st;
  st.flops_before = count_model(teacher, opt.seq_len).flops();
  st.flops_budget = (1.0 - opt.constraint) * st.flops_before;
  double f_rem = st.flops_budget;

  // The original model's logits on the sample set (the predictive knowledge's reference).
  std::vector<Tensor> orig_logits;
  {
    NoGrad no_grad;
    const FrozenWeightsBf16Scope bf16_once;
    for (const Batch& b : batches) orig_logits.push_back(masked_forward(teacher, b, {}).value());
  }

  BertModel cur = teacher;  // shares the tensors; pruning replaces them, never writes into them
  int64_t first = 0;
  if (!opt.checkpoint_dir.empty() && checkpoint_exists(opt.checkpoint_dir)) {
    // The model pruned up to sublayer first − 1 (its structure in "config"), the budget left and
    // the steps' records.
    const Checkpoint ck = load_checkpoint(opt.checkpoint_dir);
    const std::string where = ck.dir + "/state.json";
    try {
      first = ck.state.at("next_sublayer").get<int64_t>();
      MB_CHECK(first >= 1 && first < n_sub, "next sublayer " + std::to_string(first) + " is outside 1.." +
                                                std::to_string(n_sub - 1) + " (not this teacher's run)");
      f_rem = ck.state.at("flops_remaining").get<double>();
      for (const nlohmann::json& r : ck.state.at("steps")) st.steps.push_back(r.get<std::map<std::string, double>>());
      MB_CHECK(int64_t(st.steps.size()) == first, "holds " + std::to_string(st.steps.size()) + " step records for " +
                                                      std::to_string(first) + " sublayers");
      // The checkpoint holds the tensors pruning replaced; "teacher_tensors" names the teacher's
      // that the model still uses.
      std::map<std::string, Tensor> tensors, teacher_tensors;
      for (const auto& [name, t] : teacher.named_tensors()) teacher_tensors[name] = t;
      for (const nlohmann::json& name : ck.state.at("teacher_tensors")) {
        const auto it = teacher_tensors.find(name.get<std::string>());
        MB_CHECK(it != teacher_tensors.end(), "lists teacher tensor " + name.get<std::string>() +
                                                  ", which the teacher does not hold");
        tensors[it->first] = it->second;
      }
      for (const nlohmann::json& name : ck.state.at("tensors")) {
        const auto it = ck.tensors.find(name.get<std::string>());
        MB_CHECK(it != ck.tensors.end(), "lists tensor " + name.get<std::string>() + ", which " + ck.dir +
                                             "/tensors.safetensors does not hold");
        tensors[it->first] = it->second.clone();
      }
      cur = BertModel::from_tensors(bert_config_from_json(ck.state.at("config"), where), tensors, ck.dir);
    } catch (const nlohmann::json::exception& e) {
      throw Error(where + ": malformed K-prune state: " + e.what());
    } catch (const Error& e) {
      const std::string what = e.what();
      if (what.rfind(ck.dir, 0) == 0) throw;
      throw Error(where + ": " + what);
    }
    MB_CHECK(cur.layers.size() == teacher.layers.size() && cur.config.hidden_size == teacher.config.hidden_size,
             where + ": the checkpoint's model is not this teacher's");
    if (log) log->truncate_after_step(first - 1);  // keeps the lines of the sublayers the checkpoint holds
    std::cerr << "minibridge: resuming K-prune at " << sublayer_name(first) << " (" << opt.checkpoint_dir << ")\n";
  }
  // Only the tensors pruning replaced are written (the rest still share the teacher's storage):
  // a few hundred MB at most for BERT-base instead of the whole model after every sublayer.
  std::map<std::string, const void*> teacher_data;
  for (const auto& [name, t] : teacher.named_tensors()) teacher_data[name] = t.raw();
  auto save_state = [&](int64_t next) {
    BertConfig c = cur.config;
    write_layer_structure(c, cur.layer_structure());
    std::vector<std::pair<std::string, Tensor>> tensors;
    nlohmann::json names = nlohmann::json::array(), shared = nlohmann::json::array();
    for (const auto& [name, t] : cur.named_tensors()) {
      const auto it = teacher_data.find(name);
      if (it != teacher_data.end() && it->second == t.raw()) {
        shared.push_back(name);
        continue;
      }
      tensors.emplace_back(name, t);
      names.push_back(name);
    }
    save_checkpoint(opt.checkpoint_dir, tensors,
                    {{"next_sublayer", next}, {"flops_remaining", f_rem}, {"steps", st.steps}, {"config", c.raw},
                     {"tensors", names}, {"teacher_tensors", shared}});
  };
  // The inputs of the target sublayer on the sample set, in the current and (for KPWT) the original
  // model: sublayers already passed never change, so each step advances them by one sublayer
  // instead of running the model from the embeddings.
  std::vector<Tensor> cur_in = sublayer_inputs(cur, batches, first);
  std::vector<Tensor> orig_in;
  if (opt.weight_tuning) orig_in = sublayer_inputs(teacher, batches, first);
  ProgressOptions popt;
  popt.unit = "sublayer";
  popt.every_steps = 1;
  popt.start_step = first;
  // A step's cost is about the teacher's FLOPs from its target sublayer to the output (the
  // knowledge pass runs forward and backward over them), so the ETA weighs the steps left by it.
  popt.step_cost.assign(size_t(n_sub), 0.0);
  for (int64_t j = n_sub - 1; j >= 0; --j) {
    const BertLayer& L = teacher.layers[size_t(sublayer_layer(j))];
    const double flops = sublayer_is_mha(j) ? double(L.num_heads) * f_head : double(L.intermediate_size) * f_neuron;
    popt.step_cost[size_t(j)] = flops + (j + 1 < n_sub ? popt.step_cost[size_t(j + 1)] : 0.0);
  }
  Progress progress(n_sub, popt);
  for (int64_t j = first; j < n_sub; ++j) {
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t l = sublayer_layer(j), units = sublayer_units(cur, j);
    std::vector<int64_t> kept;
    std::string method = "-";
    if (units > 0) {
      // 1. Knowledge of every unit in sublayers >= j.
      const Knowledge k = measure_knowledge(cur, batches, orig_logits, j, opt, &cur_in, /*original=*/j == 0);
      // 2. KPMS over heads of layers >= l (> l when the target is an FFN) and neurons of layers >= l.
      std::vector<UnitCandidate> cands;
      std::vector<std::pair<int64_t, int64_t>> owner;  // (sublayer, unit)
      for (int64_t s = j; s < n_sub; ++s) {
        const bool mha = sublayer_is_mha(s);
        for (size_t u = 0; u < k.predictive[size_t(s)].size(); ++u) {
          const double know = opt.lambda_rep * k.representational[size_t(s)][u] + opt.lambda_pred * k.predictive[size_t(s)][u];
          cands.push_back(mha ? UnitCandidate{opt.mu * know / f_head, f_head} : UnitCandidate{know / f_neuron, f_neuron});
          owner.emplace_back(s, int64_t(u));
        }
      }
      for (size_t i : kpms_select(cands, f_rem))
        if (owner[i].first == j) kept.push_back(owner[i].second);
      // 3. KPWT (unless ablated), 4. removal.
      Tensor w;
      if (!kept.empty() && opt.weight_tuning) w = kpwt_solve(cur, teacher, j, kept, batches, cur_in, orig_in, &method);
      prune_sublayer(cur, j, kept, w);
      f_rem -= double(kept.size()) * (sublayer_is_mha(j) ? f_head : f_neuron);
    }
    if (j + 1 < n_sub) {
      advance_sublayer(cur, batches, j, cur_in);
      if (opt.weight_tuning) advance_sublayer(teacher, batches, j, orig_in);
    }
    std::map<std::string, double> rec = {{"step", double(j)},
                                         {"layer", double(l)},
                                         {"units_before", double(units)},
                                         {"units_kept", double(kept.size())},
                                         {"flops_remaining", f_rem},
                                         {"seconds", seconds_since(t0)}};
    st.steps.push_back(rec);
    if (log) {
      nlohmann::json j_rec(rec);
      j_rec["sublayer"] = sublayer_name(j);
      j_rec["solver"] = method;
      j_rec["kept"] = kept;  // the kept unit indices of this sublayer, ascending
      j_rec["peak_rss_mb"] = peak_rss_mib();  // the process's so far (a long run's memory, step by step)
      log->write(j_rec);
    }
    if (!opt.checkpoint_dir.empty() && j + 1 < n_sub) save_state(j + 1);
    if (opt.progress)
      progress.update(j + 1, {{"sublayer", sublayer_name(j)},
                              {"kept", std::to_string(kept.size()) + "/" + std::to_string(units)}});
  }
  if (opt.progress) progress.finish();
  st.flops_after = count_model(cur, opt.seq_len).flops();
  if (stats) *stats = st;
  return cur;
}

// ---------------------------------------------------------------------------------------------
// The job.

// The tensor cache's cap during a run (MiB); see run_kprune.
constexpr size_t kKpruneTensorCacheMB = 256;

nlohmann::json run_kprune(const KpruneJob& job) {
  const LinearPrecisionScope precision(job.kprune.bf16 ? Precision::BF16 : Precision::F32);
  MB_CHECK(job.num_tokens > 0, "--num-tokens must be positive");
  MB_CHECK(job.kprune.constraint >= 0 && job.kprune.constraint < 1,
           "--constraint must be in [0, 1) (the fraction of FLOPs to remove)");
  const GlueTask& task = glue_task(job.task);
  const BertModel teacher = BertModel::load(job.teacher_dir);
  teacher.require_f32_weights(job.teacher_dir, "K-prune");
  MB_CHECK(teacher.has_classifier() && teacher.has_pooler() && teacher.config.num_labels() == task.num_labels(),
           job.teacher_dir + ": not a fine-tuned " + task.name + " model (needs a pooler and a classifier with " +
               std::to_string(task.num_labels()) + " outputs)");
  const Tokenizer tok = Tokenizer::from_model_dir(job.teacher_dir);
  const GlueSplit train = read_glue_split(job.data_dir, task, "train");
  MB_CHECK(!train.examples.empty(), train.path + ": no training examples");

  // The sample set: n = floor(num_tokens / average length) training sentences drawn with the seed.
  std::vector<Encoding> enc;
  enc.reserve(train.examples.size());
  double total_len = 0;
  for (const GlueExample& e : train.examples) {
    enc.push_back(task.pair ? tok.encode_pair(e.a, e.b, job.max_len) : tok.encode(e.a, job.max_len));
    total_len += double(enc.back().input_ids.size());
  }
  const double avg_len = total_len / double(enc.size());
  const size_t n = std::clamp<size_t>(size_t(double(job.num_tokens) / avg_len), 1, enc.size());
  std::vector<size_t> order(enc.size());
  std::iota(order.begin(), order.end(), size_t(0));
  Rng rng(job.seed);
  for (size_t i = 0; i < n; ++i) std::swap(order[i], order[i + rng.below(order.size() - i)]);
  std::vector<Batch> batches;
  for (size_t i = 0; i < n; ++i) {
    if (i % size_t(job.batch_size) == 0) batches.emplace_back();
    batches.back().add(enc[order[i]].input_ids, enc[order[i]].token_type_ids);
  }
  int64_t sample_tokens = 0;
  for (const Batch& b : batches) sample_tokens += b.num_tokens();

  KpruneOptions kopt = job.kprune;
  kopt.seq_len = avg_len;
  // OUT belongs to one run: a rerun with the same options continues it (a finished run is not
  // redone; a stopped one continues at the next sublayer), one with other options is refused.
  const fs::path out = job.out_dir;
  nlohmann::json options = {{"teacher", fs::absolute(job.teacher_dir).lexically_normal().string()},
                             {"task", task.name}, {"constraint", kopt.constraint}, {"num_tokens", job.num_tokens},
                             {"seed", job.seed}, {"max_len", job.max_len}, {"batch_size", job.batch_size},
                             {"lambda_rep", kopt.lambda_rep}, {"lambda_pred", kopt.lambda_pred}, {"mu", kopt.mu},
                             {"temperature", kopt.temperature}, {"weight_tuning", kopt.weight_tuning},
                             {"evaluate", job.evaluate}};
  if (kopt.bf16) options["bf16"] = true;  // only when on: earlier runs' options.json still match
  claim_run_dir(job.out_dir, options);
  if (fs::exists(out / "results.json")) {
    std::cerr << "minibridge: " << job.out_dir << ": K-prune already finished; nothing to do\n";
    return read_json_file((out / "results.json").string());
  }
  kopt.checkpoint_dir = (out / "checkpoint").string();
  const bool resume = checkpoint_exists(kopt.checkpoint_dir);
  const std::string log_path = (out / "kprune_log.jsonl").string();
  if (!resume) fs::remove(log_path);  // a fresh run starts a fresh log
  JsonlLog log(log_path);  // a resumed run's is cut back to its checkpoint by kprune()
  if (!resume)
    log.write({{"event", "start"}, {"teacher", job.teacher_dir}, {"task", task.name}, {"constraint", kopt.constraint},
             {"samples", n}, {"sample_tokens", sample_tokens}, {"seq_len", avg_len}, {"seed", job.seed},
             {"lambda_rep", kopt.lambda_rep}, {"lambda_pred", kopt.lambda_pred}, {"mu", kopt.mu},
             {"temperature", kopt.temperature}, {"weight_tuning", kopt.weight_tuning},
             {"precision", kopt.bf16 ? "bf16" : "f32"}});
  std::cerr << "kprune: " << task.name << ", constraint " << kopt.constraint << ", " << n << " sample sentences ("
            << sample_tokens << " tokens, average length " << fmt_num(avg_len) << ")\n";

  // The sample's batches each have their own token count, so one batch's activations seldom fit
  // the next one's requests and the tensor cache fills with blocks it does not reuse: BERT-base at
  // 100k tokens peaked at 4.17 GiB after 2 of 24 steps with the default 4 GiB cache, 2.52 GiB
  // with 256 MiB, at the same speed (1 thread each, side by side: 722 s against 741 s; docs/KPRUNE.md,
  // "Known limits"). MB_TENSOR_CACHE_MB, when set, is left as the user chose.
  const TensorCacheLimitScope cache_limit(size_t(kKpruneTensorCacheMB) << 20);

  const auto t0 = std::chrono::steady_clock::now();
  KpruneStats st;
  const BertModel pruned = kprune(teacher, batches, kopt, &st, &log);
  const double seconds = seconds_since(t0);

  nlohmann::json res = {{"task", task.name},
                        {"constraint", kopt.constraint},
                        {"seq_len", avg_len},
                        {"samples", n},
                        {"sample_tokens", sample_tokens},
                        {"weight_tuning", kopt.weight_tuning},
                        {"flops_before", st.flops_before},
                        {"flops_after", st.flops_after},
                        {"flops_budget", st.flops_budget},
                        {"params_before", count_model(teacher, avg_len).total_params()},
                        {"params_after", count_model(pruned, avg_len).total_params()},
                        {"seconds", seconds}};
  nlohmann::json layers = nlohmann::json::array();
  for (const BertLayer& L : pruned.layers) layers.push_back({{"heads", L.num_heads}, {"neurons", L.intermediate_size}});
  res["layers"] = layers;
  if (job.evaluate) {
    const GlueSplit dev = read_glue_split(job.data_dir, task, "dev");
    const auto before = evaluate_glue(teacher, tok, task, dev, job.max_len, 64);
    const auto after = evaluate_glue(pruned, tok, task, dev, job.max_len, 64);
    res["metric"] = task.main_metric;
    res["metric_before"] = before.at(task.main_metric);
    res["metric_after"] = after.at(task.main_metric);
    res["metrics_before"] = before;
    res["metrics_after"] = after;
  }
  pruned.save(job.out_dir, DType::F32, job.teacher_dir);
  write_file_atomic((fs::path(job.out_dir) / "results.json").string(), res.dump(2) + "\n");
  fs::remove_all(kopt.checkpoint_dir);  // results.json now says the run is complete
  log.write({{"event", "done"}, {"results", res}});
  return res;
}

}  // namespace mb
