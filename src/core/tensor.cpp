// Tensor view: shape bookkeeping and slicing. Depends on core only.
#include "core/tensor.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace quatre {

std::string_view device_name(Device d) {
  switch (d) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "unknown";
}

Tensor::Tensor(void* data, DType dtype, std::span<const int64_t> shape, Device device)
    : data_(data), dtype_(dtype), device_(device), rank_(static_cast<int8_t>(shape.size())) {
  CHECK(shape.size() <= kMaxRank) << "rank " << shape.size() << " > " << kMaxRank;
  for (size_t i = 0; i < shape.size(); ++i) {
    CHECK(shape[i] >= 0) << "negative dimension " << shape[i];
    dims_[i] = shape[i];
  }
}

int64_t Tensor::dim(int i) const {
  const int at = i < 0 ? rank_ + i : i;
  CHECK(at >= 0 && at < rank_) << "dim " << i << " of a rank-" << int{rank_} << " tensor";
  return dims_[static_cast<size_t>(at)];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[static_cast<size_t>(i)];
  return n;
}

Tensor Tensor::rows(int64_t begin, int64_t count) const {
  CHECK(rank_ >= 1 && begin >= 0 && count >= 0 && begin + count <= dims_[0])
      << "rows [" << begin << ", " << begin + count << ") of " << shape_string();
  Tensor t = *this;
  t.dims_[0] = count;
  const size_t row_bytes = dims_[0] == 0 ? 0 : bytes() / static_cast<size_t>(dims_[0]);
  t.data_ = static_cast<std::byte*>(data_) + static_cast<size_t>(begin) * row_bytes;
  return t;
}

Tensor Tensor::reshaped(std::initializer_list<int64_t> shape) const {
  Tensor t(data_, dtype_, shape, device_);
  CHECK(t.numel() == numel()) << "reshape " << shape_string() << " to " << t.shape_string();
  return t;
}

std::string Tensor::shape_string() const { return fmt::format("[{}]", fmt::join(shape(), ", ")); }

bool has_shape(const Tensor& t, std::initializer_list<int64_t> shape) {
  if (static_cast<size_t>(t.rank()) != shape.size()) return false;
  int i = 0;
  for (int64_t d : shape) {
    if (t.dim(i++) != d) return false;
  }
  return true;
}

}  // namespace quatre
