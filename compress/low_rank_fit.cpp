#include "compress/low_rank_fit.h"

#include <Eigen/Dense>
#include <algorithm>

#include "engine/error.h"

namespace mb {

namespace {
using RowMatrixF = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
}

ReducedRankRegression::ReducedRankRegression(int64_t in_dim, int64_t out_dim)
    : in_(in_dim), out_(out_dim), xx_(size_t(in_dim * in_dim)), xt_(size_t(in_dim * out_dim)),
      sx_(size_t(in_dim)), st_(size_t(out_dim)) {}

void ReducedRankRegression::add(const Tensor& X, const Tensor& T) {
  MB_CHECK(X.ndim() == 2 && T.ndim() == 2 && X.dim(0) == T.dim(0) && X.dim(1) == in_ && T.dim(1) == out_,
           "ReducedRankRegression::add: X " + shape_str(X.shape()) + " and T " + shape_str(T.shape()) +
               " do not match the fit's dimensions");
  const Eigen::MatrixXd x = Eigen::Map<const RowMatrixF>(X.f32(), X.dim(0), in_).cast<double>();
  const Eigen::MatrixXd t = Eigen::Map<const RowMatrixF>(T.f32(), T.dim(0), out_).cast<double>();
  Eigen::Map<Eigen::MatrixXd>(xx_.data(), in_, in_).noalias() += x.transpose() * x;
  Eigen::Map<Eigen::MatrixXd>(xt_.data(), in_, out_).noalias() += x.transpose() * t;
  Eigen::Map<Eigen::VectorXd>(sx_.data(), in_) += x.colwise().sum().transpose();
  Eigen::Map<Eigen::VectorXd>(st_.data(), out_) += t.colwise().sum().transpose();
  n_ += double(X.dim(0));
}

ReducedRankRegression::Result ReducedRankRegression::solve(int64_t r) const {
  MB_CHECK(r >= 1 && r <= std::min(in_, out_), "reduced-rank regression: rank " + std::to_string(r) +
                                                   " is outside [1, " + std::to_string(std::min(in_, out_)) + "]");
  MB_CHECK(n_ >= 2, "reduced-rank regression: needs at least two rows of data");
  const Eigen::VectorXd xm = Eigen::Map<const Eigen::VectorXd>(sx_.data(), in_) / n_;
  const Eigen::VectorXd tm = Eigen::Map<const Eigen::VectorXd>(st_.data(), out_) / n_;
  Eigen::MatrixXd Cxx = Eigen::Map<const Eigen::MatrixXd>(xx_.data(), in_, in_) - n_ * xm * xm.transpose();
  const Eigen::MatrixXd Cxt = Eigen::Map<const Eigen::MatrixXd>(xt_.data(), in_, out_) - n_ * xm * tm.transpose();

  const double ridge = 1e-6 * std::max(Cxx.trace() / double(in_), 1e-12);
  Cxx.diagonal().array() += ridge;
  Eigen::MatrixXd M = Cxx.ldlt().solve(Cxt);
  Cxx.diagonal().array() -= ridge;
  if (r < std::min(in_, out_)) {
    const Eigen::MatrixXd G = M.transpose() * Cxx * M;
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> eig(0.5 * (G + G.transpose()));
    const Eigen::MatrixXd Vr = eig.eigenvectors().rightCols(r);  // eigenvalues ascend
    M = M * Vr * Vr.transpose();
  }
  const Eigen::VectorXd bias = tm - M.transpose() * xm;
  Eigen::BDCSVD<Eigen::MatrixXd> svd(M, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Eigen::VectorXd root = svd.singularValues().head(r).cwiseSqrt();
  const Eigen::MatrixXd A = svd.matrixU().leftCols(r) * root.asDiagonal();
  const Eigen::MatrixXd B = root.asDiagonal() * svd.matrixV().leftCols(r).transpose();

  Result res{Tensor::empty({in_, r}), Tensor::empty({r, out_}), Tensor::empty({out_})};
  Eigen::Map<RowMatrixF>(res.A.f32(), in_, r) = A.cast<float>();
  Eigen::Map<RowMatrixF>(res.B.f32(), r, out_) = B.cast<float>();
  Eigen::Map<Eigen::VectorXf>(res.b.f32(), out_) = bias.cast<float>();
  return res;
}

}  // namespace mb
