// The library used from several of the caller's threads at once (docs/RELIABILITY.md, "Using the
// library from several threads"): one model shared for inference (f32 unpacked, packed f32, bf16
// and int8, on every GEMM back-end), one Tokenizer shared, and a model per thread for training.
// Every result a caller thread gets is compared bit for bit with what one caller thread alone got
// for the same input with the same thread setting. The callers run side by side on batches of
// different sizes, so that per-thread scratch buffers and the primitive cache grow while the others
// run. It also runs clean under ThreadSanitizer (clang, libomp with Archer; docs/RELIABILITY.md says how).
#include <doctest/doctest.h>
#include <omp.h>

#include <atomic>
#include <cstring>
#include <exception>
#include <filesystem>
#include <functional>
#include <latch>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "engine/gemm.h"
#include "engine/optim.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "io/config.h"
#include "io/tokenizer.h"
#include "models/bert.h"
#include "models/layer_structure.h"
#include "models/shipped_configs.h"
#include "models/training.h"
#include "tests/test_util.h"

namespace {

// Runs fn(i) on `count` new threads that start together; rethrows the first exception here.
void run_threads(int count, const std::function<void(int)>& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(count));
  std::latch start(count);
  std::vector<std::thread> threads;
  for (int i = 0; i < count; ++i)
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      try {
        fn(i);
      } catch (...) {
        errors[size_t(i)] = std::current_exception();
      }
    });
  for (std::thread& t : threads) t.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
}

// How each caller thread sets the engine's threads. n > 0: mb::set_num_threads(n) once on the main
// thread before the callers start, and omp_set_num_threads(n) in each caller (OpenMP's setting is
// per thread; a new thread starts from OMP_NUM_THREADS or the core count, not from what another
// thread set). n == 0: the defaults, untouched in the callers (mb::set_num_threads(0) on the main
// thread; each caller's OpenMP regions run as many threads as a new thread gets).
struct ThreadSetting {
  int n = 0;
  void on_main() const { mb::set_num_threads(n); }
  void on_caller() const {
    if (n > 0) omp_set_num_threads(n);
  }
  std::string name() const { return n > 0 ? std::to_string(n) + " engine thread(s) per caller" : "defaults"; }
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

std::vector<float> values(const mb::Tensor& t) { return std::vector<float>(t.f32(), t.f32() + t.numel()); }

mb::BertConfig small_config() {
  mb::BertConfig c = mb::bert_config_from_json(nlohmann::json::parse(mb::shipped_configs().at("tiny")), "tiny");
  c.vocab_size = 1000;  // the word table is most of bert-tiny's parameters; the tests need few rows
  c.max_position_embeddings = 160;
  c.id2label = {"a", "b", "c"};
  // Every kind of layer: a full one, MB-BERT's bridge, Pea-KD's shared layer with Q/K swapped, and
  // a K-pruned one (1 head, narrower FFN).
  mb::write_layer_structure(c, {mb::LayerStructure::encoder(2, 512),
                                mb::LayerStructure::bridge(16, mb::BridgeForm::ResidualLayerNorm),
                                mb::LayerStructure::shared(0, true), mb::LayerStructure::encoder(1, 200)});
  return c;
}

mb::Batch batch_of(const std::vector<int64_t>& lengths, uint64_t seed, int64_t vocab) {
  mb::Rng rng(seed);
  mb::Batch b;
  for (int64_t n : lengths) {
    std::vector<int32_t> ids(static_cast<size_t>(n)), types(static_cast<size_t>(n));
    for (auto& id : ids) id = int32_t(1 + rng.below(uint64_t(vocab - 1)));
    for (size_t t = size_t(n) / 2; t < types.size(); ++t) types[t] = 1;
    b.add(ids, types);
  }
  return b;
}

// Batches of different shapes: one token, a few short sequences, and 4 × 100 tokens (which a
// packed model with 2 threads splits into one share of sequences per thread: BertModel::encode).
std::vector<mb::Batch> test_batches(int64_t vocab) {
  return {batch_of({1}, 1, vocab), batch_of({7, 40, 13}, 2, vocab), batch_of({100, 100, 100, 100}, 3, vocab),
          batch_of({128, 3}, 4, vocab), batch_of({20, 90, 35, 60, 5, 77}, 5, vocab)};
}

struct Outputs {
  std::vector<float> hidden, logits;
};

Outputs infer(const mb::BertModel& m, const mb::Batch& b) {
  const mb::Tensor hidden = m.encode(b);
  return {values(hidden), values(m.classify(m.pool(b, hidden)))};
}

// One model shared by `callers` threads, each running every batch `rounds` times (starting at a
// different batch), against what one caller thread alone computed with the same setting.
void check_shared_model(const mb::BertModel& m, const ThreadSetting& setting, int callers = 4, int rounds = 3) {
  CAPTURE(setting.name());
  const std::vector<mb::Batch> batches = test_batches(m.config.vocab_size);
  setting.on_main();
  std::vector<Outputs> want(batches.size());
  run_threads(1, [&](int) {
    setting.on_caller();
    for (size_t i = 0; i < batches.size(); ++i) want[i] = infer(m, batches[i]);
  });
  std::atomic<int> passes{0}, differ{0}, taped{0}, setting_changed{0};
  run_threads(callers, [&](int caller) {
    setting.on_caller();
    const int before = omp_get_max_threads();
    for (int r = 0; r < rounds; ++r)
      for (size_t k = 0; k < batches.size(); ++k) {
        const size_t i = (size_t(caller) + k) % batches.size();
        const Outputs got = infer(m, batches[i]);
        if (!same_bits(got.hidden, want[i].hidden) || !same_bits(got.logits, want[i].logits)) ++differ;
        ++passes;
      }
    if (mb::tape_size() != 0) ++taped;                       // inference records nothing
    if (omp_get_max_threads() != before) ++setting_changed;  // nor changes the caller's setting
  });
  CHECK(passes == callers * rounds * int(batches.size()));
  CHECK(differ == 0);
  CHECK(taped == 0);
  CHECK(setting_changed == 0);
}

// Every parameter's values, in order (to see that inference leaves them alone, and what training did).
std::vector<float> all_parameters(const mb::BertModel& m) {
  std::vector<float> v;
  for (const auto& [name, p] : m.named_parameters()) v.insert(v.end(), p.data(), p.data() + p.numel());
  return v;
}

const ThreadSetting kOnePerCaller{1}, kTwoPerCaller{2}, kDefaults{0};

}  // namespace

// First, before anything else in this process has asked for the thread count: the default
// (MB_NUM_THREADS, else the core count) is applied once, whichever thread gets there first. A race
// here writes the same value twice, which only ThreadSanitizer sees.
TEST_CASE("the first use of the engine may come from several threads at once") {
  std::vector<int> seen(8, -1);
  run_threads(8, [&](int i) { seen[size_t(i)] = mb::num_threads(); });
  for (int n : seen) CHECK(n == mb::default_num_threads());
}

TEST_CASE("one model shared by several threads for inference, unpacked and packed, on every GEMM back-end") {
  const mb::GemmBackend saved = mb::gemm_backend();
  const mb::BertModel base = mb::BertModel::init_random(small_config(), 5);
  const std::vector<float> weights = all_parameters(base);
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    const std::string backend_name = mb::gemm_backend_name(backend);
    CAPTURE(backend_name);
    mb::set_gemm_backend(backend);  // process-wide: set while no other thread is in the engine

    // Unpacked f32 (sgemm, or oneDNN's matmul on the weight as it is), with parameters that
    // require gradients: encode/pool/classify run without a tape whatever the parameters say.
    // OpenBLAS (its OpenMP build, Debian's) resizes its one process-wide buffer pool to the calling
    // thread's OpenMP setting on every call unless its own setting is 1 (num_cpu_avail in its
    // common_thread.h, goto_set_num_threads in blas_server_omp.c), and the engine lowers that
    // setting for small products (GemmThreads): with several callers it is safe at 1 thread only.
    const std::vector<ThreadSetting> settings = backend == mb::GemmBackend::OpenBLAS
                                                    ? std::vector<ThreadSetting>{kOnePerCaller}
                                                    : std::vector<ThreadSetting>{kOnePerCaller, kTwoPerCaller, kDefaults};
    mb::BertModel unpacked = base;  // a copy shares the parameters (Var handles)
    unpacked.set_requires_grad(true);
    for (const ThreadSetting& s : settings) check_shared_model(unpacked, s);
    int with_grad = 0;
    for (const auto& named : unpacked.named_parameters()) with_grad += named.second.has_grad();
    CHECK(with_grad == 0);
    unpacked.set_requires_grad(false);

    // Packed once, before the threads start (pack_for_inference is not safe to run alongside).
    for (mb::Precision p : {mb::Precision::F32, mb::Precision::BF16, mb::Precision::Int8}) {
      const std::string precision = mb::precision_name(p);
      CAPTURE(precision);
      if (!mb::packed_gemm_available(p)) {
        MESSAGE("no packed " << precision << " kernel here with " << backend_name);
        continue;
      }
      mb::BertModel packed = base;
      packed.pack_for_inference(p);
      REQUIRE(packed.packed_bytes() > 0);
      for (const ThreadSetting& s : settings) check_shared_model(packed, s);
    }
  }
  CHECK(same_bits(all_parameters(base), weights));
  mb::set_gemm_backend(saved);
  mb::set_num_threads(0);
}

TEST_CASE("one Tokenizer shared by several threads") {
  const std::string vocab = mbtest::data_dir() + "/vocab/bert-base-uncased/vocab.txt";
  std::string path = vocab;
  if (!std::filesystem::exists(vocab)) {  // without the data directory: a small vocabulary of our own
    path = mbtest::scratch_dir("threads_vocab") + "/vocab.txt";
    mbtest::write_file(path, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nquick\nbrown\nfox\n##es\n##s\nun\n##aff\n##able\n,\n.\n!\n");
  }
  const mb::Tokenizer tok = mb::Tokenizer::from_vocab_file(path);
  // Every line of the tokenizer's test strings as it is (escapes left as text), and pairs of them.
  std::vector<std::string> texts;
  {
    std::istringstream in(mbtest::read_file(std::string(MB_SOURCE_DIR) + "/tests/data/tokenizer_strings.txt"));
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] != '#') texts.push_back(line);
  }
  texts.push_back("Ünïcödé façade — naïve café, 東京 and 北京; emoji 😀 too.");
  texts.push_back(std::string("bad utf-8 \xff\xfe here"));  // an mb::Error, the same in every thread
  REQUIRE(texts.size() > 100);

  // Each text's outcome as one string: the ids of three encodings, or the error.
  auto outcome = [&](size_t i) {
    std::string s;
    try {
      for (const mb::Encoding& e : {tok.encode(texts[i]), tok.encode(texts[i], 16),
                                    tok.encode_pair(texts[i], texts[(i + 1) % texts.size()], 24)}) {
        for (int32_t id : e.input_ids) s += std::to_string(id) + ' ';
        for (int32_t t : e.token_type_ids) s += std::to_string(t);
        s += '|';
      }
    } catch (const mb::Error& e) {
      s = std::string("error: ") + e.what();
    }
    return s;
  };
  std::vector<std::string> want(texts.size());
  for (size_t i = 0; i < texts.size(); ++i) want[i] = outcome(i);
  CHECK(want.back().rfind("error: ", 0) == 0);
  std::atomic<int> done{0}, differ{0};
  run_threads(8, [&](int caller) {
    for (int r = 0; r < 3; ++r)
      for (size_t k = 0; k < texts.size(); ++k) {
        const size_t i = (k * 7 + size_t(caller) * 31) % texts.size();
        if (outcome(i) != want[i]) ++differ;
        ++done;
      }
  });
  CHECK(done == 8 * 3 * int(texts.size()));
  CHECK(differ == 0);
}

namespace {

// A few AdamW steps with dropout on a model of this thread's own (init_random: a copy of a
// BertModel would share its parameters), then the trained model packed and run: its parameters,
// losses and packed outputs.
struct Trained {
  std::vector<float> parameters, losses, packed_hidden;
  size_t tape_left = 0;
};

Trained train_own_model(const mb::BertConfig& c, const std::vector<mb::Batch>& batches) {
  mb::BertModel m = mb::BertModel::init_random(c, 7);
  const std::vector<mb::ParamRef> params = mb::trainable_params(m);
  mb::AdamW opt(params, mb::AdamWConfig{0.9, 0.999, 1e-8, 0.01});
  mb::Rng rng(123);  // dropout
  const mb::ForwardOptions train{true, &rng};
  Trained out;
  for (size_t step = 0; step < 3; ++step) {
    const mb::Batch& b = batches[step % batches.size()];
    std::vector<int32_t> labels(size_t(b.num_seqs()));
    for (size_t i = 0; i < labels.size(); ++i) labels[i] = int32_t((i + step) % 3);
    const mb::Var loss =
        mb::cross_entropy(m.classifier_logits(m.pooled_output(b, m.hidden_states(b, train)), train), labels);
    out.losses.push_back(loss.data()[0]);
    mb::backward(loss);
    mb::optimizer_step(opt, params, 1e-3, 1.0);
  }
  out.tape_left = mb::tape_size();
  out.parameters = all_parameters(m);
  m.set_requires_grad(false);
  m.pack_for_inference();  // packing a model of one's own while other threads pack theirs
  out.packed_hidden = values(m.encode(batches[1]));
  return out;
}

}  // namespace

TEST_CASE("a model per thread for training, beside threads running inference on a shared model") {
  const mb::BertConfig c = small_config();
  const std::vector<mb::Batch> batches = {batch_of({12, 30, 7}, 11, c.vocab_size), batch_of({64, 64}, 12, c.vocab_size),
                                          batch_of({5, 9, 20, 3}, 13, c.vocab_size)};
  mb::BertModel shared = mb::BertModel::init_random(c, 9);
  shared.pack_for_inference();
  const std::vector<mb::Batch> infer_batches = test_batches(c.vocab_size);
  for (const ThreadSetting& s : {kOnePerCaller, kTwoPerCaller}) {
    CAPTURE(s.name());
    s.on_main();
    Trained want;
    std::vector<Outputs> want_infer(infer_batches.size());
    run_threads(1, [&](int) {
      s.on_caller();
      want = train_own_model(c, batches);
      for (size_t i = 0; i < infer_batches.size(); ++i) want_infer[i] = infer(shared, infer_batches[i]);
    });
    REQUIRE(want.losses.size() == 3);
    CHECK(want.tape_left == 0);
    // 3 trainers and 2 inference threads at once.
    constexpr int kTrainers = 3, kInference = 2;
    std::vector<Trained> got(kTrainers);
    std::atomic<int> differ{0}, passes{0};
    run_threads(kTrainers + kInference, [&](int i) {
      s.on_caller();
      if (i < kTrainers) {
        got[size_t(i)] = train_own_model(c, batches);
        return;
      }
      for (int r = 0; r < 4; ++r)
        for (size_t k = 0; k < infer_batches.size(); ++k) {
          const size_t j = (size_t(i) + k) % infer_batches.size();
          const Outputs o = infer(shared, infer_batches[j]);
          if (!same_bits(o.hidden, want_infer[j].hidden) || !same_bits(o.logits, want_infer[j].logits)) ++differ;
          ++passes;
        }
    });
    for (const Trained& t : got) {
      CHECK(same_bits(t.losses, want.losses));
      CHECK(same_bits(t.parameters, want.parameters));
      CHECK(same_bits(t.packed_hidden, want.packed_hidden));
      CHECK(t.tape_left == 0);
    }
    CHECK(passes == kInference * 4 * int(infer_batches.size()));
    CHECK(differ == 0);
  }
  // The training really moved the weights away from the initialisation.
  CHECK(!same_bits(all_parameters(mb::BertModel::init_random(c, 7)), [&] {
    std::vector<float> p;
    run_threads(1, [&](int) { p = train_own_model(c, batches).parameters; });
    return p;
  }()));
  mb::set_num_threads(0);
}
