// MemoryResource for the host, Buffer and the chunked per-step Arena. Depends on core only.
#include "core/arena.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <utility>

namespace quatre {
namespace {

constexpr size_t kHostAlignment = 256;

uint64_t next_layout_id() {
  static std::atomic<uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

class HostMemory final : public MemoryResource {
 public:
  Device device() const override { return Device::kCpu; }
  void* allocate(size_t bytes) override { return ::operator new(bytes == 0 ? 1 : bytes, std::align_val_t{kHostAlignment}); }
  void deallocate(void* p, size_t) override { ::operator delete(p, std::align_val_t{kHostAlignment}); }
};

}  // namespace

MemoryResource& host_memory() {
  static HostMemory memory;
  return memory;
}

Buffer::Buffer(MemoryResource& memory, size_t bytes) : memory_(&memory), data_(memory.allocate(bytes)), bytes_(bytes) {}

Buffer::~Buffer() {
  if (data_ != nullptr) memory_->deallocate(data_, bytes_);
}

Buffer::Buffer(Buffer&& other) noexcept
    : memory_(std::exchange(other.memory_, nullptr)),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

Buffer& Buffer::operator=(Buffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) memory_->deallocate(data_, bytes_);
    memory_ = std::exchange(other.memory_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

Arena::Arena(MemoryResource& memory, Options options)
    : memory_(&memory), options_(options), layout_id_(next_layout_id()) {
  CHECK(!options.poison || memory.device() == Device::kCpu) << "poisoning is host-only";
}

void Arena::rewind(const Mark& m) {
  CHECK(m.chunk < current_ || (m.chunk == current_ && m.offset <= offset_))
      << "Arena::rewind to a mark after the current position (chunk " << m.chunk << " offset " << m.offset << ", now chunk "
      << current_ << " offset " << offset_ << ")";
  current_ = m.chunk;
  offset_ = m.offset;
  used_before_current_ = m.used_before;
}

void Arena::seek(const Mark& m) {
  CHECK(m.chunk < chunks_.size() && m.offset <= chunks_[m.chunk].bytes())
      << "Arena::seek to chunk " << m.chunk << " offset " << m.offset << " of " << chunks_.size() << " chunks";
  current_ = m.chunk;
  offset_ = m.offset;
  used_before_current_ = m.used_before;
}

void* Arena::allocate(size_t bytes, size_t align) {
  CHECK(align > 0 && align <= kHostAlignment && (align & (align - 1)) == 0) << "alignment " << align;
  for (;;) {
    if (current_ < chunks_.size()) {
      const size_t at = (offset_ + align - 1) / align * align;
      if (at + bytes <= chunks_[current_].bytes()) {
        offset_ = at + bytes;
        void* p = static_cast<std::byte*>(chunks_[current_].data()) + at;
        if (options_.poison && bytes > 0) std::memset(p, 0xFF, bytes);
        return p;
      }
      if (current_ + 1 < chunks_.size() || offset_ > 0) {  // try the next chunk
        used_before_current_ += chunks_[current_].bytes();
        ++current_;
        offset_ = 0;
        continue;
      }
    }
    // No chunk left that can hold it (or the only candidate is empty and too small): grow.
    if (current_ < chunks_.size()) {  // an empty, too-small last chunk: replace it
      chunks_[current_] = Buffer(*memory_, std::max(options_.chunk_bytes, bytes));
      layout_id_ = next_layout_id();  // the old chunk's addresses are gone
    } else {
      chunks_.emplace_back(*memory_, std::max(options_.chunk_bytes, bytes));
    }
    offset_ = 0;
  }
}

Tensor Arena::tensor(DType dtype, std::initializer_list<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return Tensor(allocate(static_cast<size_t>(n) * dtype_size(dtype)), dtype, shape, memory_->device());
}

void Arena::reset() {
  current_ = 0;
  offset_ = 0;
  used_before_current_ = 0;
}

size_t Arena::capacity_bytes() const {
  size_t n = 0;
  for (const Buffer& b : chunks_) n += b.bytes();
  return n;
}

size_t Arena::used_bytes() const { return used_before_current_ + offset_; }

}  // namespace quatre
