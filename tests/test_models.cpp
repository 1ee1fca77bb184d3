// Model structure: parameter/FLOPs counting pinned to docs/METHODS.md, BERT's initialisation,
// save/load round trips, and the errors for bad configs and weights.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>

#include "engine/error.h"
#include "io/config.h"
#include "io/data_dir.h"
#include "io/safetensors.h"
#include "models/bert.h"
#include "models/counting.h"
#include "models/shipped_configs.h"
#include "models/training.h"
#include "models/layer_structure.h"
#include "engine/gemm.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;

namespace {

mb::BertConfig shipped(const std::string& name) {
  return mb::bert_config_from_json(nlohmann::json::parse(mb::shipped_configs().at(name)), name);
}

}  // namespace

TEST_CASE("BERT-base counts match docs/METHODS.md") {
  const mb::BertModel m = mb::BertModel::init_random(shipped("base"), 0);
  const mb::ModelCounts c = mb::count_model(m, 128);
  CHECK(c.embedding_params == 23837184);
  REQUIRE(c.layers.size() == 12);
  for (const auto& l : c.layers) CHECK(l.params == 7087872);
  CHECK(c.pooler_params == 590592);
  CHECK(c.classifier_params == 1538);
  CHECK(c.total_params() == 109483778);
  // F = 12 · (12 · f_head(128) + 3072 · f_neuron(128)) = 22,347,251,712 ≈ 22.3 GFLOP.
  CHECK(c.flops() == doctest::Approx(22347251712.0).epsilon(1e-12));
  CHECK(mb::flops_per_head(128, 768, 64) == 8.0 * 128 * 768 * 64 + 4.0 * 128 * 128 * 64);
  CHECK(mb::flops_per_neuron(128, 768) == 4.0 * 128 * 768);
}

TEST_CASE("shipped configs have the standard shapes") {
  struct S { const char* name; int64_t L, H, A, I; };
  for (const S& s : {S{"tiny", 2, 128, 2, 512}, S{"mini", 4, 256, 4, 1024}, S{"small", 4, 512, 8, 2048},
                     S{"medium", 8, 512, 8, 2048}, S{"base", 12, 768, 12, 3072}}) {
    const mb::BertConfig c = shipped(s.name);
    CHECK(c.num_hidden_layers == s.L);
    CHECK(c.hidden_size == s.H);
    CHECK(c.num_attention_heads == s.A);
    CHECK(c.intermediate_size == s.I);
    CHECK(c.vocab_size == 30522);
  }
}

TEST_CASE("init follows BERT's initialisation and is deterministic") {
  mb::BertConfig c = shipped("mini");
  const mb::BertModel a = mb::BertModel::init_random(c, 42), b = mb::BertModel::init_random(c, 42),
                      other = mb::BertModel::init_random(c, 43);
  const float* w = a.layers[0].ffn_in_w.data();
  const int64_t n = a.layers[0].ffn_in_w.numel();
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += w[i];
    sq += double(w[i]) * w[i];
  }
  CHECK(std::fabs(sum / double(n)) < 1e-3);
  CHECK(std::sqrt(sq / double(n)) == doctest::Approx(0.02).epsilon(0.02));
  for (int64_t i = 0; i < c.hidden_size; ++i) {
    CHECK(a.emb_ln_w.data()[i] == 1.0f);
    CHECK(a.emb_ln_b.data()[i] == 0.0f);
    CHECK(a.layers[1].q_b.data()[i] == 0.0f);
    CHECK(a.word_emb.data()[c.pad_token_id * c.hidden_size + i] == 0.0f);  // padding row
  }
  CHECK(std::equal(w, w + n, b.layers[0].ffn_in_w.data()));
  CHECK_FALSE(std::equal(w, w + n, other.layers[0].ffn_in_w.data()));
}

TEST_CASE("save then load reproduces the model and its outputs; bf16 save rounds") {
  const mb::BertModel m = mb::BertModel::init_random(shipped("tiny"), 5);
  const std::string dir = mbtest::scratch_dir("models_roundtrip") + "/model";
  m.save(dir, mb::DType::F32, mb::default_vocab_dir());
  for (const char* f : {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"})
    CHECK(fs::exists(fs::path(dir) / f));
  const mb::BertModel r = mb::BertModel::load(dir);
  CHECK(r.has_classifier());
  CHECK(r.config.id2label == m.config.id2label);
  mb::Batch batch;
  batch.add({101, 7592, 2088, 102}, {0, 0, 1, 1});
  const mb::Tensor h1 = m.encode(batch);
  const mb::Tensor h2 = r.encode(batch);
  CHECK(std::equal(h1.f32(), h1.f32() + h1.numel(), h2.f32()));

  // The stored names are Hugging Face's (BertForSequenceClassification).
  const mb::SafeTensorsFile f = mb::read_safetensors(dir + "/model.safetensors");
  CHECK(f.tensors.count("bert.embeddings.word_embeddings.weight"));
  CHECK(f.tensors.count("bert.encoder.layer.1.output.LayerNorm.bias"));
  CHECK(f.tensors.count("classifier.weight"));

  m.save(dir, mb::DType::BF16, mb::default_vocab_dir());  // overwrite in place
  const mb::BertModel rb = mb::BertModel::load(dir);
  CHECK(rb.layers[0].q_w.data()[3] == mb::bf16_to_f32(mb::f32_to_bf16(m.layers[0].q_w.data()[3])));
  for (const auto& e : fs::directory_iterator(fs::path(dir).parent_path()))
    CHECK(e.path().filename() == "model");  // no staging or backup directories left behind
}

TEST_CASE("config errors name the file and the problem") {
  const std::string dir = mbtest::scratch_dir("models_bad_config");
  const std::string path = dir + "/config.json";
  mbtest::write_file(path, R"({"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8})");
  std::string msg = mbtest::error_of([&] { mb::read_bert_config(path); });
  CHECK(msg.find(path) != std::string::npos);
  CHECK(msg.find("vocab_size") != std::string::npos);

  mbtest::write_file(path, R"({"vocab_size": 10, "hidden_size": "64", "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8})");
  msg = mbtest::error_of([&] { mb::read_bert_config(path); });
  CHECK(msg.find("\"hidden_size\" must be an integer") != std::string::npos);

  mbtest::write_file(path, R"({"vocab_size": 10, "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 8})");
  CHECK(mbtest::error_of([&] { mb::read_bert_config(path); }).find("not a multiple") != std::string::npos);

  mbtest::write_file(path, "{\"vocab_size\": 10,\n \"hidden_size\": 64,,}");
  msg = mbtest::error_of([&] { mb::read_bert_config(path); });
  CHECK(msg.find(path + ": invalid JSON") != std::string::npos);

  // Found by fuzz_model_dir: a number past double's range is nlohmann's out_of_range, not a parse error.
  mbtest::write_file(path, R"({"vocab_size": 1e1120, "hidden_size": 64})");
  msg = mbtest::error_of([&] { mb::read_bert_config(path); });
  CHECK(msg.find(path + ": invalid JSON") != std::string::npos);

  CHECK(mbtest::error_of([&] { mb::read_bert_config(dir + "/absent.json"); }).find("cannot open") != std::string::npos);
}

// docs/RELIABILITY.md "Limits": a config that asks for absurd sizes is refused with a message
// naming the key and the limit, before anything is sized from it.
TEST_CASE("resource limits: absurd sizes in config.json are refused before anything is allocated") {
  const std::string dir = mbtest::scratch_dir("models_limits");
  const std::string path = dir + "/config.json";
  const nlohmann::json base = nlohmann::json::parse(mb::shipped_configs().at("tiny"));
  auto error_with = [&](const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = base;
    edit(j);
    mbtest::write_file(path, j.dump());
    return mbtest::error_of([&] { mb::BertModel::init_random(mb::read_bert_config(path), 1, path); });
  };
  CHECK(error_with([](nlohmann::json&) {}).empty());

  const std::vector<std::pair<const char*, int64_t>> fields = {
      {"vocab_size", mb::limits::kMaxVocabSize},
      {"hidden_size", mb::limits::kMaxHiddenSize},
      {"num_hidden_layers", mb::limits::kMaxLayers},
      {"num_attention_heads", mb::limits::kMaxHiddenSize},
      {"intermediate_size", mb::limits::kMaxIntermediateSize},
      {"max_position_embeddings", mb::limits::kMaxPositionEmbeddings},
      {"type_vocab_size", mb::limits::kMaxTypeVocabSize},
      {"num_labels", mb::limits::kMaxLabels}};
  for (const auto& field : fields) {
    const std::string key = field.first;  // (clang 14 cannot capture a structured binding in CAPTURE's lambda)
    const int64_t limit = field.second;
    for (int64_t v : {limit + 1, int64_t(1) << 62, std::numeric_limits<int64_t>::max()}) {
      CAPTURE(key);
      CAPTURE(v);
      const std::string msg = error_with([&](nlohmann::json& j) {
        j[key] = v;
        if (key == "num_labels") j.erase("id2label");
      });
      CHECK(msg.find(path + ": \"" + key + "\" is " + std::to_string(v) + ", more than the limit of " +
                     std::to_string(limit)) != std::string::npos);
    }
  }
  // An unsigned number past int64 is not an integer the config can hold.
  CHECK(error_with([](nlohmann::json& j) { j["vocab_size"] = uint64_t(1) << 63; })
            .find("\"vocab_size\" is 9223372036854775808, more than the limit of 4194304") != std::string::npos);

  // id2label bounded like num_labels (its size is the label count).
  std::string msg = error_with([](nlohmann::json& j) {
    j.erase("num_labels");
    j["id2label"] = nlohmann::json::object();
    for (int64_t i = 0; i <= mb::limits::kMaxLabels; ++i) j["id2label"][std::to_string(i)] = "L";
  });
  CHECK(msg.find("\"id2label\" has 65537 labels, more than the limit of 65536") != std::string::npos);

  // The per-layer structure: widths within the same limits, bridge ranks at most hidden_size.
  auto layers = [](nlohmann::json& j, nlohmann::json layer) {
    j["minibridge"]["layers"] = nlohmann::json::array();
    for (int l = 0; l < j["num_hidden_layers"].get<int>(); ++l) j["minibridge"]["layers"].push_back(layer);
  };
  msg = error_with([&](nlohmann::json& j) {
    layers(j, {{"kind", "encoder"}, {"num_heads", 2}, {"intermediate_size", mb::limits::kMaxIntermediateSize + 1}});
  });
  CHECK(msg.find("\"intermediate_size\" is 262145, must be in [0, 262144]") != std::string::npos);
  msg = error_with([&](nlohmann::json& j) { layers(j, {{"kind", "bridge"}, {"rank", j["hidden_size"].get<int64_t>() + 1}}); });
  CHECK(msg.find("\"rank\" is " + std::to_string(base["hidden_size"].get<int64_t>() + 1) + ", must be in [1, " +
                 std::to_string(base["hidden_size"].get<int64_t>()) + "]") != std::string::npos);
  CHECK(error_with([](nlohmann::json& j) { j["minibridge"] = nlohmann::json::array({1, 2}); })
            .find("\"minibridge\" must be an object") != std::string::npos);

  // Every field within its limit, yet 2^22 x 2^16 word embeddings alone are 1 TiB: refused by the
  // memory check before a byte is allocated (without it the allocation fails or the OOM killer ends
  // the process).
  msg = error_with([](nlohmann::json& j) {
    j["vocab_size"] = mb::limits::kMaxVocabSize;
    j["hidden_size"] = mb::limits::kMaxHiddenSize;
    j["num_attention_heads"] = 1;
  });
  CHECK(msg.find(path + ": ") == 0);
  CHECK(msg.find("GiB, more than this machine's") != std::string::npos);

  // A JSON file past 100 MB is refused unread (a sparse file: no disk is used).
  {
    mbtest::write_file(path, base.dump());
    fs::resize_file(path, uintmax_t(mb::limits::kMaxJsonFileBytes) + 1);
    msg = mbtest::error_of([&] { mb::read_bert_config(path); });
    CHECK(msg == path + ": 100000001 bytes, larger than the 100 MB limit for a JSON file");
  }
}

TEST_CASE("weight errors: missing tensors by name, wrong shapes, missing directory") {
  const mb::BertModel m = mb::BertModel::init_random(shipped("tiny"), 1);
  std::map<std::string, mb::Tensor> tensors;
  for (const auto& [name, t] : m.named_tensors()) tensors[name] = t;
  tensors.erase("bert.encoder.layer.1.attention.self.key.bias");
  std::string msg = mbtest::error_of([&] { mb::BertModel::from_tensors(m.config, tensors, "somewhere"); });
  CHECK(msg.find("somewhere: missing tensors: encoder.layer.1.attention.self.key.bias") != std::string::npos);

  tensors["bert.encoder.layer.1.attention.self.key.bias"] = mb::Tensor::zeros({7});
  msg = mbtest::error_of([&] { mb::BertModel::from_tensors(m.config, tensors, "somewhere"); });
  CHECK(msg.find("has shape [7], config.json implies [128]") != std::string::npos);

  CHECK(mbtest::error_of([] { mb::BertModel::load("/nonexistent/model"); }).find("not a model directory") != std::string::npos);
}

TEST_CASE("batches are validated against the config") {
  const mb::BertModel m = mb::BertModel::init_random(shipped("tiny"), 1);
  mb::Batch b;
  b.add({101, 40000, 102}, {});
  CHECK(mbtest::error_of([&] { m.encode(b); }).find("outside the vocabulary") != std::string::npos);
  mb::Batch t;
  t.add({101, 102}, {0, 2});
  CHECK(mbtest::error_of([&] { m.encode(t); }).find("type_vocab_size") != std::string::npos);
  mb::Batch l;
  l.add(std::vector<int32_t>(513, 1000), {});
  CHECK(mbtest::error_of([&] { m.encode(l); }).find("max_position_embeddings") != std::string::npos);
}

// Packed in a lower precision (the pooler and classifier stay f32): encoder bytes at most
// bytes_ratio of f32's, hidden states (LayerNorm outputs, unit scale) and logits within the bounds.
static void check_low_precision_with(mb::GemmBackend backend, mb::Precision precision, double bytes_ratio,
                                     double rms_bound, double max_bound, double logits_bound) {
  mb::set_gemm_backend(backend);  // oneDNN's kernels where it has them; the engine's own otherwise
  mb::BertConfig c = shipped("tiny");
  c.num_hidden_layers = 3;
  c.id2label = {"a", "b", "c"};
  std::vector<mb::LayerStructure> s = {mb::LayerStructure::encoder(2, 512), mb::LayerStructure::shared(0, true),
                                       mb::LayerStructure::encoder(0, 300)};
  mb::write_layer_structure(c, s);
  const mb::BertModel reference = mb::BertModel::init_random(c, 5);
  mb::BertModel m = reference;
  mb::Rng rng(8);
  mb::Batch b;
  for (int64_t n : {7, 128, 40}) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& id : ids) id = int32_t(1 + rng.below(uint64_t(c.vocab_size - 1)));
    b.add(ids, {});
  }
  const mb::Tensor want = reference.encode(b);
  if (!mb::packed_gemm_available(precision)) {  // no such kernel on this CPU: the model says so
    m.pack_for_inference(precision);
    CHECK(m.packed_precision() != precision);
    MESSAGE("no packed " << std::string(mb::precision_name(precision)) << " kernel on this CPU; not measured");
    return;
  }
  m.pack_for_inference();
  CHECK(m.packed_precision() == mb::Precision::F32);
  const size_t f32_bytes = m.packed_bytes();
  m.pack_for_inference(precision);
  REQUIRE(m.packed_precision() == precision);
  if (f32_bytes > 0) {  // f32 packs except with oneDNN below AVX-512 (its sgemm is faster there)
    const size_t head_bytes = size_t(c.hidden_size * c.hidden_size + 3 * c.hidden_size) * 4;
    CHECK(double(m.packed_bytes() - head_bytes) < double(f32_bytes - head_bytes) * bytes_ratio);
  }

  const mb::Tensor got = m.encode(b);
  REQUIRE(got.numel() == want.numel());
  double max_diff = 0, sq = 0;
  for (int64_t i = 0; i < got.numel(); ++i) {
    const double d = std::fabs(double(got.f32()[i]) - double(want.f32()[i]));
    max_diff = std::max(max_diff, d);
    sq += d * d;
  }
  const double rms = std::sqrt(sq / double(got.numel()));
  MESSAGE(std::string(mb::precision_name(precision)) << " vs f32 hidden states: max |diff| " << max_diff << ", rms " << rms);
  CHECK(max_diff > 0);  // really in the lower precision
  CHECK(rms < rms_bound);
  CHECK(max_diff < max_bound);
  const mb::Tensor z_want = reference.classify(reference.pool(b, want)), z_got = m.classify(m.pool(b, got));
  double z_diff = 0;
  for (int64_t i = 0; i < z_got.numel(); ++i) z_diff = std::max(z_diff, std::fabs(double(z_got.f32()[i]) - z_want.f32()[i]));
  MESSAGE("logits max |diff| " << z_diff);
  CHECK(z_diff < logits_bound);
}

// On every GEMM back-end: the packed kernels differ (oneDNN's, the engine's own), the bounds do not.
static void check_low_precision(mb::Precision precision, double bytes_ratio, double rms_bound, double max_bound,
                                double logits_bound) {
  const mb::GemmBackend saved = mb::gemm_backend();
  for (mb::GemmBackend backend : mb::available_gemm_backends()) {
    CAPTURE(mb::gemm_backend_name(backend));
    check_low_precision_with(backend, precision, bytes_ratio, rms_bound, max_bound, logits_bound);
  }
  mb::set_gemm_backend(saved);
}

TEST_CASE("int8 inference stays close to f32 with a quarter of the encoder's packed bytes") {
  // Encoder weights at 1 byte instead of 4 (+ a scale per row). Measured rms 0.0021, max 0.0081
  // (8-bit steps of max|x| / 127, averaged over K products), logits 1.5e-4: bounds at about 3x.
  check_low_precision(mb::Precision::Int8, 0.3, 0.006, 0.025, 5e-4);
}

TEST_CASE("bf16 inference stays close to f32 with half of the encoder's packed bytes") {
  // 2 bytes instead of 4; both operands of every product rounded to bfloat16 (8-bit mantissa,
  // relative step 2^-8), f32 accumulation. Measured rms 3.8e-4, max 1.8e-3, logits 1.4e-5: bounds
  // at about 3x.
  check_low_precision(mb::Precision::BF16, 0.55, 0.0012, 0.006, 5e-5);
}

TEST_CASE("weights packed for inference give the unpacked results; training unpacks") {
  mb::set_gemm_backend(mb::available_gemm_backends().front());
  mb::BertConfig c = shipped("tiny");
  c.num_hidden_layers = 5;
  c.id2label = {"a", "b", "c"};
  // An SPS-style shared layer (query/key swapped) and pruned layers, one without attention and one
  // without FFN (K-prune removed them): packing must follow them.
  std::vector<mb::LayerStructure> s = {mb::LayerStructure::encoder(2, 512), mb::LayerStructure::encoder(1, 200),
                                       mb::LayerStructure::shared(0, true), mb::LayerStructure::encoder(0, 64),
                                       mb::LayerStructure::encoder(2, 0)};
  mb::write_layer_structure(c, s);
  const std::string dir = mbtest::scratch_dir("packed_inference");
  mb::BertModel::init_random(c, 11).save(dir, mb::DType::F32);
  mb::BertModel m = mb::BertModel::load(dir);
  const mb::BertModel reference = mb::BertModel::load(dir);

  mb::Rng rng(3);
  for (int64_t tokens : {1, 37, 128, 600}) {
    CAPTURE(tokens);
    mb::Batch b;
    for (int64_t left = tokens; left > 0;) {
      const int64_t n = std::min<int64_t>(left, 100);
      std::vector<int32_t> ids(static_cast<size_t>(n));
      for (auto& id : ids) id = int32_t(1 + rng.below(uint64_t(c.vocab_size - 1)));
      b.add(ids, {});
      left -= n;
    }
    m.pack_for_inference();
    const mb::Tensor want = reference.classify(reference.pool(b, reference.encode(b)));
    const mb::Tensor got = m.classify(m.pool(b, m.encode(b)));
    REQUIRE(got.numel() == want.numel());
    for (int64_t i = 0; i < got.numel(); ++i) CHECK(got.f32()[i] == doctest::Approx(want.f32()[i]).epsilon(1e-4));
  }
  if (mb::packed_gemm_available(mb::Precision::F32)) {
    CHECK(m.packed_bytes() > 0);
    // Q, K and V run as one fused GEMM; the shared layer uses its source's (swapping Q and K).
    REQUIRE(m.packed_qkv(m.layers[0]) != nullptr);
    CHECK(m.packed_qkv(m.layers[1]) != nullptr);
    CHECK(m.packed_qkv(m.layers[2]) == m.packed_qkv(m.layers[0]));
    CHECK(m.packed_qkv(m.layers[3]) == nullptr);
    CHECK(m.packed_qkv(m.layers[4]) != nullptr);
    CHECK(m.packed_weight(m.layers[0].q_w) == nullptr);  // no separate copy
  }
  // A shared layer holds no packed copy of its own: the same model without it packs as many bytes.
  mb::BertConfig c2 = c;
  c2.num_hidden_layers = 4;
  mb::write_layer_structure(c2, {s[0], s[1], s[3], s[4]});
  mb::BertModel two = mb::BertModel::init_random(c2, 11);
  two.pack_for_inference();
  CHECK(m.packed_bytes() == two.packed_bytes());

  // Training changes the weights in place: trainable_params drops the packed copies first, so
  // inference afterwards sees the new weights.
  (void)mb::trainable_params(m);
  CHECK(m.packed_bytes() == 0);
  m.set_requires_grad(false);
}

TEST_CASE("a packed model runs a batch as one share of its sequences per thread, with the same results") {
  auto batch_of = [](const std::vector<int64_t>& lengths, uint64_t seed) {
    mb::Rng rng(seed);
    mb::Batch b;
    for (int64_t n : lengths) {
      std::vector<int32_t> ids(static_cast<size_t>(n)), types(static_cast<size_t>(n));
      for (auto& id : ids) id = int32_t(1 + rng.below(1000));
      for (size_t t = size_t(n) / 2; t < types.size(); ++t) types[t] = 1;
      b.add(ids, types);
    }
    return b;
  };
  // Which sequences go to which thread: longest first to the emptiest share, each share in batch
  // order; no split with fewer than 160 tokens a thread or unless the largest share is within
  // 5 % of even.
  const mb::Batch varied = batch_of({120, 40, 82, 78, 200, 10}, 1);  // shares of 278 and 252 tokens
  const auto shares = mb::encode_shares(varied, 2);
  REQUIRE(shares.size() == 2);
  CHECK(shares[0] == std::vector<int64_t>{3, 4});
  CHECK(shares[1] == std::vector<int64_t>{0, 1, 2, 5});
  CHECK(mb::encode_shares(batch_of({128, 128, 128, 128}, 2), 2).size() == 2);
  CHECK(mb::encode_shares(batch_of({200, 200, 200}, 2), 2).empty());  // 400 against 200 tokens
  CHECK(mb::encode_shares(batch_of({200, 200, 200}, 2), 3).size() == 3);
  CHECK(mb::encode_shares(batch_of({250, 200, 100}, 2), 2).empty());  // 300 against 250: 9 % over even
  CHECK(mb::encode_shares(batch_of({128, 128}, 2), 2).empty());       // 128 tokens a thread
  CHECK(mb::encode_shares(batch_of({200, 200}, 2), 2).size() == 2);
  CHECK(mb::encode_shares(batch_of({128}, 2), 2).empty());
  CHECK(mb::encode_shares(batch_of({128, 128}, 2), 1).empty());

  // The split's results against the one-thread pass, on a model with every kind of layer.
  mb::set_gemm_backend(mb::available_gemm_backends().front());
  mb::BertConfig c = shipped("tiny");
  c.num_hidden_layers = 5;
  mb::write_layer_structure(c, {mb::LayerStructure::encoder(2, 512), mb::LayerStructure::bridge(16, mb::BridgeForm::ResidualLayerNorm),
                                mb::LayerStructure::shared(0, true), mb::LayerStructure::encoder(0, 64),
                                mb::LayerStructure::encoder(1, 0)});
  mb::BertModel m = mb::BertModel::init_random(c, 21);
  m.pack_for_inference();
  for (const mb::Batch& b : {varied, batch_of({128, 128, 128, 128, 128, 128}, 3)}) {
    CHECK(mb::encode_shares(b, 2).size() == 2);
    mb::set_num_threads(1);
    const mb::Tensor want = m.encode(b);
    for (int threads : {2, 3}) {
      CAPTURE(threads);
      mb::set_num_threads(threads);
      const mb::Tensor got = m.encode(b);
      CHECK(omp_get_max_threads() == threads);  // the threads' one-thread setting did not leak out
      REQUIRE(got.shape() == want.shape());
      for (int64_t i = 0; i < got.numel(); ++i) CHECK(got.f32()[i] == doctest::Approx(want.f32()[i]).epsilon(1e-5));
    }
  }
  // A bad sequence is reported by its index in the whole batch, not in a thread's share.
  mb::Batch bad = batch_of({128, 128, 128, 128}, 4);
  bad.input_ids[size_t(bad.offsets[3] + 5)] = int32_t(c.vocab_size);
  REQUIRE(mb::encode_shares(bad, 2).size() == 2);
  mb::set_num_threads(2);
  CHECK_THROWS_WITH_AS(m.encode(bad), doctest::Contains("sequence 3: token id"), mb::Error);
  mb::set_num_threads(0);
}
