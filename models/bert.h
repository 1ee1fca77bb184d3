// BERT encoder (+ pooler, + sequence-classification head) on packed sequences, for inference and
// training alike (one forward path; the tape is recorded only when parameters require gradients).
//
// Sequences are packed end to end (no padding): token t of sequence i is row offsets[i] + t of
// every activation. Attention runs per sequence, so no work is spent on padding.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/autograd.h"
#include "engine/gemm.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "io/config.h"
#include "models/layer_structure.h"

namespace mb {

// Packed input: ids and token types of all sequences back to back; sequence i spans
// [offsets[i], offsets[i+1]).
struct Batch {
  std::vector<int32_t> input_ids;
  std::vector<int32_t> token_type_ids;
  std::vector<int32_t> offsets{0};

  void add(const std::vector<int32_t>& ids, const std::vector<int32_t>& types);
  int64_t num_seqs() const { return int64_t(offsets.size()) - 1; }
  int64_t num_tokens() const { return int64_t(input_ids.size()); }
  int64_t length(int64_t i) const { return offsets[i + 1] - offsets[i]; }
};

// One encoder position. kind Encoder: a BERT layer, whose head count and FFN width may differ per
// layer in pruned models (K-prune); a width of 0 removes that sublayer: its weights are absent and
// it computes LN(x + b_out) with its LayerNorm and the surviving output bias (what the full layer
// computes with every unit masked). kind Bridge: MB-BERT's Low-Rank Bridge that replaces a whole
// layer (models/bridge.h), LN(x + (x·A)·B + b) or x·A·B + b. The structure is recorded in
// config.json's "minibridge" key (models/layer_structure.h).
struct BertLayer {
  LayerKind kind = LayerKind::Encoder;
  int64_t num_heads = 0;          // width = num_heads · head_dim
  int64_t intermediate_size = 0;  // FFN width
  Var q_w, q_b, k_w, k_b, v_w, v_b;   // [heads·d_h, H], [heads·d_h]
  Var attn_out_w, attn_out_b;         // [H, heads·d_h], [H]
  Var attn_ln_w, attn_ln_b;           // [H]
  Var ffn_in_w, ffn_in_b;             // [I, H], [I]
  Var ffn_out_w, ffn_out_b;           // [H, I], [H]
  Var ffn_ln_w, ffn_ln_b;             // [H]

  // kind == Shared only (Pea-KD's SPS): the tensors above are layer shared_source's own Vars (the
  // same nodes, so gradients from both uses add up); swap_qk exchanges the query and key roles.
  int64_t shared_source = -1;
  bool swap_qk = false;

  // kind == Bridge only.
  BridgeForm bridge_form = BridgeForm::ResidualLayerNorm;
  int64_t bridge_rank = 0;            // r
  Var bridge_down_w;                  // [r, H] = Aᵀ
  Var bridge_up_w, bridge_up_b;       // [H, r] = Bᵀ, [H]
  Var bridge_ln_w, bridge_ln_b;       // [H] (residual_layernorm only)

  LayerStructure structure() const;
};

class BertModel;

// How a model's weights are stored. An ordinary model keeps them in f32 (or f16/bf16 files
// converted to f32 on load). A quantized model (models/quantize.h: `minibridge quantize`) stores
// its encoder layers' six linear weights in bf16 or int8 (one scale per output row), and
// optionally its word embeddings in int8 (one scale per row), recorded under config.json's
// "minibridge"."quantization". It runs inference only, its encoder always packed in that precision.
struct Quantization {
  Precision weights = Precision::F32;  // BF16 or Int8 when quantized
  bool int8_embeddings = false;
  bool quantized() const { return weights != Precision::F32; }
};

// How BertModel::encode splits a batch across `threads` threads: one share of sequence indices
// (in batch order) per thread, with about equal token counts. Empty, so that the batch runs
// whole with every product split across the threads, when there are fewer sequences than
// threads, fewer than 160 tokens a thread, or no split comes within 5 % of even.
std::vector<std::vector<int64_t>> encode_shares(const Batch& batch, int threads);

// The query and key projections of x [tokens, H] as the layer runs them: a shared layer with
// swap_qk takes its query from W_K, b_K and its key from W_Q, b_Q. With `model`, its packed
// weights are used when no gradient is recorded.
std::pair<Var, Var> query_key(const BertLayer& layer, const Var& x, const BertModel* model = nullptr);

// Where a batch sits in a larger global batch that several processes share in data-parallel
// training (models/data_parallel.h): what comes before it and the whole, in sequences, tokens, and
// Σ length² (the attention probabilities of one head).
struct BatchPlacement {
  int64_t seqs_before = 0, seqs_total = 0;
  int64_t tokens_before = 0, tokens_total = 0;
  int64_t squares_before = 0, squares_total = 0;
};

// Training-time behaviour of a forward pass: dropout (config's probabilities) when train is set.
// With a placement, every dropout mask is the batch's slice of the global batch's mask.
struct ForwardOptions {
  bool train = false;
  Rng* rng = nullptr;                       // required when train
  const BatchPlacement* place = nullptr;    // null: the batch is the whole batch

  // The draws of a dropout over [tokens, width], [sequences, width], and of attention dropout
  // over `heads` heads.
  DrawSlice token_draws(int64_t width) const {
    return place ? DrawSlice{place->tokens_before * width, place->tokens_total * width} : DrawSlice{};
  }
  DrawSlice seq_draws(int64_t width) const {
    return place ? DrawSlice{place->seqs_before * width, place->seqs_total * width} : DrawSlice{};
  }
  DrawSlice attention_draws(int64_t heads) const {
    return place ? DrawSlice{place->squares_before * heads, place->squares_total * heads} : DrawSlice{};
  }
};

class BertModel {
 public:
  BertConfig config;
  Var word_emb, pos_emb, type_emb, emb_ln_w, emb_ln_b;
  std::vector<BertLayer> layers;
  Var pooler_w, pooler_b;           // optional (BertModel checkpoints may lack them)
  Var classifier_w, classifier_b;   // optional: [num_labels, H]
  std::map<std::string, Var> extra; // stored tensors the encoder does not use (e.g. "cls.predictions.*")
  // Ordinary models: none. A quantized model's int8 and bf16 weights are views of the mapped file
  // (Vars whose tensors are I8 or BF16); an int8 one's per-row scales are weight_scale(W).
  Quantization quantization;
  // The scales of an int8 weight W [N, K] (F32 [N]: W[j, :] ≈ scale[j] · q[j, :]), or null.
  const Tensor* weight_scale(const Var& W) const;
  void set_weight_scale(const Var& W, Tensor scale);
  // Throws mb::Error naming `source` when the model is quantized: what needs f32 weights
  // (training, compression, f32 inference) calls it.
  void require_f32_weights(const std::string& source, const std::string& what) const;

  bool has_pooler() const { return pooler_w.defined(); }
  // Every layer's kind and size (what save() records under config.json's "minibridge").
  std::vector<LayerStructure> layer_structure() const;
  bool has_classifier() const { return classifier_w.defined(); }
  int64_t head_dim() const { return config.head_dim(); }

  // Loads DIR/config.json and DIR/model.safetensors (or sharded). F32 weights stay zero-copy views of
  // the mapping; F16/BF16 are converted to F32. Missing tensors are an error naming them;
  // unknown ones are reported on stderr. A quantized model's bf16 and int8 weights stay views of
  // the mapping too, and are packed here (pack_for_inference in their precision; an mb::Error when
  // this CPU has no kernel for it), so that no f32 copy of them is ever made.
  static BertModel load(const std::string& dir);
  // Same, from tensors already read, without packing. `source` names where they came from in
  // messages.
  static BertModel from_tensors(const BertConfig& config, const std::map<std::string, Tensor>& tensors,
                                const std::string& source);
  // BERT's own initialisation: weights ~ normal(0, initializer_range), biases 0, LayerNorm 1/0,
  // the padding row of the word embeddings 0. Pooler and classifier included. Refuses (mb::Error
  // starting with `source`) a config whose parameters need more than the machine's memory, before
  // allocating anything.
  static BertModel init_random(const BertConfig& config, uint64_t seed, const std::string& source = "config");

  // Every parameter with its Hugging Face name: "bert."-prefixed when a classifier head is present
  // (BertForSequenceClassification), bare otherwise (BertModel). The Vars are the model's own.
  std::vector<std::pair<std::string, Var>> named_parameters() const;
  std::vector<std::pair<std::string, Tensor>> named_tensors() const;
  void set_requires_grad(bool on) const;

  // Writes config.json + model.safetensors (atomically), and copies vocab.txt (+ tokenizer
  // config) from tokenizer_dir when given. A quantized model is written as it is stored (dtype
  // must be F32, meaning its other tensors in f32), with its scales and config.json's record.
  void save(const std::string& dir, DType dtype = DType::F32, const std::string& tokenizer_dir = "") const;

  // Checks ids, token types and lengths against the config; throws mb::Error saying which sequence.
  void validate(const Batch& batch) const;

  // --- Differentiable forward pieces (record a tape when parameters require gradients).
  // Embeddings + LayerNorm (+ dropout): [tokens, H].
  Var embed(const Batch& batch, const ForwardOptions& opt = {}) const;
  // One encoder layer.
  Var layer_forward(const BertLayer& layer, const Var& x, const Batch& batch, const ForwardOptions& opt = {}) const;
  // Last hidden states [tokens, H]; when all_layers is given it receives the embedding output
  // followed by every layer's output (HF's hidden_states).
  Var hidden_states(const Batch& batch, const ForwardOptions& opt = {}, std::vector<Var>* all_layers = nullptr) const;
  // tanh(W·h[CLS] + b) per sequence: [num_seqs, H]. Requires a pooler.
  Var pooled_output(const Batch& batch, const Var& hidden) const;
  // dropout(pooled)·Wᵀ + b: [num_seqs, num_labels]. Requires a classifier.
  Var classifier_logits(const Var& pooled, const ForwardOptions& opt = {}) const;

  // --- Inference (no tape, whatever the parameters require).
  // Last hidden states [tokens, H]. A packed model (pack_for_inference) with at least as many
  // sequences as threads runs each thread's share of the sequences (encode_shares) through the
  // whole encoder on that thread alone, instead of splitting every product across the threads:
  // no thread then waits for the other at the end of each GEMM, and attention, LayerNorm and
  // GELU need no synchronisation (BERT-base batch 8 × 128 on 2 threads, 3–5 % faster). The results
  // are the same either way.
  Tensor encode(const Batch& batch) const;
  Tensor pool(const Batch& batch, const Tensor& hidden) const;
  Tensor classify(const Tensor& pooled) const;

  // --- Inference speed. Packs every encoder, pooler and classifier weight once into the layout
  // of the GEMM kernel (engine/gemm.h: oneDNN only; a no-op for the other back-ends; a layer's Q, K
  // and V as one [3W, H] weight, its FFN input with bias + GELU in the kernel) and drops the
  // originals' mmapped pages from memory, so resident memory stays about one copy of the weights.
  // Passes without a tape then run on the packed copies. Meant for a model whose weights no
  // longer change: after changing a weight in place call it again, or unpack(). Training
  // (trainable_params) unpacks.
  // BF16 / Int8: the encoder layers' weights packed in bfloat16 or quantised to int8 instead
  // (engine/gemm.h: Precision; the pooler and classifier stay f32), for speed at a small
  // accuracy cost. A quantized model packs in its stored precision only (an mb::Error for
  // another), and every encoder weight must pack (an mb::Error naming the precision otherwise).
  using Precision = mb::Precision;
  void pack_for_inference(Precision precision = Precision::F32);
  // The precision of the packed encoder weights (F32 when nothing is packed).
  Precision packed_precision() const;
  // Drops the packed copies; a quantized model's stay (its weights have no other form to run in).
  void unpack() const;
  size_t packed_bytes() const;
  // The packed copy of W, or null.
  const PackedWeight* packed_weight(const Var& W) const;
  // An encoder layer's Q, K and V weights packed as one [3W, H] weight with their biases [3W]:
  // one GEMM instead of three (at bert-tiny's 128² weights, one that is worth two threads).
  struct PackedQkv {
    std::shared_ptr<PackedWeight> weight;
    Tensor bias;
  };
  // Null unless packed; a shared layer finds its source layer's.
  const PackedQkv* packed_qkv(const BertLayer& layer) const;

 private:
  // Caches of the weights' values (hence mutable: dropping them never changes what the model
  // computes). Keyed by the data of W (W_Q for the fused Q/K/V).
  mutable std::map<const void*, std::shared_ptr<PackedWeight>> packed_;
  mutable std::map<const void*, PackedQkv> packed_qkv_;
  std::map<const void*, Tensor> scales_;  // keyed by the data of an int8 weight
  // Inference through packed_qkv(layer): the attention context [T, W], or undefined when the
  // packed kernel does not take this product.
  Var attention_context_packed(const BertLayer& layer, const Var& x, const Batch& batch) const;
};

}  // namespace mb
