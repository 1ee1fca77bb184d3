// Pretraining: BERT's masked-LM objective (without next-sentence prediction), or ELECTRA's
// replaced-token detection (--objective electra, models/electra.h), on packed sequences from a
// text corpus (io/mlm_data.h), 15% of tokens selected (80% [MASK], 10% random, 10% kept), AdamW
// with linear warm-up/decay, no dropout unless asked for (PretrainOptions::dropout). Each batch
// mixes sequences of `streams` documents read side by side (shards of the training files), not
// one book at a time.
//
// OUT, the output, is a model directory (config.json, model.safetensors with the encoder and, for
// MLM, the head under the HF BertForMaskedLM names cls.predictions.* — decoder tied to the word
// embeddings; for ELECTRA the discriminator alone, a BertModel — vocab.txt and
// tokenizer_config.json from the input), plus:
//   OUT/train_log.jsonl  one JSON line per log step {"step","loss","lr","grad_norm","tokens_per_s",
//                        "elapsed_s"} and per evaluation {"step","eval_mlm_loss","eval_masked_tokens",
//                        "elapsed_s"}; ELECTRA adds "mlm_loss" and "disc_loss" (window means of
//                        the generator's and the discriminator's losses; "loss" is their weighted
//                        sum) and "eval_disc_loss", "eval_disc_accuracy"; a
//                        {"event":"start"|"resume"|"done", ...} line (no "step") marks each run.
//   OUT/checkpoint/      model + AdamW state + {step, MlmStream cursor, dropout RNG, running log
//                        sums, options}; written atomically every save_steps and at the end.
// The model in OUT is rewritten at every checkpoint, so an interrupted run leaves a usable model.
// The final checkpoint is kept: resuming a finished run reports that it is done (and nothing else).
//
// Resuming continues exactly where the checkpoint was taken: the same batches, masks, dropout and
// optimizer state, so the final model is bit-identical to an uninterrupted run with the same
// options and thread count.
//
// The pooler (unused by the MLM objective) is kept as it was and not trained; a classifier head
// in the input model is dropped (the output is a BertForMaskedLM, or for ELECTRA a BertModel).
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <string>

namespace mb {

struct PretrainOptions {
  std::string model_dir;   // input model directory (e.g. from `minibridge init`), with vocab.txt
  std::string corpus_dir;  // *.txt files (io/corpus.h)
  std::string out_dir;

  // "mlm": BERT's masked-LM. "electra": replaced-token detection (models/electra.h); OUT is then
  // the discriminator, a plain BERT model (no MLM head), and the eval lines add the
  // discriminator's held-out loss and accuracy (eval_mlm_loss is the generator's).
  std::string objective = "mlm";
  int generator_layers = 0;      // electra: the generator's layers (0: max(1, layers / 4))
  double disc_weight = 50.0;     // electra: λ, the weight of the discriminator's loss

  int64_t max_steps = 0;         // required: optimizer steps
  int seq_len = 128;             // tokens per packed sequence, [CLS] and [SEP] included
  int batch_size = 32;           // sequences per step
  int streams = 0;               // documents read side by side, mixed in every batch (0: batch_size)
  // Peak learning rate; 0: default_pretrain_lr(hidden size), 1e-3 at width 256 and below, scaled
  // as 1/width above (μP's rule for Adam): 3.3e-4 for BERT-base. Measured at width 256 in
  // docs/TRAINING.md "Pretraining settings"; wider models' values are that rule's, not measured.
  double lr = 0.0;
  int64_t warmup_steps = -1;     // < 0: 10% of max_steps
  double weight_decay = 0.01;    // BERT's; not applied to biases and LayerNorm weights
  double max_grad_norm = 1.0;

  int64_t eval_steps = 100;      // held-out MLM loss every this many steps (0: only at the end)
  int eval_sequences = 256;      // size of the fixed held-out evaluation set
  double heldout_fraction = 0.01;  // of the corpus files (at least one file)
  uint64_t seed = 42;            // data order, masking, dropout, and the MLM head's init if absent

  int64_t save_steps = 200;      // checkpoint + model every this many steps (and at the end)
  int64_t log_steps = 10;        // a train_log.jsonl line (mean loss since the previous one)
  bool resume = false;           // continue from OUT/checkpoint (an error when there is none)
  bool bf16 = false;             // bf16 mixed precision (models/training.h: TrainOptions::bf16)
  // The config's dropout (hidden and attention) in the training passes. Off by default: a
  // pretraining run sees each token about once, so there is nothing to regularise against, and
  // dropout slows learning per token (Geiping & Goldstein 2022, "Cramming"; measured in
  // docs/TRAINING.md "Pretraining defaults"). The saved config keeps its dropout for fine-tuning.
  bool dropout = false;
  int threads = 0;               // 0: MB_NUM_THREADS or all cores (engine/threads.h)
  bool progress = true;          // progress line on stderr

  // Checked after every step: when it becomes true the run saves a checkpoint and the model,
  // and returns with `interrupted` set (the CLI sets it on SIGINT/SIGTERM).
  const std::atomic<bool>* stop = nullptr;

  int64_t resolved_warmup() const { return warmup_steps >= 0 ? warmup_steps : (max_steps + 5) / 10; }
  // At most one stream per training file.
  int resolved_streams(size_t train_files) const {
    const int64_t k = streams > 0 ? streams : batch_size;
    return int(std::max<int64_t>(1, std::min<int64_t>(k, int64_t(train_files))));
  }
};

inline double default_pretrain_lr(int64_t hidden_size) {
  return std::min(1e-3, 1e-3 * 256.0 / double(std::max<int64_t>(1, hidden_size)));
}

struct PretrainResult {
  int64_t steps = 0;              // optimizer steps completed (in all runs)
  double last_loss = 0.0;         // mean training loss of the last log window
  double eval_loss = -1.0;        // last held-out MLM loss (-1: none)
  double tokens_per_s = 0.0;      // this run's average (0 when it took no step)
  bool already_done = false;      // resumed a finished run: nothing was done
  bool interrupted = false;       // stopped early through `stop`
};

// Runs (or resumes) pretraining. Everything is validated (corpus, model, options, checkpoint)
// before OUT is created or touched: bad input throws mb::Error naming the file or directory.
PretrainResult pretrain(const PretrainOptions& opt);

}  // namespace mb
