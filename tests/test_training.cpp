// Training: a 20-step AdamW trajectory against PyTorch; fine-tuning through the CLI learns,
// resumes exactly after SIGKILL, and rejects bad data with file and line.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "engine/functional.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "models/training.h"
#include "io/checkpoint.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

int run(const std::string& args, std::string* err = nullptr) {
  const mbtest::CliRun r = mbtest::run_cli(args);
  if (err) *err = r.err;
  return r.status;
}

using mbtest::small_glue;

std::vector<std::string> log_losses(const std::string& path) {
  std::vector<std::string> out;
  std::istringstream in(mbtest::read_file(path));
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) out.push_back(std::to_string(j["step"].get<int>()) + ":" + j["loss"].dump());
    if (j.contains("eval")) out.push_back("eval:" + j["eval"].dump());
  }
  return out;
}

}  // namespace

TEST_CASE("20 AdamW steps follow PyTorch's loss trajectory") {
  const std::string root = mbtest::fixtures_dir() + "/grad";
  const mb::BertModel model = mb::BertModel::load(root + "/bert_step");
  const mb::SafeTensorsFile f = mb::read_safetensors(root + "/trajectory.safetensors");
  const std::vector<mb::ParamRef> params = mb::trainable_params(model);
  mb::AdamW opt(params, mb::AdamWConfig{0.9, 0.999, 1e-8, 0.01});
  const mb::Tensor& losses = f.tensors.at("losses");
  for (int64_t step = 0; step < 20; ++step) {
    const std::string p = "batch" + std::to_string(step % 4) + ".";
    const mb::Batch b = mbtest::fixture_batch(f, p);
    const mb::Var loss = mb::cross_entropy(model.classifier_logits(model.pooled_output(b, model.hidden_states(b))),
                                           mbtest::fixture_ints(f, p + "labels"));
    CAPTURE(step);
    CHECK(std::fabs(loss.data()[0] - losses.f32()[step]) < 1e-3);
    mb::backward(loss);
    mb::optimizer_step(opt, params, mb::linear_warmup_decay(step, 2, 20, 1e-3), 1.0);
  }
  for (const auto& [name, v] : model.named_parameters()) {
    // The key bias has an exactly-zero gradient (softmax ignores a per-row constant); AdamW then
    // turns rounding noise into lr-sized steps, in PyTorch as here, so its values are noise.
    if (name.find("attention.self.key.bias") != std::string::npos) continue;
    const mb::Tensor& want = f.tensors.at("final." + name);
    double num = 0, den = 0;
    for (int64_t i = 0; i < want.numel(); ++i) {
      num += std::pow(double(v.data()[i]) - want.f32()[i], 2);
      den += std::pow(double(want.f32()[i]), 2);
    }
    const auto& name_ = name;  // clang 14 cannot capture a structured binding in CAPTURE's lambda
    CAPTURE(name_);
    CHECK(std::sqrt(num / den) < 1e-3);
  }
}

TEST_CASE("finetune learns, evaluates, and resumes exactly after SIGKILL") {
  const std::string glue = small_glue("training_glue", 400, 100);
  const std::string model = mbtest::scratch_dir("training_model") + "/tiny";
  REQUIRE(run("init --config tiny --seed 1 --out " + model) == 0);
  const std::string common = " --model " + model + " --task SST-2 --data " + glue +
                             " --epochs 2 --batch-size 16 --lr 1e-3 --log-steps 5 --save-steps 10 --threads 2";

  const std::string full = mbtest::scratch_dir("training_full") + "/out";
  REQUIRE(run("finetune" + common + " --out " + full) == 0);
  const auto full_log = log_losses(full + "/train_log.jsonl");
  REQUIRE(full_log.size() >= 10);
  const auto results = nlohmann::json::parse(mbtest::read_file(full + "/results.json"));
  CHECK(results["steps"] == 50);
  // A fresh run over it is refused; resuming the finished run changes nothing.
  std::string err;
  CHECK(run("finetune" + common + " --out " + full, &err) == 1);
  CHECK(err.find("pass --resume") != std::string::npos);
  const std::string model_bytes = mbtest::read_file(full + "/model.safetensors");
  REQUIRE(run("finetune" + common + " --out " + full + " --resume") == 0);
  CHECK(log_losses(full + "/train_log.jsonl") == full_log);
  CHECK(mbtest::read_file(full + "/model.safetensors") == model_bytes);

  // The same run, killed once a checkpoint exists, then resumed.
  const std::string cut = mbtest::scratch_dir("training_cut") + "/out";
  REQUIRE(mbtest::run_cli_killed_at("finetune" + common + " --out " + cut, cut + "/checkpoint/state.json"));
  REQUIRE(run("finetune" + common + " --out " + cut + " --resume") == 0);
  CHECK(log_losses(cut + "/train_log.jsonl") == full_log);
  CHECK(mbtest::read_file(cut + "/model.safetensors") == mbtest::read_file(full + "/model.safetensors"));

  // On a full disk (a file-size limit: EFBIG, as ENOSPC), a save fails with one error naming the
  // file; the previous checkpoint and model stay intact, nothing half-written is left, and --resume
  // then ends exactly like the uninterrupted run (docs/RELIABILITY.md "Full disks").
  const std::string disk = mbtest::scratch_dir("training_disk") + "/out";
  mbtest::run_cli_killed_at("finetune" + common + " --out " + disk, disk + "/checkpoint/state.json");
  REQUIRE(mb::checkpoint_exists(disk + "/checkpoint"));
  const mb::Checkpoint before = mb::load_checkpoint(disk + "/checkpoint");
  const int64_t at = before.state.at("step").get<int64_t>();
  if (at < 50) {  // (else the run had finished before the kill: nothing left to write)
    const std::string ck_tensors = mbtest::read_file(disk + "/checkpoint/tensors.safetensors");
    const std::string ck_state = mbtest::read_file(disk + "/checkpoint/state.json");
    const bool had_model = fs::exists(disk + "/model.safetensors");
    const std::string model_before = had_model ? mbtest::read_file(disk + "/model.safetensors") : "";
    // Room for the log, not for a model (a third of the checkpoint's tensors) or a checkpoint.
    const uint64_t limit = ck_tensors.size() / 6;
    REQUIRE(mbtest::read_file(disk + "/train_log.jsonl").size() * 8 < limit);
    const mbtest::CliRun r = mbtest::run_cli_with_file_limit("finetune" + common + " --out " + disk + " --resume", limit);
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.err.find("minibridge: error: " + disk) != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find(".safetensors: write failed: File too large") != std::string::npos, r.err);
    CHECK(mbtest::read_file(disk + "/checkpoint/tensors.safetensors") == ck_tensors);
    CHECK(mbtest::read_file(disk + "/checkpoint/state.json") == ck_state);
    CHECK(fs::exists(disk + "/model.safetensors") == had_model);
    if (had_model) CHECK(mbtest::read_file(disk + "/model.safetensors") == model_before);
    for (const auto& e : fs::recursive_directory_iterator(disk)) {  // no staging directory, no temp file
      const std::string name = e.path().filename().string();
      CHECK_MESSAGE((name.find(".staging.") == std::string::npos && name.find(".tmp.") == std::string::npos), name);
    }
  }
  REQUIRE(run("finetune" + common + " --out " + disk + " --resume") == 0);
  CHECK(log_losses(disk + "/train_log.jsonl") == full_log);
  CHECK(mbtest::read_file(disk + "/model.safetensors") == mbtest::read_file(full + "/model.safetensors"));

  // eval prints the metric of the saved best model.
  const std::string out = mbtest::scratch_dir("training_eval") + "/out";
  const int raw = std::system((mbtest::cli_path() + " eval --model " + full + " --task sst-2 --data " + glue + " > " + out).c_str());
  REQUIRE(WEXITSTATUS(raw) == 0);
  const auto j = nlohmann::json::parse(mbtest::read_file(out));
  CHECK(j["task"] == "SST-2");
  CHECK(j["accuracy"] == results["dev"]["accuracy"]);
}

TEST_CASE("bad training data: file and line, non-zero exit") {
  const std::string glue = small_glue("training_bad", 20, 10);
  const std::string model = mbtest::scratch_dir("training_bad_model") + "/tiny";
  REQUIRE(run("init --config tiny --out " + model) == 0);
  std::string err;
  CHECK(run("finetune --model " + model + " --task SST-2 --data " + glue + " --out " + model + "-ft --resume", &err) == 1);
  CHECK(err.find("no checkpoint to resume from") != std::string::npos);
  {
    std::ofstream out(glue + "/SST-2/train.tsv", std::ios::app);
    out << "a sentence without a label\n";
  }
  CHECK(run("finetune --model " + model + " --task SST-2 --data " + glue + " --out " + model + "-ft", &err) == 1);
  CHECK(err.find(glue + "/SST-2/train.tsv:22") != std::string::npos);

  CHECK(run("finetune --model " + model + " --task SST-9 --data " + glue + " --out " + model + "-ft", &err) == 1);
  CHECK(err.find("SST-9") != std::string::npos);
}

TEST_CASE("unwritable outputs and damaged checkpoints: one error naming the path, nothing changed") {
  const std::string glue = small_glue("training_damaged", 40, 10);
  const std::string root = mbtest::scratch_dir("training_damaged_run");
  const std::string model = root + "/tiny";
  REQUIRE(run("init --config tiny --out " + model) == 0);
  const std::string common = "finetune --model " + model + " --task SST-2 --data " + glue + " --epochs 1 --batch-size 8 --threads 1";

  // --out under a regular file: nothing can be created there.
  mbtest::write_file(root + "/a_file", "x");
  std::string err;
  CHECK(run(common + " --out " + root + "/a_file/out", &err) == 1);
  CHECK_MESSAGE(err.rfind("minibridge: error: ", 0) == 0, err);
  CHECK_MESSAGE(err.find(root + "/a_file/out: cannot create directory: Not a directory") != std::string::npos, err);
  CHECK(mbtest::read_file(root + "/a_file") == "x");

  // A finished run's checkpoint with its state.json damaged: --resume names the file and the problem.
  const std::string out = root + "/out";
  REQUIRE(run(common + " --out " + out) == 0);
  const std::string state_path = out + "/checkpoint/state.json";
  const nlohmann::json good = nlohmann::json::parse(mbtest::read_file(state_path));
  const std::string model_bytes = mbtest::read_file(out + "/model.safetensors");
  const std::vector<std::pair<std::function<void(nlohmann::json&)>, std::string>> damages = {
      {[](nlohmann::json& j) { j["step"] = -1; }, "step -1 is outside this run's 0..5 steps"},
      {[](nlohmann::json& j) { j["step"] = 6; }, "step 6 is outside this run's 0..5 steps"},
      {[](nlohmann::json& j) { j["step"] = "five"; }, "malformed fine-tuning state"},
      {[](nlohmann::json& j) { j.erase("best_metrics"); }, "malformed fine-tuning state"},
      {[](nlohmann::json& j) { j["optimizer"]["param_steps"] = 3; }, "optimizer state: "},
  };
  for (const auto& [damage, want] : damages) {
    nlohmann::json j = good;
    damage(j);
    mbtest::write_file(state_path, j.dump());
    CHECK(run(common + " --out " + out + " --resume", &err) == 1);
    CHECK_MESSAGE(err.rfind("minibridge: error: " + out + "/checkpoint", 0) == 0, err);
    CHECK_MESSAGE(err.find(want) != std::string::npos, err);
    CHECK(mbtest::read_file(out + "/model.safetensors") == model_bytes);
  }
}
