// `minibridge pretrain` end to end, on a tiny model (2 layers, H=64, the real vocabulary) and a few
// KB of the real corpus: the outputs (a BertForMaskedLM model directory, the JSON log, the
// checkpoint), that a run killed with SIGKILL (or stopped with SIGINT) and resumed ends with
// exactly the same log and the same model bytes as an uninterrupted run, and bad input.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {


bool have_data() {
  const std::string data = mbtest::data_dir();
  return fs::exists(data + "/corpus/gutenberg") && fs::exists(data + "/vocab/bert-base-uncased");
}

// A piece of a real corpus file: `bytes` bytes from `from`, cut at paragraph ends.
std::string excerpt(const std::string& path, size_t from, size_t bytes) {
  const std::string text = mbtest::read_file(path);
  size_t b = text.find("\n\n", from);
  b = b == std::string::npos ? 0 : b + 2;
  size_t e = text.find("\n\n", b + bytes);
  return text.substr(b, e == std::string::npos ? std::string::npos : e - b) + "\n";
}

// The fixture: scratch/{model, corpus}. Built once per test process.
struct Fixture {
  std::string root, model, corpus, vocab;
};

const Fixture& fixture() {
  static const Fixture f = [] {
    Fixture f;
    f.root = mbtest::scratch_dir("pretrain");
    f.model = f.root + "/model";
    f.corpus = f.root + "/corpus";
    f.vocab = mbtest::data_dir() + "/vocab/bert-base-uncased";
    const json config = {{"model_type", "bert"},
                         {"vocab_size", 30522},
                         {"hidden_size", 64},
                         {"num_hidden_layers", 2},
                         {"num_attention_heads", 2},
                         {"intermediate_size", 128},
                         {"max_position_embeddings", 64},
                         {"type_vocab_size", 2},
                         {"hidden_act", "gelu"},
                         {"hidden_dropout_prob", 0.1},
                         {"attention_probs_dropout_prob", 0.1},
                         {"initializer_range", 0.02},
                         {"layer_norm_eps", 1e-12},
                         {"pad_token_id", 0}};
    std::ofstream(f.root + "/config.json") << config.dump(2);
    const mbtest::CliRun r = mbtest::run_cli("init --config " + f.root + "/config.json --out " + f.model + " --vocab " + f.vocab);
    REQUIRE_MESSAGE(r.status == 0, r.err);

    // Three documents (one is held out for evaluation): two books and Wikipedia articles.
    fs::create_directories(f.corpus + "/books");
    const std::string data = mbtest::data_dir() + "/corpus/";
    std::vector<std::string> books;
    for (const auto& e : fs::directory_iterator(data + "gutenberg"))
      if (e.path().extension() == ".txt") books.push_back(e.path().string());
    std::sort(books.begin(), books.end());
    REQUIRE(books.size() >= 2);
    std::ofstream(f.corpus + "/books/a.txt") << excerpt(books[0], 3000, 4000);
    std::ofstream(f.corpus + "/books/b.txt") << excerpt(books[1], 3000, 4000);
    std::ofstream(f.corpus + "/wiki.txt")
        << excerpt(data + "wikipedia_en/enwiki_p56564557-p57025637_wiki_00.txt", 0, 4000);
    std::ofstream(f.corpus + "/METADATA.tsv") << "not text\n";  // ignored
    return f;
  }();
  return f;
}

// The options every run of the resume tests shares (one thread: the same arithmetic every time).
std::string common_args(const std::string& out, int seq_len = 32) {
  const Fixture& f = fixture();
  return "pretrain --model " + f.model + " --corpus " + f.corpus + " --out " + out +
         " --max-steps 30 --seq-len " + std::to_string(seq_len) +
         " --batch-size 4 --lr 1e-3 --save-steps 10 --log-steps 2 --eval-steps 10 --eval-sequences 8 --threads 1";
}

// The uninterrupted reference run, made once.
const std::string& baseline() {
  static const std::string out = [] {
    const std::string o = fixture().root + "/baseline";
    const mbtest::CliRun r = mbtest::run_cli(common_args(o));
    REQUIRE_MESSAGE(r.status == 0, r.err);
    return o;
  }();
  return out;
}

// What must be identical between two runs: every train line's (step, loss, lr, grad_norm) and
// every eval line's (step, eval_mlm_loss), in order.
std::vector<json> trajectory(const std::string& out) {
  std::vector<json> v;
  for (const json& j : mbtest::json_lines(mbtest::read_file(out + "/train_log.jsonl"))) {
    if (!j.contains("step")) continue;
    if (j.contains("loss")) v.push_back({j["step"], j["loss"], j["lr"], j["grad_norm"]});
    else v.push_back({j["step"], j["eval_mlm_loss"]});
  }
  return v;
}

// fork + exec of the CLI with stdout/stderr to files; returns the child's pid.
pid_t spawn(const std::string& args, const std::string& log_prefix) {
  std::vector<std::string> words{mbtest::cli_path()};
  std::istringstream in(args);
  for (std::string w; in >> w;) words.push_back(w);
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const std::string out = log_prefix + ".out", err = log_prefix + ".err";
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fo = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int fe = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fo < 0 || fe < 0) _exit(126);
    dup2(fo, 1);
    dup2(fe, 2);
    execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

// Polls until `ready()` (then sends `sig`) or the child exits. Returns the wait status.
template <class Pred>
int signal_when(pid_t pid, int sig, Pred ready) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(300);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid, &status, WNOHANG) == pid) return status;  // ended on its own
    if (ready()) {
      kill(pid, sig);
      waitpid(pid, &status, 0);
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  FAIL("the pretrain run neither reached the point to interrupt nor ended");
  return status;
}

bool log_has_step(const std::string& out, int64_t step) {
  return mbtest::read_file(out + "/train_log.jsonl").find("\"step\":" + std::to_string(step) + ",") != std::string::npos;
}

int64_t checkpoint_step(const std::string& out) {
  return mb::load_checkpoint(out + "/checkpoint").state.at("step").get<int64_t>();
}

}  // namespace

TEST_CASE("pretrain writes a BertForMaskedLM model, a JSON log and a checkpoint, and learns") {
  if (!have_data()) {
    MESSAGE("skipped: no corpus/vocabulary under " << mbtest::data_dir());
    return;
  }
  const std::string out = baseline();
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "train_log.jsonl"})
    CHECK_MESSAGE(fs::exists(out + "/" + f), f);
  CHECK(mb::checkpoint_exists(out + "/checkpoint"));
  CHECK(checkpoint_step(out) == 30);

  const json config = json::parse(mbtest::read_file(out + "/config.json"));
  CHECK(config["architectures"] == json::array({"BertForMaskedLM"}));
  CHECK(mbtest::read_file(out + "/vocab.txt") == mbtest::read_file(fixture().model + "/vocab.txt"));

  // HF BertForMaskedLM names; the decoder is tied to the word embeddings (not stored); no classifier.
  const std::map<std::string, mb::Tensor> tensors = mb::read_model_weights(out);
  for (const char* name : {"cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
                           "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
                           "cls.predictions.bias", "bert.embeddings.word_embeddings.weight",
                           "bert.encoder.layer.1.output.LayerNorm.weight"})
    CHECK_MESSAGE(tensors.count(name) == 1, name);
  CHECK(tensors.count("cls.predictions.decoder.weight") == 0);
  CHECK(tensors.count("classifier.weight") == 0);
  const mb::BertModel m = mb::BertModel::load(out);
  CHECK(m.extra.size() == 5);
  CHECK_FALSE(m.has_classifier());

  // The log: a start line, train lines every 2 steps, eval lines at 0, 10, 20, 30, a done line.
  const std::vector<json> lines = mbtest::json_lines(mbtest::read_file(out + "/train_log.jsonl"));
  REQUIRE(lines.size() >= 2);
  CHECK(lines.front()["event"] == "start");
  CHECK(lines.front()["options"]["streams"] == 2);  // batches mix the two training documents
  CHECK(lines.front()["options"]["dropout"] == false);  // pretraining's default: no dropout
  CHECK(lines.front()["dropout"] == false);
  // The saved config keeps the input's dropout for fine-tuning.
  CHECK(config["hidden_dropout_prob"] == 0.1);
  CHECK(config["attention_probs_dropout_prob"] == 0.1);
  CHECK(lines.back()["event"] == "done");
  std::vector<int64_t> train_steps, eval_steps;
  std::vector<double> losses, evals;
  for (const json& j : lines) {
    if (!j.contains("step")) continue;
    if (j.contains("loss")) {
      for (const char* k : {"lr", "grad_norm", "tokens_per_s", "elapsed_s"}) CHECK_MESSAGE(j.contains(k), k);
      train_steps.push_back(j["step"]);
      losses.push_back(j["loss"]);
    } else {
      CHECK(j.contains("eval_mlm_loss"));
      eval_steps.push_back(j["step"]);
      evals.push_back(j["eval_mlm_loss"]);
    }
  }
  CHECK(train_steps.size() == 15);
  CHECK(train_steps.back() == 30);
  CHECK(eval_steps == std::vector<int64_t>{0, 10, 20, 30});
  // Learning: from about ln(30522) = 10.3 at the start, the loss comes down, in training and held out.
  CHECK(evals.front() > 9.5);
  // (30 steps of 128 tokens: about 10.3 -> 9.6 train, 9.8 held out.)
  CHECK(losses.back() < losses.front() - 0.4);
  CHECK(evals.back() < evals.front() - 0.3);

  // Resuming a finished run reports it and changes nothing.
  const std::string model_bytes = mbtest::read_file(out + "/model.safetensors");
  const std::string log_bytes = mbtest::read_file(out + "/train_log.jsonl");
  const mbtest::CliRun again = mbtest::run_cli(common_args(out) + " --resume");
  CHECK_MESSAGE(again.status == 0, again.err);
  CHECK(json::parse(again.out)["status"] == "already_done");
  CHECK(mbtest::read_file(out + "/model.safetensors") == model_bytes);
  CHECK(mbtest::read_file(out + "/train_log.jsonl") == log_bytes);
}

TEST_CASE("pretrain --dropout trains with the config's dropout; checkpoints from before the option resume as dropout runs") {
  if (!have_data()) return;
  const std::string ref = baseline();
  const std::string out = fixture().root + "/dropout";
  fs::remove_all(out);
  const mbtest::CliRun r = mbtest::run_cli(common_args(out) + " --dropout");
  REQUIRE_MESSAGE(r.status == 0, r.err);
  const std::vector<json> lines = mbtest::json_lines(mbtest::read_file(out + "/train_log.jsonl"));
  CHECK(lines.front()["options"]["dropout"] == true);
  // Same data, masks and initial weights: only dropout differs. The step-0 evaluation (no
  // training yet) is the same; the first training loss is not.
  const std::vector<json> with = trajectory(out), without = trajectory(ref);
  REQUIRE(with.size() == without.size());
  CHECK(with[0] == without[0]);
  CHECK(with[1] != without[1]);
  CHECK(mbtest::read_file(out + "/config.json") == mbtest::read_file(ref + "/config.json"));
  // It still learns (the model is tiny, the lr high: dropout costs little here).
  CHECK(with.back()[1].get<double>() < with.front()[1].get<double>() - 0.3);

  // A resume must match the option; a checkpoint without the key was made with dropout on.
  const std::string old = fixture().root + "/dropout_old_state";
  fs::remove_all(old);
  fs::copy(out, old, fs::copy_options::recursive);
  const std::string state_path = old + "/checkpoint/state.json";
  json state = json::parse(mbtest::read_file(state_path));
  state["options"].erase("dropout");
  mbtest::write_file(state_path, state.dump());
  mbtest::CliRun again = mbtest::run_cli(common_args(old) + " --resume");
  CHECK(again.status == 1);
  CHECK_MESSAGE(again.err.find("made with --dropout true, this run asks for false") != std::string::npos, again.err);
  again = mbtest::run_cli(common_args(old) + " --resume --dropout");
  CHECK_MESSAGE(again.status == 0, again.err);
  CHECK(json::parse(again.out)["status"] == "already_done");
  again = mbtest::run_cli(common_args(ref) + " --resume --dropout");
  CHECK(again.status == 1);
  CHECK_MESSAGE(again.err.find("--dropout false") != std::string::npos, again.err);
}

TEST_CASE("pretrain killed with SIGKILL and resumed (from checkpoint.old) ends exactly like an uninterrupted run") {
  if (!have_data()) return;
  const std::string ref = baseline();
  const std::string out = fixture().root + "/killed";
  fs::remove_all(out);

  // Kill it after the step-10 checkpoint, once it has logged step 12 (so the log must be cut back).
  const pid_t pid = spawn(common_args(out), fixture().root + "/killed");
  const int status = signal_when(pid, SIGKILL, [&] {
    return mb::checkpoint_exists(out + "/checkpoint") && log_has_step(out, 12);
  });
  REQUIRE_MESSAGE(WIFSIGNALED(status),
                  "the run ended before it could be killed: " << mbtest::read_file(fixture().root + "/killed.err"));
  CHECK(WTERMSIG(status) == SIGKILL);
  const int64_t at = checkpoint_step(out);
  CHECK(at >= 10);
  CHECK(at < 30);
  CHECK(trajectory(out) != trajectory(ref));  // it really stopped part-way

  // What a save killed between its two renames leaves: the previous checkpoint as checkpoint.old.
  // The resume reads it from there (its options check included).
  fs::rename(out + "/checkpoint", out + "/checkpoint.old");
  const mbtest::CliRun r = mbtest::run_cli(common_args(out) + " --resume");
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(json::parse(r.out)["status"] == "done");
  CHECK(trajectory(out) == trajectory(ref));
  CHECK(mbtest::read_file(out + "/model.safetensors") == mbtest::read_file(ref + "/model.safetensors"));
  CHECK(mbtest::read_file(out + "/config.json") == mbtest::read_file(ref + "/config.json"));
  // The log tells the story: a start line and a resume line.
  int starts = 0, resumes = 0;
  for (const json& j : mbtest::json_lines(mbtest::read_file(out + "/train_log.jsonl"))) {
    starts += j.value("event", "") == "start";
    resumes += j.value("event", "") == "resume";
  }
  CHECK(starts == 1);
  CHECK(resumes == 1);
}

TEST_CASE("pretrain --objective electra: the discriminator learns, OUT is a plain BERT, a killed run resumes exactly") {
  if (!have_data()) return;
  const std::string ref = fixture().root + "/electra";
  fs::remove_all(ref);
  const std::string args = " --objective electra";
  mbtest::CliRun r = mbtest::run_cli(common_args(ref) + args);
  REQUIRE_MESSAGE(r.status == 0, r.err);

  // OUT: the discriminator as a BertModel; no generator, no heads. The checkpoint carries them.
  const json config = json::parse(mbtest::read_file(ref + "/config.json"));
  CHECK(config["architectures"] == json::array({"BertModel"}));
  const std::map<std::string, mb::Tensor> tensors = mb::read_model_weights(ref);
  for (const auto& kv : tensors) {  // not a structured binding: clang 14 cannot capture one in CHECK_MESSAGE
    const std::string& name = kv.first;
    CHECK_MESSAGE(name.rfind("electra.", 0) != 0, name);
    CHECK_MESSAGE(name.rfind("cls.", 0) != 0, name);
  }
  const mb::BertModel m = mb::BertModel::load(ref);
  CHECK(m.extra.empty());
  int generator = 0, head = 0;
  for (const auto& [name, t] : mb::load_checkpoint(ref + "/checkpoint").tensors) {
    generator += name.rfind("model.electra.generator.bert.encoder.layer.0.", 0) == 0;
    head += name.rfind("model.electra.discriminator_predictions.", 0) == 0;
  }
  CHECK(generator == 16);  // one generator layer (a quarter of 2, at least 1)
  CHECK(head == 4);

  // The log: both losses every log step, the discriminator's held-out loss and accuracy.
  std::vector<double> disc_evals, mlm_evals;
  for (const json& j : mbtest::json_lines(mbtest::read_file(ref + "/train_log.jsonl"))) {
    if (j.value("event", "") == "start") {
      CHECK(j["options"]["objective"] == "electra");
      CHECK(j["options"]["generator_layers"] == 1);
    }
    if (j.contains("loss") && j.contains("step")) {
      CHECK(j.contains("mlm_loss"));
      CHECK(j.contains("disc_loss"));
      CHECK(j["loss"].get<double>() == doctest::Approx(j["mlm_loss"].get<double>() + 50 * j["disc_loss"].get<double>()));
    }
    if (j.contains("eval_disc_loss")) {
      disc_evals.push_back(j["eval_disc_loss"]);
      mlm_evals.push_back(j["eval_mlm_loss"]);
      CHECK(j["eval_disc_accuracy"].get<double>() >= 0.0);
    }
  }
  REQUIRE(disc_evals.size() == 4);
  // Both learn: the discriminator from ln 2 = 0.69 (its head starts near chance), the generator
  // from about ln 30522.
  CHECK(disc_evals.front() > 0.6);
  CHECK(disc_evals.back() < disc_evals.front() - 0.2);
  CHECK(mlm_evals.back() < mlm_evals.front() - 0.3);

  // SIGKILL after the step-10 checkpoint, then --resume: the same log and the same model bytes.
  const std::string out = fixture().root + "/electra_killed";
  fs::remove_all(out);
  const pid_t pid = spawn(common_args(out) + args, out);
  const int status = signal_when(pid, SIGKILL, [&] {
    return mb::checkpoint_exists(out + "/checkpoint") && log_has_step(out, 12);
  });
  REQUIRE_MESSAGE(WIFSIGNALED(status), "the run ended before it could be killed: " << mbtest::read_file(out + ".err"));
  CHECK(checkpoint_step(out) < 30);
  r = mbtest::run_cli(common_args(out) + args + " --resume");
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(trajectory(out) == trajectory(ref));
  CHECK(mbtest::read_file(out + "/model.safetensors") == mbtest::read_file(ref + "/model.safetensors"));

  // A resume must name the objective it was made with.
  r = mbtest::run_cli(common_args(ref) + " --resume");
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("made with --objective \"electra\"") != std::string::npos, r.err);
  r = mbtest::run_cli(common_args(fixture().root + "/electra_bad") + " --objective electra --generator-layers 3");
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("--generator-layers") != std::string::npos, r.err);
  CHECK_FALSE(fs::exists(fixture().root + "/electra_bad"));
}

// docs/RELIABILITY.md "Full disks": a checkpoint save that fails (here a file-size limit: EFBIG, as
// ENOSPC on a full disk) ends the run with one error naming the file, leaves the previous
// checkpoint intact and loadable with nothing half-written beside it, and --resume then finishes
// exactly like an uninterrupted run.
TEST_CASE("pretrain on a full disk: one clear error, the previous checkpoint intact, --resume finishes the run") {
  if (!have_data()) return;
  const std::string ref = baseline();
  const std::string out = fixture().root + "/full_disk";
  fs::remove_all(out);
  const pid_t pid = spawn(common_args(out), fixture().root + "/full_disk");
  const int status = signal_when(pid, SIGKILL, [&] { return mb::checkpoint_exists(out + "/checkpoint"); });
  REQUIRE_MESSAGE(WIFSIGNALED(status), "the run ended before it could be stopped");
  const int64_t at = checkpoint_step(out);
  REQUIRE(at < 30);
  const std::string tensors = mbtest::read_file(out + "/checkpoint/tensors.safetensors");
  const std::string state = mbtest::read_file(out + "/checkpoint/state.json");

  // Room for the log lines, not for the next checkpoint's tensors.
  const uint64_t limit = tensors.size() / 2;
  REQUIRE(mbtest::read_file(out + "/train_log.jsonl").size() * 8 < limit);
  const mbtest::CliRun r = mbtest::run_cli_with_file_limit(common_args(out) + " --resume", limit);
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("minibridge: error: ") != std::string::npos, r.err);
  CHECK_MESSAGE(r.err.find("tensors.safetensors: write failed: File too large") != std::string::npos, r.err);
  CHECK(r.out.empty());
  CHECK(checkpoint_step(out) == at);
  CHECK(mbtest::read_file(out + "/checkpoint/tensors.safetensors") == tensors);
  CHECK(mbtest::read_file(out + "/checkpoint/state.json") == state);
  for (const auto& e : fs::recursive_directory_iterator(out)) {  // no staging directory, no temp file
    const std::string name = e.path().filename().string();
    CHECK_MESSAGE((name.find(".staging.") == std::string::npos && name.find(".tmp.") == std::string::npos), name);
  }

  const mbtest::CliRun done = mbtest::run_cli(common_args(out) + " --resume");
  REQUIRE_MESSAGE(done.status == 0, done.err);
  CHECK(trajectory(out) == trajectory(ref));
  CHECK(mbtest::read_file(out + "/model.safetensors") == mbtest::read_file(ref + "/model.safetensors"));
}

TEST_CASE("pretrain stopped with SIGINT saves a checkpoint at once; resuming gives the same result") {
  if (!have_data()) return;
  const std::string ref = baseline();
  const std::string out = fixture().root + "/interrupted";
  fs::remove_all(out);
  const pid_t pid = spawn(common_args(out), fixture().root + "/interrupted");
  const int status = signal_when(pid, SIGINT, [&] { return log_has_step(out, 12); });
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const json result = json::parse(mbtest::read_file(fixture().root + "/interrupted.out"));
  REQUIRE_MESSAGE(result["status"] == "interrupted", mbtest::read_file(fixture().root + "/interrupted.err"));
  const int64_t at = checkpoint_step(out);
  CHECK(at == result["steps"].get<int64_t>());
  CHECK(at >= 12);
  CHECK(at < 30);
  CHECK(fs::exists(out + "/model.safetensors"));  // a usable model at the point it stopped

  const mbtest::CliRun r = mbtest::run_cli(common_args(out) + " --resume");
  REQUIRE_MESSAGE(r.status == 0, r.err);
  CHECK(trajectory(out) == trajectory(ref));
  CHECK(mbtest::read_file(out + "/model.safetensors") == mbtest::read_file(ref + "/model.safetensors"));
}

TEST_CASE("pretrain: bad input gets one clear error and leaves no output") {
  if (!have_data()) return;
  const Fixture& f = fixture();

  SUBCASE("an empty corpus directory") {
    const std::string empty = mbtest::scratch_dir("pretrain_empty_corpus");
    std::ofstream(empty + "/empty.txt");             // an empty .txt counts as no text
    std::ofstream(empty + "/README.md") << "hello";  // not a .txt
    const std::string out = f.root + "/out_empty";
    const mbtest::CliRun r = mbtest::run_cli("pretrain --model " + f.model + " --corpus " + empty + " --out " + out + " --max-steps 5");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find(empty) != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find("no text") != std::string::npos, r.err);
    CHECK(r.err.find("minibridge: error:") == 0);
    CHECK_FALSE(fs::exists(out));
  }
  SUBCASE("a corpus of blank files") {
    const std::string blank = mbtest::scratch_dir("pretrain_blank_corpus");
    std::ofstream(blank + "/a.txt") << "\n\n   \n";
    std::ofstream(blank + "/b.txt") << "\n \t\n";
    const std::string out = f.root + "/out_blank";
    const mbtest::CliRun r = mbtest::run_cli("pretrain --model " + f.model + " --corpus " + blank + " --out " + out +
                      " --max-steps 5 --seq-len 32");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find("minibridge: error: " + blank + ": no ") == 0, r.err);
    CHECK_FALSE(fs::exists(out));
  }
  SUBCASE("a corpus directory that does not exist") {
    const std::string out = f.root + "/out_missing";
    const mbtest::CliRun r = mbtest::run_cli("pretrain --model " + f.model + " --corpus " + f.root + "/nope --out " + out + " --max-steps 5");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find(f.root + "/nope") != std::string::npos, r.err);
    CHECK_FALSE(fs::exists(out));
  }
  SUBCASE("--resume without a checkpoint") {
    const std::string out = f.root + "/out_noresume";
    const mbtest::CliRun r = mbtest::run_cli("pretrain --model " + f.model + " --corpus " + f.corpus + " --out " + out +
                      " --max-steps 5 --seq-len 32 --resume");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find("no checkpoint to resume from") != std::string::npos, r.err);
    CHECK_MESSAGE(r.err.find(out + "/checkpoint") != std::string::npos, r.err);
    CHECK_FALSE(fs::exists(out));
  }
  SUBCASE("missing --max-steps") {
    const mbtest::CliRun r = mbtest::run_cli("pretrain --model " + f.model + " --corpus " + f.corpus + " --out " + f.root + "/out_nomax");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find("--max-steps") != std::string::npos, r.err);
    CHECK_FALSE(fs::exists(f.root + "/out_nomax"));
  }
  SUBCASE("--seq-len beyond max_position_embeddings") {
    const std::string out = f.root + "/out_seqlen";
    const mbtest::CliRun r = mbtest::run_cli("pretrain --model " + f.model + " --corpus " + f.corpus + " --out " + out +
                      " --max-steps 5 --seq-len 128");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find("max_position_embeddings") != std::string::npos, r.err);
    CHECK_FALSE(fs::exists(out));
  }
  SUBCASE("a damaged checkpoint state: one error naming state.json, nothing changed") {
    const std::string ref = baseline();
    const std::string out = f.root + "/out_damaged";
    fs::remove_all(out);
    fs::copy(ref, out, fs::copy_options::recursive);
    const std::string state_path = out + "/checkpoint/state.json";
    const json good = json::parse(mbtest::read_file(state_path));
    const std::string model_bytes = mbtest::read_file(out + "/model.safetensors");
    const std::vector<std::pair<std::function<void(json&)>, std::string>> damages = {
        {[](json& j) { j["step"] = -3; }, "step -3 is outside this run's 0..30 steps"},
        {[](json& j) { j["step"] = 1000000; }, "step 1000000 is outside this run's 0..30 steps"},
        {[](json& j) { j["step"] = "ten"; }, "malformed pretraining state"},
        {[](json& j) { j.erase("window"); }, "malformed pretraining state"},
        {[](json& j) { j["data"]["next"] = 99; }, "stream index out of range"},
        {[](json& j) { j["data"]["streams"][0]["byte"] = uint64_t(1) << 40; }, "shorter than the saved position"},
        {[](json& j) { j["data"]["streams"][0]["mask_rng"] = "x"; }, "type must be number"},
    };
    for (const auto& [damage, want] : damages) {
      json j = good;
      damage(j);
      mbtest::write_file(state_path, j.dump());
      const mbtest::CliRun r = mbtest::run_cli(common_args(out) + " --resume");
      CHECK(r.status == 1);
      CHECK_MESSAGE(r.err.rfind("minibridge: error: " + out + "/checkpoint/state.json: ", 0) == 0, r.err);
      CHECK_MESSAGE(r.err.find(want) != std::string::npos, r.err);
      CHECK(mbtest::read_file(out + "/model.safetensors") == model_bytes);
    }
  }
  SUBCASE("a fresh run over an earlier run's checkpoint, and a resume with other options") {
    const std::string ref = baseline();
    const std::string model_bytes = mbtest::read_file(ref + "/model.safetensors");
    mbtest::CliRun r = mbtest::run_cli(common_args(ref));
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find("--resume") != std::string::npos, r.err);
    r = mbtest::run_cli(common_args(ref, 16) + " --resume");
    CHECK(r.status != 0);
    CHECK_MESSAGE(r.err.find("--seq-len 32") != std::string::npos, r.err);
    CHECK(mbtest::read_file(ref + "/model.safetensors") == model_bytes);
  }
}
