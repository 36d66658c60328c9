// Memory owners of the core layer: MemoryResource (where a backend's memory lives), Buffer (one owned
// allocation) and Arena (per-step scratch, reset every step). Depends on core/tensor.h only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "core/tensor.h"

namespace quatre {

// Allocates memory of one device. Backends hand theirs out; host_memory() is plain aligned new/delete.
class MemoryResource {
 public:
  virtual ~MemoryResource() = default;
  virtual Device device() const = 0;
  virtual void* allocate(size_t bytes) = 0;  // aligned to at least 256 bytes; throws std::bad_alloc
  virtual void deallocate(void* p, size_t bytes) = 0;
};
MemoryResource& host_memory();

// One owned allocation; move-only.
class Buffer {
 public:
  Buffer() = default;
  Buffer(MemoryResource& memory, size_t bytes);
  ~Buffer();
  Buffer(Buffer&& other) noexcept;
  Buffer& operator=(Buffer&& other) noexcept;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return memory_ ? memory_->device() : Device::kCpu; }

 private:
  MemoryResource* memory_ = nullptr;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// Scratch memory for one forward step. Allocation bumps a pointer through a list of chunks; reset() rewinds
// to the first chunk and keeps them all, so a step that repeats the previous step's allocations touches no
// allocator. A request that does not fit the current chunk moves on to the next one (allocating a new chunk
// of max(chunk_bytes, request) only when none is left), so earlier pointers stay valid until reset().
class Arena {
 public:
  struct Options {
    size_t chunk_bytes = size_t{4} << 20;
    // Fill every allocation with 0xFF bytes (NaN for floats), so reading memory nobody wrote shows.
    bool poison = false;
  };
  explicit Arena(MemoryResource& memory = host_memory()) : Arena(memory, Options{}) {}
  Arena(MemoryResource& memory, Options options);
  Arena(const Arena&) = delete;  // a layout_id names one arena's chunks
  Arena& operator=(const Arena&) = delete;

  void* allocate(size_t bytes, size_t align = 64);
  Tensor tensor(DType dtype, std::initializer_list<int64_t> shape);
  template <typename T>
  T* array(size_t n) {
    return static_cast<T*>(allocate(n * sizeof(T), alignof(T) < 64 ? 64 : alignof(T)));
  }
  void reset();

  // A position in the arena. rewind(m) frees what was allocated after mark() returned m and keeps what came
  // before (the forward rewinds to the residual stream after each layer, so a step's scratch is one layer's,
  // not every layer's). The freed chunks stay for the next allocations; pointers into them become scratch.
  struct Mark {
    size_t chunk = 0, offset = 0, used_before = 0;
  };
  Mark mark() const { return {current_, offset_, used_before_current_}; }
  void rewind(const Mark& m);
  // Moves to a mark taken earlier in an identical sequence of allocations (a replayed step: its tensors are where
  // the recorded step put them, and what the caller allocates next comes after them). The mark's chunk must exist.
  void seek(const Mark& m);
  // Changes whenever a chunk is freed or replaced, unique over all arenas: two equal ids and marks mean the same
  // addresses for the same allocations.
  uint64_t layout_id() const { return layout_id_; }

  Device device() const { return memory_->device(); }
  size_t capacity_bytes() const;       // sum of the chunks
  size_t n_chunks() const { return chunks_.size(); }
  size_t used_bytes() const;           // since the last reset, counting skipped chunk tails

 private:
  MemoryResource* memory_;
  Options options_;
  std::vector<Buffer> chunks_;
  size_t current_ = 0;  // chunk being filled
  size_t offset_ = 0;   // bytes used in it
  size_t used_before_current_ = 0;
  uint64_t layout_id_;
};

}  // namespace quatre
