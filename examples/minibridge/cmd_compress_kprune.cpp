// compress kprune: K-prune, retraining-free structured pruning under a FLOPs budget
// (docs/METHODS.md section 2). Prints results.json's object as one JSON line.
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "compress/kprune.h"
#include "engine/threads.h"

namespace mbcli {

void add_compress_kprune_command(CLI::App& compress) {
  auto job = std::make_shared<mb::KpruneJob>();
  auto threads = std::make_shared<int>(0);
  CLI::App* c = compress.add_subcommand("kprune", "K-prune: retraining-free structured pruning under a FLOPs budget");
  c->add_option("--teacher", job->teacher_dir, "fine-tuned model directory")->required();
  c->add_option("--task", job->task, "GLUE task the teacher was fine-tuned on (SST-2, MRPC, STS-B, ...)")->required();
  c->add_option("--data", job->data_dir, "GLUE directory (default: $MINIBRIDGE_DATA/glue)");
  c->add_option("--out", job->out_dir, "output model directory (+ results.json, kprune_log.jsonl)")->required();
  c->add_option("--constraint", job->kprune.constraint, "fraction of the FLOPs to remove, in [0, 1)")
      ->required()
      ->check(CLI::Range(0.0, 0.999999));
  c->add_option("--num-tokens", job->num_tokens, "sample-set size in tokens (n = floor(tokens / average length))")
      ->check(CLI::PositiveNumber);
  c->add_option("--lambda-rep", job->kprune.lambda_rep, "weight of the representational knowledge")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--lambda-pred", job->kprune.lambda_pred, "weight of the predictive knowledge")
      ->check(CLI::NonNegativeNumber);
  c->add_option("--mu", job->kprune.mu, "multiplier of the heads' scores")->check(CLI::PositiveNumber);
  c->add_option("--temperature", job->kprune.temperature, "temperature of the predictive KL loss")
      ->check(CLI::PositiveNumber);
  c->add_option("--seed", job->seed, "seed of the sample-set draw");
  c->add_option("--max-len", job->max_len, "truncate inputs to this many tokens")->check(CLI::Range(3, 1 << 16));
  c->add_option("--batch-size", job->batch_size, "sample sentences per batch")->check(CLI::Range(1, 1 << 16));
  auto no_tuning = std::make_shared<bool>(false);
  c->add_flag("--no-weight-tuning", *no_tuning,
              "ablation: skip KPWT, keeping the old output projection's columns of the kept units");
  auto no_eval = std::make_shared<bool>(false);
  c->add_flag("--no-eval", *no_eval, "skip the dev metrics before/after");
  add_bf16_training_flag(*c, job->kprune.bf16);
  add_no_progress_flag(*c, job->kprune.progress);
  c->add_option("--threads", *threads, "threads (default: MB_NUM_THREADS or all)");
  c->callback([job, threads, no_eval, no_tuning] {
    mb::set_num_threads(*threads);
    job->evaluate = !*no_eval;
    job->kprune.weight_tuning = !*no_tuning;
    job->data_dir = glue_dir_or_default(job->data_dir);
    std::cout << mb::run_kprune(*job).dump() << std::endl;
  });
}

}  // namespace mbcli
