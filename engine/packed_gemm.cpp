// Weights packed once for inference. sgemm re-packs its B operand (the weight) on every call;
// with few rows (one sequence of 128 tokens: M = 128 against K, N = 768 or 3072) that packing is a
// large share of the product. Like ONNX Runtime, which pre-packs weights when a session starts,
// this reorders each weight once into the blocked layout of oneDNN's matmul kernel (brgemm) and
// runs matmul primitives on it. Measured (GFLOP/s, sgemm → packed) with 12 distinct BERT-base
// weights (cold caches), Zen 5: one core, 128 rows 195 → 233, 37 rows 120 → 187, 1024 rows
// 236 → 226; two cores, 1024 rows 419 → 427 (FFN in), 331 → 458 (FFN out), 415 → 460 (768²).
// Tiny shapes (128² weights) are even. Every row count therefore runs packed: then the packed
// copy is the only one a forward pass reads, and the originals' pages stay out of memory.
// Where oneDNN has no fast kernel for a precision (bf16 below AVX-512, int8 without VNNI, every
// precision in builds without oneDNN), the engine's own packed kernels run instead
// (engine/packed_gemm_own.cpp); this file picks, per weight, at packing time.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "engine/allocator.h"
#include "engine/cpu_kernels.h"
#include "engine/dtype.h"
#include "engine/error.h"
#include "engine/gemm.h"
#include "engine/lru_cache.h"
#include "engine/packed_gemm_own.h"
#include "engine/threads.h"

#ifdef MB_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace mb {

const char* precision_name(Precision p) {
  return p == Precision::Int8 ? "int8" : p == Precision::BF16 ? "bf16" : "f32";
}

#ifdef MB_HAVE_ONEDNN

namespace {

using dnnl::memory;
using Dims = memory::dims;

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
};
Runtime& runtime() {
  onednn_follow_cpu_level();
  static Runtime r;
  return r;
}

}  // namespace

struct PackedWeight {
  int64_t n = 0, k = 0;
  Precision precision = Precision::F32;
  std::shared_ptr<OwnPackedWeight> own;  // the engine's own kernels; else oneDNN's:
  std::vector<float> scale;  // int8: W[j, :] ≈ scale[j] · Wq[j, :], symmetric per output j
  memory::desc desc;         // the blocked layout the kernel chose
  std::shared_ptr<void> storage;  // the packed bytes, in huge pages (engine/allocator.h)
  memory mem;                     // a view of them
};

namespace {

// One matmul primitive per (rows, N, K, output stride, bias, epilogue, threads, precision, plain):
// creating one costs ~0.2-0.5 ms, a forward pass reuses each shape many times (every layer), and a
// new batch length adds a few. A shape oneDNN has no fast kernel for is remembered too (usable =
// false), so that asking again costs a lookup, not a primitive descriptor.
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, int, int, int, bool>;
struct Entry {
  dnnl::matmul prim;
  size_t scratchpad_bytes = 0;
  bool usable = false;
};
// How many primitives each cache keeps, least recently used out first. Each holds its generated
// kernels: 89-112 KiB a primitive (oneDNN 2.6 brgemm, f32 and AMX bf16, measured on the Xeon by
// resident memory over 600 shapes). The former limit, 4,096 cleared when full, let a cache reach
// 400+ MB, and K-prune filled it: its sample set has hundreds of batch lengths and every step adds
// new widths, so its peak rose ~50 MB a step. 1,024 is oneDNN's own primitive cache's capacity;
// a workload that cycles through more shapes makes each again (0.2-0.5 ms) when it comes back:
// K-prune at BERT-base, a few thousand a step, about a second against minutes.
constexpr size_t kPrimitiveCacheCapacity = 1024;
struct Cache {
  std::mutex mu;
  LruCache<Key, Entry> prims{kPrimitiveCacheCapacity};
};
Cache& cache() {
  static Cache c;
  return c;
}

memory::data_type data_type(Precision p) {
  return p == Precision::Int8 ? memory::data_type::s8 : p == Precision::BF16 ? memory::data_type::bf16 : memory::data_type::f32;
}

// Source and weights of the given precision, f32 output (and bias). int8: the per-output scale
// s_A·s_W[j] is given at run time (the source's scale changes with every input); oneDNN adds the
// bias before scaling, so callers pass bias / scale.
dnnl::matmul::primitive_desc matmul_pd(int64_t M, int64_t N, int64_t K, int64_t ldc, bool bias,
                                       const memory::desc& weights, Epilogue epilogue, Precision precision) {
  const bool int8 = precision == Precision::Int8;
  const memory::desc src({M, K}, data_type(precision), memory::format_tag::ab);
  const memory::desc dst({M, N}, memory::data_type::f32, Dims{ldc, 1});
  const memory::desc b = bias ? memory::desc({1, N}, memory::data_type::f32, memory::format_tag::ab) : memory::desc();
  dnnl::primitive_attr attr;
  // The caller passes the scratchpad (one per thread, gemm_packed), so that two threads can run
  // the same primitive at once (BertModel::encode runs one sub-batch per thread).
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (int8) attr.set_output_scales(1 << 1, {DNNL_RUNTIME_F32_VAL});
  if (epilogue != Epilogue::None) {
    // Applied to each output block while it is still in registers: no second pass over C.
    dnnl::post_ops ops;
    ops.append_eltwise(1.0f,
                       epilogue == Epilogue::Gelu ? dnnl::algorithm::eltwise_gelu_erf : dnnl::algorithm::eltwise_gelu_tanh,
                       0.0f, 0.0f);
    attr.set_post_ops(ops);
  }
  return dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, b, dst), attr, runtime().engine);
}

}  // namespace

bool onednn_uses_amx() {
  static const bool amx = [] {
    onednn_follow_cpu_level();  // reading the effective ISA fixes it: any cap comes first
    const auto isa = unsigned(dnnl::get_effective_cpu_isa()), amx = unsigned(dnnl::cpu_isa::avx512_core_amx);
    return (isa & amx) == amx && cpu_features().amxbf16;  // ISAs are bit sets: AMX's contains the rest
  }();
  return amx;
}

namespace {

// Whether oneDNN's bf16 kernels are worth running here, for training's products and packed
// weights alike (gemm.h: bf16_products_beat_widening).
bool onednn_bf16_fast() {
  static const bool fast = [] {
    const CpuFeatures& f = cpu_features();
    return bf16_products_beat_widening(f.avx512bf16, onednn_uses_amx(), f.intel);
  }();
  return fast;
}

// Whether oneDNN picked a kernel worth packing for: brgemm for f32 and bf16 (its other f32 kernels
// re-pack on every call; for bf16 the others are reference loops); for int8 anything but the
// reference loops, on a CPU level with VNNI (vpdpbusd). Without VNNI oneDNN multiplies with
// vpmaddubsw, whose 16-bit pair sums saturate on full-range int8 operands (measured on Zen 3, AVX2:
// max |diff| 0.041 against f32 on test_models' model, against 0.008 with VNNI).
bool fast_kernel(const dnnl::matmul::primitive_desc& pd, Precision precision) {
  const std::string impl = pd.impl_info_str();
  if (precision == Precision::BF16 && !onednn_bf16_fast()) return false;  // the engine's widened kernel is faster
  const CpuFeatures& f = cpu_features();
  if (precision != Precision::Int8) return impl.rfind("brg", 0) == 0;
  const bool vnni = (cpu_level() == CpuLevel::AVX512 && f.avx512vnni) || (cpu_level() != CpuLevel::Baseline && f.avxvnni);
  return vnni && impl.rfind("ref", 0) != 0;
}


}  // namespace

namespace {

// W packed for oneDNN's matmul, or null where oneDNN has no fast kernel for the precision here.
std::shared_ptr<PackedWeight> pack_onednn(const WeightRows& W, int64_t N, int64_t K, Precision precision) {
  const bool int8 = precision == Precision::Int8;
  try {
    // The layout is chosen for a typical row count; matmuls of other row counts accept it (the
    // blocking is over K and N only).
    const memory::data_type type = data_type(precision);
    const auto pd = matmul_pd(128, N, K, N, true, memory::desc({K, N}, type, memory::format_tag::any),
                              Epilogue::None, precision);
    if (!fast_kernel(pd, precision)) return nullptr;
    auto p = std::make_shared<PackedWeight>();
    p->n = N;
    p->k = K;
    p->precision = precision;
    // The rows in the precision: as stored, or converted from f32 here.
    const void* source = W.values;
    std::vector<int8_t> q;
    std::vector<uint16_t> h;
    if (int8) {  // symmetric per output row j: W[j, :] ≈ scale[j] · q[j, :]
      p->scale.resize(size_t(N));
      if (W.form == Precision::Int8) {
        std::copy(W.scale, W.scale + N, p->scale.begin());
      } else {
        q.resize(size_t(N * K));
        quantize_weight_rows(static_cast<const float*>(W.values), N, K, p->scale.data(), q.data());
        source = q.data();
      }
    } else if (precision == Precision::BF16 && W.form == Precision::F32) {
      h.resize(size_t(N * K));
      convert_f32_to_bf16(static_cast<const float*>(W.values), h.data(), size_t(N * K));
      source = h.data();
    }
    p->desc = pd.weights_desc();
    const size_t bytes = p->desc.get_size();
    p->storage = std::shared_ptr<void>(huge_page_alloc(bytes), [bytes](void* q) { huge_page_free(q, bytes); });
    p->mem = memory(p->desc, runtime().engine, p->storage.get());
    // W [N, K] row-major is B = Wᵀ [K, N] in column-major ("ba") order.
    memory user({{K, N}, type, memory::format_tag::ba}, runtime().engine, const_cast<void*>(source));
    dnnl::reorder(user, p->mem).execute(runtime().stream, user, p->mem);
    runtime().stream.wait();
    return p;
  } catch (const dnnl::error&) {
    return nullptr;
  }
}

}  // namespace

namespace {

// Runs a matmul primitive with this thread's scratchpad and stream.
void execute(const Entry& prim, std::unordered_map<int, memory>& args) {
  const Runtime& r = runtime();
  // Per-thread scratchpad, page-aligned.
  static thread_local std::unique_ptr<void, decltype(&std::free)> scratch(nullptr, &std::free);
  static thread_local size_t scratch_bytes = 0;
  if (prim.scratchpad_bytes > scratch_bytes) {
    const size_t bytes = (prim.scratchpad_bytes + 4095) / 4096 * 4096;
    scratch.reset(std::aligned_alloc(4096, bytes));
    MB_CHECK(scratch, "out of memory for a " + std::to_string(bytes) + "-byte GEMM scratchpad");
    scratch_bytes = bytes;
  }
  if (prim.scratchpad_bytes > 0)
    args[DNNL_ARG_SCRATCHPAD] = memory({{int64_t(prim.scratchpad_bytes)}, memory::data_type::u8, memory::format_tag::a},
                                       r.engine, scratch.get());
  // A stream per thread as well: a oneDNN stream is not meant to be shared between threads.
  static thread_local dnnl::stream s(r.engine);
  prim.prim.execute(s, args);
  s.wait();
}

// The matmul on w, packed or (plain) a view of a weight as it is.
bool run_matmul(const PackedWeight& w, bool plain, int64_t M, const float* A, const float* bias, float* C,
                int64_t ldc, Epilogue epilogue) {
  if (M <= 0) return false;
  // The thread count first: a primitive plans its blocking for the threads it will run on.
  const GemmThreads limit(M, w.n, w.k);
  Entry prim;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mu);
    const Key key{M, w.n, w.k, ldc, bias != nullptr, int(epilogue), omp_get_max_threads(), int(w.precision), plain};
    prim = c.prims.get_or_make(key, [&] {
      Entry e;
      try {
        const auto pd = matmul_pd(M, w.n, w.k, ldc, bias != nullptr, w.desc, epilogue, w.precision);
        if (fast_kernel(pd, w.precision)) e = Entry{dnnl::matmul(pd), pd.scratchpad_desc().get_size(), true};
      } catch (const dnnl::error&) {
      }
      return e;
    });
    if (!prim.usable) return false;
  }
  const Runtime& r = runtime();
  memory dst({{M, w.n}, memory::data_type::f32, Dims{ldc, 1}}, r.engine, C);
  std::unordered_map<int, memory> args{{DNNL_ARG_WEIGHTS, w.mem}, {DNNL_ARG_DST, dst}};
  // Per-call buffers of the int8 and bf16 paths, kept by the calling thread.
  static thread_local std::vector<int8_t> a_q;
  static thread_local std::vector<uint16_t> a_h;
  static thread_local std::vector<float> out_scale, scaled_bias;
  if (w.precision == Precision::BF16) {
    if (a_h.size() < size_t(M * w.k)) a_h.resize(size_t(M * w.k));
    convert_f32_to_bf16(A, a_h.data(), size_t(M * w.k));
    args[DNNL_ARG_SRC] = memory({{M, w.k}, memory::data_type::bf16, memory::format_tag::ab}, r.engine, a_h.data());
  } else if (w.precision == Precision::Int8) {
    const float a_scale = quantize_source(A, M * w.k, a_q);
    out_scale.resize(size_t(w.n));
    for (int64_t j = 0; j < w.n; ++j) out_scale[size_t(j)] = a_scale * w.scale[size_t(j)];
    args[DNNL_ARG_SRC] = memory({{M, w.k}, memory::data_type::s8, memory::format_tag::ab}, r.engine, a_q.data());
    args[DNNL_ARG_ATTR_OUTPUT_SCALES] = memory({{w.n}, memory::data_type::f32, memory::format_tag::a}, r.engine,
                                               out_scale.data());
    if (bias) {
      scaled_bias.resize(size_t(w.n));
      for (int64_t j = 0; j < w.n; ++j) scaled_bias[size_t(j)] = bias[j] / out_scale[size_t(j)];
      bias = scaled_bias.data();
    }
  } else {
    args[DNNL_ARG_SRC] = memory({{M, w.k}, memory::data_type::f32, memory::format_tag::ab}, r.engine, const_cast<float*>(A));
  }
  if (bias) args[DNNL_ARG_BIAS] = memory({{1, w.n}, memory::data_type::f32, memory::format_tag::ab}, r.engine,
                                         const_cast<float*>(bias));
  execute(prim, args);
  return true;
}

}  // namespace

bool gemm_weight(const float* W, int64_t N, int64_t K, int64_t M, const float* A, const float* bias, float* C,
                 int64_t ldc) {
  if (gemm_backend() != GemmBackend::OneDNN || N <= 0 || K <= 0) return false;
  try {
    PackedWeight view;  // W [N, K] row-major is B = Wᵀ [K, N] in "ba" order
    view.n = N;
    view.k = K;
    view.desc = memory::desc({K, N}, memory::data_type::f32, memory::format_tag::ba);
    view.mem = memory(view.desc, runtime().engine, const_cast<float*>(W));
    return run_matmul(view, true, M, A, bias, C, ldc, Epilogue::None);
  } catch (const dnnl::error&) {
    return false;
  }
}

namespace {

// bfloat16 products of operands as they are (training: both change every step), on oneDNN's matmul
// with strided views, one primitive per shape as for the packed weights. Only at the AVX-512 level
// where bf16_products_beat_widening (gemm.h) holds: oneDNN's bf16 kernels without AVX512-BF16
// convert to f32 internally, and Intel's vdpbf16ps without AMX multiplies at FMA's rate.
using Bf16Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, bool, int>;
struct Bf16Cache {
  std::mutex mu;
  LruCache<Bf16Key, Entry> prims{kPrimitiveCacheCapacity};
};

bool gemm_bf16_onednn(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
                      const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (gemm_backend() != GemmBackend::OneDNN || cpu_level() != CpuLevel::AVX512 || !onednn_bf16_fast()) return false;
  const GemmThreads limit(M, N, K);
  static Bf16Cache c;
  Entry prim;
  // op(A)[m, k] is A[m·lda + k], or A[k·lda + m] when transposed; op(B)[k, n] likewise.
  const Dims a_strides = ta ? Dims{1, lda} : Dims{lda, 1}, b_strides = tb ? Dims{1, ldb} : Dims{ldb, 1};
  try {
    {
      std::lock_guard<std::mutex> lock(c.mu);
      const Bf16Key key{M, N, K, ta, tb, lda, ldb, ldc, beta != 0.0f, omp_get_max_threads()};
      prim = c.prims.get_or_make(key, [&] {  // a dnnl::error leaves the cache as it was
        dnnl::primitive_attr attr;
        attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
        if (beta != 0.0f) {  // C += product, in the kernel
          dnnl::post_ops ops;
          ops.append_sum(1.0f);
          attr.set_post_ops(ops);
        }
        Entry e;
        const dnnl::matmul::primitive_desc pd(
            dnnl::matmul::desc(memory::desc({M, K}, memory::data_type::bf16, a_strides),
                               memory::desc({K, N}, memory::data_type::bf16, b_strides),
                               memory::desc({M, N}, memory::data_type::f32, Dims{ldc, 1})),
            attr, runtime().engine);
        if (std::string(pd.impl_info_str()).rfind("ref", 0) != 0) e = Entry{dnnl::matmul(pd), pd.scratchpad_desc().get_size(), true};
        return e;
      });
      if (!prim.usable) return false;
    }
    const Runtime& r = runtime();
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory({{M, K}, memory::data_type::bf16, a_strides}, r.engine, const_cast<uint16_t*>(A))},
        {DNNL_ARG_WEIGHTS, memory({{K, N}, memory::data_type::bf16, b_strides}, r.engine, const_cast<uint16_t*>(B))},
        {DNNL_ARG_DST, memory({{M, N}, memory::data_type::f32, Dims{ldc, 1}}, r.engine, C)}};
    execute(prim, args);
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

}  // namespace

#else  // no oneDNN: the engine's own kernels pack every precision

bool onednn_uses_amx() { return false; }

struct PackedWeight {
  int64_t n = 0, k = 0;
  Precision precision = Precision::F32;
  std::shared_ptr<OwnPackedWeight> own;
};
bool gemm_weight(const float*, int64_t, int64_t, int64_t, const float*, const float*, float*, int64_t) { return false; }
bool gemm_bf16_onednn(bool, bool, int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t, float,
                      float*, int64_t) {
  return false;
}

#endif

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda, const uint16_t* B,
               int64_t ldb, float beta, float* C, int64_t ldc) {
  MB_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16: beta must be 0 or 1");
  if (M == 0 || N == 0) return;
  if (K > 0 && gemm_bf16_onednn(ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc)) return;
  // Elsewhere: the same bf16 values widened to f32 (exactly), multiplied by sgemm. Each product of
  // two bf16 values is exact in f32 either way; only the order of the f32 sums differs.
  static thread_local std::vector<float> a32, b32;
  auto widen = [](const uint16_t* x, int64_t rows, int64_t cols, int64_t ld, std::vector<float>& out) {
    const int64_t n = rows > 0 && cols > 0 ? (rows - 1) * ld + cols : 0;
    if (out.size() < size_t(n)) out.resize(size_t(n));
    parallel_chunks(n, int64_t(1) << 16, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) out[size_t(i)] = bf16_to_f32(x[i]);
    });
  };
  widen(A, ta ? K : M, ta ? M : K, lda, a32);
  widen(B, tb ? N : K, tb ? K : N, ldb, b32);
  sgemm(ta, tb, M, N, K, 1.0f, a32.data(), lda, b32.data(), ldb, beta, C, ldc);
}

bool bf16_products_beat_widening(bool avx512bf16, bool amx, bool intel) { return amx || (avx512bf16 && !intel); }

const char* gemm_bf16_kernel() {
  const uint16_t one = f32_to_bf16(1.0f);
  float c = 0.0f;
  return gemm_bf16_onednn(false, false, 1, 1, 1, &one, 1, &one, 1, 0.0f, &c, 1) ? "onednn" : "emulated";
}

std::shared_ptr<PackedWeight> pack_weight(const float* W, int64_t N, int64_t K, Precision precision) {
  return pack_weight(WeightRows{Precision::F32, W, nullptr}, N, K, precision);
}

std::shared_ptr<PackedWeight> pack_weight(const WeightRows& W, int64_t N, int64_t K, Precision precision) {
  if (N <= 0 || K <= 0 || !W.values) return nullptr;
  if (W.form != Precision::F32 && W.form != precision) return nullptr;  // stored rows: their own precision
  MB_CHECK(W.form != Precision::Int8 || W.scale, "pack_weight: int8 rows without their scales");
#ifdef MB_HAVE_ONEDNN
  if (gemm_backend() == GemmBackend::OneDNN) {
    if (std::shared_ptr<PackedWeight> p = pack_onednn(W, N, K, precision)) return p;
    // Below AVX-512, oneDNN's sgemm on the weights as they are beats the engine's own f32 kernel
    // by 1-14 % at two threads (Zen 3, BERT-base shapes; the forward pass at batch 8 by 6 %).
    if (precision == Precision::F32) return nullptr;
  }
#endif
  std::shared_ptr<OwnPackedWeight> own = own_pack_weight(W, N, K, precision);
  if (!own) return nullptr;
  auto p = std::make_shared<PackedWeight>();
  p->n = N;
  p->k = K;
  p->precision = precision;
  p->own = std::move(own);
  return p;
}

Precision packed_weight_precision(const PackedWeight& w) { return w.precision; }

const char* packed_gemm_kernel(Precision precision) {
  const std::vector<float> w(64 * 64, 0.5f);
  const std::shared_ptr<PackedWeight> p = pack_weight(w.data(), 64, 64, precision);
  return !p ? "" : p->own ? "engine" : "onednn";
}

bool packed_gemm_available(Precision precision) { return *packed_gemm_kernel(precision) != '\0'; }

std::string packed_gemm_missing(Precision precision) {
  return std::string(precision_name(precision)) + " has no kernel on this CPU (" + cpu_summary() + ")" +
         (precision == Precision::Int8 ? "; int8 needs x86-64 or Arm's dot product (ARMv8.2 dotprod)" : "");
}

size_t packed_weight_bytes(const PackedWeight& w) {
#ifdef MB_HAVE_ONEDNN
  if (!w.own) return w.desc.get_size() + w.scale.size() * sizeof(float);
#endif
  return own_packed_bytes(*w.own);
}

bool gemm_packed(const PackedWeight& w, int64_t M, const float* A, const float* bias, float* C, int64_t ldc,
                 Epilogue epilogue) {
  if (w.own) {
    if (epilogue != Epilogue::None || M <= 0) return false;  // no post-ops in the own kernels
    own_gemm(*w.own, M, A, bias, C, ldc);
    return true;
  }
#ifdef MB_HAVE_ONEDNN
  return run_matmul(w, false, M, A, bias, C, ldc, epilogue);
#else
  return false;
#endif
}

}  // namespace mb
