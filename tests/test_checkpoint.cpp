// Long-job infrastructure: atomic checkpoints (incl. SIGKILL mid-save), JSON-lines logs, progress.
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "io/checkpoint.h"
#include "io/jsonl_log.h"
#include "tests/test_util.h"

using namespace mb;
namespace fs = std::filesystem;
using Named = std::vector<std::pair<std::string, Tensor>>;

namespace {

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

Tensor filled(int64_t n, float v) {
  Tensor t = Tensor::empty({n});
  std::fill(t.f32(), t.f32() + n, v);
  return t;
}

// Checkpoint `i` of the kill test: every tensor element equals i, and so does state["step"].
Named numbered(int64_t i) { return {{"a", filled(1 << 18, float(i))}, {"b", filled(1 << 16, float(i))}}; }

std::string read_all(FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string s;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) s.append(buf, n);
  return s;
}

}  // namespace

TEST_CASE("checkpoint round trip, replacement and RNG state") {
  const std::string root = mbtest::scratch_dir("checkpoint_roundtrip"), dir = root + "/run/ckpt";
  CHECK_FALSE(checkpoint_exists(dir));

  Rng rng(42);
  rng.normal();  // leaves a cached Box–Muller value: part of the state
  Tensor ids = Tensor::empty({3}, DType::I64);
  for (int i = 0; i < 3; ++i) ids.data<int64_t>()[i] = int64_t(1) << (40 + i);
  const nlohmann::json state = {{"step", 12}, {"rng", rng_to_json(rng)}, {"data", {{"epoch", 1}, {"cursor", 345}}}};
  save_checkpoint(dir, {{"w", Tensor::from_vector({1, 2, 3, 4, 5, 6}, {2, 3})}, {"ids", ids}}, state);
  CHECK(checkpoint_exists(dir));
  CHECK(checkpoint_exists(dir + "/"));

  Checkpoint c = load_checkpoint(dir);
  CHECK(c.state == state);
  REQUIRE(c.tensors.size() == 2);
  CHECK(c.tensors.at("w").shape() == Shape{2, 3});
  CHECK(c.tensors.at("w").f32()[5] == 6.0f);
  CHECK(c.tensors.at("ids").data<int64_t>()[2] == int64_t(1) << 42);
  Rng restored(0);
  rng_from_json(restored, c.state["rng"]);
  for (int i = 0; i < 5; ++i) CHECK(restored.normal() == rng.normal());
  CHECK(restored.next_u64() == rng.next_u64());

  // Replacing it: the new content, and nothing left beside it. Views of the old one stay valid.
  save_checkpoint(dir, {{"w", Tensor::from_vector({7}, {1})}}, {{"step", 13}});
  const Checkpoint c2 = load_checkpoint(dir);
  CHECK(c2.state["step"] == 13);
  CHECK(c2.tensors.size() == 1);
  CHECK(c.tensors.at("w").f32()[0] == 1.0f);
  CHECK(entries(root + "/run") == std::vector<std::string>{"ckpt"});
  CHECK(entries(dir) == std::vector<std::string>{"state.json", "tensors.safetensors"});
}

TEST_CASE("checkpoint errors name the directory or file") {
  const std::string root = mbtest::scratch_dir("checkpoint_errors");
  CHECK_THROWS_WITH_AS(load_checkpoint(root + "/nope"), doctest::Contains((root + "/nope").c_str()), Error);

  fs::create_directories(root + "/empty");
  CHECK_FALSE(checkpoint_exists(root + "/empty"));
  CHECK_THROWS_WITH_AS(load_checkpoint(root + "/empty"), doctest::Contains("no state.json"), Error);

  const std::string dir = root + "/ckpt";
  save_checkpoint(dir, {{"w", Tensor::zeros({4})}}, {{"step", 1}});
  { std::ofstream(dir + "/state.json") << "{\"step\": "; }
  CHECK_THROWS_WITH_AS(load_checkpoint(dir), doctest::Contains((dir + "/state.json").c_str()), Error);
  save_checkpoint(dir, {{"w", Tensor::zeros({4})}}, {{"step", 1}});
  fs::resize_file(dir + "/tensors.safetensors", 20);
  CHECK_THROWS_WITH_AS(load_checkpoint(dir), doctest::Contains((dir + "/tensors.safetensors").c_str()), Error);

  // Never replaces a directory that is not a checkpoint (a mistyped output path).
  fs::create_directories(root + "/data");
  { std::ofstream(root + "/data/precious.txt") << "x"; }
  CHECK_THROWS_WITH_AS(save_checkpoint(root + "/data", {}, {}), doctest::Contains("not a checkpoint"), Error);
  CHECK(fs::exists(root + "/data/precious.txt"));
  // An empty directory is fine.
  save_checkpoint(root + "/empty", {}, {{"step", 0}});
  CHECK(load_checkpoint(root + "/empty").state["step"] == 0);

  Rng rng;
  CHECK_THROWS_WITH_AS(rng_from_json(rng, {{"counter", 1}}), doctest::Contains("RNG state"), Error);
}

TEST_CASE("leftovers of a killed save: staging dirs removed, DIR.old recovered") {
  const std::string root = mbtest::scratch_dir("checkpoint_leftovers"), dir = root + "/ckpt";
  save_checkpoint(dir, numbered(1), {{"step", 1}});
  fs::create_directories(dir + ".staging.99999/junk");   // killed while building
  save_checkpoint(dir + ".old", numbered(0), {{"step", 0}});  // killed after the swap, before cleanup
  save_checkpoint(dir, numbered(2), {{"step", 2}});
  CHECK(entries(root) == std::vector<std::string>{"ckpt"});

  // Killed between the two renames of the fallback path: only DIR.old is there, and it is the one.
  fs::rename(dir, dir + ".old");
  CHECK(checkpoint_exists(dir));
  const Checkpoint c = load_checkpoint(dir);
  CHECK(c.state["step"] == 2);
  CHECK(c.dir == dir + ".old");
  save_checkpoint(dir, numbered(3), {{"step", 3}});
  CHECK(load_checkpoint(dir).state["step"] == 3);
  CHECK(entries(root) == std::vector<std::string>{"ckpt"});
}

// A child process saves checkpoints in a loop and is SIGKILLed at a random moment, many times.
static void kill_while_saving(bool two_renames) {
  detail::checkpoint_without_exchange = two_renames;
  const std::string root = mbtest::scratch_dir("checkpoint_kill"), dir = root + "/ckpt";
  save_checkpoint(dir, numbered(0), {{"step", 0}});
  // Kill times spread over one save's duration, so kills land in every phase of it.
  auto t0 = std::chrono::steady_clock::now();
  save_checkpoint(dir, numbered(0), {{"step", 0}});
  const double save_us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();

  Rng rng(5);
  int64_t last = 0, advanced = 0, interrupted = 0, from_old = 0;
  const int trials = 40;
  for (int trial = 0; trial < trials; ++trial) {
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {  // child: save checkpoints last+1, last+2, ... until killed
      try {
        for (int64_t i = last + 1;; ++i) save_checkpoint(dir, numbered(i), {{"step", i}});
      } catch (...) {
        ::_exit(1);
      }
    }
    // Every 10th kill comes late enough for some saves to have completed.
    const double factor = trial % 10 == 9 ? 10.0 : 0.5 + 3.0 * rng.uniform();
    std::this_thread::sleep_for(std::chrono::microseconds(int64_t(save_us * factor)));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE_MESSAGE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), "child failed before the kill");

    interrupted += entries(root).size() > 1;  // killed mid-save: staging dir (or DIR.old) left behind
    REQUIRE(checkpoint_exists(dir));
    const Checkpoint c = load_checkpoint(dir);  // throws if anything is half-written
    from_old += c.dir == dir + ".old";
    const int64_t step = c.state.at("step").get<int64_t>();
    CHECK(step >= last);  // never goes back to an older checkpoint
    for (const char* name : {"a", "b"}) {
      const Tensor& t = c.tensors.at(name);
      REQUIRE(t.numel() == (name[0] == 'a' ? 1 << 18 : 1 << 16));
      bool all = true;
      for (int64_t j = 0; j < t.numel(); ++j) all &= t.f32()[j] == float(step);
      CHECK_MESSAGE(all, "tensor " << name << " does not match step " << step);
    }
    advanced += step > last;
    last = step;
  }
  MESSAGE("one save: " << save_us << " us; of " << trials << " kills, " << interrupted
                        << " interrupted a save (" << from_old << " between the two renames) and " << advanced
                        << " followed a completed one");
  CHECK(advanced > 0);
  save_checkpoint(dir, numbered(last + 1), {{"step", last + 1}});  // a later save cleans up
  CHECK(entries(root) == std::vector<std::string>{"ckpt"});
  detail::checkpoint_without_exchange = false;
}

TEST_CASE("SIGKILL at any moment of a save never leaves an unreadable checkpoint") {
  SUBCASE("installed with RENAME_EXCHANGE") { kill_while_saving(false); }
  SUBCASE("installed with two renames (filesystems without RENAME_EXCHANGE)") { kill_while_saving(true); }
}

// docs/RELIABILITY.md "Full disks": a failed write gives one error naming the file and leaves
// the previous checkpoint as it was, with nothing half-written beside it.
TEST_CASE("a save that runs out of space: one error, the previous checkpoint intact, no leftovers") {
  const std::string root = mbtest::scratch_dir("checkpoint_full_disk"), dir = root + "/ckpt";
  save_checkpoint(dir, numbered(1), {{"step", 1}});
  const std::string tensors = mbtest::read_file(dir + "/tensors.safetensors");

  // RLIMIT_FSIZE below the tensors' size: write() fails with EFBIG part way (SIGXFSZ ignored), as
  // it fails with ENOSPC on a full disk.
  struct rlimit old;
  getrlimit(RLIMIT_FSIZE, &old);
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = rlim_t(tensors.size() / 2);
  setrlimit(RLIMIT_FSIZE, &small);
  const std::string msg = mbtest::error_of([&] { save_checkpoint(dir, numbered(2), {{"step", 2}}); });
  setrlimit(RLIMIT_FSIZE, &old);
  signal(SIGXFSZ, old_handler);

  CHECK(msg.rfind(dir + ": cannot save checkpoint: " + dir + ".staging.", 0) == 0);
  CHECK(msg.find("/tensors.safetensors: write failed: File too large") != std::string::npos);
  CHECK(entries(root) == std::vector<std::string>{"ckpt"});
  CHECK(entries(dir) == std::vector<std::string>{"state.json", "tensors.safetensors"});
  const Checkpoint c = load_checkpoint(dir);
  CHECK(c.state["step"] == 1);
  CHECK(mbtest::read_file(dir + "/tensors.safetensors") == tensors);
  save_checkpoint(dir, numbered(3), {{"step", 3}});  // and the next save works
  CHECK(load_checkpoint(dir).state["step"] == 3);
}

TEST_CASE("a log append on a full device: one error naming the log") {
  if (!fs::exists("/dev/full")) return;
  const std::string link = mbtest::scratch_dir("jsonl_full") + "/log.jsonl";
  fs::remove(link);
  fs::create_symlink("/dev/full", link);  // every write: ENOSPC
  JsonlLog log(link);
  CHECK(mbtest::error_of([&] { log.write({{"step", 1}}); }) == link + ": write failed: No space left on device");
}

TEST_CASE("JSON-lines log: append, resume, truncate after a step") {
  const std::string path = mbtest::scratch_dir("jsonl") + "/log.jsonl";
  {
    JsonlLog log(path);
    log.write({{"event", "start"}, {"config", {{"lr", 1e-4}}}});
    for (int s = 1; s <= 3; ++s) log.write({{"step", s}, {"loss", 1.0 / s}});
    // Flushed per line: readable while the log is still open.
    CHECK(mbtest::read_file(path).find("\"step\":3") != std::string::npos);
  }
  {
    JsonlLog log(path);  // a resumed run appends
    log.write({{"step", 4}, {"loss", 0.25}});
  }
  { std::ofstream(path, std::ios::app) << "{\"step\":5,\"lo"; }  // a line cut by a kill
  JsonlLog log(path);
  log.write({{"step", 5}, {"eval", {{"acc", 0.5}}}});
  auto lines = [&] {
    std::vector<std::string> v;
    std::istringstream in(mbtest::read_file(path));
    for (std::string l; std::getline(in, l);) v.push_back(l);
    return v;
  };
  REQUIRE(lines().size() == 7);
  CHECK(lines()[5] == "{\"step\":5,\"lo");
  CHECK(nlohmann::json::parse(lines()[6])["step"] == 5);

  log.truncate_after_step(2);  // resume from the checkpoint of step 2
  log.write({{"step", 3}, {"loss", 0.3}});
  const auto kept = lines();
  REQUIRE(kept.size() == 4);
  CHECK(nlohmann::json::parse(kept[0])["event"] == "start");  // no step: kept
  CHECK(nlohmann::json::parse(kept[2])["step"] == 2);
  CHECK(nlohmann::json::parse(kept[3]) == nlohmann::json{{"step", 3}, {"loss", 0.3}});
  CHECK(entries(fs::path(path).parent_path().string()) == std::vector<std::string>{"log.jsonl"});
}

TEST_CASE("progress: formatting helpers") {
  CHECK(fmt_num(3.21449) == "3.214");
  CHECK(fmt_num(1.2e-5) == "1.2e-05");
  CHECK(fmt_count(5432.4) == "5,432");
  CHECK(fmt_count(1234567) == "1,234,567");
  CHECK(fmt_count(999) == "999");
  CHECK(fmt_count(-1234) == "-1,234");
  CHECK(fmt_duration(45) == "45s");
  CHECK(fmt_duration(723) == "12m03s");
  CHECK(fmt_duration(7500) == "2h05m");
  CHECK(fmt_duration(-1) == "?");
}

TEST_CASE("progress: plain lines every K steps when not a terminal") {
  FILE* f = std::tmpfile();
  REQUIRE(f);
  double now = 100.0;
  {
    Progress p(10, {.out = f, .tty = 0, .interval_s = 0, .every_steps = 4, .clock = [&] { return now; }});
    for (int s = 1; s <= 10; ++s) {
      now += 1.0;  // one second and 100 tokens per step
      p.update(s, {{"loss", fmt_num(3.0 / s)}, {"lr", fmt_num(1.2e-5)}}, 100);
    }
    now += 0.4;
    p.finish();
  }
  CHECK(read_all(f) ==
        "step 4/10 | loss 0.75 | lr 1.2e-05 | 100 tok/s | ETA 6s\n"
        "step 8/10 | loss 0.375 | lr 1.2e-05 | 100 tok/s | ETA 2s\n"
        "step 10/10 | loss 0.3 | lr 1.2e-05 | 96 tok/s | done in 10s\n");
  std::fclose(f);
}

TEST_CASE("progress: steps of different cost give the ETA by the cost left") {
  FILE* f = std::tmpfile();
  double now = 0.0;
  {
    // 4 steps costing 4, 3, 2, 1; each takes 2 s per unit of cost. Started after step 1 (resumed).
    Progress p(4, {.out = f, .tty = 0, .interval_s = 0, .every_steps = 1, .start_step = 1, .step_cost = {4, 3, 2, 1},
                   .clock = [&] { return now; }});
    now += 6.0;
    p.update(2);  // 3 units in 6 s: 2 s a unit; 3 units left
    now += 4.0;
    p.update(3);  // 5 units in 10 s; 1 left
  }
  CHECK(read_all(f) == "step 2/4 | ETA 6s\nstep 3/4 | ETA 2s\n");
  std::fclose(f);
}

TEST_CASE("progress: by time when not a terminal; resumed runs; throttled terminal line") {
  FILE* f = std::tmpfile();
  double now = 0.0;
  {
    Progress p(1000, {.unit = "batch", .out = f, .tty = 0, .interval_s = 30, .start_step = 500, .clock = [&] { return now; }});
    for (int s = 501; s <= 600; ++s) {
      now += 1.0;
      p.update(s);
    }
  }
  // Lines at 30 s, 60 s, 90 s; the rate counts only this run's steps (1/s), not the 500 resumed.
  CHECK(read_all(f) == "batch 530/1000 | ETA 7m50s\nbatch 560/1000 | ETA 7m20s\nbatch 590/1000 | ETA 6m50s\n");
  std::fclose(f);

  f = std::tmpfile();
  now = 0.0;
  {
    Progress p(100, {.out = f, .tty = 1, .clock = [&] { return now; }});
    for (int s = 1; s <= 20; ++s) {
      now += 0.1;
      p.update(s, {{"loss", "1"}});
    }
  }  // destroyed unfinished: the terminal line is still ended
  const std::string out = read_all(f);
  CHECK(std::count(out.begin(), out.end(), '\r') == 6);  // every 3rd step: >= 0.25 s apart
  CHECK(out.ends_with("\rstep 18/100 | loss 1 | ETA 8s\x1b[K\n"));
  std::fclose(f);
}
