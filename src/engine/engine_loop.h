// EngineLoop: runs an Engine on its own thread. Other threads submit and cancel through a locked inbox; each
// request's outputs reach its callback on the engine thread. The only object shared across threads.
// Depends on engine/engine and the standard library; the server (#8) builds on it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"

namespace quatre::engine {

class EngineLoop {
 public:
  // Called on the engine thread with every output of the request (each of its n choices finishes once; the
  // last output carries is_last).
  // Keep it short (push to a queue); it must not call back into the loop's engine.
  using OnOutput = std::function<void(const RequestOutput&)>;

  // Starts the thread. Until stop(), nobody else may use the engine, nor run its model's backend (the CPU
  // backend runs one forward at a time).
  explicit EngineLoop(Engine& engine);
  ~EngineLoop();                        // stop()
  EngineLoop(const EngineLoop&) = delete;
  EngineLoop& operator=(const EngineLoop&) = delete;

  // Thread-safe. The future holds the request's id once the engine thread has admitted it, or the
  // InvalidRequest that Engine::submit threw.
  std::future<int64_t> submit(GenerateRequest request, OnOutput on_output);
  void cancel(int64_t id);  // thread-safe; unknown or finished ids are ignored
  // Finishes the step in flight, ends every unfinished request as kCancelled, joins the thread. Idempotent.
  void stop();

 private:
  struct Submission {
    GenerateRequest request;
    OnOutput on_output;
    std::promise<int64_t> id;
  };
  void run();
  void dispatch(const std::vector<RequestOutput>& outputs);

  Engine& engine_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::vector<Submission> submissions_;  // guarded by mutex_
  std::vector<int64_t> cancels_;         // guarded by mutex_
  bool is_stopping_ = false;             // guarded by mutex_
  std::unordered_map<int64_t, OnOutput> callbacks_;  // engine thread only
  std::thread thread_;
};

}  // namespace quatre::engine
