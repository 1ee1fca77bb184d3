// Embedding lookup (gather) and its backward (scatter-add).
#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "engine/functional.h"
#include "engine/ops.h"

namespace mb {

void embedding_sum_forward(float* out, const int32_t* const* ids, const float* const* tables, int n, int64_t T,
                           int64_t C) {
#pragma omp parallel for if (T * C > 65536)
  for (int64_t t = 0; t < T; ++t) {
    float* o = out + t * C;
    std::memcpy(o, tables[0] + int64_t(ids[0][t]) * C, size_t(C) * 4);
    for (int i = 1; i < n; ++i) {
      const float* row = tables[i] + int64_t(ids[i][t]) * C;
      for (int64_t c = 0; c < C; ++c) o[c] += row[c];
    }
  }
}

void embedding_forward(float* out, const int32_t* ids, const float* table, int64_t T, int64_t C) {
  embedding_sum_forward(out, &ids, &table, 1, T, C);  // the sum of one table is its gather
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int64_t T, int64_t C) {
  // Parallel over column blocks: rows of repeated ids never race, and the result does not
  // depend on the thread count.
  const int64_t block = 64;
#pragma omp parallel for if (T * C > 65536)
  for (int64_t c0 = 0; c0 < C; c0 += block) {
    const int64_t c1 = std::min(C, c0 + block);
    for (int64_t t = 0; t < T; ++t) {
      float* d = dtable + int64_t(ids[t]) * C;
      const float* g = dout + t * C;
      for (int64_t c = c0; c < c1; ++c) d[c] += g[c];
    }
  }
}

Var embedding(const Var& table, const std::vector<int32_t>& ids) {
  const int64_t T = int64_t(ids.size()), V = table.dim(0), C = table.dim(1);
  for (int32_t id : ids) MB_CHECK(id >= 0 && id < V, "embedding: id " + std::to_string(id) + " outside [0, " + std::to_string(V) + ")");
  const bool rec = needs_grad({&table});
  Var out = make_output(Tensor::empty({T, C}), rec);
  embedding_forward(out.mutable_data(), ids.data(), table.data(), T, C);
  if (rec)
    record_backward([table, ids, out, T, C] {
      if (out.has_grad()) embedding_backward(table.grad().f32(), out.grad().f32(), ids.data(), T, C);
    });
  return out;
}

Var gather_rows(const Var& x, const std::vector<int32_t>& rows) {
  // The same gather with x as the table.
  return embedding(x, rows);
}

}  // namespace mb
