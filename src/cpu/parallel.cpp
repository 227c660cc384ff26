#include "parallel.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace nhood::cpu {

int num_threads() {
  static const int n = [] {
    if (const char* env = std::getenv("NHOOD_NUM_THREADS")) {
      const int v = std::atoi(env);
      if (v > 0) return v;
    }
    return std::max(1, int(std::thread::hardware_concurrency()));
  }();
  return n;
}

namespace {

// Set on threads running a chunk: a nested parallel_for runs inline instead
// of waiting on the pool it is part of.
thread_local bool in_parallel_region = false;

// A fixed pool; one job at a time (calls from several host threads queue on
// `submit_mutex`). Workers pull chunk indices from an atomic counter.
class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void run(int64_t chunks, const std::function<void(int64_t)>& chunk_body) {
    std::lock_guard<std::mutex> submit(submit_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &chunk_body;
      chunks_ = chunks;
      next_.store(0);
      pending_ = int(threads_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    drain();  // the caller works too
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_ == 0; });
    body_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void drain() {
    in_parallel_region = true;
    for (int64_t c = next_.fetch_add(1); c < chunks_; c = next_.fetch_add(1)) {
      try {
        (*body_)(c);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
    in_parallel_region = false;
  }

  void work() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      drain();
      std::lock_guard<std::mutex> lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex submit_mutex_, mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};
  int pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

Pool& pool() {
  static Pool p(num_threads() - 1);
  return p;
}

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  // A few chunks per thread balance uneven rows (causal windows, borders).
  parallel_for(n, grain, 4, body);
}

void parallel_for(int64_t n, int64_t grain, int chunks_per_thread,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = num_threads();
  const int64_t per = int64_t(std::max(1, chunks_per_thread)) * threads;
  const int64_t chunk = std::max(grain, (n + per - 1) / per);
  const int64_t chunks = (n + chunk - 1) / chunk;
  if (threads == 1 || chunks == 1 || in_parallel_region) {
    body(0, n);
    return;
  }
  pool().run(chunks, [&](int64_t c) { body(c * chunk, std::min(n, (c + 1) * chunk)); });
}

}  // namespace nhood::cpu
