#include "engine/tensor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "engine/allocator.h"
#include "engine/error.h"
#include "engine/threads.h"

namespace mb {

std::string shape_str(const Shape& s) {
  std::ostringstream o;
  o << '[';
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << ']';
  return o.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Tensor Tensor::empty(Shape shape, DType dt) {
  for (int64_t d : shape) MB_CHECK(d >= 0, "negative dimension in shape " + shape_str(shape));
  Tensor t;
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  const size_t bytes = size_t(shape_numel(t.shape_)) * dtype_size(dt);
  size_t capacity = 0;
  void* p = tensor_alloc(bytes, &capacity);
  t.storage_ = std::shared_ptr<void>(p, [capacity](void* q) { tensor_free(q, capacity); });
  t.data_ = p;
  return t;
}

Tensor Tensor::zeros(Shape shape, DType dt) {
  Tensor t = empty(std::move(shape), dt);
  // Split between the threads from 1 MiB a thread: the gradients' buffers in a training step
  // (Var::grad) were zeroed on the main thread alone while the others waited.
  char* p = static_cast<char*>(t.data_);
  parallel_chunks(int64_t(t.nbytes()), int64_t(1) << 20, [p](int64_t b, int64_t e) { std::memset(p + b, 0, size_t(e - b)); });
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, Shape shape) {
  MB_CHECK(int64_t(v.size()) == shape_numel(shape), "from_vector: size does not match shape " + shape_str(shape));
  Tensor t = empty(std::move(shape));
  std::memcpy(t.data_, v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::view(std::shared_ptr<const void> keepalive, const void* data, Shape shape, DType dt) {
  Tensor t;
  t.storage_ = std::move(keepalive);
  t.data_ = const_cast<void*>(data);
  t.shape_ = std::move(shape);
  t.dtype_ = dt;
  t.is_view_ = true;
  return t;
}

float* Tensor::f32() {
  MB_CHECK(dtype_ == DType::F32, std::string("expected an F32 tensor, got ") + dtype_name(dtype_));
  return static_cast<float*>(data_);
}

const float* Tensor::f32() const {
  MB_CHECK(dtype_ == DType::F32, std::string("expected an F32 tensor, got ") + dtype_name(dtype_));
  return static_cast<const float*>(data_);
}

Tensor Tensor::reshape(Shape shape) const {
  MB_CHECK(shape_numel(shape) == numel(),
           "reshape " + shape_str(shape_) + " to " + shape_str(shape) + ": element count differs");
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = empty(shape_, dtype_);
  if (nbytes()) std::memcpy(t.data_, data_, nbytes());
  return t;
}

Tensor Tensor::to_f32() const {
  if (dtype_ == DType::F32) return *this;
  Tensor t = empty(shape_, DType::F32);
  convert_to_f32(data_, dtype_, t.f32(), size_t(numel()));
  return t;
}

Tensor Tensor::to_dtype(DType dt) const {
  if (dt == dtype_) return clone();
  Tensor src = to_f32();
  if (dt == DType::F32) return src.dtype_ == dtype_ ? clone() : src;
  Tensor t = empty(shape_, dt);
  const float* s = src.f32();
  uint16_t* d = t.data<uint16_t>();
  const size_t n = size_t(numel());
  if (dt == DType::BF16) {
    convert_f32_to_bf16(s, d, n);
  } else if (dt == DType::F16) {
    for (size_t i = 0; i < n; ++i) d[i] = f32_to_f16(s[i]);
  } else {
    throw Error(std::string("cannot convert to ") + dtype_name(dt));
  }
  return t;
}

Tensor& Tensor::make_owned() {
  if (is_view_) *this = clone();
  return *this;
}

void Tensor::release_pages() const {
  if (!is_view_ || !data_) return;
  // Only whole pages inside this tensor: its neighbours in the file keep theirs.
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (uintptr_t(data_) + page - 1) / page * page;
  const uintptr_t end = (uintptr_t(data_) + nbytes()) / page * page;
  // MADV_PAGEOUT reclaims without changing contents whatever the memory is (a mapped file's clean
  // pages are simply dropped); MADV_DONTNEED would zero anonymous memory, so it is not used.
#ifdef MADV_PAGEOUT
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_PAGEOUT);
#endif
}

}  // namespace mb
