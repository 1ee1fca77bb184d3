// The minibridge CLI's subcommands. Each registers its options on a CLI11 subcommand and runs
// when chosen; errors are mb::Error, printed once by main().
#pragma once
#include <CLI/CLI.hpp>

namespace mbcli {

void add_infer_commands(CLI::App& app);  // tokenize, encode, classify
void add_info_command(CLI::App& app);
void add_init_command(CLI::App& app);
void add_train_commands(CLI::App& app);  // finetune, eval
void add_pretrain_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_compress_command(CLI::App& app);  // compress <method>: registers each method's subcommand
void add_compress_mbbert_command(CLI::App& compress);
void add_compress_kprune_command(CLI::App& compress);

}  // namespace mbcli
