// pretrain: masked-language-model pretraining of a model directory on a text corpus
// (models/pretrain.h). Ctrl-C (SIGINT) or SIGTERM: finish the current step, save a checkpoint and
// the model, and exit; a second Ctrl-C ends the process at once. Prints one JSON line at the end.
#include <csignal>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "models/pretrain.h"

namespace mbcli {

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_stop_signal(int) { g_stop.store(true); }

// Installs the handlers for the lifetime of the object (one-shot: the second signal is fatal).
// Under MPI, SIGTERM stays engine/distributed.h's: the launcher sends it when a rank died, and the
// others cannot finish a step without it. SIGINT (srun forwards Ctrl-C to every rank) still stops
// every rank after the same step (pretrain() sums the requests over the ranks).
class StopOnSignal {
 public:
  StopOnSignal() : term_(mb::dist::size() == 1) {
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &old_int_);
    if (term_) sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopOnSignal() {
    sigaction(SIGINT, &old_int_, nullptr);
    if (term_) sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

 private:
  bool term_;
  struct sigaction old_int_ {}, old_term_ {};
};

void run_pretrain(mb::PretrainOptions o) {
  g_stop.store(false);
  o.stop = &g_stop;
  mb::PretrainResult r;
  {
    StopOnSignal handlers;
    r = mb::pretrain(o);
  }
  nlohmann::json j = {{"out", o.out_dir},
                      {"status", r.already_done ? "already_done" : r.interrupted ? "interrupted" : "done"},
                      {"steps", r.steps},
                      {"loss", r.last_loss},
                      {"tokens_per_s", r.tokens_per_s}};
  if (r.eval_loss >= 0) j["eval_mlm_loss"] = r.eval_loss;
  if (mb::dist::is_root()) std::cout << j.dump() << std::endl;
}

}  // namespace

void add_pretrain_command(CLI::App& app) {
  auto o = std::make_shared<mb::PretrainOptions>();
  CLI::App* cmd = app.add_subcommand(
      "pretrain", "masked-language-model pretraining on a text corpus (OUT: model, train_log.jsonl, checkpoint/)");
  cmd->add_option("--model", o->model_dir, "input model directory (e.g. from `minibridge init`), with vocab.txt")
      ->required();
  cmd->add_option("--corpus", o->corpus_dir, "directory of .txt files (searched recursively)")->required();
  cmd->add_option("--out", o->out_dir, "output model directory (+ train_log.jsonl, checkpoint/)")->required();
  cmd->add_option("--max-steps", o->max_steps, "optimizer steps")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--objective", o->objective,
                  "mlm (BERT's masked LM) or electra (replaced-token detection: a small generator proposes the "
                  "masked tokens, the model learns at every token which ones were replaced; OUT is that model)")
      ->check(CLI::IsMember({"mlm", "electra"}));
  cmd->add_option("--generator-layers", o->generator_layers,
                  "electra: the generator's layers, at the model's width (default: a quarter of the model's, at least 1)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--disc-weight", o->disc_weight, "electra: the weight of the replaced-token loss (ELECTRA's 50)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--seq-len", o->seq_len, "tokens per packed sequence, [CLS] and [SEP] included")
      ->check(CLI::Range(3, 1 << 16));
  cmd->add_option("--batch-size", o->batch_size, "sequences per step (under mpirun: the global batch)")->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--streams", o->streams,
                  "documents read side by side; every batch mixes them (default: --batch-size, at most one per file)")
      ->check(CLI::Range(1, 1 << 16));
  cmd->add_option("--lr", o->lr,
                  "peak learning rate (linear warm-up, then linear decay to 0; default: 1e-3 up to width 256, "
                  "1e-3 * 256 / hidden_size above)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--warmup-steps", o->warmup_steps, "warm-up steps (default: 10% of --max-steps)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay (none on biases, LayerNorm)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-grad-norm", o->max_grad_norm, "clip the global gradient norm (0: no clipping)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-steps", o->eval_steps, "held-out MLM loss every this many steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-sequences", o->eval_sequences, "sequences in the fixed held-out evaluation set")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--heldout-fraction", o->heldout_fraction, "fraction of the corpus files held out (at least one)")
      ->check(CLI::Range(0.0, 0.99));
  cmd->add_option("--seed", o->seed, "seed for data order, masking, dropout and a new MLM head");
  cmd->add_option("--save-steps", o->save_steps, "checkpoint and model every this many steps (0: only at the end)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--log-steps", o->log_steps, "a train_log.jsonl line every this many steps")
      ->check(CLI::PositiveNumber);
  cmd->add_flag("--resume", o->resume, "continue the run in OUT from OUT/checkpoint");
  add_bf16_training_flag(*cmd, o->bf16);
  cmd->add_flag("--dropout", o->dropout,
                "use the model config's dropout while pretraining (default: off; the saved config keeps it for "
                "fine-tuning)");
  cmd->add_option("--threads", o->threads, "threads (default: MB_NUM_THREADS or all)");
  add_no_progress_flag(*cmd, o->progress);
  cmd->callback([o] {
    run_pretrain(*o);
  });
}

}  // namespace mbcli
