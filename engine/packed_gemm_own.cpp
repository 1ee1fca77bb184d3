// The engine's own packed GEMM (engine/packed_gemm_own.h): packing, cache blocking and threads
// around the level's register-tile kernels.
//
// Loops, for C = A·Wᵀ: the weight is packed once in blocks of K (kc values: a panel of kc × nr is
// 16-32 KiB, in L1), each block in panels of nr columns. Per product, A is packed once for every
// block of K in tiles of mr rows (in the form the kernel reads: f32, bf16 or int8 quads). The work
// items are (a block of up to 96 rows) × (a run of panels), shared between the threads; each item
// goes through the blocks of K, and within a block the kernel keeps one panel in L1 while the
// row tiles (96 × kc, in L2) go by. C's item stays in L2 between blocks of K.
#include "engine/packed_gemm_own.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "engine/allocator.h"
#include "engine/cpu_kernels.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/threads.h"

namespace mb {

struct OwnPackedWeight {
  int64_t n = 0, k = 0;
  Precision precision = Precision::F32;
  PackedGemmKernel kernel;  // of the level in use when packed (still valid if the level changes)
  int64_t nr = 0;           // columns per panel
  int64_t group = 1;        // consecutive k per column in a panel: 1 (f32), 2 (bf16), 4 (int8)
  int64_t elem_bytes() const { return 4 / group; }  // bytes per weight: the group fills 32 bits
  int64_t kc = 0;           // K per block (a multiple of group)
  int64_t k_pad = 0, n_pad = 0;
  std::shared_ptr<void> storage;  // the packed panels, in huge pages
  size_t bytes = 0;
  std::vector<float> scale;    // int8: W[j, :] ≈ scale[j] · Wq[j, :] (padded to n_pad)
  std::vector<int32_t> comp;   // int8 with VNNI: 128 · Σ_k Wq[j, k] (padded to n_pad)
};

namespace {

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

}  // namespace

float quantize_source(const float* A, int64_t n, std::vector<int8_t>& q) {
  if (q.size() < size_t(n)) q.resize(size_t(n));
  const CpuKernels& kern = cpu_kernels();
  std::vector<float> part(size_t(std::max(1, num_threads())), 0.0f);
  std::atomic<int> slot{0};
  parallel_chunks(n, int64_t(1) << 16, [&](int64_t b, int64_t e) { part[size_t(slot++)] = kern.abs_max(A + b, e - b); });
  const float amax = *std::max_element(part.begin(), part.end());
  const float scale = amax > 0 ? amax / 127.0f : 1.0f, inv = 1.0f / scale;
  int8_t* out = q.data();
  parallel_chunks(n, int64_t(1) << 16, [&](int64_t b, int64_t e) { kern.quantize_s8(A + b, e - b, inv, out + b); });
  return scale;
}

void quantize_weight_rows(const float* W, int64_t N, int64_t K, float* scale, int8_t* q) {
  // The level's kernels: max|row| is exact, and quantize_s8 rounds row · (1 / scale) to nearest
  // even as lrint would, so every level (and every thread count) writes the same bytes.
  const CpuKernels& kern = cpu_kernels();
#pragma omp parallel for schedule(static) if (N * K > (int64_t(1) << 16))
  for (int64_t j = 0; j < N; ++j) {
    const float amax = kern.abs_max(W + j * K, K);
    scale[j] = amax > 0 ? amax / 127.0f : 1.0f;
    kern.quantize_s8(W + j * K, K, 1.0f / scale[j], q + j * K);
  }
}

std::shared_ptr<OwnPackedWeight> own_pack_weight(const WeightRows& W, int64_t N, int64_t K, Precision precision) {
  const CpuKernels& kern = cpu_kernels();
  const PackedGemmKernel& kernel = kern.gemm[int(precision)];
  if (!kernel.block || N <= 0 || K <= 0 || !W.values) return nullptr;
  if (W.form != Precision::F32 && W.form != precision) return nullptr;  // stored rows: their own precision
  auto w = std::make_shared<OwnPackedWeight>();
  w->n = N;
  w->k = K;
  w->precision = precision;
  w->kernel = kernel;
  w->nr = 2 * kern.lanes;
  w->group = precision == Precision::F32 ? 1 : precision == Precision::BF16 ? 2 : 4;
  w->kc = kernel.kc;
  w->k_pad = round_up(K, w->group);
  w->n_pad = round_up(N, w->nr);
  w->bytes = size_t(w->k_pad * w->n_pad * w->elem_bytes());
  w->storage = std::shared_ptr<void>(huge_page_alloc(w->bytes), [bytes = w->bytes](void* p) { huge_page_free(p, bytes); });
  uint8_t* data = static_cast<uint8_t*>(w->storage.get());

  const float* f32 = W.form == Precision::F32 ? static_cast<const float*>(W.values) : nullptr;
  const uint16_t* bf16 = W.form == Precision::BF16 ? static_cast<const uint16_t*>(W.values) : nullptr;
  const int8_t* q = W.form == Precision::Int8 ? static_cast<const int8_t*>(W.values) : nullptr;
  std::vector<uint16_t> bf16_own;  // bf16 from f32: rounded as oneDNN's path and quantized files round
  if (precision == Precision::BF16 && !bf16) {
    bf16_own.resize(size_t(N * K));
    convert_f32_to_bf16(f32, bf16_own.data(), size_t(N * K));
    bf16 = bf16_own.data();
  }
  std::vector<int8_t> q_own;  // int8 from f32: symmetric per output row j, W[j, :] ≈ scale[j] · q[j, :]
  if (precision == Precision::Int8) {
    w->scale.assign(size_t(w->n_pad), 0.0f);
    if (q) {
      std::copy(W.scale, W.scale + N, w->scale.begin());
    } else {
      q_own.resize(size_t(N * K));
      quantize_weight_rows(f32, N, K, w->scale.data(), q_own.data());
      q = q_own.data();
    }
    if (kernel.a_form == PackForm::S8QuadsU8) {
      w->comp.assign(size_t(w->n_pad), 0);
      for (int64_t j = 0; j < N; ++j) {
        int32_t sum = 0;
        for (int64_t i = 0; i < K; ++i) sum += q[size_t(j * K + i)];
        w->comp[size_t(j)] = 128 * sum;
      }
    }
  }
  // Panels: block of K (k0), panel p, then [kc / group][nr][group]. A group fills 32 bits in every
  // form (1 f32, 2 bf16, 4 int8), and is consecutive in W's row: one 4-byte copy per (k-group,
  // column), reading each row in order.
  const uint8_t* src = precision == Precision::F32    ? reinterpret_cast<const uint8_t*>(f32)
                       : precision == Precision::BF16 ? reinterpret_cast<const uint8_t*>(bf16)
                                                      : reinterpret_cast<const uint8_t*>(q);
  const int64_t panels = w->n_pad / w->nr, g = w->group, nr = w->nr, eb = w->elem_bytes();
  for (int64_t k0 = 0; k0 < w->k_pad; k0 += w->kc) {
    const int64_t kcb = std::min(w->kc, w->k_pad - k0);
#pragma omp parallel for schedule(static) if (N * K > (int64_t(1) << 16))
    for (int64_t p = 0; p < panels; ++p) {
      uint8_t* panel = data + (k0 * w->n_pad + p * kcb * nr) * eb;
      for (int64_t j = 0; j < nr; ++j) {
        const int64_t col = p * nr + j;
        const uint8_t* row = col < N ? src + col * K * eb : nullptr;
        for (int64_t kg = 0; kg < kcb; kg += g) {
          uint8_t* d = panel + (kg * nr + j * g) * eb;
          const int64_t kk = k0 + kg;
          if (row && kk + g <= K) {
            std::memcpy(d, row + kk * eb, 4);
          } else {  // past N or K: zeros
            std::memset(d, 0, 4);
            for (int64_t e = 0; row && kk + e < K; ++e) std::memcpy(d + e * eb, row + (kk + e) * eb, size_t(eb));
          }
        }
      }
    }
  }
  return w;
}

size_t own_packed_bytes(const OwnPackedWeight& w) {
  return w.bytes + w.scale.size() * sizeof(float) + w.comp.size() * sizeof(int32_t);
}

namespace {

// One tile of A (rows [row0, row0 + mr) of the M, columns [k0, k0 + kcb) of the K) in the kernel's
// form; rows past M and columns past K are zeros. src (row stride K): A in f32 for the f32 form,
// A rounded to bfloat16 for the bf16 forms, A quantised to int8 for the int8 forms.
void pack_a_tile(PackForm form, int mr, const void* src, int64_t M, int64_t K, int64_t row0, int64_t k0,
                 int64_t kcb, uint8_t* dst) {
  for (int r = 0; r < mr; ++r) {
    const int64_t row = row0 + r;
    const int64_t kn = row < M ? std::clamp<int64_t>(K - k0, 0, kcb) : 0;  // real columns of this row
    const int64_t at = row < M ? row * K + k0 : 0;
    switch (form) {
      case PackForm::F32: {
        float* d = reinterpret_cast<float*>(dst);
        const float* s = static_cast<const float*>(src) + at;
        for (int64_t k = 0; k < kn; ++k) d[k * mr + r] = s[k];
        for (int64_t k = kn; k < kcb; ++k) d[k * mr + r] = 0.0f;
        break;
      }
      case PackForm::Bf16AsF32: {
        float* d = reinterpret_cast<float*>(dst);
        const uint16_t* s = static_cast<const uint16_t*>(src) + at;
        for (int64_t k = 0; k < kn; ++k) d[k * mr + r] = bf16_to_f32(s[k]);
        for (int64_t k = kn; k < kcb; ++k) d[k * mr + r] = 0.0f;
        break;
      }
      case PackForm::Bf16Pairs: {
        uint16_t* d = reinterpret_cast<uint16_t*>(dst);
        const uint16_t* s = static_cast<const uint16_t*>(src) + at;
        for (int64_t k = 0; k < kcb; ++k) d[(k / 2 * mr + r) * 2 + k % 2] = k < kn ? s[k] : 0;
        break;
      }
      case PackForm::S8Pairs16: {  // per quad: (q0, q2), (q1, q3) as int16 pairs
        int16_t* d = reinterpret_cast<int16_t*>(dst);
        const int8_t* s = static_cast<const int8_t*>(src) + at;
        for (int64_t k = 0; k < kcb; ++k) {
          const int64_t e = k % 4;
          d[(k / 4 * mr + r) * 4 + (e % 2) * 2 + e / 2] = k < kn ? s[k] : 0;
        }
        break;
      }
      case PackForm::S8QuadsU8:
      case PackForm::S8QuadsS8: {
        const int8_t* s = static_cast<const int8_t*>(src) + at;
        const int bias = form == PackForm::S8QuadsU8 ? 128 : 0;
        for (int64_t k = 0; k < kcb; ++k) dst[(k / 4 * mr + r) * 4 + k % 4] = uint8_t((k < kn ? s[k] : 0) + bias);
        break;
      }
    }
  }
}

}  // namespace

void own_gemm(const OwnPackedWeight& w, int64_t M, const float* A, const float* bias, float* C, int64_t ldc) {
  if (M <= 0) return;
  const int mr = w.kernel.mr;
  const PackForm form = w.kernel.a_form;
  const int64_t a_bytes = pack_form_bytes(form);
  const int64_t tiles = (M + mr - 1) / mr;
  const int64_t k_blocks = (w.k_pad + w.kc - 1) / w.kc;

  // Per-call buffers, kept by the calling thread (BertModel::encode runs sub-batches on threads).
  static thread_local std::vector<uint8_t> a_packed;
  static thread_local std::vector<int8_t> a_q;
  static thread_local std::vector<uint16_t> a_h;
  static thread_local std::vector<float> col_scale;
  const float* scale = nullptr;
  const void* a_src = A;  // what the tiles are packed from
  if (w.precision == Precision::Int8) {
    const float a_scale = quantize_source(A, M * w.k, a_q);
    col_scale.resize(size_t(w.n_pad));
    for (int64_t j = 0; j < w.n_pad; ++j) col_scale[size_t(j)] = a_scale * w.scale[size_t(j)];
    scale = col_scale.data();
    a_src = a_q.data();
  } else if (w.precision == Precision::BF16) {  // rounded by the level's vector conversion first
    if (a_h.size() < size_t(M * w.k)) a_h.resize(size_t(M * w.k));
    convert_f32_to_bf16(A, a_h.data(), size_t(M * w.k));
    a_src = a_h.data();
  }
  const size_t packed_bytes = size_t(tiles * mr * w.k_pad * a_bytes);
  if (a_packed.size() < packed_bytes) a_packed.resize(packed_bytes);
  uint8_t* ap = a_packed.data();

  const GemmThreads limit(M, w.n, w.k);
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  // Work items: blocks of ~96 rows × runs of panels (up to 256 columns), at least ~4 per thread.
  const int64_t panels = w.n_pad / w.nr;
  const int64_t tiles_per_block = std::max<int64_t>(1, 96 / mr);
  const int64_t row_blocks = (tiles + tiles_per_block - 1) / tiles_per_block;
  const int64_t run = std::clamp<int64_t>((panels * row_blocks + 4 * threads - 1) / (4 * threads), 1,
                                          std::max<int64_t>(1, 256 / w.nr));
  const int64_t runs = (panels + run - 1) / run;

#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < k_blocks * tiles; ++i) {
      const int64_t kb = i / tiles, t = i % tiles, k0 = kb * w.kc, kcb = std::min(w.kc, w.k_pad - k0);
      pack_a_tile(form, mr, a_src, M, w.k, t * mr, k0, kcb, ap + (k0 * tiles * mr + t * mr * kcb) * a_bytes);
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < row_blocks * runs; ++item) {
      const int64_t rb = item / runs, p0 = (item % runs) * run;
      const int64_t t0 = rb * tiles_per_block, row0 = t0 * mr;
      GemmBlock g{};
      g.rows = std::min(M - row0, tiles_per_block * mr);
      g.cols = std::min(w.n - p0 * w.nr, run * w.nr);
      g.c = C + row0 * ldc + p0 * w.nr;
      g.ldc = ldc;
      g.bias = bias ? bias + p0 * w.nr : nullptr;
      g.scale = scale ? scale + p0 * w.nr : nullptr;
      g.comp = w.comp.empty() ? nullptr : w.comp.data() + p0 * w.nr;
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const int64_t k0 = kb * w.kc, kcb = std::min(w.kc, w.k_pad - k0);
        g.kc = kcb;
        g.a_tile_bytes = mr * kcb * a_bytes;
        g.a = ap + (k0 * tiles * mr + t0 * mr * kcb) * a_bytes;
        g.b_panel_bytes = kcb * w.nr * w.elem_bytes();
        g.b = static_cast<const uint8_t*>(w.storage.get()) + (k0 * w.n_pad + p0 * w.nr * kcb) * w.elem_bytes();
        g.first = kb == 0;
        g.last = kb == k_blocks - 1;
        w.kernel.block(g);
      }
    }
  }
}

}  // namespace mb
