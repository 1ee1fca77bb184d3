// The processes of a data-parallel job: MPI when the binary was built with it (-DMB_WITH_MPI=ON)
// and started by a launcher (mpirun, srun, mpiexec), else one process on its own, exactly as a
// build without MPI. Everything here is collective: every rank calls it, in the same order.
#pragma once
#include <cstdint>
#include <string>

namespace mb::dist {

// Starts MPI when a launcher started this process (its environment says so); otherwise nothing,
// so a plain run never touches MPI. Call once, first thing in main. Also installs the handler that
// turns the launcher's SIGTERM (sent when another rank died) into one line on stderr and exit 1.
void init(int* argc, char*** argv);
// Ends MPI (when init started it). Call at the end of main on every rank.
void finalize();
// Ends the whole job at once with status `code` after an error on this rank, where returning
// would leave the other ranks waiting in a collective (MPI_Abort); a no-op on one process.
[[noreturn]] void abort_job(int code);

int rank();  // 0 on one process
int size();  // 1 on one process
inline bool is_root() { return rank() == 0; }
bool built_with_mpi();
// "rank R of N: " when size() > 1, else "": prefixes the messages every rank prints.
std::string rank_prefix();

// In-place sums over all ranks (MPI_Allreduce with MPI_SUM): every rank ends with the same
// values, summed in the same order on every rank. No-ops on one process.
void allreduce_sum(float* data, int64_t n);
void allreduce_sum(double* data, int64_t n);
// Rank `root`'s bytes copied to every rank.
void broadcast(void* data, int64_t bytes, int root = 0);
void barrier();

}  // namespace mb::dist
