// Engine: the serving loop on one TextModel. Owns the KV cache, the BlockPool, the Scheduler and each
// request's state (sampling parameters, random stream, output); step() runs one forward over the planned
// batch, samples, applies stop conditions and reports tokens and finished requests.
// Depends on core, model, engine/{block_pool,scheduler,sampling,generate}; never on backend internals.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/arena.h"
#include "engine/block_pool.h"
#include "engine/generate.h"
#include "engine/sampling.h"
#include "engine/scheduler.h"
#include "model/kv_cache.h"
#include "model/text_model.h"

namespace quatre::engine {

struct EngineOptions {
  int64_t n_blocks = 0;                // KV cache blocks (kv_blocks_for_bytes sizes it from a memory budget)
  int64_t block_size = 16;
  int64_t max_tokens_per_step = 512;   // token budget of one step
  int64_t max_running = 64;            // sequences in the running batch at once
  int64_t max_context = 0;             // 0: the model's max_position_embeddings (capped at the pool's capacity)
  int32_t eos_id = 2;
  uint64_t seed = 0;                   // seeds requests that carry no seed of their own, in submission order
  bool enable_prefix_caching = true;
  bool poison_kv = true;               // fill the cache with NaN at start, so reads of unwritten entries show
  DType kv_dtype = DType::F32;         // F32, BF16 or F8_E4M3 (model::parse_kv_dtype reads "f32|bf16|fp8")
  // Sampling from a summary the backend makes of each row (Backend::summarize_logits: penalties applied there, the
  // top summary_k candidates and the normalisers come back), when the backend can; rows of requests with a
  // TokenConstraint, and rows the summary cannot decide (pick_from_summary), come back whole. Off: every row comes
  // back whole and is sampled on the host. The same tokens either way.
  bool sample_on_backend = true;
  int32_t summary_k = 64;              // raised to top_k or top_logprobs when they ask for more, up to kMaxSummaryK
};

// Blocks of block_size entries that fit in `bytes` of latent cache of `dtype` (model::kv_block_bytes each:
// n_layers * block_size * (R+Dr) elements), rounded down.
int64_t kv_blocks_for_bytes(const io::TextConfig& text, int64_t block_size, int64_t bytes, DType dtype = DType::F32);
// The same from a budget in GiB (the --kv-memory option); throws InvalidRequest naming kv-memory when the
// budget is not positive and finite or holds not even one block.
int64_t kv_blocks_for_gib(const io::TextConfig& text, int64_t block_size, double gib, DType dtype);

// One hash per row of `features` ([n, width]) over the rows' bit patterns: what the prefix cache mixes into the
// hash of the block holding each image token (GenerateRequest::image_row_hashes).
std::vector<uint64_t> hash_image_rows(std::span<const float> features, int64_t width);

// The seed of choice `choice` of a request seeded with `request_seed`: the seed itself for choice 0, a
// SplitMix64 derivation for the others (so choice i equals a lone request seeded with choice_seed(S, i)).
uint64_t choice_seed(uint64_t request_seed, int32_t choice);

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0;  // natural log of the probability under the distribution sampled from (after penalties,
                      // bias and mask, before temperature/top-k/top-p: what OpenAI reports)
};

// What one step produced for one choice of a request: at most one token, and the finish reason when the
// choice ended. A request is finished once each of its n choices has reported a finish.
struct RequestOutput {
  int64_t id = 0;
  int32_t choice = 0;  // 0..n-1
  std::optional<int32_t> token;
  std::optional<float> logprob;            // of `token`, when the request asked for logprobs
  std::vector<TokenLogprob> top_logprobs;  // the request's top_logprobs alternatives, most likely first
  std::optional<FinishReason> finish;
  std::string error;  // set when a failed step ended the choice (finish kError)
  bool is_last = false;  // the request's last output: every choice has finished
};

struct EngineStats {
  int64_t n_steps = 0;
  int64_t n_forwarded_tokens = 0;  // tokens run through the model (prefix-cache hits are not)
  int64_t n_decode_tokens = 0;     // of those, single tokens that were just sampled; the rest is prefill
  int64_t n_mixed_steps = 0;       // steps that ran decode tokens and prefill together
  int64_t n_preemptions = 0;
  double prefix_hit_rate = 0;      // over full prompt blocks looked up at admission
  int64_t n_summary_samples = 0;   // tokens picked from the backend's summary of their row
  int64_t n_summary_fallbacks = 0; // tokens the summary could not decide: their whole row came back
};

// Single-threaded: every call comes from the engine thread. Other threads go through EngineLoop.
class Engine {
 public:
  Engine(const model::TextModel& model, EngineOptions options);

  // Validates and queues a request (FCFS); returns its id. Throws InvalidRequest for an empty prompt, ids
  // outside the vocabulary, max_tokens < 1, bad sampling parameters, n outside [1, 16], top_logprobs outside
  // [0, 20], a prompt that leaves no room for one token in the context (min(max_context, KV capacity)), n
  // choices that cannot fit in the KV cache together, or image_embeddings that are not one row of hidden_size
  // per image token of the prompt (or any, on a backend without set_rows), or image_row_hashes that are not one
  // per row.
  // Images: row k of image_embeddings replaces the embedding of the prompt's k-th image token in whichever
  // step computes it; each row's hash goes into the prefix-cache hash of its block (equal ids with other
  // images never hit, the same image does).
  // n > 1: the prompt is prefilled once; the first token of every choice is sampled from its logits, then each
  // choice continues as its own sequence that shares the prompt's full blocks (refcounts) and recomputes the
  // prompt's partial last block. Choice i samples from its own stream: choice 0 from the request's seed (so it
  // equals the same request with n = 1), choice i > 0 from a seed derived from it and i.
  int64_t submit(GenerateRequest request);
  // Ends the request (every unfinished choice) at the start of the next step(), which frees its blocks and
  // reports each choice kCancelled.
  // Unknown or finished ids are ignored.
  void cancel(int64_t id);
  // Runs one forward over the scheduled batch (none when idle) and returns what each request produced.
  std::vector<RequestOutput> step();
  bool has_work() const { return scheduler_.has_work() || !cancelled_.empty(); }

  // "kv cache: N blocks x B tokens = C tokens (M MiB bf16); max concurrency X at context L": stable, one line.
  std::string capacity_line() const;
  EngineStats stats() const;
  const BlockPool& block_pool() const { return pool_; }
  const Scheduler& scheduler() const { return scheduler_; }
  int64_t max_context() const { return scheduler_.options().max_context; }

 private:
  struct Choice {
    SamplerRng rng;
    std::vector<int32_t> output;
    std::unique_ptr<TokenConstraint> constraint;  // this choice's clone; null when unconstrained
    bool is_finished = false;
  };
  struct Request {
    GenerateRequest params;
    int64_t n_prompt = 0;
    int64_t max_new = 0;  // output tokens allowed: max_tokens within the context
    std::vector<int64_t> image_positions;  // prompt positions of the image tokens: row k of image_embeddings goes at [k]
    std::vector<Choice> choices;  // [n]
    bool is_forked = false;       // the first token was sampled: each choice has its own sequence
    int32_t n_unfinished = 0;
  };
  // Scheduler sequence of choice c of request id: the request's id for choice 0 (which runs the prompt
  // prefill), -(id * kMaxChoices + c) for the others.
  static constexpr int32_t kMaxChoices = 16;
  static int64_t seq_of(int64_t id, int32_t c) { return c == 0 ? id : -(id * kMaxChoices + c); }
  static int64_t request_of(int64_t seq) { return seq > 0 ? seq : -seq / kMaxChoices; }
  static int32_t choice_of(int64_t seq) { return seq > 0 ? 0 : static_cast<int32_t>(-seq % kMaxChoices); }

  // Ends one choice (or, before the fork, every choice) and reports it; forgets the request after its last.
  void finish(int64_t id, int32_t c, FinishReason reason, std::vector<RequestOutput>& outputs, const std::string& error = {});
  void finish_request(int64_t id, FinishReason reason, std::vector<RequestOutput>& outputs, const std::string& error = {});
  // Penalties, constraint mask, logprobs, the draw, constraint accept, stop conditions for choice c; fills
  // `out` and returns its finish reason when the choice ends with this token.
  // `row` is the step's logits row of the choice: logits_ holds it on the host, or summary_ summarises it.
  std::optional<FinishReason> sample_choice(Request& r, int32_t c, int64_t row, RequestOutput& out);
  void sample_step(int64_t seq_id, int64_t row, std::vector<RequestOutput>& outputs);
  // Row `row` of the step's logits on the host: in logits_, or downloaded once (after the backend's edits, when
  // the step was summarised: rows with a constraint have none).
  std::span<const float> host_row(int64_t row);
  // Queues the image rows of chunk c (whose first token is row `row0` of the step) into image_rows_/image_values_.
  void add_image_rows(const Request& r, const PlannedChunk& c, int64_t row0);

  const model::TextModel& model_;
  EngineOptions options_;
  model::KvCache kv_;
  BlockPool pool_;
  Scheduler scheduler_;
  Arena arena_;
  std::unordered_map<int64_t, Request> requests_;
  std::vector<int64_t> cancelled_;
  int64_t next_id_ = 1;
  uint64_t seed_state_;
  SamplerScratch scratch_;
  std::vector<float> logits_;  // [rows, V] host copy of the step's logits
  std::vector<float> row_;     // [V] one choice's logits being processed
  bool is_summarized_ = false; // this step's rows were summarised on the backend (logits_ unused)
  Tensor step_logits_;         // [rows, V] the step's logits on the backend, edited by summarize_logits
  std::vector<float> fetched_; // [V] row fetched_row_ of step_logits_
  int64_t fetched_row_ = -1;
  LogitsSummary summary_;
  std::vector<LogitEdit> edits_;
  std::vector<RowSummaryArgs> summary_args_;
  std::vector<int32_t> image_rows_;  // the step's [IMG] rows
  std::vector<float> image_values_;  // [image_rows_.size(), D] their features
  EngineStats stats_;
};

}  // namespace quatre::engine
