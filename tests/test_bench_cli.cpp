// `minibridge bench` on a tiny random model: the JSON fields are present, typed and consistent
// (tokens, modes, lengths, --inputs, --dump). Never timing thresholds: speed is measured by
// bench/compare.py, not asserted by tests.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "models/bert.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// A 2-layer, 32-wide random model; with_head adds pooler + classifier.
std::string tiny_model(const std::string& name, bool with_head) {
  const std::string dir = mbtest::scratch_dir(name);
  mb::BertConfig c;
  c.vocab_size = 200;
  c.hidden_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 2;
  c.intermediate_size = 64;
  c.max_position_embeddings = 64;
  mb::BertModel m = mb::BertModel::init_random(c, 7);
  if (!with_head) {
    m.pooler_w = m.pooler_b = m.classifier_w = m.classifier_b = mb::Var();
  }
  m.save(dir);
  return dir;
}

json parse_one_line(const mbtest::CliRun& r) {
  INFO("stderr: " << r.err);
  REQUIRE(r.status == 0);
  REQUIRE(!r.out.empty());
  REQUIRE(r.out.back() == '\n');
  REQUIRE(r.out.find('\n') == r.out.size() - 1);  // exactly one line
  return json::parse(r.out);
}

void check_common(const json& j, const std::string& mode, int64_t batch, int64_t iters) {
  for (const char* key : {"model", "batch", "seq", "tokens", "threads", "gemm", "mode", "iters", "median_ms", "min_ms",
                          "tokens_per_s", "peak_rss_mb", "weights_mb"})
    CHECK_MESSAGE(j.contains(key), key);
  CHECK(j["mode"] == mode);
  CHECK(j["batch"] == batch);
  CHECK(j["iters"] == iters);
  CHECK(j["threads"] == 1);
  CHECK(j["gemm"].is_string());
  CHECK(j["times_ms"].size() == size_t(iters));
  CHECK(j["median_ms"].get<double>() >= j["min_ms"].get<double>());
  CHECK(j["min_ms"].get<double>() >= 0.0);
  CHECK(j["tokens_per_s"].get<double>() > 0.0);
  CHECK(j["peak_rss_mb"].get<double>() > 0.0);
  CHECK(j["weights_mb"].get<double>() > 0.0);
  CHECK(j["weights_mb"].get<double>() < 1.0);  // ~30k parameters
}

}  // namespace

TEST_CASE("bench: forward, fixed lengths") {
  const std::string m = tiny_model("bench_model", true);
  const json j = parse_one_line(mbtest::run_cli("bench --model " + m + " --batch 3 --seq 16 --threads 1 --warmup 1 --iters 3"));
  check_common(j, "forward", 3, 3);
  CHECK(j["model"] == m);
  CHECK(j["seq"] == 16);
  CHECK(j["tokens"] == 48);
  CHECK(j["padded_tokens"] == 48);
  CHECK(j["lengths"] == "fixed");
}

TEST_CASE("bench: --int8 and --bf16 run packed low-precision weights; refused where they cannot apply") {
  const std::string m = tiny_model("bench_model", true);
  const std::string run = "bench --model " + m + " --batch 2 --seq 16 --threads 1 --warmup 1 --iters 2";
  const json f32 = parse_one_line(mbtest::run_cli(run));
  CHECK(f32["precision"] == "f32");
  for (const std::string precision : {"int8", "bf16"}) {
    CAPTURE(precision);
    const std::string flag = " --" + precision;
    const mb::Precision p = precision == "int8" ? mb::Precision::Int8 : mb::Precision::BF16;
    if (mb::packed_gemm_available(p)) {
      const json j = parse_one_line(mbtest::run_cli(run + flag));
      check_common(j, "forward", 2, 2);
      CHECK(j["precision"] == precision);
      if (mb::packed_gemm_available(mb::Precision::F32))
        CHECK(j["packed_weights_mb"].get<double>() < f32["packed_weights_mb"].get<double>());
    } else {  // no such kernel on this CPU: one clear error
      const mbtest::CliRun r = mbtest::run_cli(run + flag);
      CHECK(r.status == 1);
      CHECK(r.err.find(flag.substr(1) + " has no kernel on this CPU") != std::string::npos);
    }
    // (--gemm picks sgemm's back-end; packed weights run on their own kernels whatever it is.)
    for (const std::string bad : {" --train", " --no-pack"}) {
      CAPTURE(bad);
      if (precision == "bf16" && bad == " --train") continue;  // bf16 mixed-precision training: below
      const mbtest::CliRun r = mbtest::run_cli(run + flag + bad);
      CHECK(r.status != 0);
      CHECK(r.err.find(flag.substr(1)) != std::string::npos);
    }
  }
  // --train --bf16: training steps in bf16 mixed precision, wherever gemm_bf16 runs (emulated without
  // AVX512-BF16).
  const json train = parse_one_line(mbtest::run_cli(run + " --train --bf16"));
  check_common(train, "train", 2, 2);
  CHECK(train["precision"] == "bf16");
  CHECK(std::isfinite(train["loss_last"].get<double>()));
  CHECK(parse_one_line(mbtest::run_cli(run + " --train"))["precision"] == "f32");
  const mbtest::CliRun both = mbtest::run_cli(run + " --int8 --bf16");  // one precision at a time
  CHECK(both.status != 0);
  CHECK(both.err.find("excludes") != std::string::npos);
}

TEST_CASE("bench: varied lengths count real tokens only") {
  const std::string m = tiny_model("bench_model", true);
  const std::string args = "bench --model " + m + " --batch 16 --seq 64 --threads 1 --warmup 0 --iters 2 --lengths varied";
  const json j = parse_one_line(mbtest::run_cli(args));
  check_common(j, "forward", 16, 2);
  CHECK(j["lengths"] == "varied");
  CHECK(j["padded_tokens"] == 16 * 64);
  CHECK(j["tokens"].get<int64_t>() >= 16 * 8);
  CHECK(j["tokens"].get<int64_t>() < 16 * 64);
  // The same seed gives the same lengths.
  CHECK(parse_one_line(mbtest::run_cli(args))["tokens"] == j["tokens"]);
}

TEST_CASE("bench: training steps, with and without a classification head") {
  for (bool head : {true, false}) {
    CAPTURE(head);
    const std::string m = tiny_model(head ? "bench_model" : "bench_model_bare", head);
    const json j = parse_one_line(mbtest::run_cli("bench --model " + m + " --batch 2 --seq 8 --train --threads 1 --warmup 0 --iters 2"));
    check_common(j, "train", 2, 2);
    CHECK(j["tokens"] == 16);
    CHECK(std::isfinite(j["loss_first"].get<double>()));
    CHECK(std::isfinite(j["loss_last"].get<double>()));
  }
}

TEST_CASE("bench: --inputs and --dump give the model's own hidden states") {
  const std::string m = tiny_model("bench_model", true);
  const std::string dir = mbtest::scratch_dir("bench_inputs");
  const std::vector<std::vector<int32_t>> ids = {{101, 5, 6, 7, 102}, {101, 9, 102}};
  const std::vector<std::vector<int32_t>> types = {{0, 0, 0, 1, 1}, {0, 0, 1}};
  std::ofstream(dir + "/in.json") << json{{"input_ids", ids}, {"token_type_ids", types}}.dump();
  const json j = parse_one_line(mbtest::run_cli("bench --model " + m + " --inputs " + dir + "/in.json --dump " + dir +
                                    "/h.f32 --threads 1 --warmup 0 --iters 1"));
  check_common(j, "forward", 2, 1);
  CHECK(j["tokens"] == 8);
  CHECK(j["seq"] == 5);
  CHECK(j["lengths"] == "file");

  mb::Batch b;
  for (size_t i = 0; i < ids.size(); ++i) b.add(ids[i], types[i]);
  mb::BertModel model = mb::BertModel::load(m);
  model.pack_for_inference();  // as bench runs it
  const mb::Tensor ref = model.encode(b);
  const std::string dumped = mbtest::read_file(dir + "/h.f32");
  REQUIRE(dumped.size() == ref.nbytes());
  std::vector<float> got(ref.numel());
  std::memcpy(got.data(), dumped.data(), dumped.size());
  for (int64_t i = 0; i < ref.numel(); ++i) REQUIRE(got[size_t(i)] == ref.f32()[i]);
}

TEST_CASE("bench: bad input is one clear error") {
  const std::string m = tiny_model("bench_model", true);
  mbtest::CliRun r = mbtest::run_cli("bench --model " + m + " --seq 100 --threads 1");  // max_position_embeddings is 64
  CHECK(r.status != 0);
  CHECK(r.err.find("max_position_embeddings") != std::string::npos);
  r = mbtest::run_cli("bench --model " + m + "/missing --threads 1");
  CHECK(r.status != 0);
  CHECK(r.err.find("minibridge: error:") != std::string::npos);
  const std::string dir = mbtest::scratch_dir("bench_bad_inputs");
  std::ofstream(dir + "/in.json") << R"({"input_ids": [[101, 500, 102]]})";  // id 500 >= vocab 200
  r = mbtest::run_cli("bench --model " + m + " --inputs " + dir + "/in.json --threads 1");
  CHECK(r.status != 0);
  CHECK(r.err.find("minibridge: error:") != std::string::npos);
}
