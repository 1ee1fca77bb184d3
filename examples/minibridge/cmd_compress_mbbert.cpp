// compress mbbert: MiniBridgeBERT (compress/mbbert.h) — stepwise replacement of encoder layers by
// Low-Rank Bridges with progressive knowledge distillation, and the paper's ablations.
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "compress/mbbert.h"
#include "engine/threads.h"

namespace mbcli {

void add_compress_mbbert_command(CLI::App& compress) {
  auto o = std::make_shared<mb::MbbertOptions>();
  auto order = std::make_shared<std::string>("top-down");
  auto init = std::make_shared<std::string>("regression");
  auto form = std::make_shared<std::string>("residual_layernorm");
  auto ablation = std::make_shared<std::string>("none");
  auto threads = std::make_shared<int>(0);
  o->train.lr = 5e-5;
  CLI::App* cmd = compress.add_subcommand(
      "mbbert", "MiniBridgeBERT: replace even-numbered layers by low-rank bridges, one per step, with progressive KD");
  cmd->add_option("--teacher", o->teacher_dir, "fine-tuned teacher model directory")->required();
  cmd->add_option("--task", o->task, "GLUE task the teacher was fine-tuned on (CoLA, SST-2, ...)")->required();
  cmd->add_option("--data", o->data_dir, "GLUE directory (default: $MINIBRIDGE_DATA/glue)");
  cmd->add_option("--out", o->out_dir, "output: step_K/ models, results.jsonl, results.md")->required();
  cmd->add_option("--steps", o->steps, "blocks to replace, one per step (6 for a 12-layer model)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--rank", o->rank, "bridge rank r (256 for H = 768)")->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--order", *order, "which even-numbered block goes first")
      ->check(CLI::IsMember({"top-down", "bottom-up"}));
  cmd->add_option("--init", *init, "bridge initialisation: reduced-rank regression, or skip (B = 0)")
      ->check(CLI::IsMember({"regression", "skip"}));
  cmd->add_option("--form", *form, "bridge map: LN(x + xAB + b) or xAB + b")
      ->check(CLI::IsMember({"residual_layernorm", "linear"}));
  cmd->add_option("--alpha", o->alpha, "weight of the KD term (1 - alpha on CE)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--temperature", o->temperature, "KD temperature T")->check(CLI::PositiveNumber);
  cmd->add_option("--beta", o->beta, "weight of the hidden-state MSE after the replaced block")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--epochs-per-step", o->epochs_per_step, "training epochs after each replacement")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--ablation", *ablation, "none | no-kd (CE only) | one-shot (all bridges at once) | "
                                           "distil-baseline (drop the blocks, no bridges, KD)")
      ->check(CLI::IsMember({"none", "no-kd", "one-shot", "distil-baseline"}));
  add_student_training_options(*cmd, o->train, o->max_len, o->max_train_examples,
                               "seed for the data order, subset, dropout and skip-init");
  cmd->add_option("--fit-tokens", o->fit_tokens, "training tokens used to fit each bridge by regression")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--latency-examples", o->latency_examples, "dev examples timed one by one for results.md (0: none)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", *threads, "threads (default: MB_NUM_THREADS or all)");
  add_no_progress_flag(*cmd, o->progress);
  cmd->callback([=] {
    mb::set_num_threads(*threads);
    o->data_dir = glue_dir_or_default(o->data_dir);
    o->top_down = *order == "top-down";
    o->regression_init = *init == "regression";
    o->form = mb::parse_bridge_form(*form);
    o->ablation = mb::parse_mbbert_ablation(*ablation);
    const mb::MbbertSummary s = mb::run_mbbert(*o);
    for (const auto& line : s.results) std::cout << line.dump() << "\n";
    std::cout.flush();
  });
}

}  // namespace mbcli
