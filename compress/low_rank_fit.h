// Reduced-rank linear regression: the least-squares fit of T ≈ X·M + 1·bᵀ subject to
// rank(M) ≤ r, from statistics accumulated batch by batch (memory O(d²), any number of rows).
//
// Solve: centre X and T (b is the intercept, never rank-limited), M̂ = (XcᵀXc + λI)⁻¹ XcᵀTc with
// λ = 1e-6 · mean diag(XcᵀXc) (LayerNorm outputs make XᵀX singular; the ridge keeps the solve
// well-posed), then the reduced-rank solution M_r = M̂·V_r·V_rᵀ where V_r are the top r
// eigenvectors of M̂ᵀ(XcᵀXc)M̂ (the principal directions of the fitted values; this is the
// optimal rank-r fit, better than truncating M̂'s own SVD), and finally the balanced factors
// A = U_r Σ_r^½, B = Σ_r^½ V_rᵀ of M_r's SVD, so that M_r = A·B.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace mb {

class ReducedRankRegression {
 public:
  ReducedRankRegression(int64_t in_dim, int64_t out_dim);

  // Rows of X [n, in_dim] and their targets T [n, out_dim] (F32).
  void add(const Tensor& X, const Tensor& T);
  int64_t rows() const { return int64_t(n_); }

  struct Result {
    Tensor A;  // [in_dim, r]
    Tensor B;  // [r, out_dim]
    Tensor b;  // [out_dim]
  };
  // rank in [1, min(in_dim, out_dim)].
  Result solve(int64_t rank) const;

 private:
  int64_t in_, out_;
  double n_ = 0;
  std::vector<double> xx_, xt_, sx_, st_;  // XᵀX, XᵀT (column-major), Σx, Σt
};

}  // namespace mb
