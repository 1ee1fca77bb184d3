// Data-parallel training over the ranks of engine/distributed.h (MPI). Every rank builds the same
// global batch (same data order, same MLM masks), runs forward and backward on its contiguous share
// of the sequences with dropout masks cut from the global batch's (BatchPlacement), and the
// gradients are summed over the ranks before one identical AdamW step on every rank. So a run's
// losses and weights do not depend on the number of ranks, to float reassociation. Rank 0 alone
// writes logs, checkpoints and models. On one process every function here is the identity.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/optim.h"
#include "models/bert.h"

namespace mb {

// Sequences [first, end) of a global batch: `rank`'s share of `n` among `size` ranks, contiguous,
// in rank order, sizes differing by at most one (a share may be empty when n < size).
struct ShareRange {
  int64_t first = 0, end = 0;
  int64_t size() const { return end - first; }
};
ShareRange share_range(int64_t n, int rank, int size);

// This rank's share of a global batch, as a batch of its own, and where it sits in the global one.
struct BatchShare {
  Batch batch;
  BatchPlacement place;
  ShareRange seqs;
  // Whole-batch dropout draws for `opt`'s forward pass on this share.
  ForwardOptions forward(Rng* rng) const { return ForwardOptions{true, rng, &place}; }
};
BatchShare share_of(const Batch& global, int rank, int size);
// This process's share (dist::rank() of dist::size()).
BatchShare my_share(const Batch& global);

// Sums every gradient over the ranks in place: gradients packed into buckets of about 32 MB, one
// MPI_Allreduce per bucket (tensors larger than a bucket in place). Every rank ends with the same
// sums. A no-op on one process.
void allreduce_gradients(const std::vector<ParamRef>& params);

// What allreduce_gradients has cost this process so far (for the logs and bench/mpi_scaling.sh).
struct GradientTraffic {
  int64_t calls = 0;      // allreduce_gradients calls
  int64_t bytes = 0;      // gradient bytes summed, all calls together (this rank's, not the wire's)
  double wait_seconds = 0.0;  // waiting for the slowest rank to finish its backward pass
  double seconds = 0.0;       // then summing the gradients
};
GradientTraffic gradient_traffic();

// Rank 0's values of these tensors on every rank (the start of a run: every rank then trains the
// same weights, whatever each read from disk).
void broadcast_tensors(const std::vector<Tensor*>& tensors);
void broadcast_parameters(const BertModel& model);

// The sum of one number over the ranks (losses for the log).
double sum_over_ranks(double value);

// The dropout generator of one optimizer step: a pure function of (seed, step), so that a run
// resumed at any step, with any number of ranks, draws the same masks as the uninterrupted one.
Rng dropout_rng_for_step(uint64_t seed, int64_t step);

}  // namespace mb
