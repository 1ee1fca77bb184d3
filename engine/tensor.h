// Tensor: a dense, contiguous, row-major block of elements with a shape.
//
// The bytes live in a shared "storage" that is either owned (a 64-byte aligned heap block) or
// borrowed (a view into a memory-mapped file, kept alive by a shared handle). Copying a Tensor
// copies the handle, not the data; clone() copies the data.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"

namespace mb {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& s);  // "[2, 3]"
int64_t shape_numel(const Shape& s);

class Tensor {
 public:
  Tensor() = default;

  // Owned, uninitialised / zero-filled memory.
  static Tensor empty(Shape shape, DType dt = DType::F32);
  static Tensor zeros(Shape shape, DType dt = DType::F32);
  static Tensor from_vector(const std::vector<float>& v, Shape shape);

  // A view of bytes owned by someone else; `keepalive` holds them (e.g. a mmapped file).
  static Tensor view(std::shared_ptr<const void> keepalive, const void* data, Shape shape, DType dt);

  // A default-constructed Tensor is undefined and holds nothing (numel 0).
  bool defined() const { return data_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return int(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + ndim() : i]; }
  int64_t numel() const { return defined() ? shape_numel(shape_) : 0; }
  DType dtype() const { return dtype_; }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  bool is_view() const { return is_view_; }
  // For a view (a mapped file): asks the kernel to drop its whole pages from this process's
  // resident memory; contents never change (they are read from the file again on the next
  // access). A no-op for owned memory.
  void release_pages() const;

  // Typed access. f32() throws if the dtype is not F32.
  float* f32();
  const float* f32() const;
  void* raw() { return data_; }
  const void* raw() const { return data_; }
  template <class T> T* data() { return static_cast<T*>(data_); }
  template <class T> const T* data() const { return static_cast<const T*>(data_); }

  // Same storage, new shape (same numel).
  Tensor reshape(Shape shape) const;
  // Deep copy into owned memory.
  Tensor clone() const;
  // F32 tensors are returned as they are (no copy); F16/BF16 are converted into a new F32 tensor.
  Tensor to_f32() const;
  // Owned copy converted to dt (F32 -> F16/BF16 rounds to nearest even).
  Tensor to_dtype(DType dt) const;
  // A writable tensor: views of read-only memory are copied first.
  Tensor& make_owned();

 private:
  std::shared_ptr<const void> storage_;
  void* data_ = nullptr;
  Shape shape_;
  DType dtype_ = DType::F32;
  bool is_view_ = false;
};

}  // namespace mb
