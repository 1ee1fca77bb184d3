#include "models/pretrain.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "engine/autograd.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "io/atomic_file.h"
#include "engine/progress.h"
#include "engine/rng.h"
#include "engine/threads.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "io/corpus.h"
#include "io/jsonl_log.h"
#include "io/mlm_data.h"
#include "io/tokenizer.h"
#include "models/bert.h"
#include "models/data_parallel.h"
#include "models/electra.h"
#include "models/mlm_head.h"
#include "models/training.h"

namespace mb {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The held-out split and evaluation masks do not depend on the training seed, so that held-out
// losses of runs with different seeds are comparable.
constexpr uint64_t kHeldoutSeed = 0;
constexpr uint64_t kEvalMaskSeed = 1234;
constexpr uint64_t kDropoutSeedSalt = 0x5eed0d0bull;
constexpr uint64_t kProposalSeedSalt = 0x9e0905a1ull;  // ELECTRA's generator samples

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// What fixes the trajectory of a run: a resumed run must match the checkpoint on all of these.
json trajectory_options(const PretrainOptions& o, int64_t warmup, int streams) {
  json j = {{"max_steps", o.max_steps},         {"seq_len", o.seq_len},
          {"streams", streams},
          {"batch_size", o.batch_size},       {"lr", o.lr},
          {"warmup_steps", warmup},           {"weight_decay", o.weight_decay},
          {"max_grad_norm", o.max_grad_norm}, {"seed", o.seed},
          {"heldout_fraction", o.heldout_fraction}, {"eval_sequences", o.eval_sequences},
          {"bf16", o.bf16}, {"dropout", o.dropout}, {"objective", o.objective}};
  if (o.objective == "electra") {
    j["generator_layers"] = o.generator_layers;
    j["disc_weight"] = o.disc_weight;
  }
  return j;
}

// The option names as the CLI spells them, for messages.
std::string flag_name(const std::string& key) {
  std::string s = "--" + key;
  std::replace(s.begin(), s.end(), '_', '-');
  return s;
}

Batch to_batch(const MlmBatch& m) {
  Batch b;
  b.input_ids = m.input_ids;
  b.token_type_ids.assign(m.input_ids.size(), 0);
  b.offsets = m.offsets;
  return b;
}

int64_t masked_count(const std::vector<int32_t>& labels) {
  return std::count_if(labels.begin(), labels.end(), [](int32_t l) { return l != kIgnoreLabel; });
}

// Mean cross-entropy over every masked token of the evaluation set (no dropout, no tape).
double evaluate(const BertModel& model, const MlmHead& head, const std::vector<MlmBatch>& set, int64_t& masked) {
  NoGrad no_grad;
  double sum = 0.0;
  masked = 0;
  for (const MlmBatch& m : set) {
    const int64_t k = masked_count(m.labels);
    if (k == 0) continue;
    const Var loss = mlm_loss(model, head, to_batch(m), m.labels, ForwardOptions{});
    sum += double(loss.data()[0]) * double(k);
    masked += k;
  }
  return masked ? sum / double(masked) : std::nan("");
}

// ELECTRA on the evaluation set (no dropout, no tape): the generator's MLM loss, and the
// discriminator's loss and accuracy on proposals drawn from a fixed seed.
struct ElectraEval {
  double mlm = 0.0, disc = 0.0, accuracy = 0.0;
  int64_t masked = 0;
};
ElectraEval evaluate_electra(const BertModel& disc, const Electra& e, const std::vector<MlmBatch>& set) {
  NoGrad no_grad;
  ElectraEval r;
  double mlm_sum = 0.0, disc_sum = 0.0;
  int64_t tokens = 0, correct = 0, drawn = 0;
  for (const MlmBatch& m : set) {
    ElectraStep step;
    step.sample_base = Rng(kEvalMaskSeed ^ kProposalSeedSalt).state();
    step.draw_offset = drawn;
    const ElectraLoss l = electra_loss(disc, e, to_batch(m), m.labels, step, ForwardOptions{});
    const int64_t k = masked_count(m.labels);
    mlm_sum += l.mlm * double(k);
    disc_sum += l.disc * double(l.tokens);
    r.masked += k;
    tokens += l.tokens;
    correct += l.correct;
    drawn += l.tokens;
  }
  r.mlm = r.masked ? mlm_sum / double(r.masked) : std::nan("");
  r.disc = tokens ? disc_sum / double(tokens) : std::nan("");
  r.accuracy = tokens ? double(correct) / double(tokens) : std::nan("");
  return r;
}

// The parameters MLM trains: embeddings, encoder layers, cls.predictions.*. The pooler (not on
// the MLM path) and any other stored head (e.g. cls.seq_relationship.*) are left untouched.
std::vector<ParamRef> mlm_params(const BertModel& model) {
  std::vector<ParamRef> refs;
  for (const auto& [name, v] : model.named_parameters()) {
    const bool head = name.rfind("cls.", 0) == 0;
    const bool trained = head ? name.rfind("cls.predictions.", 0) == 0 : name.find("pooler.") == std::string::npos;
    v.set_requires_grad(trained);
    if (!trained) continue;
    v.grad();  // allocate now: AdamW keeps pointers to the value and grad tensors
    refs.push_back({name, &v.value(), &v.grad()});
  }
  return refs;
}

// Batches that mix documents. One MlmStream reads a whole file before the next, so its batches
// would come from one book for dozens of steps; instead `k` streams read disjoint shards of the
// files (file i goes to shard i % k, each shard reshuffled every epoch), and sequence j of the
// stream of batches comes from stream j % k. Deterministic and resumable like MlmStream.
class InterleavedStream {
 public:
  InterleavedStream(const std::vector<std::string>& files, const Tokenizer& tok, int seq_len, uint64_t seed, int k) {
    std::vector<std::vector<std::string>> shards(static_cast<size_t>(k));
    for (size_t i = 0; i < files.size(); ++i) shards[i % size_t(k)].push_back(files[i]);
    for (int s = 0; s < k; ++s)
      streams_.emplace_back(shards[size_t(s)], tok, seq_len, seed + kStreamSeedStride * uint64_t(s));
  }

  MlmBatch next_batch(int batch_size) {
    MlmBatch batch;
    for (int j = 0; j < batch_size; ++j) {
      const MlmBatch one = streams_[next_].next_batch(1);
      batch.append(one.input_ids, one.labels);
      next_ = (next_ + 1) % streams_.size();
    }
    return batch;
  }

  // Throws mb::Error when some stream yields no text at all (checked before anything is written).
  void probe() const {
    for (const MlmStream& s : streams_) {
      MlmStream copy = s;
      copy.next_sequence();
    }
  }

  json state() const {
    json streams = json::array();
    for (const MlmStream& s : streams_) streams.push_back(s.state());
    return {{"next", next_}, {"streams", streams}};
  }
  void restore(const json& state) {
    const json& streams = state.at("streams");
    MB_CHECK(streams.is_array() && streams.size() == streams_.size(),
             "data state: " + std::to_string(streams.size()) + " streams saved, " + std::to_string(streams_.size()) +
                 " expected");
    const size_t next = state.at("next").get<size_t>();
    MB_CHECK(next < streams_.size(), "data state: stream index out of range");
    for (size_t i = 0; i < streams_.size(); ++i) streams_[i].restore(streams[i]);
    next_ = next;
  }

 private:
  static constexpr uint64_t kStreamSeedStride = 0x9e3779b97f4a7c15ull;
  std::vector<MlmStream> streams_;
  size_t next_ = 0;
};

}  // namespace

PretrainResult pretrain(const PretrainOptions& o) {
  // ---- Validate everything before OUT is created or touched.
  MB_CHECK(!o.model_dir.empty(), "pretrain: no input model directory given");
  MB_CHECK(!o.corpus_dir.empty(), "pretrain: no corpus directory given");
  MB_CHECK(!o.out_dir.empty(), "pretrain: no output directory given");
  MB_CHECK(o.max_steps > 0, "pretrain: --max-steps must be positive, got " + std::to_string(o.max_steps));
  MB_CHECK(o.batch_size > 0, "pretrain: --batch-size must be positive, got " + std::to_string(o.batch_size));
  MB_CHECK(o.lr >= 0 && std::isfinite(o.lr), "pretrain: --lr must be positive (or 0 for the default)");
  MB_CHECK(o.weight_decay >= 0, "pretrain: --weight-decay must not be negative");
  MB_CHECK(o.eval_sequences > 0, "pretrain: --eval-sequences must be positive");
  MB_CHECK(o.log_steps > 0, "pretrain: --log-steps must be positive");
  MB_CHECK(o.save_steps >= 0 && o.eval_steps >= 0, "pretrain: --save-steps and --eval-steps must not be negative");
  MB_CHECK(o.objective == "mlm" || o.objective == "electra",
           "pretrain: --objective must be mlm or electra, got '" + o.objective + "'");
  const bool is_electra = o.objective == "electra";
  MB_CHECK(o.generator_layers >= 0, "pretrain: --generator-layers must not be negative");
  MB_CHECK(o.disc_weight > 0 && std::isfinite(o.disc_weight), "pretrain: --disc-weight must be positive");
  const int64_t warmup = o.resolved_warmup();
  const LinearPrecisionScope precision(o.bf16 ? Precision::BF16 : Precision::F32);

  set_num_threads(o.threads);

  const Corpus corpus = open_corpus(o.corpus_dir, o.heldout_fraction, kHeldoutSeed);
  MB_CHECK(!corpus.heldout.empty(),
           o.corpus_dir + ": no file held out for evaluation (--heldout-fraction must be positive)");
  const Tokenizer tok = Tokenizer::from_model_dir(o.model_dir);
  BertModel model = BertModel::load(o.model_dir);
  model.require_f32_weights(o.model_dir, "pretraining");
  MB_CHECK(int64_t(tok.vocab_size()) <= model.config.vocab_size,
           o.model_dir + "/vocab.txt has " + std::to_string(tok.vocab_size()) + " entries, more than vocab_size " +
               std::to_string(model.config.vocab_size) + " in config.json");
  MB_CHECK(o.seq_len >= 3 && o.seq_len <= model.config.max_position_embeddings,
           "pretrain: --seq-len must be in [3, " + std::to_string(model.config.max_position_embeddings) +
               "] (max_position_embeddings of " + o.model_dir + "), got " + std::to_string(o.seq_len));

  const int streams = o.resolved_streams(corpus.train.size());
  InterleavedStream stream(corpus.train, tok, o.seq_len, o.seed, streams);
  {
    try {
      stream.probe();  // fails here, not after OUT was made, when the text yields no token
    } catch (const Error& e) {
      throw Error(o.corpus_dir + ": no text to train on (" + e.what() + ")");
    }
  }
  std::vector<MlmBatch> eval_set;
  try {
    eval_set = make_mlm_eval_set(corpus.heldout, tok, o.seq_len, o.eval_sequences, o.batch_size, kEvalMaskSeed);
  } catch (const Error& e) {
    throw Error(o.corpus_dir + ": no held-out text to evaluate on (" + e.what() + ")");
  }
  MB_CHECK(!eval_set.empty(), o.corpus_dir + ": the held-out files yield no text to evaluate on");
  int64_t eval_sequences = 0;
  for (const MlmBatch& b : eval_set) eval_sequences += b.size();

  const fs::path out = o.out_dir;
  const std::string ck_dir = (out / "checkpoint").string();
  const std::string log_path = (out / "train_log.jsonl").string();
  if (o.resume)
    MB_CHECK(checkpoint_exists(ck_dir), ck_dir + ": no checkpoint to resume from (run without --resume to start)");
  else
    MB_CHECK(!checkpoint_exists(ck_dir), ck_dir + ": a checkpoint of an earlier run is there; pass --resume to "
                                         "continue it, or choose another --out");

  // ---- The model to train: a BertForMaskedLM (no classifier), MLM head found or created; or for
  // ELECTRA the discriminator with a fresh generator and heads (in model.extra, "electra.*").
  model.classifier_w = Var();
  model.classifier_b = Var();
  PretrainOptions resolved = o;  // with the defaults that depend on the model filled in
  if (resolved.lr == 0) resolved.lr = default_pretrain_lr(model.config.hidden_size);
  if (is_electra && resolved.generator_layers == 0)
    resolved.generator_layers = default_generator_layers(model.config.num_hidden_layers);
  std::optional<MlmHead> head;
  std::optional<Electra> electra;
  if (is_electra) {
    try {
      electra.emplace(Electra::attach(model, resolved.generator_layers, o.seed));
    } catch (const Error& e) {
      throw Error(std::string("pretrain: ") + e.what() + " (--generator-layers)");
    }
  } else {
    head.emplace(MlmHead::attach(model, o.seed));
  }
  const std::vector<ParamRef> params = mlm_params(model);
  int64_t n_params = 0;
  for (const ParamRef& p : params) n_params += p.value->numel();
  AdamW adam(params, AdamWConfig{0.9, 0.999, 1e-8, o.weight_decay});
  // Data-parallel over MPI ranks (models/data_parallel.h): every rank reads the same stream and
  // trains on its share of each batch; rank 0 alone evaluates and writes.
  const bool root = dist::is_root(), parallel = dist::size() > 1;

  int64_t step = 0;
  double win_loss = 0.0, last_grad_norm = 0.0, elapsed_before = 0.0, last_eval = -1.0, last_loss = 0.0;
  int64_t win_steps = 0;
  double win_mlm = 0.0, win_disc = 0.0;  // ELECTRA: the two losses' sums over the log window
  // OUT's model: for ELECTRA the discriminator alone, without the objective's tensors.
  auto save_model = [&] {
    if (!is_electra) return model.save(o.out_dir, DType::F32, o.model_dir);
    BertModel plain = model;
    strip_electra(plain);
    plain.save(o.out_dir, DType::F32, o.model_dir);
  };
  if (o.resume) {
    const Checkpoint ck = load_checkpoint(ck_dir);
    const json& state = ck.state;
    {
      // Every option that fixes the trajectory must match, compared before the parameters are
      // loaded: the objective and the generator's depth decide which tensors the checkpoint holds.
      MB_CHECK(state.is_object() && state.contains("options") && state.at("options").is_object(),
               ck.dir + "/state.json: malformed pretraining state: no \"options\" object");
      json saved = state.at("options");
      // Checkpoints from before these options: f32, the config's dropout, masked LM.
      if (!saved.contains("bf16")) saved["bf16"] = false;
      if (!saved.contains("dropout")) saved["dropout"] = true;
      if (!saved.contains("objective")) saved["objective"] = "mlm";
      const json now = trajectory_options(resolved, warmup, streams);
      for (const auto& [key, value] : now.items()) {
        // The default warm-up follows --max-steps, which is compared on its own.
        if (key == "warmup_steps" && o.warmup_steps < 0) continue;
        MB_CHECK(saved.contains(key) && saved.at(key) == value,
                 ck_dir + ": the checkpoint was made with " + flag_name(key) + " " +
                     (saved.contains(key) ? saved.at(key).dump() : "(unset)") + ", this run asks for " + value.dump() +
                     "; resume with the same options");
      }
    }
    load_training_checkpoint(ck, model, adam);
    try {
      step = state.at("step").get<int64_t>();
      stream.restore(state.at("data"));
      win_loss = state.at("window").at("loss_sum").get<double>();
      win_steps = state.at("window").at("steps").get<int64_t>();
      last_grad_norm = state.at("window").at("grad_norm").get<double>();
      win_mlm = state.at("window").value("mlm_sum", 0.0);
      win_disc = state.at("window").value("disc_sum", 0.0);
      last_loss = state.at("last_loss").get<double>();
      last_eval = state.at("last_eval").get<double>();
      elapsed_before = state.at("elapsed_s").get<double>();
    } catch (const json::exception& e) {
      throw Error(ck_dir + "/state.json: malformed pretraining state: " + e.what());
    } catch (const Error& e) {  // the data stream's or the RNG's own checks
      const std::string what = e.what();
      if (what.rfind(ck_dir, 0) == 0) throw;
      throw Error(ck_dir + "/state.json: " + what);
    }
    MB_CHECK(step >= 0 && step <= o.max_steps, ck_dir + "/state.json: step " + std::to_string(step) +
                                                    " is outside this run's 0.." + std::to_string(o.max_steps) + " steps");
    if (step == o.max_steps) {
      if (!root) {
        PretrainResult r;
        r.steps = step;
        r.already_done = true;
        return r;
      }
      if (!fs::exists(out / "model.safetensors")) save_model();
      std::cerr << "minibridge: " << o.out_dir << ": pretraining already finished (" << step
                << " steps); nothing to do\n";
      PretrainResult r;
      r.steps = step;
      r.last_loss = last_loss;
      r.eval_loss = last_eval;
      r.already_done = true;
      return r;
    }
  }

  broadcast_parameters(model);  // every rank starts from rank 0's weights (the MLM head's included)

  // ---- From here on OUT is written (by rank 0).
  std::optional<JsonlLog> log;
  if (root) {
    create_output_dir(out.string());
    if (!o.resume) fs::remove(log_path);
    log.emplace(log_path);
    if (o.resume) log->truncate_after_step(step);
  }
  if (root) {
    json start = {{"event", o.resume ? "resume" : "start"},
                  {"from_step", step},
                  {"model", o.model_dir},
                  {"corpus", o.corpus_dir},
                  {"train_files", corpus.train.size()},
                  {"heldout_files", corpus.heldout.size()},
                  {"eval_sequences", eval_sequences},
                  {"trained_parameters", n_params},
                  {"threads", num_threads()},
                  {"precision", o.bf16 ? "bf16" : "f32"},
                  {"dropout", o.dropout},
                  {"objective", o.objective},
                  {"ranks", dist::size()},
                  {"options", trajectory_options(resolved, warmup, streams)}};
    log->write(start);
  }

  const double run_start = now_s();
  auto elapsed = [&] { return elapsed_before + (now_s() - run_start); };
  auto run_eval = [&] {
    if (electra) {
      const ElectraEval ev = evaluate_electra(model, *electra, eval_set);
      last_eval = ev.mlm;
      log->write({{"step", step},
                  {"eval_mlm_loss", ev.mlm},
                  {"eval_disc_loss", ev.disc},
                  {"eval_disc_accuracy", ev.accuracy},
                  {"eval_masked_tokens", ev.masked},
                  {"elapsed_s", elapsed()}});
      return;
    }
    int64_t masked = 0;
    last_eval = evaluate(model, *head, eval_set, masked);
    log->write({{"step", step}, {"eval_mlm_loss", last_eval}, {"eval_masked_tokens", masked}, {"elapsed_s", elapsed()}});
  };
  auto save_all = [&] {
    save_model();
    const json state = {{"step", step},
                        {"data", stream.state()},
                        {"window",
                         {{"loss_sum", win_loss},
                          {"steps", win_steps},
                          {"grad_norm", last_grad_norm},
                          {"mlm_sum", win_mlm},
                          {"disc_sum", win_disc}}},
                        {"last_loss", last_loss},
                        {"last_eval", last_eval},
                        {"elapsed_s", elapsed()},
                        {"done", step == o.max_steps},
                        {"options", trajectory_options(resolved, warmup, streams)}};
    save_training_checkpoint(ck_dir, model, adam, state);
  };

  if (root && step == 0 && (o.eval_steps > 0)) run_eval();  // the starting point of the curve

  ProgressOptions popt;
  popt.start_step = step;
  popt.every_steps = o.log_steps;
  std::optional<Progress> progress;
  if (root && o.progress) progress.emplace(o.max_steps, popt);

  const int64_t first_step = step;
  GradientTraffic win_traffic = gradient_traffic();
  int64_t run_tokens = 0, win_tokens = 0;
  double run_train_s = 0.0, win_train_s = 0.0;
  bool interrupted = false;
  while (step < o.max_steps) {
    const double t0 = now_s();
    const MlmBatch mbatch = stream.next_batch(o.batch_size);
    const Batch batch = to_batch(mbatch);
    const double lr = linear_warmup_decay(step, warmup, o.max_steps, resolved.lr);
    // This rank's share of the batch; its mean loss over its masked tokens weighted by its share of
    // the batch's masked tokens, so that the gradients summed over the ranks are the batch's.
    double loss_value = 0.0, mlm_value = 0.0, disc_value = 0.0;
    const BatchShare share = my_share(batch);
    const std::vector<int32_t> labels(mbatch.labels.begin() + share.place.tokens_before,
                                      mbatch.labels.begin() + share.place.tokens_before + share.batch.num_tokens());
    const int64_t masked = masked_count(labels), batch_masked = masked_count(mbatch.labels);
    if (share.seqs.size() > 0) {
      Rng dropout_rng = dropout_rng_for_step(o.seed ^ kDropoutSeedSalt, step);
      // Without dropout the pass is an eval-mode pass; the tape still records it (the weights
      // require gradients).
      const ForwardOptions fwd = o.dropout ? share.forward(&dropout_rng) : ForwardOptions{};
      const double mlm_share = batch_masked > 0 ? double(masked) / double(batch_masked) : 0.0;
      if (electra) {
        ElectraStep es;
        es.disc_weight = o.disc_weight;
        es.mlm_scale = parallel ? mlm_share : 1.0;
        es.disc_scale = parallel ? double(share.batch.num_tokens()) / double(batch.num_tokens()) : 1.0;
        es.sample_base = dropout_rng_for_step(o.seed ^ kProposalSeedSalt, step).state();
        es.draw_offset = share.place.tokens_before;
        const ElectraLoss l = electra_loss(model, *electra, share.batch, labels, es, fwd);
        loss_value = double(l.loss.data()[0]);
        mlm_value = l.mlm * es.mlm_scale;
        disc_value = l.disc * es.disc_scale;
        backward(l.loss);
      } else {
        Var loss = mlm_loss(model, *head, share.batch, labels, fwd);
        if (parallel) loss = scale(loss, float(mlm_share));
        loss_value = double(loss.data()[0]);
        backward(loss);
      }
    }
    // The losses and any rank's stop request (Ctrl-C), summed over the ranks in one call: every
    // rank then stops after the same step.
    double reduced[4] = {loss_value, o.stop && o.stop->load() ? 1.0 : 0.0, mlm_value, disc_value};
    if (parallel) {
      allreduce_gradients(params);
      dist::allreduce_sum(reduced, 4);
      loss_value = reduced[0];
      mlm_value = reduced[2];
      disc_value = reduced[3];
    }
    last_grad_norm = optimizer_step(adam, params, lr, o.max_grad_norm);
    ++step;
    const double dt = now_s() - t0;
    win_loss += loss_value;
    win_mlm += mlm_value;
    win_disc += disc_value;
    ++win_steps;
    win_tokens += batch.num_tokens();
    run_tokens += batch.num_tokens();
    win_train_s += dt;
    run_train_s += dt;

    if (progress)
      progress->update(step, {{"loss", fmt_num(win_loss / double(win_steps))}, {"lr", fmt_num(lr, 3)}},
                       batch.num_tokens());

    if (step % o.log_steps == 0 || step == o.max_steps) {
      last_loss = win_loss / double(win_steps);
      json line = train_log_line(step, last_loss, lr, last_grad_norm,
                                 win_train_s > 0 ? double(win_tokens) / win_train_s : 0.0, elapsed());
      if (electra) {
        line["mlm_loss"] = win_mlm / double(win_steps);
        line["disc_loss"] = win_disc / double(win_steps);
      }
      if (parallel) {  // seconds per step summing the gradients, and waiting for the other ranks first
        const GradientTraffic now = gradient_traffic();
        const double calls = double(std::max<int64_t>(1, now.calls - win_traffic.calls));
        line["allreduce_s"] = (now.seconds - win_traffic.seconds) / calls;
        line["allreduce_wait_s"] = (now.wait_seconds - win_traffic.wait_seconds) / calls;
        win_traffic = now;
      }
      if (root) log->write(line);
      win_loss = 0.0;
      win_mlm = 0.0;
      win_disc = 0.0;
      win_steps = 0;
      win_tokens = 0;
      win_train_s = 0.0;
    }
    if (root && ((o.eval_steps > 0 && step % o.eval_steps == 0) || step == o.max_steps)) run_eval();
    interrupted = reduced[1] > 0 && step < o.max_steps;
    if (root && ((o.save_steps > 0 && step % o.save_steps == 0) || step == o.max_steps || interrupted)) save_all();
    if (interrupted) break;
  }
  if (progress && !interrupted) progress->finish();

  PretrainResult r;
  r.steps = step;
  r.last_loss = last_loss;
  r.eval_loss = last_eval;
  r.tokens_per_s = run_train_s > 0 ? double(run_tokens) / run_train_s : 0.0;
  r.interrupted = interrupted;
  if (!root) return r;
  if (interrupted) {
    std::cerr << "minibridge: interrupted at step " << step << "; checkpoint saved in " << ck_dir
              << " (continue with --resume)\n";
  } else {
    json done = {{"event", "done"},
                 {"steps", step},
                 {"steps_this_run", step - first_step},
                 {"final_loss", last_loss},
                 {"eval_mlm_loss", last_eval},
                 {"tokens_per_s", r.tokens_per_s},
                 {"elapsed_s", elapsed()}};
    if (parallel) {
      const GradientTraffic t = gradient_traffic();
      done["ranks"] = dist::size();
      done["allreduce_s_per_step"] = t.calls ? t.seconds / double(t.calls) : 0.0;
      done["allreduce_wait_s_per_step"] = t.calls ? t.wait_seconds / double(t.calls) : 0.0;
      done["gradient_bytes_per_step"] = t.calls ? t.bytes / t.calls : 0;
    }
    log->write(done);
  }
  return r;
}

}  // namespace mb
