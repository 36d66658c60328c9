// Backend: the ops the model calls, at the granularity of the model's blocks (STYLE.md (c)), plus the
// parameter structs they take. The model is written once against this interface; CPU and CUDA implement it.
// Depends on core only: nothing here knows ModelConfig, checkpoints or the forward code.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

#include "core/arena.h"
#include "core/check.h"
#include "core/tensor.h"

namespace quatre {

// T tokens this step   S cached entries     D hidden        H query heads
// R kv_lora_rank       Dn qk_nope_head_dim  Dr qk_rope_dim  Dv v_head_dim
// E routed experts     K experts per token  F expert hidden V vocabulary
// Weights are stored [out, in] as in the checkpoint: matmul(x [M,in], w [out,in]) -> [M,out].
// Activations are F32 tensors that ops allocate in the step's Arena.

// 4-bit weights (core/int4.h): Weight::w is then U8 [out, in/2] of packed codes, and the value is the int4 rule.
struct Int4Weight {
  Tensor scales;   // BF16 [out, in/group_size]
  Tensor offsets;  // BF16 [out, in/group_size] when asymmetric; undefined when symmetric
  int64_t group_size = 0;
  bool is_symmetric() const { return !offsets.is_defined(); }
};

// A stored weight of any float dtype, [out, in] (norms and tables: [n] / [V, D]), or 4-bit (Int4Weight above).
// The real value is float(w) * weight_scale (MODEL.md §6.2; 1 unless FP8).
struct Weight {
  Tensor w;
  float weight_scale = 1.0f;
  std::optional<Int4Weight> int4;  // set: w holds packed 4-bit codes (weight_scale stays 1)
  // FP8 static activation scale a (W8A8, MODEL.md §6.2): when set, every backend's matmul quantises its input
  // x_q = fp8_e4m3(clamp(x / a, ±448)) (round to nearest even) and computes y = (x_q · float(w)ᵀ) · (a ·
  // weight_scale). Unset: W8A16, the fp32 input against the dequantised weight. The loader sets it only for
  // --fp8-activations static (model/text_weights.h), never on kv_b, which the attention absorbs.
  std::optional<float> activation_scale;
};

// SiLU-gated FFN: down(silu(gate·x) ⊙ up·x). gate, up: [F, D]; down: [D, F].
struct FfnWeights {
  Weight gate, up, down;
};

struct MlaDims {
  int64_t n_heads = 0;           // H
  int64_t kv_lora_rank = 0;      // R
  int64_t qk_nope_head_dim = 0;  // Dn
  int64_t qk_rope_head_dim = 0;  // Dr
  int64_t v_head_dim = 0;        // Dv
  int64_t q_width() const { return n_heads * (qk_nope_head_dim + qk_rope_head_dim); }
  int64_t cache_width() const { return kv_lora_rank + qk_rope_head_dim; }
};

// Which cache entries each token of a step reads and writes. Host memory; a device backend uploads it.
// Entry j of sequence s lives at slot block_tables[s][j / block_size] * block_size + j % block_size.
struct AttnMeta {
  std::span<const int32_t> positions = {};     // [T] absolute position (RoPE angle, query temperature)
  std::span<const int32_t> seq_index = {};     // [T] the token's row of block_tables
  std::span<const int32_t> context_lens = {};  // [T] the token attends to its sequence's entries [0, context_len)
  std::span<const int64_t> slots = {};         // [T] slot its own latent is written to (entry context_len - 1)
  std::span<const int32_t> block_tables = {};  // [n_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
};

// Rotary embedding of MLA (MODEL.md §3.4, §3.6): interleaved pairs (2i, 2i+1) of the Dr slice of each
// query head and of the shared k_rope, rotated by the fp32 angle float(pos) * inv_freq[i] with unscaled
// cos/sin; then the Llama-4 temperature 1 + beta * ln(1 + floor(pos / original_max)) on the whole query.
struct RopeArgs {
  std::span<const float> inv_freq = {};   // [Dr/2], host; the backend may cache it
  std::span<const int32_t> positions = {};  // [T]
  MlaDims dims;
  float llama4_beta = 0.0f;  // 0: no temperature
  int64_t llama4_original_max_position_embeddings = 1;
};

enum class MlaForm : uint8_t {
  kNaive,     // expand k_nope = W_UK c and v = W_UV c per head (the spec form, MODEL.md §3.5)
  kAbsorbed,  // q_abs = W_UKᵀ q_nope, scores against the latent, o = W_UV Σ p·c (MODEL.md §5)
};

struct MlaArgs {
  Tensor q;         // [T, H*(Dn+Dr)] head-major, nope then rope; RoPE and temperature applied
  Tensor kv_cache;  // [n_blocks, block_size, R+Dr] this layer's pool; a row is c_kv (normed) then k_rope (roped)
  Weight kv_b;      // [H*(Dn+Dv), R]
  const AttnMeta* meta = nullptr;
  MlaDims dims;
  float softmax_scale = 0.0f;  // multiplies q·k (MODEL.md §4.3)
  MlaForm form = MlaForm::kAbsorbed;
  // The backend may round q and the softmax weights P to BF16 where they meet the cache in its products (CUDA's
  // tensor-core key pass: one mma where fp32 takes three; vLLM's numerics, ~1e-3 relative). false: fp32 operands.
  bool bf16_operands = false;
};

// Pixtral's 2-D rotary embedding (MODEL.md §7.3), in place on q and k [N, H*dh] (F32): in every head, pair j < dh/2
// turns by the fp32 angle float(rows[t]) * freq[2j] for j < dh/4, else float(cols[t]) * freq[2(j - dh/4) + 1], with
// the fp32 cos and sin of that angle: (x0, x1) <- (x0·cos - x1·sin, x1·cos + x0·sin). Pair j is the columns
// (2j, 2j+1) of the head (Mistral-native q/k rows), or (j, j + dh/2) (Hugging Face's rotate-half rows, §2.5).
struct Rope2dArgs {
  std::span<const float> freq = {};     // [dh/2] theta^(-2j/dh), host
  std::span<const int32_t> rows = {};   // [N] each patch's row in its image
  std::span<const int32_t> cols = {};   // [N] and column
  int64_t n_heads = 0;                  // H
  int64_t head_dim = 0;                 // dh, a multiple of 4
  bool half_pairs = false;              // pairs (j, j + dh/2); false: (2j, 2j+1)
};

// Bidirectional softmax attention inside segments (the images of one vision call: a patch sees only its own image's
// patches, MODEL.md §7.3): out[t, h] = Σ_u p_u v[u, h], p = softmax_u(scale · q[t, h]·k[u, h]) over the u of t's
// segment [segment_begin[i], segment_begin[i+1]). q, k, v: [N, H*dh] F32 -> [N, H*dh] F32.
struct SegmentAttentionArgs {
  Tensor q, k, v;
  std::span<const int32_t> segment_begin = {};  // host: 0 = b_0 < b_1 < ... < b_n = N
  int64_t n_heads = 0;                          // H
  float scale = 0.0f;                           // 1/sqrt(dh) for Pixtral
  // q, k, v and the softmax weights rounded to BF16 where they meet, fp32 sums (a backend with tensor cores: CUDA;
  // vLLM's numerics). false: fp32 up to summation order. The CPU backend computes in fp32 either way.
  bool bf16_operands = false;
};

// Throws InvalidRequest unless q and k are F32 [N, H*dh] alike with dh a multiple of 4, and args has N rows and
// columns and dh/2 frequencies. What a rope_2d checks first (core/backend.cpp).
void check_rope_2d_args(const Tensor& q, const Tensor& k, const Rope2dArgs& args);
// Throws InvalidRequest unless q, k, v are F32 [N, H*dh] alike with dh > 0, and the segments cut [0, N) into
// non-empty runs. What a segment_attention checks first (core/backend.cpp).
void check_segment_attention_args(const SegmentAttentionArgs& args);

// Throws InvalidRequest unless every one of the T tokens of `m` attends to a context of 1..max_blocks_per_seq *
// block_size entries of a sequence that has a row of block_tables, whose blocks up to that context lie in
// [0, n_blocks). What an attention op must know before it reads a paged cache (core/backend.cpp).
void check_attn_meta(const AttnMeta& m, int64_t T, int64_t n_blocks, int64_t block_size);

// A forward step that a backend may record once and replay (Backend::run_step).
struct StepRecord {
  // Everything that shapes the step's launches apart from the arena (the model, the token and logit counts, the
  // block-table width, the cache): steps with equal keys differ only in the contents of `inputs`.
  std::span<const int64_t> key;
  // The host arrays the step's ops upload (ids, positions, slots, block tables...): every upload comes from one.
  std::span<const std::span<const std::byte>> inputs;
};

// A non-owning reference to a step's body (no allocation, unlike std::function): valid while the callable lives.
class StepFn {
 public:
  template <typename F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, StepFn>)
  StepFn(F&& f)  // NOLINT(google-explicit-constructor): passed as a lambda
      : obj_(const_cast<void*>(static_cast<const void*>(&f))),
        call_([](void* o) -> Tensor { return (*static_cast<std::remove_reference_t<F>*>(o))(); }) {}
  Tensor operator()() const { return call_(obj_); }

 private:
  void* obj_;
  Tensor (*call_)(void*);
};

struct RouteArgs {
  int64_t n_experts_per_tok = 0;       // K
  float routed_scaling_factor = 1.0f;
};

// Top-K experts of each token, by descending router probability (ties: the lower expert index first).
struct Routing {
  Tensor expert_ids;  // [T,K] I32
  Tensor gates;       // [T,K] F32: p[id] / (Σ_k p[id_k] + 1e-20) * routed_scaling_factor
  // Optional: the (token, k) pairs already grouped per expert by the backend's route, in the layout its moe reads
  // (a device backend groups few tokens in the routing's own launch). Undefined when routed elsewhere (a
  // Communicator's dispatch makes new ids without it): moe then groups them itself.
  Tensor grouping = {};
};

struct MoeArgs {
  Tensor x;                             // [T,D]
  Routing routing;
  std::span<const FfnWeights> experts = {};  // [E]
  const FfnWeights* shared = nullptr;   // added unweighted when present
  // When given, the result is added into this [T,D] tensor (a residual stream: x += MoE(x)), which moe returns,
  // instead of going to a fresh tensor: a device backend folds the add into its last kernel.
  const Tensor* residual = nullptr;
};

// Sampling on the backend (engine/sampling.h holds the rules; the engine picks on the host from this summary).
// One edit of one logit of row `row`: l <- (rep != 1 ? (l > 0 ? l / rep : l * rep) : l) + add, in fp32, each
// operation rounded on its own (no fused multiply-add): the repetition penalty, then -(frequency * count +
// presence), as engine::apply_penalties computes them; a logit bias is an edit of its own {rep = 1, add = bias}.
// Edits are sorted by (row, id); several edits of one (row, id) apply in list order.
struct LogitEdit {
  int32_t row = 0, id = 0;
  float rep = 1.0f;
  float add = 0.0f;
};
// What to summarise of one row: its k most likely tokens (k <= kMaxSummaryK; 0: the row is left alone, edits
// of it still apply) and the temperature of its normaliser (0: none).
struct RowSummaryArgs {
  int32_t k = 0;
  float temperature = 1.0f;
};
inline constexpr int32_t kMaxSummaryK = 256;
// One row's numbers. "Finite" is what sampling keeps: l > -infinity (NaN and -infinity are out). With no finite
// logit: n_finite = n_top = 0, max_logit = -infinity, sums 0.
struct RowSummaryStats {
  double sum_exp = 0;      // Σ exp((l - max_logit) / T) over the row's finite logits, in double; 0 when T = 0
  double log_sum_exp = 0;  // log Σ exp(l - max_logit) over the same (T = 1): log-probability = l - max_logit - this
  float max_logit = 0;
  int32_t n_finite = 0;
  int32_t n_top = 0;       // min(k, n_finite) candidates
  int32_t reserved = 0;
};
static_assert(sizeof(RowSummaryStats) == 32, "RowSummaryStats is the layout a device backend writes");
// The summaries of R rows: row r's candidates are ids/logits [r*stride, r*stride + n_top), by logit descending,
// lower id first on ties (the order of engine::pick_token), the logits after the edits.
struct LogitsSummary {
  int32_t stride = 0;  // the largest k asked
  std::vector<RowSummaryStats> rows;
  std::vector<int32_t> ids;  // [R, stride]
  std::vector<float> logits; // [R, stride]
  struct Row {
    RowSummaryStats stats;
    std::span<const int32_t> ids;  // [n_top]
    std::span<const float> logits; // [n_top]
  };
  Row row(int64_t r) const {
    const RowSummaryStats& st = rows[static_cast<size_t>(r)];
    const auto at = static_cast<size_t>(r * stride), n = static_cast<size_t>(st.n_top);
    return {st, std::span(ids).subspan(at, n), std::span(logits).subspan(at, n)};
  }
};

// The checks every summarize_logits makes: logits [R,V] F32, one args entry per row with k in [0, kMaxSummaryK]
// and a temperature >= 0, edits inside [R,V] and sorted by (row, id). Returns the largest k.
inline int32_t check_summary_args(const Tensor& logits, std::span<const LogitEdit> edits, std::span<const RowSummaryArgs> args) {
  CHECK(logits.dtype() == DType::F32 && logits.rank() == 2) << "summarize_logits: logits " << logits.shape_string() << " of " << dtype_name(logits.dtype());
  const int64_t R = logits.dim(0), V = logits.dim(1);
  CHECK(static_cast<int64_t>(args.size()) == R) << "summarize_logits: " << args.size() << " args for " << R << " rows";
  int32_t k_max = 0;
  for (const RowSummaryArgs& a : args) {
    CHECK(a.k >= 0 && a.k <= kMaxSummaryK && a.temperature >= 0) << "summarize_logits: k " << a.k << ", temperature " << a.temperature;
    k_max = std::max(k_max, a.k);
  }
  for (size_t i = 0; i < edits.size(); ++i) {
    const LogitEdit& e = edits[i];
    CHECK(e.row >= 0 && e.row < R && e.id >= 0 && e.id < V) << "summarize_logits: edit of (" << e.row << ", " << e.id << ") in " << logits.shape_string();
    CHECK(i == 0 || std::pair(edits[i - 1].row, edits[i - 1].id) <= std::pair(e.row, e.id)) << "summarize_logits: edits not sorted by (row, id) at " << i;
  }
  return k_max;
}

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual MemoryResource& memory() = 0;  // where Arenas and the KV cache of this backend live

  // Makes a stored weight (host memory, e.g. an mmapped checkpoint) usable by this backend. The CPU backend
  // returns it unchanged and dequantises on the fly; a device backend copies it.
  virtual Weight prepare_weight(const Weight& stored) = 0;
  virtual void copy_to_host(const Tensor& src, void* dst) = 0;
  virtual void fill(Tensor t, float value) = 0;  // F32 tensors

  virtual Tensor embed(std::span<const int32_t> ids, const Weight& table, Arena& a) = 0;   // -> [T,D]
  virtual Tensor rms_norm(const Tensor& x, const Weight& g, float eps, Arena& a) = 0;     // [M,n] -> [M,n]
  virtual Tensor matmul(const Tensor& x, const Weight& w, Arena& a) = 0;                  // [M,in]·[out,in]ᵀ
  virtual void add_to(Tensor x, const Tensor& y) = 0;                                     // x += y
  // y += x · wᵀ (y [M,out]), as add_to(y, matmul(x, w, a)) computes it; a device backend adds in the matmul's store.
  virtual void matmul_add(Tensor y, const Tensor& x, const Weight& w, Arena& a) { add_to(y, matmul(x, w, a)); }
  virtual std::pair<Tensor, Tensor> split_cols(const Tensor& x, int64_t n_left, Arena& a) = 0;  // copies
  virtual Tensor gather_rows(const Tensor& x, std::span<const int32_t> rows, Arena& a) = 0;
  // Overwrites row rows[i] of x [T,D] (F32) with values [i*D, (i+1)*D) from host memory: image features spliced
  // over the [IMG] embeddings (MODEL.md §7.6). The default serves host-memory tensors; a device backend overrides it.
  virtual void set_rows(Tensor x, std::span<const int32_t> rows, std::span<const float> values) {
    CHECK(x.device() == Device::kCpu && x.dtype() == DType::F32) << "set_rows: this backend keeps activations off the host";
    const int64_t T = x.dim(0), D = x.dim(1);
    CHECK(static_cast<int64_t>(values.size()) == static_cast<int64_t>(rows.size()) * D)
        << "set_rows: " << values.size() << " values for " << rows.size() << " rows of " << D;
    for (size_t i = 0; i < rows.size(); ++i) {
      CHECK(rows[i] >= 0 && rows[i] < T) << "set_rows: row " << rows[i] << " of " << T;
      std::copy_n(values.data() + i * static_cast<size_t>(D), D, x.data_as<float>() + rows[i] * D);
    }
  }
  // Whether set_rows works here (the engine refuses image features otherwise, rather than failing a step); a
  // device backend that overrides set_rows overrides this too.
  virtual bool can_set_rows() const { return device() == Device::kCpu; }

  // In place: q [T,H*(Dn+Dr)] (its Dr slices, then times the Llama-4 temperature) and k_rope [T,Dr]; either may be
  // an undefined Tensor (not rotated).
  virtual void rope(Tensor q, Tensor k_rope, const RopeArgs& args) = 0;
  // Writes row t of [c_kv | k_rope] ([T,R], [T,Dr]) to slot slots[t] of kv_cache [n_blocks, block_size, R+Dr].
  virtual void kv_write(Tensor kv_cache, const Tensor& c_kv, const Tensor& k_rope, std::span<const int64_t> slots) = 0;
  // MLA's step between the projections and attention (MODEL.md §3.3-3.6): q [T,H*(Dn+Dr)] roped in place (as
  // rope; an undefined q: not) and the cache entries from kv_a's output [T, R+Dr]: slot slots[t] of kv_cache gets
  // [RMSNorm(kv_a[t, :R]) · kv_norm | RoPE(kv_a[t, R:])]. The default composes split_cols, rms_norm, rope and
  // kv_write; a device backend does it in one kernel.
  virtual void rope_kv_write(Tensor q, Tensor kv_cache, const Tensor& kv_a, const Weight& kv_norm, float eps,
                             const RopeArgs& rope_args, std::span<const int64_t> slots, Arena& a);
  virtual Tensor mla_attention(const MlaArgs& args, Arena& a) = 0;  // -> [T, H*Dv]

  // The vision tower's ops (Pixtral, MODEL.md §7.3-§7.6); the rest of it is rms_norm, matmul, ffn and add_to.
  virtual void rope_2d(Tensor q, Tensor k, const Rope2dArgs& args) = 0;                       // in place
  virtual Tensor segment_attention(const SegmentAttentionArgs& args, Arena& a) = 0;          // -> [N, H*dh]
  virtual void gelu(Tensor x) = 0;  // in place, F32: x <- 0.5·x·(1 + erf(x/√2)) (the projector's exact GELU)

  virtual Routing route(const Tensor& logits, const RouteArgs& args, Arena& a) = 0;  // logits [T,E]
  virtual Tensor moe(const MoeArgs& args, Arena& a) = 0;                             // -> [T,D]
  virtual Tensor ffn(const Tensor& x, const FfnWeights& w, Arena& a) = 0;            // -> [T,D]

  // Applies `edits` to logits [R,V] (F32, in place), then summarises each row with args[r].k > 0 (above). One
  // upload and one download on a device backend. A row's edited logits stay in `logits` for a caller that needs
  // the whole row (copy_to_host of logits.rows(r, 1)): apply no penalties to them again.
  virtual LogitsSummary summarize_logits(Tensor logits, std::span<const LogitEdit> edits,
                                         std::span<const RowSummaryArgs> args, Arena& a) {
    (void)logits, (void)edits, (void)args, (void)a;
    CHECK(false) << "summarize_logits: not implemented by this backend (check can_summarize_logits)";
    return {};
  }
  virtual bool can_summarize_logits() const { return false; }

  // Runs one forward step, `run`, whose launches depend only on step.key and the arena's position, and whose
  // host data comes only from step.inputs (their contents checked by the caller: a replay checks nothing). A
  // device backend may record the launches of a key it has seen before and replay them for later steps of it
  // (CUDA graphs), leaving `a` where run() would have; the default just runs it.
  virtual Tensor run_step(const StepRecord& step, Arena& a, StepFn run) {
    (void)step, (void)a;
    return run();
  }

  // A branch: the ops issued between begin_branch() and end_branch() may run beside those issued from then until
  // join_branch(), after which every op runs after both. The two sides must not touch each other's results (both
  // read tensors made before the branch); no branch inside a branch. A device backend runs the branch on a second
  // queue, so that two chains of small kernels share the GPU; by default the ops run in the order issued.
  virtual void begin_branch() {}
  virtual void end_branch() {}
  virtual void join_branch() {}
};

// begin_branch() now, end_branch() at end() or, when an exception leaves the scope first, at its destruction
// (the exception in flight wins over an error of end_branch's).
class BranchScope {
 public:
  explicit BranchScope(Backend& b) : b_(&b) { b.begin_branch(); }
  void end() { std::exchange(b_, nullptr)->end_branch(); }
  ~BranchScope() {
    if (b_ == nullptr) return;
    try {
      b_->end_branch();
    } catch (...) {  // unwinding already
    }
  }
  BranchScope(const BranchScope&) = delete;
  BranchScope& operator=(const BranchScope&) = delete;

 private:
  Backend* b_;
};

bool is_available(Device d);
// The only code that names the implementations (src/backend/make_backend.cpp). Throws LoadError when the
// device has no backend in this build.
std::unique_ptr<Backend> make_backend(Device d);

}  // namespace quatre
