// compress: the parent of the compression commands (mbbert, kprune, peakd). Each method registers
// its own subcommand from its own cmd_compress_<method>.cpp.
#include "commands.h"

namespace mbcli {

void add_compress_command(CLI::App& app) {
  CLI::App* compress = app.add_subcommand("compress", "make a smaller model from a fine-tuned teacher");
  compress->require_subcommand(1);
  // Methods register here: add_compress_<method>_command(*compress);
  add_compress_mbbert_command(*compress);
  add_compress_kprune_command(*compress);
  add_compress_peakd_command(*compress);
}

void add_bf16_training_flag(CLI::App& cmd, bool& bf16) {
  cmd.add_flag("--bf16", bf16,
               "bf16 mixed precision: the linear layers' products in bfloat16 with f32 sums (faster with "
               "AVX512-BF16, emulated at f32's speed elsewhere); weights, gradients, optimizer state, "
               "LayerNorm, softmax and losses stay f32");
}

void add_no_progress_flag(CLI::App& cmd, bool& progress) {
  cmd.add_flag_callback("--no-progress", [&progress] { progress = false; }, "no progress line on stderr");
}

void add_student_training_options(CLI::App& cmd, mb::TrainOptions& train, int& max_len, int64_t& max_train_examples,
                                  const std::string& seed_help) {
  add_bf16_training_flag(cmd, train.bf16);
  cmd.add_option("--lr", train.lr, "peak learning rate (linear decay)")->check(CLI::PositiveNumber);
  cmd.add_option("--batch-size", train.batch_size, "sequences per update (under mpirun: the global batch)")->check(CLI::Range(1, 1 << 16));
  cmd.add_option("--warmup-ratio", train.warmup_ratio, "linear warm-up over this fraction of each training's updates")
      ->check(CLI::Range(0.0, 1.0));
  cmd.add_option("--max-len", max_len, "truncate inputs to this many tokens")->check(CLI::Range(3, 1 << 16));
  cmd.add_option("--seed", train.seed, seed_help);
  cmd.add_option("--max-train-examples", max_train_examples, "train on a fixed random subset of this many examples (0: all)")
      ->check(CLI::NonNegativeNumber);
  cmd.add_option("--log-steps", train.log_steps, "a train_log.jsonl line every this many updates")
      ->check(CLI::PositiveNumber);
  cmd.add_option("--save-steps", train.save_steps,
                 "checkpoint every this many updates (and at every evaluation); a rerun resumes from it")
      ->check(CLI::PositiveNumber);
}

}  // namespace mbcli
