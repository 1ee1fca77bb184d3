// The minibridge CLI end to end: init/info, tokenize/encode/classify against the library (whose
// numbers the parity tests pin to PyTorch and HF tokenizers), and bad input: one clear error,
// a non-zero exit, never a crash.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "engine/cpu.h"
#include "engine/gemm.h"
#include "io/tokenizer.h"
#include "models/bert.h"
#include "models/counting.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kLines = "Hello, world!\nThe quick brown fox jumps over the lazy dog.\nA pair?\tYes, a pair.\nx\n";

std::string tiny() { return mbtest::fixtures_dir() + "/bert/tiny_f32"; }

// The library's answer for the same lines: encodings and last hidden states.
struct Reference {
  std::vector<mb::Encoding> enc;
  mb::Batch batch;
  mb::Tensor hidden, pooled, logits;
};

Reference reference(const std::string& dir, const std::string& lines) {
  const mb::Tokenizer tok = mb::Tokenizer::from_model_dir(dir);
  const mb::BertModel m = mb::BertModel::load(dir);
  Reference r;
  std::istringstream in(lines);
  for (std::string line; std::getline(in, line);) {
    const size_t tab = line.find('\t');
    r.enc.push_back(tab == std::string::npos ? tok.encode(line, 512)
                                             : tok.encode_pair(line.substr(0, tab), line.substr(tab + 1), 512));
    r.batch.add(r.enc.back().input_ids, r.enc.back().token_type_ids);
  }
  r.hidden = m.encode(r.batch);
  r.pooled = m.pool(r.batch, r.hidden);
  r.logits = m.classify(r.pooled);
  return r;
}

// GEMM kernels block differently for different row counts, so batching other sequences together
// moves results by float rounding (~1e-6), never more.
void check_floats(const json& got, const float* want, int64_t n) {
  REQUIRE(got.size() == size_t(n));
  float worst = 0;
  for (int64_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(got[size_t(i)].get<float>() - want[i]));
  CHECK(worst <= 2e-5f);
}

}  // namespace

TEST_CASE("tokenize prints the tokenizer's ids") {
  const Reference ref = reference(tiny(), kLines);
  const mbtest::CliRun r = mbtest::run_cli("tokenize --model " + tiny(), kLines);
  REQUIRE(r.status == 0);
  const auto out = mbtest::json_lines(r.out);
  REQUIRE(out.size() == ref.enc.size());
  for (size_t i = 0; i < out.size(); ++i) {
    CHECK(out[i]["input_ids"].get<std::vector<int32_t>>() == ref.enc[i].input_ids);
    CHECK(out[i]["token_type_ids"].get<std::vector<int32_t>>() == ref.enc[i].token_type_ids);
  }
  const auto cut = mbtest::json_lines(mbtest::run_cli("tokenize --max-len 5 --model " + tiny(), kLines).out);
  CHECK(cut[1]["input_ids"].size() == 5);
  CHECK(cut[1]["input_ids"].back() == 102);  // [SEP] survives truncation
}

TEST_CASE("encode: every pooling, any batch size, any thread count") {
  const Reference ref = reference(tiny(), kLines);
  const int64_t H = 128;
  for (const std::string batch : {"1", "3", "64"}) {
    CAPTURE(batch);
    const auto none = mbtest::json_lines(mbtest::run_cli("encode --pooling none --batch " + batch + " --model " + tiny(), kLines).out);
    REQUIRE(none.size() == 4);
    for (int64_t s = 0; s < 4; ++s) {
      const auto& rows = none[size_t(s)]["last_hidden_state"];
      REQUIRE(int64_t(rows.size()) == ref.batch.length(s));
      for (int64_t t = 0; t < ref.batch.length(s); ++t)
        check_floats(rows[size_t(t)], ref.hidden.f32() + (ref.batch.offsets[s] + t) * H, H);
    }
  }
  const auto cls = mbtest::json_lines(mbtest::run_cli("encode --threads 1 --model " + tiny(), kLines).out);
  const auto pooler = mbtest::json_lines(mbtest::run_cli("encode --pooling pooler --threads 2 --model " + tiny(), kLines).out);
  const auto mean = mbtest::json_lines(mbtest::run_cli("encode --pooling mean --model " + tiny(), kLines).out);
  REQUIRE(cls.size() == 4);
  REQUIRE(mean.size() == 4);
  for (int64_t s = 0; s < 4; ++s) {
    check_floats(cls[size_t(s)]["embedding"], ref.hidden.f32() + ref.batch.offsets[s] * H, H);
    check_floats(pooler[size_t(s)]["embedding"], ref.pooled.f32() + s * H, H);
    for (int64_t c = 0; c < H; ++c) {
      double sum = 0;
      for (int64_t t = ref.batch.offsets[s]; t < ref.batch.offsets[s + 1]; ++t) sum += ref.hidden.f32()[t * H + c];
      CHECK(mean[size_t(s)]["embedding"][size_t(c)].get<double>() ==
            doctest::Approx(sum / double(ref.batch.length(s))).epsilon(1e-5));
    }
  }
}

TEST_CASE("classify: logits, the id2label name of the argmax, its softmax probability") {
  const Reference ref = reference(tiny(), kLines);
  const auto out = mbtest::json_lines(mbtest::run_cli("classify --model " + tiny(), kLines).out);
  REQUIRE(out.size() == 4);
  for (int64_t s = 0; s < 4; ++s) {
    const float* z = ref.logits.f32() + s * 2;
    check_floats(out[size_t(s)]["logits"], z, 2);
    const int best = z[1] > z[0] ? 1 : 0;
    CHECK(out[size_t(s)]["label"] == "class_" + std::to_string(best));
    const double p = 1.0 / (1.0 + std::exp(double(z[1 - best]) - double(z[best])));
    CHECK(out[size_t(s)]["score"].get<double>() == doctest::Approx(p).epsilon(1e-6));
  }
}

TEST_CASE("init writes a model that info, encode and classify accept") {
  const std::string dir = mbtest::scratch_dir("cli_init") + "/tiny";
  mbtest::CliRun r = mbtest::run_cli("init --config tiny --seed 3 --out " + dir);
  REQUIRE(r.status == 0);
  r = mbtest::run_cli("info --json --seq-len 128 --model " + dir);
  REQUIRE(r.status == 0);
  const json info = json::parse(r.out);
  const mb::ModelCounts c = mb::count_model(mb::BertModel::load(dir), 128);
  CHECK(info["params"]["total"] == c.total_params());
  CHECK(info["params"]["embeddings"] == 30522 * 128 + 512 * 128 + 2 * 128 + 2 * 128);
  CHECK(info["flops"]["total"].get<double>() == doctest::Approx(c.flops()));
  CHECK(info["dtype"] == "F32");
  // The runtime: the level in use and whose kernel runs each packed precision here.
  CHECK(info["runtime"]["cpu_level"] == mb::cpu_level_name(mb::cpu_level()));
  for (mb::Precision p : {mb::Precision::F32, mb::Precision::BF16, mb::Precision::Int8}) {
    const std::string kernel = mb::packed_gemm_kernel(p);
    CHECK(info["runtime"]["packed"].value(mb::precision_name(p), std::string()) == kernel);
  }
  CHECK(mbtest::run_cli("info --model " + dir).out.find("total") != std::string::npos);
  CHECK(mbtest::json_lines(mbtest::run_cli("classify --model " + dir, kLines).out).size() == 4);

  const std::string bf = mbtest::scratch_dir("cli_init_bf16") + "/m";
  REQUIRE(mbtest::run_cli("init --config tiny --dtype bf16 --out " + bf).status == 0);
  CHECK(json::parse(mbtest::run_cli("info --json --model " + bf).out)["dtype"] == "BF16");
}

TEST_CASE("bad input: one clear error, non-zero exit, no crash") {
  mbtest::CliRun r = mbtest::run_cli("encode --model " + tiny(), "first\n\nthird\n");
  CHECK(r.status == 1);
  CHECK(r.err.find("stdin line 2: empty input") != std::string::npos);

  r = mbtest::run_cli("encode --model /nonexistent/dir", "x\n");
  CHECK(r.status == 1);
  CHECK(r.err.find("/nonexistent/dir") != std::string::npos);

  // An unknown CPU level, before anything runs (the child inherits this process's environment).
  const char* saved = std::getenv("MB_CPU");
  const std::string saved_level = saved ? saved : "";
  setenv("MB_CPU", "avx9000", 1);
  r = mbtest::run_cli("encode --batch 8 --model " + tiny(), "x\ny\n");
  if (saved) setenv("MB_CPU", saved_level.c_str(), 1);
  else unsetenv("MB_CPU");
  CHECK(r.status == 1);
  CHECK(r.out.empty());
  CHECK(r.err.find("MB_CPU: unknown CPU level 'avx9000'") != std::string::npos);

  // A model directory with a truncated weight file, a config missing a key, a missing vocab.
  const std::string bad = mbtest::scratch_dir("cli_bad") + "/m";
  fs::copy(tiny(), bad);
  fs::resize_file(bad + "/model.safetensors", fs::file_size(bad + "/model.safetensors") / 2);
  r = mbtest::run_cli("classify --model " + bad, "x\n");
  CHECK(r.status == 1);
  CHECK(r.err.find(bad + "/model.safetensors") != std::string::npos);

  fs::remove_all(bad);
  fs::copy(tiny(), bad);
  json cfg = json::parse(mbtest::read_file(bad + "/config.json"));
  cfg.erase("num_attention_heads");
  std::ofstream(bad + "/config.json") << cfg.dump();
  r = mbtest::run_cli("encode --model " + bad, "x\n");
  CHECK(r.status == 1);
  CHECK(r.err.find("config.json: missing required key \"num_attention_heads\"") != std::string::npos);

  fs::remove_all(bad);
  fs::copy(tiny(), bad);
  fs::remove(bad + "/vocab.txt");
  r = mbtest::run_cli("tokenize --model " + bad, "x\n");
  CHECK(r.status == 1);
  CHECK(r.err.find("vocab.txt") != std::string::npos);

  r = mbtest::run_cli("encode --pooling max --model " + tiny(), "x\n");
  CHECK(r.status != 0);
  CHECK(r.status != -1);
  // A negative step count is refused by the option itself, before anything runs.
  r = mbtest::run_cli("finetune --model " + tiny() + " --task SST-2 --out " + bad + "3 --max-steps -5");
  CHECK(r.status != 0);
  CHECK(r.status != -1);
  CHECK(r.err.find("--max-steps") != std::string::npos);
  CHECK_FALSE(fs::exists(bad + "3"));

  r = mbtest::run_cli("init --config nosuchshape --out " + bad + "2");
  CHECK(r.status == 1);
  CHECK(r.err.find("nosuchshape") != std::string::npos);
  CHECK_FALSE(fs::exists(bad + "2"));
}

TEST_CASE("quantize: a model directory that info, classify, encode and eval take; it runs as --int8 does") {
  const std::string root = mbtest::scratch_dir("cli_quantize");
  mbtest::CliRun r = mbtest::run_cli("quantize --model " + tiny() + " --out " + root + "/int8 --dtype int8");
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(r.err.find("wrote " + root + "/int8") != std::string::npos);
  const json info = json::parse(mbtest::run_cli("info --json --model " + root + "/int8").out);
  CHECK(info["quantization"]["dtype"] == "int8");
  CHECK(info["quantization"]["embeddings"] == "f32");
  CHECK(info["dtype"] == "F32+I8");
  CHECK(json::parse(mbtest::run_cli("info --json --model " + tiny()).out)["quantization"].is_null());
  CHECK(mbtest::run_cli("info --model " + root + "/int8").out.find("quantized   int8 encoder weights") != std::string::npos);
  if (mb::packed_gemm_available(mb::Precision::Int8)) {
    // The same output lines as the f32 model with --int8, and --int8 may be repeated.
    for (const char* cmd : {"classify", "encode"}) {
      CAPTURE(cmd);
      const std::string want = mbtest::run_cli(std::string(cmd) + " --int8 --model " + tiny(), kLines).out;
      CHECK(!want.empty());
      CHECK(mbtest::run_cli(std::string(cmd) + " --model " + root + "/int8", kLines).out == want);
      CHECK(mbtest::run_cli(std::string(cmd) + " --int8 --model " + root + "/int8", kLines).out == want);
    }
    const std::string glue = mbtest::small_glue("cli_quantize_glue", 4, 40);
    const std::string want = mbtest::run_cli("eval --int8 --task SST-2 --data " + glue + " --model " + tiny()).out;
    CHECK(want.find("accuracy") != std::string::npos);
    CHECK(mbtest::run_cli("eval --task SST-2 --data " + glue + " --model " + root + "/int8").out == want);
    r = mbtest::run_cli("classify --bf16 --model " + root + "/int8", kLines);
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.err.find("stored in int8 and runs in it (drop --bf16") != std::string::npos, r.err);
    r = mbtest::run_cli("bench --train --iters 1 --model " + root + "/int8");
    CHECK(r.status == 1);
    CHECK_MESSAGE(r.err.find("--train needs the f32 model it was quantized from") != std::string::npos, r.err);
  }
  r = mbtest::run_cli("quantize --model " + tiny() + " --out " + root + "/x --dtype int4");
  CHECK(r.status != 0);
  CHECK(r.err.find("int4") != std::string::npos);
  CHECK(!std::filesystem::exists(root + "/x"));
  r = mbtest::run_cli("quantize --model " + root + "/int8 --out " + root + "/again --dtype bf16");
  CHECK(r.status == 1);
  CHECK(r.err.find("already quantized (int8)") != std::string::npos);
  r = mbtest::run_cli("quantize --model " + tiny() + " --out " + root + "/no/such/parent --dtype bf16");
  CHECK(r.status == 1);
  CHECK(r.err.find("does not exist") != std::string::npos);
  r = mbtest::run_cli("finetune --task SST-2 --model " + root + "/int8 --out " + root + "/ft");
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("fine-tuning needs the f32 model it was quantized from") != std::string::npos, r.err);
}

TEST_CASE("--help tells the pipeline: its commands grouped in its order, then the example") {
  const mbtest::CliRun r = mbtest::run_cli("--help");
  REQUIRE(r.status == 0);
  CHECK(r.out.find("make a BERT smaller and faster") != std::string::npos);
  CHECK(r.out.find("Subcommands:") == std::string::npos);  // every command sits in a step of the story
  size_t at = 0;
  for (const char* step : {"1. Make a BERT:", "  init ", "  pretrain ", "2. Teach it a task:", "  finetune ", "  eval ",
                           "3. Make it smaller and faster:", "  compress ", "  quantize ", "4. Run it (on the device):",
                           "  classify ", "  bench ", "Inspect:", "  info ", "The pipeline", "minibridge quantize --model"}) {
    CAPTURE(step);
    const size_t found = r.out.find(step, at);
    REQUIRE(found != std::string::npos);
    at = found;
  }
}
