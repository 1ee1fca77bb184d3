// The minibridge CLI's subcommands. Each registers its options on a CLI11 subcommand and runs
// when chosen; errors are mb::Error, printed once by main().
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "models/training.h"

namespace mbcli {

void add_infer_commands(CLI::App& app);  // tokenize, encode, classify
void add_info_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_train_commands(CLI::App& app);  // finetune, eval
void add_pretrain_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_compress_command(CLI::App& app);  // compress <method>: registers each method's subcommand
void add_compress_mbbert_command(CLI::App& compress);
void add_compress_kprune_command(CLI::App& compress);
void add_compress_peakd_command(CLI::App& compress);

// The training options every distilling compress command shares: --lr, --batch-size,
// --warmup-ratio, --max-len, --seed (described by seed_help), --max-train-examples, --log-steps.
void add_student_training_options(CLI::App& cmd, mb::TrainOptions& train, int& max_len, int64_t& max_train_examples,
                                  const std::string& seed_help);

// --version: the version, the CPU level of the kernels, the GEMM back-end, the build.
std::string version_text();
// The same for info: cpu_level, cpu, gemm, packed, build.
nlohmann::json runtime_json();
// runtime_json()["packed"] as text: "bf16 (engine), int8 (engine)", or "none".
std::string packed_text(const nlohmann::json& packed);

// --data as given, or $MINIBRIDGE_DATA/glue (mb::Error when neither exists).
std::string glue_dir_or_default(const std::string& given);

// --bf16 of the training commands (pretrain, finetune, compress): bf16 mixed precision.
void add_bf16_training_flag(CLI::App& cmd, bool& bf16);
// --no-progress of the long-running commands: sets progress to false (no progress line on stderr).
void add_no_progress_flag(CLI::App& cmd, bool& progress);

// --bf16 / --int8 of the inference commands (at most one): the encoder's packed precision.
struct PrecisionFlags {
  bool bf16 = false, int8 = false;
  mb::Precision precision() const { return int8 ? mb::Precision::Int8 : bf16 ? mb::Precision::BF16 : mb::Precision::F32; }
};
void add_precision_flags(CLI::App* cmd, PrecisionFlags& flags);

// Packs a loaded model for inference in the given precision (an mb::Error naming model_dir when
// there is no kernel for it, rather than silently running f32). A quantized model is already
// packed in its stored precision: F32 (no flag) or that precision are accepted, another is an error.
void pack_model(mb::BertModel& model, mb::Precision precision, const std::string& model_dir);

}  // namespace mbcli
