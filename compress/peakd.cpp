#include "compress/peakd.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "compress/distill.h"
#include "engine/distributed.h"
#include "engine/error.h"
#include "engine/functional.h"
#include "io/atomic_file.h"
#include "io/config.h"
#include "models/counting.h"
#include "models/finetune.h"
#include "models/layer_structure.h"

namespace mb {

PtpThresholds ptp_thresholds(const std::string& task) {
  static const std::map<std::string, PtpThresholds> paper = {
      {"RTE", {0.80, 0.60}}, {"MRPC", {0.95, 0.75}}, {"SST-2", {0.98, 0.80}}, {"QNLI", {0.98, 0.70}}, {"CoLA", {0.95, 0.70}}};
  auto it = paper.find(task);
  MB_CHECK(it != paper.end(), "Pea-KD: the paper gives no PTP thresholds for " + task +
                                  " (it does for RTE, MRPC, SST-2, QNLI, CoLA); pass --t1 and --t2");
  return it->second;
}

int32_t ptp_label(const float* z, int64_t C, int32_t gold, const PtpThresholds& t) {
  MB_CHECK(C >= 2, "PTP labels need a classifier with at least 2 classes");
  MB_CHECK(gold >= 0 && gold < C, "PTP: gold label " + std::to_string(gold) + " is outside the " +
                                      std::to_string(C) + " classes");
  // Softmax at T = 1: the confidence is the largest probability, 1 / Σ exp(z_c − z_max).
  const int64_t pred = std::max_element(z, z + C) - z;
  double sum = 0;
  for (int64_t c = 0; c < C; ++c) sum += std::exp(double(z[c]) - double(z[pred]));
  const double confidence = 1.0 / sum;
  if (pred == gold) return confidence > t.t1 ? 0 : 1;
  return confidence > t.t2 ? 2 : 3;
}

std::vector<int32_t> ptp_labels(const Tensor& logits, const std::vector<int32_t>& gold, const PtpThresholds& t) {
  MB_CHECK(logits.dim(0) == int64_t(gold.size()), "PTP: " + std::to_string(logits.dim(0)) + " teacher outputs for " +
                                                      std::to_string(gold.size()) + " labels");
  const int64_t C = logits.dim(1);
  std::vector<int32_t> out(gold.size());
  for (size_t i = 0; i < gold.size(); ++i) out[i] = ptp_label(logits.f32() + int64_t(i) * C, C, gold[i], t);
  return out;
}

BertModel make_sps_student(const BertModel& teacher, int unique, bool sps, int first_shared) {
  MB_CHECK(unique >= 1 && unique <= int(teacher.layers.size()),
           "Pea-KD: the student's " + std::to_string(unique) + " layers must come from the teacher's " +
               std::to_string(teacher.layers.size()));
  MB_CHECK(!sps || (first_shared >= 0 && first_shared < unique),
           "Pea-KD: shared layers must start at one of the student's layers (0.." + std::to_string(unique - 1) + ")");
  std::vector<LayerStructure> layers;
  for (int l = 0; l < unique; ++l) {
    MB_CHECK(teacher.layers[size_t(l)].kind == LayerKind::Encoder,
             "Pea-KD: teacher layer " + std::to_string(l) + " is not a plain encoder layer");
    layers.push_back(teacher.layers[size_t(l)].structure());
  }
  if (sps)
    for (int l = first_shared; l < unique; ++l) layers.push_back(LayerStructure::shared(l, true));

  // The teacher's tensors the student keeps (copied), under the student's own structure.
  std::map<std::string, Tensor> tensors;
  const std::string limit = "encoder.layer.";
  for (const auto& [name, t] : teacher.named_tensors()) {
    const size_t at = name.find(limit);
    if (at != std::string::npos) {
      const int layer = std::stoi(name.substr(at + limit.size()));
      if (layer >= unique) continue;
    }
    tensors[name] = t.clone();
  }
  BertConfig c = teacher.config;
  write_layer_structure(c, layers);
  return BertModel::from_tensors(c, tensors, "Pea-KD student");
}

int default_first_shared(int unique) { return unique == 6 ? 3 : 0; }

std::vector<HiddenPair> pkd_pairs(int student_layers, int teacher_layers) {
  MB_CHECK(student_layers >= 1 && teacher_layers >= 1, "Pea-KD: layer counts must be positive");
  std::vector<HiddenPair> pairs;
  for (int i = 1; i < student_layers; ++i)
    pairs.push_back({i, int(std::lround(double(i) * teacher_layers / student_layers))});
  return pairs;
}

PeakdStudent peakd_student(bool sps, bool ptp) {
  return {sps ? (ptp ? "sps_ptp" : "sps") : (ptp ? "ptp" : "kd"), sps, ptp};
}

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// The 4-way PTP task: the GLUE task's inputs with teacher-derived labels.
GlueTask ptp_task(const GlueTask& task) {
  GlueTask t = task;
  t.name = task.name + "-PTP";
  t.regression = false;
  t.labels = {"correct_confident", "correct_unsure", "wrong_confident", "wrong_unsure"};
  t.main_metric = "ptp_loss";
  return t;
}

// Mean cross-entropy and accuracy of the model's logits on labelled examples (eval mode; the
// logits come from teacher_outputs, which batches any classifier's forward passes).
std::map<std::string, double> loss_and_accuracy(const BertModel& m, const std::vector<Encoding>& examples,
                                                const std::vector<int32_t>& labels, int batch_size) {
  NoGrad no_grad;
  const Tensor z = teacher_outputs(m, examples, {}, batch_size).logits;
  const double loss = cross_entropy(Var(z, false), labels).data()[0];
  const int64_t n = z.dim(0), C = z.dim(1);
  int64_t correct = 0;
  for (int64_t r = 0; r < n; ++r) {
    const float* row = z.f32() + r * C;
    correct += (std::max_element(row, row + C) - row) == labels[size_t(r)];
  }
  return {{"ptp_loss", loss}, {"ptp_accuracy", double(correct) / double(n)}};
}

json label_counts(const std::vector<int32_t>& labels) {
  std::vector<int64_t> c(4, 0);
  for (int32_t l : labels) ++c[size_t(l)];
  return c;
}

json model_line(const BertModel& m) {
  const ModelCounts c = count_model(m, 128);
  int64_t unique = 0;
  for (const BertLayer& L : m.layers) unique += L.kind != LayerKind::Shared;
  return {{"params", c.total_params()}, {"flops_seq128", c.flops()}, {"layers_run", m.layers.size()},
          {"unique_layers", unique}};
}

json options_json(const PeakdOptions& o, const PtpThresholds& t, int first_shared) {
  json students = json::array();
  for (const PeakdStudent& s : o.students) students.push_back(s.name);
  json j = {{"teacher", fs::absolute(o.teacher_dir).lexically_normal().string()},
          {"task", glue_task(o.task).name},
          {"student_layers", o.student_layers},
          {"first_shared", first_shared},
          {"students", students},
          {"t1", t.t1},
          {"t2", t.t2},
          {"alpha", o.alpha},
          {"temperature", o.temperature},
          {"beta", o.beta},
          {"epochs", o.epochs},
          {"ptp_epochs", o.ptp_epochs},
          {"ptp_evals_per_epoch", o.ptp_evals_per_epoch},
          {"lr", o.train.lr},
          {"batch_size", o.train.batch_size},
          {"warmup_ratio", o.train.warmup_ratio},
          {"seed", o.train.seed},
          {"max_len", o.max_len},
          {"max_train_examples", o.max_train_examples}};
  if (o.train.bf16) j["bf16"] = true;  // only when on: earlier runs' options.json still match
  return j;
}

}  // namespace

json run_peakd(const PeakdOptions& o) {
  // The teacher's outputs too, not only distill()'s updates.
  const LinearPrecisionScope precision(o.train.bf16 ? Precision::BF16 : Precision::F32);
  const GlueTask& task = glue_task(o.task);
  MB_CHECK(!task.regression, "Pea-KD: PTP labels need a classification task, not " + task.name);
  MB_CHECK(!o.students.empty(), "Pea-KD: no student to train");
  MB_CHECK(o.epochs >= 1 && o.ptp_epochs >= 1, "Pea-KD: --epochs and --ptp-epochs must be >= 1");
  const BertModel teacher = BertModel::load(o.teacher_dir);
  teacher.require_f32_weights(o.teacher_dir, "Pea-KD's teacher");
  check_teacher(teacher, task, o.teacher_dir);
  const int L = int(teacher.layers.size());
  MB_CHECK(o.student_layers >= 1 && o.student_layers <= L,
           "Pea-KD: --student-layers must be in [1, " + std::to_string(L) + "] (the teacher's layers)");
  const int first_shared = o.first_shared >= 0 ? o.first_shared : default_first_shared(o.student_layers);
  PtpThresholds thresholds{o.t1, o.t2};
  const bool any_ptp = std::any_of(o.students.begin(), o.students.end(), [](const PeakdStudent& s) { return s.ptp; });
  if (any_ptp && (o.t1 < 0 || o.t2 < 0)) {
    const PtpThresholds paper = ptp_thresholds(task.name);
    if (o.t1 < 0) thresholds.t1 = paper.t1;
    if (o.t2 < 0) thresholds.t2 = paper.t2;
  }
  const json options = options_json(o, thresholds, first_shared);
  // Under MPI rank 0 alone evaluates and writes; every rank computes its share of the teacher's
  // outputs and trains (distill).
  const bool root = dist::is_root();
  if (root) claim_run_dir(o.out_dir, options);
  dist::barrier();
  const fs::path out = o.out_dir;

  const DistillData data =
      load_distill_data(o.data_dir, task.name, o.teacher_dir, o.max_len, o.max_train_examples, o.train.seed);
  json results = {{"task", task.name}, {"options", options}};
  if (root) {
    json t = model_line(teacher);
    const auto metrics = evaluate_glue(teacher, data.tokenizer, task, data.dev, o.max_len, o.eval_batch_size);
    t["metric"] = metrics.at(task.main_metric);
    t["metrics"] = metrics;
    t["seconds"] = 0.0;  // trained elsewhere (finetune)
    results["teacher"] = t;
  }
  results["students"] = json::object();
  auto write_results = [&] {
    if (root) write_file_atomic((out / "results.json").string(), results.dump(2) + "\n");
  };

  // Every student's patience pairs, and the teacher outputs they need, computed once.
  auto layers_run = [&](const PeakdStudent& s) {
    return o.student_layers + (s.sps ? o.student_layers - first_shared : 0);
  };
  std::vector<const PeakdStudent*> todo;
  std::set<int> cls_layers;
  for (const PeakdStudent& s : o.students) {
    if (fs::exists(out / s.name / "student.json")) {
      results["students"][s.name] = read_json_file((out / s.name / "student.json").string());
      continue;
    }
    todo.push_back(&s);
    for (const HiddenPair& p : pkd_pairs(layers_run(s), L)) cls_layers.insert(p.teacher);
  }
  write_results();
  if (todo.empty()) return results;

  const auto t_start = std::chrono::steady_clock::now();
  const TeacherOutputs targets =
      teacher_outputs(teacher, data.train, std::vector<int>(cls_layers.begin(), cls_layers.end()), o.eval_batch_size);
  const double teacher_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  results["teacher_outputs_seconds"] = teacher_seconds;

  // PTP labels: training examples from the precomputed logits, dev from the teacher run on dev.
  std::vector<int32_t> ptp_train, ptp_dev;
  std::vector<Encoding> dev_enc;
  if (any_ptp) {
    ptp_train = ptp_labels(targets.logits, data.train_labels, thresholds);
    dev_enc = encode_split(data.tokenizer, data.dev, task.pair, o.max_len);
    std::vector<int32_t> dev_gold;
    for (const GlueExample& e : data.dev.examples) dev_gold.push_back(e.label);
    ptp_dev = ptp_labels(teacher_outputs(teacher, dev_enc, {}, o.eval_batch_size).logits, dev_gold, thresholds);
  }

  DistillOptions base;
  base.train = o.train;
  base.max_len = o.max_len;
  base.eval_batch_size = o.eval_batch_size;
  base.progress = o.progress;
  base.tokenizer_dir = o.teacher_dir;

  for (const PeakdStudent* s : todo) {
    const auto t0 = std::chrono::steady_clock::now();
    const fs::path dir = out / s->name;
    BertModel student = make_sps_student(teacher, o.student_layers, s->sps, first_shared);
    json line = model_line(student);
    line["sps"] = s->sps;
    line["ptp"] = s->ptp;

    if (s->ptp) {
      // A copy of the student with a fresh 4-way head trains on the PTP labels; its body (and
      // pooler) go on to the KD stage, where the task's own classifier (the teacher's copy) returns.
      BertModel p = clone_model(student);
      p.classifier_w = Var();
      const GlueTask pt = ptp_task(task);
      prepare_for_task(p, pt, o.train.seed);
      DistillData pd{pt, data.tokenizer, data.train, ptp_train, data.train_scores, data.dev};
      DistillOptions po = base;
      po.alpha = 0;
      po.beta = 0;
      po.epochs = o.ptp_epochs;
      po.evals_per_epoch = o.ptp_evals_per_epoch;
      po.select_metric = "ptp_loss";
      po.select_lower = true;
      po.evaluate = [&](const BertModel& m) { return loss_and_accuracy(m, dev_enc, ptp_dev, o.eval_batch_size); };
      const DistillResult r = distill(p, nullptr, pd, po, (dir / "ptp").string());
      line["ptp_stage"] = {{"t1", thresholds.t1},
                           {"t2", thresholds.t2},
                           {"train_label_counts", label_counts(ptp_train)},
                           {"dev_label_counts", label_counts(ptp_dev)},
                           {"best", r.best_metrics},
                           {"best_step", r.best_step},
                           {"steps", r.steps},
                           {"seconds", r.seconds}};
      p.classifier_w = student.classifier_w;
      p.classifier_b = student.classifier_b;
      p.config = student.config;
      student = std::move(p);
    }

    DistillOptions ko = base;
    ko.alpha = o.alpha;
    ko.temperature = o.temperature;
    ko.beta = o.beta;
    ko.epochs = o.epochs;
    ko.hidden_loss = HiddenLoss::ClsNormalized;
    ko.hidden_pairs = pkd_pairs(int(student.layers.size()), L);
    const DistillResult r = distill(student, nullptr, data, ko, dir.string(), &targets);
    json pairs = json::array();
    for (const HiddenPair& hp : ko.hidden_pairs) pairs.push_back({hp.student, hp.teacher});
    line["patience_pairs"] = pairs;
    line["metric"] = r.best_metric;
    line["metrics"] = r.best_metrics;
    line["best_epoch"] = r.best_epoch;
    line["kd_steps"] = r.steps;
    line["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (root) write_file_atomic((dir / "student.json").string(), line.dump(2) + "\n");  // marks it complete
    results["students"][s->name] = line;
    write_results();
  }
  return results;
}

}  // namespace mb
