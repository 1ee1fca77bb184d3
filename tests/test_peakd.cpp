// Pea-KD pieces that need no training: PTP labels from hand-made teacher outputs, and the SPS
// student built from a teacher.
#include <doctest/doctest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "compress/peakd.h"
#include "models/counting.h"
#include "tests/test_util.h"

namespace {

mb::BertConfig small_config(int layers) {
  const nlohmann::json j = {{"vocab_size", 64}, {"hidden_size", 16}, {"num_hidden_layers", layers},
                            {"num_attention_heads", 2}, {"intermediate_size", 24}, {"max_position_embeddings", 16}};
  return mb::bert_config_from_json(j, "small config");
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
