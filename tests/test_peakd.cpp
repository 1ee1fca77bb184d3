// Pea-KD: PTP labels from hand-made teacher outputs, the SPS student built from a teacher, the
// PKD layer pairs, the patience loss with precomputed teacher outputs, and the whole comparison
// (library and CLI) on a tiny teacher; PTP labels, the SPS + PKD loss with its gradients and a KD
// stage's AdamW updates against the PyTorch oracle (tests/reference/make_kd_fixtures.py).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "compress/distill.h"
#include "compress/peakd.h"
#include "io/data_dir.h"
#include "io/safetensors.h"
#include "models/counting.h"
#include "models/finetune.h"
#include "models/shipped_configs.h"
#include "tests/kd_oracle_util.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

mb::BertConfig small_config(int layers) {
  const nlohmann::json j = {{"vocab_size", 64}, {"hidden_size", 16}, {"num_hidden_layers", layers},
                            {"num_attention_heads", 2}, {"intermediate_size", 24}, {"max_position_embeddings", 16}};
  return mb::bert_config_from_json(j, "small config");
}

// A random 4-layer SST-2 "teacher" directory over the real vocabulary (so the data tokenizes).
std::string tiny_teacher(const std::string& name) {
  mb::BertConfig c = mb::bert_config_from_json(json::parse(mb::shipped_configs().at("tiny")), "tiny");
  c.hidden_size = 32;
  c.num_attention_heads = 4;
  c.intermediate_size = 64;
  c.num_hidden_layers = 4;
  c.max_position_embeddings = 128;
  c.raw["hidden_size"] = 32;
  c.id2label = {"0", "1"};
  c.raw["finetuning_task"] = "SST-2";
  const std::string dir = mbtest::scratch_dir(name) + "/teacher";
  mb::BertModel::init_random(c, 3).save(dir, mb::DType::F32, mb::default_vocab_dir());
  return dir;
}

// The "eval" lines of a train_log.jsonl.
std::vector<json> eval_lines(const std::string& path) {
  std::vector<json> out;
  for (const json& j : mbtest::json_lines(mbtest::read_file(path)))
    if (j.contains("eval")) out.push_back(j);
  return out;
}

}  // namespace

TEST_CASE("PTP labels follow the definition on hand-made teacher outputs") {
  // Two classes, logits (2, 0): the teacher predicts class 0 with confidence 1/(1 + e⁻²) = 0.8808.
  const float z[2] = {2.0f, 0.0f};
  const mb::PtpThresholds loose{0.80, 0.80}, strict{0.95, 0.90};
  CHECK(mb::ptp_label(z, 2, 0, loose) == 0);   // correct, confident (0.88 > 0.80)
  CHECK(mb::ptp_label(z, 2, 0, strict) == 1);  // correct, not confident enough (0.88 ≤ 0.95)
  CHECK(mb::ptp_label(z, 2, 1, loose) == 2);   // wrong, confident (0.88 > 0.80)
  CHECK(mb::ptp_label(z, 2, 1, strict) == 3);  // wrong, unsure (0.88 ≤ 0.90)

  // Three classes: softmax of (0, 1, 3) = (0.042, 0.114, 0.844); the prediction is class 2.
  const float z3[3] = {0.0f, 1.0f, 3.0f};
  CHECK(mb::ptp_label(z3, 3, 2, {0.84, 0.5}) == 0);
  CHECK(mb::ptp_label(z3, 3, 2, {0.85, 0.5}) == 1);
  CHECK(mb::ptp_label(z3, 3, 0, {0.5, 0.84}) == 2);
  CHECK(mb::ptp_label(z3, 3, 1, {0.5, 0.85}) == 3);

  // A batch of rows, and the paper's thresholds.
  const mb::Tensor logits = mb::Tensor::from_vector({2, 0, 0, 2, 0.1f, 0}, {3, 2});
  const mb::PtpThresholds rte = mb::ptp_thresholds("RTE");
  CHECK(rte.t1 == 0.80);
  CHECK(rte.t2 == 0.60);
  // Row 3: (0.1, 0) gives 0.525 for class 0: correct and unsure for gold 0.
  CHECK(mb::ptp_labels(logits, {0, 0, 0}, rte) == std::vector<int32_t>{0, 2, 1});
  CHECK(mb::ptp_thresholds("SST-2").t1 == 0.98);
  CHECK(mb::ptp_thresholds("CoLA").t2 == 0.70);
  const std::string err = mbtest::error_of([] { mb::ptp_thresholds("STS-B"); });
  CHECK_MESSAGE(err.find("--t1") != std::string::npos, err);
  CHECK(!mbtest::error_of([&] { mb::ptp_label(z, 2, 2, loose); }).empty());  // gold outside the classes
}

TEST_CASE("an SPS student is the teacher's first layers, copied, run twice with query and key swapped") {
  mb::BertConfig tc = small_config(6);
  tc.id2label = {"a", "b"};
  const mb::BertModel teacher = mb::BertModel::init_random(tc, 5);

  const mb::BertModel student = mb::make_sps_student(teacher, 3, true, 0);
  REQUIRE(student.layers.size() == 6);
  for (int l = 0; l < 3; ++l) {
    CAPTURE(l);
    CHECK(student.layers[size_t(l)].kind == mb::LayerKind::Encoder);
    const mb::BertLayer& s = student.layers[size_t(3 + l)];
    CHECK(s.kind == mb::LayerKind::Shared);
    CHECK(s.shared_source == l);
    CHECK(s.swap_qk);
    CHECK(s.q_w.same(student.layers[size_t(l)].q_w));
    // Copies of the teacher's values, not the teacher's tensors.
    const mb::Tensor& a = student.layers[size_t(l)].ffn_in_w.value();
    const mb::Tensor& b = teacher.layers[size_t(l)].ffn_in_w.value();
    CHECK(!student.layers[size_t(l)].ffn_in_w.same(teacher.layers[size_t(l)].ffn_in_w));
    CHECK(std::equal(a.f32(), a.f32() + a.numel(), b.f32()));
  }
  CHECK(student.has_classifier());
  CHECK(std::equal(student.word_emb.data(), student.word_emb.data() + student.word_emb.numel(), teacher.word_emb.data()));

  // Parameters of a plain 3-layer student, FLOPs of 6 layers.
  const mb::BertModel plain = mb::make_sps_student(teacher, 3, false, 0);
  REQUIRE(plain.layers.size() == 3);
  const mb::ModelCounts cs = mb::count_model(student, 16), cp = mb::count_model(plain, 16);
  CHECK(cs.total_params() == cp.total_params());
  CHECK(cs.flops() == doctest::Approx(2.0 * cp.flops()).epsilon(1e-12));

  // The 6-layer variant: L1 … L6, L4*, L5*, L6*.
  const mb::BertModel six = mb::make_sps_student(teacher, 6, true, 3);
  REQUIRE(six.layers.size() == 9);
  CHECK(six.layers[6].shared_source == 3);
  CHECK(six.layers[8].shared_source == 5);

  // Training the student leaves the teacher alone.
  const float before = teacher.layers[0].q_w.data()[0];
  student.layers[0].q_w.mutable_data()[0] += 1.0f;
  CHECK(teacher.layers[0].q_w.data()[0] == before);
  CHECK(student.layers[3].q_w.data()[0] == student.layers[0].q_w.data()[0]);

  CHECK(!mbtest::error_of([&] { mb::make_sps_student(teacher, 7, true, 0); }).empty());
  CHECK(!mbtest::error_of([&] { mb::make_sps_student(teacher, 3, true, 3); }).empty());
}

TEST_CASE("PKD pairs: student layer i learns from teacher layer i*L/M") {
  using P = std::vector<std::pair<int, int>>;
  auto pairs = [](int m, int l) {
    P out;
    for (const mb::HiddenPair& p : mb::pkd_pairs(m, l)) out.emplace_back(p.student, p.teacher);
    return out;
  };
  CHECK(pairs(6, 12) == P{{1, 2}, {2, 4}, {3, 6}, {4, 8}, {5, 10}});  // SPS, N = 3: the paper's 2,4,6,8,10
  CHECK(pairs(3, 12) == P{{1, 4}, {2, 8}});                           // plain 3 layers (PKD-skip)
  CHECK(pairs(9, 12) == P{{1, 1}, {2, 3}, {3, 4}, {4, 5}, {5, 7}, {6, 8}, {7, 9}, {8, 11}});
  CHECK(pairs(4, 4) == P{{1, 1}, {2, 2}, {3, 3}});
  CHECK(pairs(1, 12).empty());
  CHECK(mb::default_first_shared(3) == 0);
  CHECK(mb::default_first_shared(6) == 3);
  CHECK(mb::peakd_student(true, true).name == "sps_ptp");
  CHECK(mb::peakd_student(false, false).name == "kd");
}

TEST_CASE("the patience loss trains the same from precomputed teacher outputs as from the live teacher") {
  const std::string glue = mbtest::small_glue("peakd_cache_glue", 24, 8);
  const std::string tdir = tiny_teacher("peakd_cache");
  const mb::BertModel teacher = mb::BertModel::load(tdir);
  const mb::DistillData data = mb::load_distill_data(glue, "SST-2", tdir, 64, 0, 1);
  mb::DistillOptions o;
  o.train.batch_size = 8;
  o.train.log_steps = 1;
  o.train.lr = 1e-3;
  o.temperature = 10;
  o.beta = 100;
  o.hidden_loss = mb::HiddenLoss::ClsNormalized;
  o.hidden_pairs = mb::pkd_pairs(4, 4);
  o.progress = false;
  std::vector<int> layers;
  for (const mb::HiddenPair& p : o.hidden_pairs) layers.push_back(p.teacher);
  const mb::TeacherOutputs targets = mb::teacher_outputs(teacher, data.train, layers, 5);
  REQUIRE(targets.logits.dim(0) == 24);
  REQUIRE(targets.cls.at(2).dim(1) == 32);

  // The precomputed [CLS] rows are the teacher's own, batch by batch (batch size 5 vs one at a time).
  {
    mb::Batch b;
    b.add(data.train[7].input_ids, data.train[7].token_type_ids);
    std::vector<mb::Var> all;
    const mb::Var h = teacher.hidden_states(b, {}, &all);
    const mb::Tensor z = teacher.classify(teacher.pool(b, h.value()));
    for (int c = 0; c < 2; ++c) CHECK(targets.logits.f32()[7 * 2 + c] == doctest::Approx(z.f32()[c]).epsilon(1e-5));
    for (int k = 0; k < 32; ++k) CHECK(targets.cls.at(3).f32()[7 * 32 + k] == doctest::Approx(all[3].data()[k]).epsilon(1e-5));
  }

  const std::string root = mbtest::scratch_dir("peakd_cache");
  mb::BertModel live = mb::make_sps_student(teacher, 2, true, 0), cached = mb::make_sps_student(teacher, 2, true, 0);
  mb::distill(live, &teacher, data, o, root + "/live");
  mb::distill(cached, nullptr, data, o, root + "/cached", &targets);
  std::vector<json> a, b;
  for (const json& j : mbtest::json_lines(mbtest::read_file(root + "/live/train_log.jsonl")))
    if (j.contains("loss")) a.push_back(j);
  for (const json& j : mbtest::json_lines(mbtest::read_file(root + "/cached/train_log.jsonl")))
    if (j.contains("loss")) b.push_back(j);
  REQUIRE(a.size() == 3);
  REQUIRE(b.size() == 3);
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(i);
    CHECK(a[i]["hidden_mse"].get<double>() > 0);
    CHECK(b[i]["hidden_mse"].get<double>() == doctest::Approx(a[i]["hidden_mse"].get<double>()).epsilon(1e-4));
    CHECK(b[i]["loss"].get<double>() == doctest::Approx(a[i]["loss"].get<double>()).epsilon(1e-4));
  }
  // The patience term is bounded: normalised vectors differ by at most 2 per element pair.
  CHECK(a[0]["hidden_mse"].get<double>() < 4.0 / 32 * 32);

  // Precomputed outputs must cover the training set and every pair's layer.
  o.hidden_pairs = {{1, 4}};
  CHECK(!mbtest::error_of([&] { mb::distill(cached, nullptr, data, o, root + "/bad", &targets); }).empty());
}

TEST_CASE("run_peakd: plain KD, SPS and SPS + PTP students, results.json, resume") {
  const std::string glue = mbtest::small_glue("peakd_run_glue", 48, 16);
  const std::string tdir = tiny_teacher("peakd_run");
  const std::string out = mbtest::scratch_dir("peakd_run_out") + "/out";
  mb::PeakdOptions o;
  o.teacher_dir = tdir;
  o.task = "SST-2";
  o.data_dir = glue;
  o.out_dir = out;
  o.student_layers = 2;
  o.epochs = 2;
  o.ptp_epochs = 2;
  o.ptp_evals_per_epoch = 3;
  o.t1 = 0.6;  // the random teacher's confidence is near 0.5: thresholds that split it
  o.t2 = 0.5;
  o.train.batch_size = 8;
  o.train.lr = 1e-3;
  o.max_len = 64;
  o.progress = false;
  const json r = mb::run_peakd(o);
  CHECK(r == json::parse(mbtest::read_file(out + "/results.json")));
  for (const char* name : {"kd", "sps", "sps_ptp"}) {
    CAPTURE(name);
    REQUIRE(r["students"].contains(name));
    const json& s = r["students"][name];
    for (const char* key : {"params", "flops_seq128", "metric", "seconds"}) CHECK(s.contains(key));
    // The saved student is the kept one: reloaded, it scores the recorded metric.
    const mb::BertModel m = mb::BertModel::load(out + "/" + name);
    const mb::DistillData d = mb::load_distill_data(glue, "SST-2", tdir, 64, 0, 1);
    const auto metrics = mb::evaluate_glue(m, d.tokenizer, d.task, d.dev, 64, 16);
    CHECK(metrics.at("accuracy") == doctest::Approx(s["metric"].get<double>()));
    CHECK(m.layers.size() == (std::string(name) == "kd" ? 2u : 4u));
    CHECK(m.config.num_labels() == 2);
  }
  const json &kd = r["students"]["kd"], &sps = r["students"]["sps"], &ptp = r["students"]["sps_ptp"];
  CHECK(r["teacher"]["layers_run"] == 4);
  CHECK(kd["params"] == sps["params"]);
  CHECK(sps["flops_seq128"].get<double>() == doctest::Approx(2 * kd["flops_seq128"].get<double>()));
  CHECK(sps["flops_seq128"] == r["teacher"]["flops_seq128"]);  // 4 layers run, like the teacher
  CHECK(kd["patience_pairs"] == json::parse("[[1, 2]]"));
  CHECK(sps["patience_pairs"] == json::parse("[[1, 1], [2, 2], [3, 3]]"));
  CHECK(!kd.contains("ptp_stage"));

  // PTP: labels over every training example, and the kept checkpoint is the lowest dev PTP loss of
  // the 2 × 3 evaluations.
  const json& st = ptp["ptp_stage"];
  int64_t n = 0;
  for (const json& c : st["train_label_counts"]) n += c.get<int64_t>();
  CHECK(n == 48);
  const std::vector<json> evals = eval_lines(out + "/sps_ptp/ptp/train_log.jsonl");
  REQUIRE(evals.size() == 6);
  double lowest = std::numeric_limits<double>::infinity();
  for (const json& e : evals) lowest = std::min(lowest, e["eval"]["ptp_loss"].get<double>());
  CHECK(st["best"]["ptp_loss"].get<double>() == lowest);
  const mb::BertModel ptp_model = mb::BertModel::load(out + "/sps_ptp/ptp");
  CHECK(ptp_model.config.num_labels() == 4);
  // The KD stage starts from the PTP body: with the same seed, data order and classifier, its first
  // loss differs from the plain SPS student's only because the body does.
  auto first_loss = [&](const std::string& name) {
    for (const json& j : mbtest::json_lines(mbtest::read_file(out + "/" + name + "/train_log.jsonl")))
      if (j.contains("loss")) return j["loss"].get<double>();
    return 0.0;
  };
  CHECK(first_loss("sps_ptp") != first_loss("sps"));
  CHECK(first_loss("sps") != 0.0);

  // A rerun with the same options redoes nothing; other options are refused.
  const std::string before = mbtest::read_file(out + "/sps/student.json");
  const json again = mb::run_peakd(o);
  CHECK(again["students"] == r["students"]);
  CHECK(mbtest::read_file(out + "/sps/student.json") == before);
  o.beta = 1;
  const std::string err = mbtest::error_of([&] { mb::run_peakd(o); });
  CHECK_MESSAGE(err.find("other options") != std::string::npos, err);
}

TEST_CASE("compress peakd runs one student through the CLI; bad input is one error") {
  const std::string glue = mbtest::small_glue("peakd_cli_glue", 32, 12);
  const std::string tdir = tiny_teacher("peakd_cli");
  const std::string root = mbtest::scratch_dir("peakd_cli_out");
  const std::string base = "compress peakd --teacher " + tdir + " --task SST-2 --data " + glue +
                           " --student-layers 2 --epochs 1 --ptp-epochs 1 --batch-size 8 --max-len 64 --threads 1 --no-progress";
  mbtest::CliRun r = mbtest::run_cli(base + " --out " + root + "/sps --sps on --ptp off");
  REQUIRE_MESSAGE(r.status == 0, r.err);
  const json j = json::parse(r.out);
  CHECK(j["students"].size() == 1);
  CHECK(j["students"].contains("sps"));
  CHECK(fs::exists(root + "/sps/sps/model.safetensors"));
  const mbtest::CliRun info = mbtest::run_cli("info --model " + root + "/sps/sps");
  REQUIRE_MESSAGE(info.status == 0, info.err);
  CHECK(info.out.find("layer 0's tensors, query/key swapped") != std::string::npos);
  CHECK(info.out.find("layers differ from these sizes") != std::string::npos);
  CHECK(mbtest::run_cli("info --model " + tdir).out.find("layers differ") == std::string::npos);
  const mbtest::CliRun ev = mbtest::run_cli("eval --model " + root + "/sps/sps --task SST-2 --data " + glue);
  REQUIRE_MESSAGE(ev.status == 0, ev.err);
  CHECK(json::parse(ev.out)["accuracy"].get<double>() == doctest::Approx(j["students"]["sps"]["metric"].get<double>()));

  // PTP on a task the paper gives no thresholds for, without --t1/--t2: one error, exit 1.
  r = mbtest::run_cli("compress peakd --teacher " + tdir + " --task CoLA --data " + glue + " --out " + root + "/bad");
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("SST-2") != std::string::npos, r.err);  // the teacher was tuned on SST-2
  r = mbtest::run_cli("compress peakd --teacher " + root + "/missing --task SST-2 --data " + glue + " --out " + root + "/bad2");
  CHECK(r.status == 1);
  CHECK_MESSAGE(r.err.find("missing") != std::string::npos, r.err);
}

TEST_CASE("compress peakd: a run killed in the KD stage resumes there; the finished PTP stage is kept") {
  const std::string glue = mbtest::small_glue("peakd_kill_glue", 120, 12);
  const std::string tdir = tiny_teacher("peakd_kill");
  const std::string root = mbtest::scratch_dir("peakd_kill_out");
  const std::string common = "compress peakd --teacher " + tdir + " --task SST-2 --data " + glue +
                             " --student-layers 2 --epochs 2 --ptp-epochs 1 --batch-size 8 --max-len 64 --save-steps 4"
                             " --log-steps 1 --sps on --ptp on --threads 1 --no-progress";
  const mbtest::CliRun full = mbtest::run_cli(common + " --out " + root + "/full");
  REQUIRE_MESSAGE(full.status == 0, full.err);

  const std::string cut = root + "/cut";
  REQUIRE(mbtest::run_cli_killed_at(common + " --out " + cut, cut + "/sps_ptp/checkpoint/state.json"));
  CHECK(fs::exists(cut + "/sps_ptp/ptp/distill.json"));
  CHECK_FALSE(fs::exists(cut + "/sps_ptp/student.json"));
  const mbtest::CliRun again = mbtest::run_cli(common + " --out " + cut);
  REQUIRE_MESSAGE(again.status == 0, again.err);
  CHECK_MESSAGE(again.err.find(cut + "/sps_ptp/ptp: distillation complete, not redone") != std::string::npos, again.err);
  CHECK_MESSAGE(again.err.find("resuming " + cut + "/sps_ptp at update ") != std::string::npos, again.err);
  CHECK(mbtest::read_file(cut + "/sps_ptp/model.safetensors") == mbtest::read_file(root + "/full/sps_ptp/model.safetensors"));
  const json a = json::parse(full.out)["students"]["sps_ptp"], b = json::parse(again.out)["students"]["sps_ptp"];
  CHECK(a["metrics"] == b["metrics"]);
  CHECK(a["ptp_stage"]["best"] == b["ptp_stage"]["best"]);
}

// ---- Against the PyTorch oracle (tests/reference/make_kd_fixtures.py, written from the paper and
// the authors' code semantics; docs/METHODS.md §3).

TEST_CASE("PTP labels are the oracle's (the authors' rule) for every task's thresholds") {
  const mb::SafeTensorsFile f = mb::read_safetensors(mbtest::fixtures_dir() + "/kd/peakd/ptp.safetensors");
  const std::vector<int32_t> gold2 = mbtest::fixture_ints(f, "gold2");
  for (const char* task : {"RTE", "MRPC", "SST-2", "QNLI", "CoLA"}) {
    const std::string task_ = task;
    CAPTURE(task_);
    const std::vector<int32_t> want = mbtest::fixture_ints(f, std::string("labels2.") + task);
    CHECK(mb::ptp_labels(f.tensors.at("logits2"), gold2, mb::ptp_thresholds(task)) == want);
  }
  // Three classes, thresholds of one's own.
  CHECK(mb::ptp_labels(f.tensors.at("logits3"), mbtest::fixture_ints(f, "gold3"), {0.6, 0.5}) ==
        mbtest::fixture_ints(f, "labels3"));
}

namespace {

struct PeakdFixture {
  std::string root = mbtest::fixtures_dir() + "/kd/peakd";
  mb::BertModel teacher = mb::BertModel::load(root + "/teacher");
  mb::SafeTensorsFile batch_file = mb::read_safetensors(root + "/batch.safetensors");
  mb::Batch batch = mbtest::fixture_batch(batch_file);
  std::vector<int32_t> labels = mbtest::fixture_ints(batch_file, "labels");
  std::vector<mb::HiddenPair> pairs = mb::pkd_pairs(6, 12);
};

}  // namespace

TEST_CASE("the PKD loss of an SPS student and its gradients match PyTorch") {
  const PeakdFixture fx;
  const mb::SafeTensorsFile want = mb::read_safetensors(fx.root + "/pkd.safetensors");
  REQUIRE(fx.pairs.size() == 5);
  // The teacher's outputs, precomputed as run_peakd does.
  std::vector<int> layers;
  for (const mb::HiddenPair& p : fx.pairs) layers.push_back(p.teacher);
  const mb::DistillData data = kdtest::fixture_data(fx.batch, fx.labels);
  const mb::TeacherOutputs t = mb::teacher_outputs(fx.teacher, data.train, layers, 4);
  double worst_forward = kdtest::rel_error(t.logits.f32(), want.tensors.at("teacher_logits").f32(), t.logits.numel());
  std::vector<mb::Tensor> t_cls;
  for (const mb::HiddenPair& p : fx.pairs) {
    CHECK(p.teacher == 2 * p.student);  // the authors' fc_layer_idx 1,3,5,7,9 (hidden states 2..10)
    const mb::Tensor& c = t.cls.at(p.teacher);
    worst_forward = std::max(worst_forward, kdtest::rel_error(c.f32(), want.tensors.at("teacher_cls." + std::to_string(p.teacher)).f32(), c.numel()));
    t_cls.push_back(c);
  }

  const mb::BertModel student = mb::make_sps_student(fx.teacher, 3, true, 0);
  REQUIRE(student.layers.size() == 6);
  student.set_requires_grad(true);
  const kdtest::KdLoss l = kdtest::kd_loss(student, fx.batch, fx.labels, t.logits, t_cls, fx.pairs, true, 0.7, 10.0, 100.0);
  // The SPS forward: every run layer's [CLS] row and the logits.
  for (int i = 1; i <= 6; ++i) {
    const mb::Tensor rows = mb::gather_rows(l.student_hidden[size_t(i)], kdtest::cls_rows(fx.batch)).value();
    worst_forward = std::max(worst_forward, kdtest::rel_error(rows.f32(), want.tensors.at("cls." + std::to_string(i)).f32(), rows.numel()));
  }
  worst_forward = std::max(worst_forward, kdtest::rel_error(l.logits.data(), want.tensors.at("logits").f32(), l.logits.numel()));
  MESSAGE("PKD: worst forward rel. error " << worst_forward);
  CHECK(worst_forward < 1e-5);
  const double values[4] = {l.loss.data()[0], l.ce, l.kd, l.hidden};
  const char* names[4] = {"loss", "ce", "kd", "pt"};
  for (int i = 0; i < 4; ++i) {
    const std::string name_ = names[i];
    CAPTURE(name_);
    CHECK(kdtest::rel(values[i], want.tensors.at(names[i]).f32()[0]) < 1e-5);
  }
  // The authors' distillation_loss averages the KL over batch × classes (nn.KLDivLoss(reduction=
  // 'mean')); the engine, like METHODS.md's KL(teacher ‖ student), over the batch: C times more.
  CHECK(kdtest::rel(l.kd, 2.0 * want.tensors.at("kd_authors").f32()[0]) < 1e-5);

  mb::backward(l.loss);
  double worst = 0;
  int checked = 0;
  for (const auto& [name, v] : student.named_parameters()) {
    const auto& name_ = name;
    CAPTURE(name_);
    REQUIRE(want.tensors.count("grad." + name));
    const mb::Tensor& g = want.tensors.at("grad." + name);
    REQUIRE(v.has_grad());
    const double e = kdtest::rel_error(v.grad().f32(), g.f32(), g.numel());
    CHECK(e < 1e-4);
    worst = std::max(worst, e);
    ++checked;
  }
  MESSAGE("PKD: " << checked << " gradients, worst rel. error " << worst);
  CHECK(checked == 5 + 3 * 16 + 4);  // embeddings, 3 unique layers, pooler and classifier
}

TEST_CASE("a Pea-KD KD stage (4 AdamW updates of the PKD loss) matches PyTorch") {
  const PeakdFixture fx;
  const mb::SafeTensorsFile want = mb::read_safetensors(fx.root + "/steps.safetensors");
  const json meta = json::parse(mbtest::read_file(fx.root + "/steps.json"));
  const mb::DistillData data = kdtest::fixture_data(fx.batch, fx.labels);
  std::vector<int> layers;
  for (const mb::HiddenPair& p : fx.pairs) layers.push_back(p.teacher);
  const mb::TeacherOutputs targets = mb::teacher_outputs(fx.teacher, data.train, layers, 64);

  mb::BertModel student = mb::make_sps_student(fx.teacher, 3, true, 0);
  std::map<std::string, mb::Tensor> initial;
  for (const auto& [name, v] : student.named_parameters()) initial[name] = v.value().clone();
  mb::DistillOptions o;
  o.alpha = meta["alpha"];
  o.temperature = meta["temperature"];
  o.beta = meta["beta"];
  o.hidden_loss = mb::HiddenLoss::ClsNormalized;
  o.hidden_pairs = fx.pairs;
  o.train.lr = meta["lr"];
  o.train.warmup_steps = meta["warmup_steps"];
  o.train.weight_decay = meta["weight_decay"];
  o.train.max_grad_norm = meta["max_grad_norm"];
  const int updates = meta["updates"];
  const kdtest::KdRun run =
      kdtest::run_distill(student, nullptr, data, o, updates, mbtest::scratch_dir("peakd_oracle_steps") + "/kd", &targets);
  REQUIRE(run.log.size() == size_t(updates));
  REQUIRE(run.weights.size() == size_t(updates));
  double worst_value = 0, worst_weight = 0, worst_change = 0;
  for (int k = 0; k < updates; ++k) {
    CAPTURE(k);
    const json& w = meta["log"][size_t(k)];
    worst_value = std::max(worst_value, kdtest::check_logged_update(run.log[size_t(k)], w));
    CHECK(run.log[size_t(k)]["lr"].get<double>() == doctest::Approx(w["lr"].get<double>()).epsilon(1e-6));
    for (const auto& [name, t] : run.weights[size_t(k)]) {
      const auto& name_ = name;
      CAPTURE(name_);
      const mb::Tensor& o_t = want.tensors.at("param." + std::to_string(k) + "." + name);
      worst_weight = std::max(worst_weight, kdtest::rel_error(t.f32(), o_t.f32(), t.numel()));
      // The change made by the updates so far, against the oracle's.
      const mb::Tensor& t0 = initial.at(name);
      if (std::equal(o_t.f32(), o_t.f32() + o_t.numel(), t0.f32())) {  // update 1 runs at lr 0 (warm-up): nothing moves
        for (int64_t i = 0; i < t.numel(); ++i) REQUIRE(t.f32()[i] == t0.f32()[i]);
        continue;
      }
      const double e = kdtest::change_error(t, o_t, t0);
      CHECK(e < 1e-3);
      worst_change = std::max(worst_change, e);
    }
  }
  MESSAGE("Pea-KD KD stage: worst rel. error of logged values " << worst_value << ", of weights " << worst_weight
                                                                << ", of weight changes " << worst_change);
  CHECK(worst_weight < 1e-5);
}
