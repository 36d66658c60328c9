// EngineLoop: the engine thread's loop (drain the inbox, step, dispatch outputs) and its shutdown.
// Depends on engine/engine and the standard library.
#include "engine/engine_loop.h"

#include <exception>

#include "core/error.h"

namespace quatre::engine {

EngineLoop::EngineLoop(Engine& engine) : engine_(engine), thread_([this] { run(); }) {}

EngineLoop::~EngineLoop() { stop(); }

std::future<int64_t> EngineLoop::submit(GenerateRequest request, OnOutput on_output) {
  Submission s{.request = std::move(request), .on_output = std::move(on_output), .id = {}};
  std::future<int64_t> id = s.id.get_future();
  {
    std::lock_guard lock(mutex_);
    if (is_stopping_) {
      s.id.set_exception(std::make_exception_ptr(InvalidRequest("engine: stopped, no request is accepted")));
      return id;
    }
    submissions_.push_back(std::move(s));
  }
  wake_.notify_one();
  return id;
}

void EngineLoop::cancel(int64_t id) {
  {
    std::lock_guard lock(mutex_);
    cancels_.push_back(id);
  }
  wake_.notify_one();
}

void EngineLoop::stop() {
  {
    std::lock_guard lock(mutex_);
    is_stopping_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void EngineLoop::dispatch(const std::vector<RequestOutput>& outputs) {
  for (const RequestOutput& o : outputs) {
    const auto it = callbacks_.find(o.id);
    if (it == callbacks_.end()) continue;
    if (it->second) it->second(o);
    if (o.is_last) callbacks_.erase(it);
  }
}

void EngineLoop::run() {
  while (true) {
    std::vector<Submission> submissions;
    std::vector<int64_t> cancels;
    bool is_stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return is_stopping_ || !submissions_.empty() || !cancels_.empty() || engine_.has_work(); });
      submissions.swap(submissions_);
      cancels.swap(cancels_);
      is_stopping = is_stopping_;
    }
    for (Submission& s : submissions) {
      try {
        const int64_t id = engine_.submit(std::move(s.request));
        callbacks_[id] = std::move(s.on_output);
        s.id.set_value(id);
      } catch (...) {
        s.id.set_exception(std::current_exception());
      }
    }
    for (int64_t id : cancels) engine_.cancel(id);
    if (is_stopping) {
      for (const auto& [id, cb] : callbacks_) engine_.cancel(id);
      while (engine_.has_work() && !callbacks_.empty()) dispatch(engine_.step());  // the cancellations
      return;
    }
    if (engine_.has_work()) dispatch(engine_.step());
  }
}

}  // namespace quatre::engine
