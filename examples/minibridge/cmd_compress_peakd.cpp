// compress peakd: Pea-KD (compress/peakd.h) — Shuffled Parameter Sharing students, Pretraining with
// the Teacher's Predictions, then PKD distillation. Without --sps/--ptp it runs the comparison
// (plain KD, SPS, SPS + PTP); with either it trains that one student. Prints results.json.
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "compress/peakd.h"
#include "engine/distributed.h"
#include "engine/threads.h"

namespace mbcli {

void add_compress_peakd_command(CLI::App& compress) {
  auto o = std::make_shared<mb::PeakdOptions>();
  auto sps = std::make_shared<std::string>(), ptp = std::make_shared<std::string>();
  auto threads = std::make_shared<int>(0);
  o->train.lr = 5e-5;
  CLI::App* cmd = compress.add_subcommand(
      "peakd", "Pea-KD: shuffled parameter sharing + pretraining with the teacher's predictions, then PKD");
  cmd->add_option("--teacher", o->teacher_dir, "fine-tuned teacher model directory")->required();
  cmd->add_option("--task", o->task, "GLUE classification task the teacher was fine-tuned on")->required();
  cmd->add_option("--data", o->data_dir, "GLUE directory (default: $MINIBRIDGE_DATA/glue)");
  cmd->add_option("--out", o->out_dir, "output: kd/, sps/, sps_ptp/ model directories and results.json")->required();
  cmd->add_option("--student-layers", o->student_layers, "N: the student's unique layers (the teacher's first N)")
      ->check(CLI::Range(1, 1000));
  cmd->add_option("--first-shared", o->first_shared,
                  "SPS repeats layers K..N-1 (default: 0; 3 for N = 6, the paper's L1..L6, L4*..L6*)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--sps", *sps, "train one student, with (on) or without (off) shuffled parameter sharing")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("--ptp", *ptp, "train one student, with (on) or without (off) PTP pre-training")
      ->check(CLI::IsMember({"on", "off"}));
  cmd->add_option("--t1", o->t1, "PTP confidence threshold for correct predictions (default: the paper's)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--t2", o->t2, "PTP confidence threshold for wrong predictions (default: the paper's)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--alpha", o->alpha, "weight of the KD term (1 - alpha on CE)")->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--temperature", o->temperature, "KD temperature T")->check(CLI::PositiveNumber);
  cmd->add_option("--beta", o->beta, "weight of the patience loss (normalised [CLS] MSE)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--epochs", o->epochs, "KD epochs")->check(CLI::Range(1, 1000));
  cmd->add_option("--ptp-epochs", o->ptp_epochs, "PTP pre-training epochs")->check(CLI::Range(1, 1000));
  cmd->add_option("--ptp-evals-per-epoch", o->ptp_evals_per_epoch,
                  "dev PTP loss evaluations per PTP epoch (the lowest is kept)")
      ->check(CLI::Range(1, 100000));
  add_student_training_options(*cmd, o->train, o->max_len, o->max_train_examples,
                               "seed for the data order, subset, dropout and the PTP head");
  cmd->add_option("--threads", *threads, "threads (default: MB_NUM_THREADS or all)");
  add_no_progress_flag(*cmd, o->progress);
  cmd->callback([=] {
    mb::set_num_threads(*threads);
    o->data_dir = glue_dir_or_default(o->data_dir);
    // Either flag picks one student; the other then defaults to on.
    if (!sps->empty() || !ptp->empty()) o->students = {mb::peakd_student(*sps != "off", *ptp != "off")};
    const nlohmann::json results = mb::run_peakd(*o);
    if (mb::dist::is_root()) std::cout << results.dump() << std::endl;
  });
}

}  // namespace mbcli
