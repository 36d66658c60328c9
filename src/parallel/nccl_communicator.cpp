// NcclCommunicator: NCCL collectives on the communicator's stream, fenced against the CudaBackend's stream by host
// waits. NCCL is opened at run time (dlopen libnccl.so.2) the first time a communicator is made, so `quatre` and the
// tests start on hosts without NCCL (the library is 218 MB) and only --tensor-parallel-size > 1 on cuda needs it.
// Depends on core, the CUDA runtime and NCCL's header.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstring>
#include <mutex>

#include <fmt/format.h>

#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/device_info.h"
#include "core/error.h"
#include "parallel/parallel_kernels.h"

namespace quatre::parallel {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclId::bytes), "ncclUniqueId is 128 bytes");

// The NCCL entry points quatre calls, resolved from libnccl.so.2.
struct NcclApi {
  decltype(&::ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&::ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&::ncclCommDestroy) comm_destroy = nullptr;
  decltype(&::ncclCommAbort) comm_abort = nullptr;
  decltype(&::ncclAllReduce) all_reduce = nullptr;
  decltype(&::ncclAllGather) all_gather = nullptr;
  decltype(&::ncclGetErrorString) error_string = nullptr;
};

template <typename F>
void resolve(void* lib, const char* name, F& f) {
  f = reinterpret_cast<F>(dlsym(lib, name));
  if (f == nullptr) throw CudaError(fmt::format("libnccl.so.2 has no {}", name));
}

// Throws CudaError naming the library when NCCL cannot be opened.
const NcclApi& nccl() {
  static NcclApi api;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    void* lib = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) {
      const char* why = dlerror();
      error = fmt::format("--tensor-parallel-size on cuda needs NCCL: cannot open libnccl.so.2 ({}); install it "
                          "(Debian: libnccl2) or add its folder to LD_LIBRARY_PATH",
                          why != nullptr ? why : "not found");
      return;
    }
    try {
      resolve(lib, "ncclGetUniqueId", api.get_unique_id);
      resolve(lib, "ncclCommInitRank", api.comm_init_rank);
      resolve(lib, "ncclCommDestroy", api.comm_destroy);
      resolve(lib, "ncclCommAbort", api.comm_abort);
      resolve(lib, "ncclAllReduce", api.all_reduce);
      resolve(lib, "ncclAllGather", api.all_gather);
      resolve(lib, "ncclGetErrorString", api.error_string);
    } catch (const CudaError& e) {
      error = e.what();
    }
  });
  if (!error.empty()) throw CudaError(error);
  return api;
}

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw CudaError(fmt::format("{}: {}", what, cudaGetErrorString(status)));
}

void check_nccl(ncclResult_t status, const char* what) {
  if (status != ncclSuccess) throw CudaError(fmt::format("{}: NCCL {}", what, nccl().error_string(status)));
}

ncclComm_t as_comm(void* p) { return static_cast<ncclComm_t>(p); }
cudaStream_t as_stream(void* p) { return static_cast<cudaStream_t>(p); }

ncclDataType_t nccl_type(DType dtype, const char* op) {
  switch (dtype) {
    case DType::F32:
      return ncclFloat32;
    case DType::BF16:
      return ncclBfloat16;
    default:
      throw CudaError(fmt::format("{}: F32 or BF16 tensors, got {}", op, dtype_name(dtype)));
  }
}

void check_device(const Tensor& t, const char* op) {
  if (t.device() != Device::kCuda) throw CudaError(fmt::format("{}: a tensor in {} memory, expected cuda", op, device_name(t.device())));
}

}  // namespace

NcclId nccl_unique_id() {
  ncclUniqueId id;
  check_nccl(nccl().get_unique_id(&id), "ncclGetUniqueId");
  NcclId out;
  std::memcpy(out.bytes.data(), &id, sizeof id);
  return out;
}

std::string nccl_id_hex(const NcclId& id) {
  std::string hex;
  for (char c : id.bytes) hex += fmt::format("{:02x}", static_cast<unsigned char>(c));
  return hex;
}

NcclId nccl_id_from_hex(const std::string& hex) {
  NcclId id;
  if (hex.size() != 2 * id.bytes.size()) {
    throw InvalidRequest(fmt::format("NCCL id: {} hex digits, expected {}", hex.size(), 2 * id.bytes.size()));
  }
  for (size_t i = 0; i < id.bytes.size(); ++i) {
    unsigned value = 0;
    for (size_t k = 0; k < 2; ++k) {
      const char c = hex[2 * i + k];
      const int digit = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (digit < 0) throw InvalidRequest(fmt::format("NCCL id: '{}' at {} is not a lowercase hex digit", c, 2 * i + k));
      value = value * 16 + static_cast<unsigned>(digit);
    }
    id.bytes[i] = static_cast<char>(value);
  }
  return id;
}

void use_cuda_device(int device) { check_cuda(cudaSetDevice(device), "cudaSetDevice"); }

void check_gpu_ranks(int size) {
  const int gpus = cuda::device_count();
  if (gpus < size) {
    throw InvalidRequest(fmt::format("tensor-parallel-size: {} GPUs asked for, {} visible (one GPU per rank)", size, gpus));
  }
}

std::unique_ptr<Communicator> make_nccl_communicator(Backend& backend, const NcclId& id, int rank, int size) {
  return std::make_unique<NcclCommunicator>(backend, id, rank, size);
}

NcclCommunicator::NcclCommunicator(Backend& backend, const NcclId& id, int rank, int size)
    : backend_(dynamic_cast<cuda::CudaBackend*>(&backend)), rank_(rank), size_(size) {
  if (backend_ == nullptr) throw CudaError("NcclCommunicator: the rank's backend must be the CUDA backend");
  ncclUniqueId nccl_id;
  std::memcpy(&nccl_id, id.bytes.data(), sizeof nccl_id);
  cudaStream_t stream = nullptr;
  check_cuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
  stream_ = stream;
  ncclComm_t comm = nullptr;
  const NcclApi& api = nccl();
  const ncclResult_t status = api.comm_init_rank(&comm, size, nccl_id, rank);
  if (status != ncclSuccess) {
    cudaStreamDestroy(stream);
    throw CudaError(fmt::format("ncclCommInitRank (rank {} of {}): NCCL {}", rank, size, api.error_string(status)));
  }
  comm_ = comm;
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr) nccl().comm_destroy(as_comm(comm_));
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (stream_ != nullptr) cudaStreamDestroy(as_stream(stream_));
}

void NcclCommunicator::abort() {
  if (comm_ != nullptr) nccl().comm_abort(as_comm(comm_));
  comm_ = nullptr;
}

void NcclCommunicator::before() {
  if (comm_ == nullptr) throw CudaError("NCCL communicator aborted: another rank failed");
  backend_->synchronize();  // the inputs are written
}

void NcclCommunicator::after(const char* op) { check_cuda(cudaStreamSynchronize(as_stream(stream_)), op); }

void NcclCommunicator::all_reduce_sum(Tensor x) {
  check_device(x, "all_reduce_sum");
  before();
  check_nccl(nccl().all_reduce(x.data(), x.data(), static_cast<size_t>(x.numel()), nccl_type(x.dtype(), "all_reduce_sum"),
                           ncclSum, as_comm(comm_), as_stream(stream_)),
             "ncclAllReduce");
  after("all_reduce_sum");
}

// local [M,c] -> scratch [size][M,c] -> out [M, size*c]
void NcclCommunicator::all_gather_cols(const Tensor& local, Tensor out) {
  check_device(local, "all_gather_cols");
  check_device(out, "all_gather_cols");
  CHECK(local.rank() == 2 && local.dtype() == DType::F32) << "all_gather_cols: local must be [M,c] F32";
  const int64_t M = local.dim(0), c = local.dim(1);
  CHECK_SHAPE(out, M, size_ * c);
  const size_t bytes = static_cast<size_t>(size_ * M * c) * sizeof(float);
  if (bytes > scratch_bytes_) {
    if (scratch_ != nullptr) check_cuda(cudaFree(scratch_), "cudaFree");
    scratch_ = nullptr;
    check_cuda(cudaMalloc(&scratch_, bytes), "cudaMalloc (all_gather_cols scratch)");
    scratch_bytes_ = bytes;
  }
  before();
  check_nccl(nccl().all_gather(local.data(), scratch_, static_cast<size_t>(M * c), ncclFloat32, as_comm(comm_),
                           as_stream(stream_)),
             "ncclAllGather");
  check_cuda(launch_cols_from_ranks(static_cast<const float*>(scratch_), size_, M, c, out.data_as<float>(),
                                    as_stream(stream_)),
             "cols_from_ranks");
  after("all_gather_cols");
}

Routing NcclCommunicator::dispatch(const Routing& routing, ExpertShard shard, Arena& a) {
  const Tensor& ids = routing.expert_ids;
  check_device(ids, "dispatch");
  CHECK(ids.rank() == 2 && ids.dtype() == DType::I32) << "dispatch: expert ids must be [T,K] I32";
  const int64_t T = ids.dim(0), K = ids.dim(1);
  CHECK_SHAPE(routing.gates, T, K);
  Routing out{.expert_ids = a.tensor(DType::I32, {T, K}), .gates = a.tensor(DType::F32, {T, K})};
  before();
  check_cuda(launch_dispatch(ids.data_as<int32_t>(), routing.gates.data_as<float>(), T * K, shard.first, shard.count,
                             out.expert_ids.data_as<int32_t>(), out.gates.data_as<float>(), as_stream(stream_)),
             "dispatch");
  after("dispatch");
  return out;
}

void NcclCommunicator::barrier() {
  if (scratch_bytes_ < sizeof(float)) {
    check_cuda(cudaMalloc(&scratch_, 256), "cudaMalloc (barrier scratch)");
    scratch_bytes_ = 256;
  }
  before();
  check_nccl(nccl().all_reduce(scratch_, scratch_, 1, ncclFloat32, ncclSum, as_comm(comm_), as_stream(stream_)),
             "ncclAllReduce (barrier)");
  after("barrier");
}

}  // namespace quatre::parallel
