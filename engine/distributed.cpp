#include "engine/distributed.h"

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "engine/error.h"

#ifdef MB_HAVE_MPI
#include <mpi.h>
#endif

namespace mb::dist {

namespace {

int g_rank = 0, g_size = 1;

// How many copies of this process a launcher says it started (1 when it says nothing).
long launched_tasks() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (const char* s = std::getenv(v)) return std::max(1L, std::strtol(s, nullptr, 10));
  return 1;
}

#ifdef MB_HAVE_MPI
bool g_mpi = false;  // MPI_Init was called here

// Set by the launcher of every MPI this build may meet: Open MPI's mpirun, PMIx (srun
// --mpi=pmix, Open MPI 4+), PMI-1/2 (MPICH's hydra, srun --mpi=pmi2).
bool started_by_launcher() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
    if (std::getenv(v)) return true;
  return false;
}

// When one rank dies, mpirun (or srun) ends the others with SIGTERM. Each says so in one line
// (write(2) only: async-signal-safe) and exits 1; a checkpoint being written is never half
// visible (io/checkpoint.h renames a complete directory into place), so the last one stands.
char g_term_message[160];
size_t g_term_len = 0;
extern "C" void on_sigterm(int) {
  if (g_term_len) {
    const ssize_t written = ::write(2, g_term_message, g_term_len);
    (void)written;
  }
  ::_exit(1);
}

void check(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI: ") + what + " failed: " + std::string(text, size_t(len)));
}

// MPI counts are int: large buffers go in pieces of 2^30 elements.
template <class T>
void allreduce_chunks(T* data, int64_t n, MPI_Datatype type) {
  constexpr int64_t kChunk = int64_t(1) << 30;
  for (int64_t at = 0; at < n; at += kChunk)
    check(MPI_Allreduce(MPI_IN_PLACE, data + at, int(std::min(kChunk, n - at)), type, MPI_SUM, MPI_COMM_WORLD),
          "MPI_Allreduce");
}
#endif

}  // namespace

void init(int* argc, char*** argv) {
  // N copies that cannot talk to each other would each train alone and write the same files.
  const long tasks = launched_tasks();
#ifdef MB_HAVE_MPI
  MB_CHECK(tasks == 1 || started_by_launcher(),
           "srun started " + std::to_string(tasks) + " tasks that cannot reach each other: start them with "
           "srun --mpi=pmix (or pmi2), or with mpirun");
  if (g_mpi || !started_by_launcher()) return;
  int provided = 0;
  // FUNNELED: only the main thread calls MPI; OpenMP threads never do.
  check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  g_mpi = true;
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_size);
  // Errors come back as codes (turned into mb::Error by check), not as an abort inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  const std::string msg = "minibridge: " + rank_prefix() +
                          "stopped by the launcher (another rank failed or the job was cancelled); the last "
                          "complete checkpoint is intact: rerun with --resume\n";
  g_term_len = std::min(msg.size(), sizeof g_term_message);
  std::memcpy(g_term_message, msg.data(), g_term_len);
  std::signal(SIGTERM, on_sigterm);
#else
  (void)argc;
  (void)argv;
  MB_CHECK(tasks == 1, "started as " + std::to_string(tasks) + " processes, but this minibridge was built without "
                       "MPI: install libopenmpi-dev and rebuild (-DMB_WITH_MPI=ON) to train on several");
#endif
}

void finalize() {
#ifdef MB_HAVE_MPI
  if (g_mpi) MPI_Finalize();
  g_mpi = false;
#endif
}

void abort_job(int code) {
#ifdef MB_HAVE_MPI
  if (g_mpi && g_size > 1) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::exit(code);
}

int rank() { return g_rank; }
int size() { return g_size; }
bool built_with_mpi() {
#ifdef MB_HAVE_MPI
  return true;
#else
  return false;
#endif
}

std::string rank_prefix() {
  return g_size > 1 ? "rank " + std::to_string(g_rank) + " of " + std::to_string(g_size) + ": " : "";
}

void allreduce_sum(float* data, int64_t n) {
#ifdef MB_HAVE_MPI
  if (g_size > 1) allreduce_chunks(data, n, MPI_FLOAT);
#else
  (void)data;
  (void)n;
#endif
}

void allreduce_sum(double* data, int64_t n) {
#ifdef MB_HAVE_MPI
  if (g_size > 1) allreduce_chunks(data, n, MPI_DOUBLE);
#else
  (void)data;
  (void)n;
#endif
}

void broadcast(void* data, int64_t bytes, int root) {
#ifdef MB_HAVE_MPI
  constexpr int64_t kChunk = int64_t(1) << 30;
  if (g_size > 1)
    for (int64_t at = 0; at < bytes; at += kChunk)
      check(MPI_Bcast(static_cast<char*>(data) + at, int(std::min(kChunk, bytes - at)), MPI_BYTE, root, MPI_COMM_WORLD),
            "MPI_Bcast");
#else
  (void)data;
  (void)bytes;
  (void)root;
#endif
}

void barrier() {
#ifdef MB_HAVE_MPI
  if (g_size > 1) check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

}  // namespace mb::dist
