// Tensor: a non-owning view of contiguous row-major memory (data pointer, DType, shape of rank <= 4, Device).
// No heap allocation, no strides: a slice along dim 0 is the only view that stays contiguous. Depends on core only.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>

#include "core/check.h"
#include "core/dtype.h"

namespace quatre {

enum class Device : uint8_t { kCpu, kCuda };
std::string_view device_name(Device d);  // "cpu", "cuda"

class Tensor {
 public:
  static constexpr int kMaxRank = 4;

  Tensor() = default;
  Tensor(void* data, DType dtype, std::span<const int64_t> shape, Device device = Device::kCpu);
  Tensor(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device = Device::kCpu)
      : Tensor(data, dtype, std::span<const int64_t>(shape.begin(), shape.size()), device) {}

  void* data() const { return data_; }
  template <typename T>
  T* data_as() const {
    DCHECK(dtype_size(dtype_) == sizeof(T)) << dtype_name(dtype_) << " viewed as a " << sizeof(T) << "-byte type";
    return static_cast<T*>(data_);
  }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  int rank() const { return rank_; }
  int64_t dim(int i) const;  // i < 0 counts from the end
  std::span<const int64_t> shape() const { return {dims_.data(), static_cast<size_t>(rank_)}; }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_defined() const { return data_ != nullptr || rank_ > 0; }

  // Rows [begin, begin + count) along dim 0.
  Tensor rows(int64_t begin, int64_t count) const;
  // The same memory with another shape of the same numel.
  Tensor reshaped(std::initializer_list<int64_t> shape) const;
  std::string shape_string() const;  // "[17, 64]"

 private:
  void* data_ = nullptr;
  DType dtype_ = DType::F32;
  Device device_ = Device::kCpu;
  int8_t rank_ = 0;
  std::array<int64_t, kMaxRank> dims_{};
};

bool has_shape(const Tensor& t, std::initializer_list<int64_t> shape);

}  // namespace quatre

// CHECK_SHAPE(t, d0, d1...): t has exactly this shape. DCHECK_SHAPE backs the shape comments of hot code.
#define CHECK_SHAPE(t, ...) \
  CHECK(::quatre::has_shape((t), {__VA_ARGS__})) << #t " has shape " << (t).shape_string() << ", expected [" #__VA_ARGS__ "]"
#ifdef NDEBUG
#define DCHECK_SHAPE(t, ...) static_cast<void>(sizeof(::quatre::has_shape((t), {__VA_ARGS__})))  // unevaluated
#else
#define DCHECK_SHAPE(t, ...) CHECK_SHAPE(t, __VA_ARGS__)
#endif
