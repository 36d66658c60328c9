// Communicator: the collectives a rank of a tensor/expert-parallel group calls (issue #10), next to Backend: the
// model is written once against both and knows nothing of threads, NCCL or hosts. Implementations live in
// src/parallel/ (ThreadCommunicator: N ranks as N threads on the CPU backend; NcclCommunicator: one GPU per rank).
// Every rank calls the same collectives in the same order with tensors of the same shapes (SPMD); a rank that
// fails makes the others' next collective throw instead of waiting forever. Depends on core only.
#pragma once

#include <cstdint>

#include "core/arena.h"
#include "core/backend.h"
#include "core/tensor.h"

namespace quatre {

// The routed experts one rank holds: global ids [first, first + count).
struct ExpertShard {
  int32_t first = 0;
  int32_t count = 0;
  bool holds(int32_t expert) const { return expert >= first && expert < first + count; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // x <- Σ_ranks x, in place, on every rank; x is F32 or BF16 in the rank's backend memory. Every rank gets the
  // same bits (the sum is taken in one order for all).
  virtual void all_reduce_sum(Tensor x) = 0;
  // local [M, c] F32 of every rank -> out [M, size*c] F32 on every rank: rank r's columns at [r*c, (r+1)*c).
  virtual void all_gather_cols(const Tensor& local, Tensor out) = 0;
  // Expert dispatch. Activations are replicated across the group (tensor-parallel attention ends in an
  // all-reduce), so every rank already holds every token and dispatch moves no data: it keeps the (token, k)
  // pairs of `routing` [T,K] whose expert this rank holds, with ids made local to the shard, and turns the other
  // pairs into local expert 0 with gate 0 (they add exactly 0 to the rank's partial sum). The combine is the
  // all_reduce_sum of the partial MoE outputs. An all-to-all that moves only the routed tokens is the
  // refinement for data-parallel attention across hosts (README, "Several GPUs").
  virtual Routing dispatch(const Routing& routing, ExpertShard shard, Arena& a) = 0;
  virtual void barrier() = 0;
  // From any thread, once a rank has failed: the ranks waiting in a collective (and every later call) throw
  // instead of waiting for the failed one. The communicator cannot be used again.
  virtual void abort() = 0;
};

// The tensor/expert-parallel slice of the model one rank holds. size 1 is the unsharded model.
struct ShardSpec {
  int rank = 0;
  int size = 1;
  bool is_sharded() const { return size > 1; }
  // [begin, begin + n/size) of n items split evenly; n must be a multiple of size (checked at load).
  int64_t begin(int64_t n) const { return n / size * rank; }
  int64_t count(int64_t n) const { return n / size; }
};

}  // namespace quatre
