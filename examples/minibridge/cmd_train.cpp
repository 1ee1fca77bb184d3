// finetune / eval: GLUE fine-tuning with HF run_glue's defaults, and dev-set metrics as one JSON line.
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "commands.h"
#include "engine/error.h"
#include "engine/threads.h"
#include "io/data_dir.h"
#include "io/glue.h"
#include "engine/distributed.h"
#include "models/finetune.h"

namespace mbcli {

std::string glue_dir_or_default(const std::string& given) {
  if (!given.empty()) return given;
  const std::string data = mb::find_data_dir();
  MB_CHECK(!data.empty(), "no --data given and no data directory found: set MINIBRIDGE_DATA or pass --data GLUE_DIR");
  return (std::filesystem::path(data) / "glue").string();
}

void add_precision_flags(CLI::App* cmd, PrecisionFlags& flags) {
  CLI::Option* bf16 = cmd->add_flag("--bf16", flags.bf16,
                                    "bfloat16 encoder weights and products (half the weights' memory; faster with AVX512-BF16; slightly less exact)");
  CLI::Option* int8 = cmd->add_flag("--int8", flags.int8, "dynamic int8 encoder weights and activations (faster, less exact)");
  bf16->excludes(int8);
}

void pack_model(mb::BertModel& model, mb::Precision precision, const std::string& model_dir) {
  const mb::Quantization& q = model.quantization;
  if (q.quantized()) {  // packed in its stored precision when loaded; a flag may only repeat it
    MB_CHECK(precision == mb::Precision::F32 || precision == q.weights,
             model_dir + ": the model is stored in " + mb::precision_name(q.weights) + " and runs in it (drop --" +
                 mb::precision_name(precision) + ", or quantize the f32 model it came from to " +
                 mb::precision_name(precision) + ")");
    return;
  }
  model.pack_for_inference(precision);
  MB_CHECK(model.packed_precision() == precision, model_dir + ": --" + mb::packed_gemm_missing(precision));
}

namespace {

void print_metrics(const std::string& task, const std::map<std::string, double>& metrics) {
  nlohmann::json j = {{"task", task}};
  for (const auto& [k, v] : metrics) j[k] = v;
  std::cout << j.dump() << std::endl;
}

struct EvalOptions {
  std::string model, task, data, split = "dev";
  int max_len = 128, batch = 64, threads = 0;
  PrecisionFlags precision;
};

}  // namespace

void add_train_commands(CLI::App& app) {
  auto f = std::make_shared<mb::FinetuneOptions>();
  auto threads = std::make_shared<int>(0);
  CLI::App* ft = app.add_subcommand("finetune", "fine-tune a model on a GLUE task (HF run_glue defaults)");
  ft->add_option("--model", f->model_dir, "pretrained model directory")->required();
  ft->add_option("--task", f->task, "CoLA, SST-2, MRPC, RTE, STS-B, WNLI, QNLI, QQP or MNLI")->required();
  ft->add_option("--data", f->data_dir, "GLUE directory (default: $MINIBRIDGE_DATA/glue)");
  ft->add_option("--out", f->out_dir, "output directory: best model, train_log.jsonl, checkpoint/")->required();
  ft->add_option("--epochs", f->epochs, "training epochs")->check(CLI::Range(1, 1000));
  ft->add_option("--lr", f->train.lr, "peak learning rate")->check(CLI::PositiveNumber);
  ft->add_option("--batch-size", f->train.batch_size, "sequences per step (under mpirun: the global batch)")->check(CLI::Range(1, 1 << 16));
  ft->add_option("--max-len", f->max_len, "truncate inputs to this many tokens")->check(CLI::Range(3, 1 << 16));
  ft->add_option("--seed", f->train.seed, "seed for the classifier init, data order and dropout");
  ft->add_option("--max-steps", f->train.max_steps, "stop after this many steps (overrides --epochs)")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 30));
  ft->add_option("--warmup-ratio", f->train.warmup_ratio, "linear warm-up over this fraction of the steps")
      ->check(CLI::Range(0.0, 1.0));
  ft->add_option("--weight-decay", f->train.weight_decay, "AdamW decoupled weight decay (none on biases, LayerNorm)");
  ft->add_option("--save-steps", f->train.save_steps, "checkpoint every this many steps")->check(CLI::PositiveNumber);
  ft->add_option("--log-steps", f->train.log_steps, "a JSON log line every this many steps")->check(CLI::PositiveNumber);
  ft->add_flag("--resume", f->train.resume, "continue from OUT/checkpoint");
  add_bf16_training_flag(*ft, f->train.bf16);
  ft->add_option("--threads", *threads, "threads (default: MB_NUM_THREADS or all)");
  ft->callback([f, threads] {
    mb::set_num_threads(*threads);
    f->data_dir = glue_dir_or_default(f->data_dir);
    const std::map<std::string, double> metrics = mb::finetune(*f);
    if (mb::dist::is_root()) print_metrics(mb::glue_task(f->task).name, metrics);
  });

  auto e = std::make_shared<EvalOptions>();
  CLI::App* ev = app.add_subcommand("eval", "GLUE metrics of a fine-tuned model, as one JSON line");
  ev->add_option("--model", e->model, "fine-tuned model directory")->required();
  ev->add_option("--task", e->task, "CoLA, SST-2, MRPC, RTE, STS-B, WNLI, QNLI, QQP or MNLI")->required();
  ev->add_option("--data", e->data, "GLUE directory (default: $MINIBRIDGE_DATA/glue)");
  ev->add_option("--split", e->split, "labelled split to score")->check(CLI::IsMember({"dev", "train"}));
  ev->add_option("--max-len", e->max_len, "truncate inputs to this many tokens")->check(CLI::Range(3, 1 << 16));
  ev->add_option("--batch-size", e->batch, "sequences run together")->check(CLI::Range(1, 1 << 16));
  ev->add_option("--threads", e->threads, "threads (default: MB_NUM_THREADS or all)");
  add_precision_flags(ev, e->precision);
  ev->callback([e] {
    mb::set_num_threads(e->threads);
    const mb::GlueTask& task = mb::glue_task(e->task);
    const mb::GlueSplit split = mb::read_glue_split(glue_dir_or_default(e->data), task, e->split);
    mb::BertModel model = mb::BertModel::load(e->model);
    pack_model(model, e->precision.precision(), e->model);
    MB_CHECK(model.has_classifier() && model.config.num_labels() == task.num_labels(),
             e->model + ": not a " + task.name + " model (needs a classifier with " + std::to_string(task.num_labels()) +
                 " outputs; fine-tune it first)");
    print_metrics(task.name, mb::evaluate_glue(model, mb::Tokenizer::from_model_dir(e->model), task, split, e->max_len,
                                               e->batch));
  });
}

}  // namespace mbcli
