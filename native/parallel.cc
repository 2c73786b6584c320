#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace lgrpo {
namespace {

// Kernels on a training step's small tensors take tens of microseconds, about what a
// sleeping thread needs to wake up. So threads spin briefly (~50 µs) for the next job or
// for the last worker before they block on a condition variable.
constexpr int kSpinIterations = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads) { resize(threads); }
  ~ThreadPool() { stop_workers(); }

  // Atomic because buildInfo() and parallel_for's fast path read it from any thread
  // while set_num_threads() may be resizing.
  int size() const { return size_.load(); }

  void resize(int threads) {
    stop_workers();
    stopping_ = false;
    size_.store(threads);
    // New workers must not mistake the last finished job for a new one.
    uint64_t current = generation_.load();
    for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i, current] { worker_loop(i, current); });
  }

  // Runs task(i) for i in [0, count) with count <= size(); slot 0 runs on the caller.
  // A larger count would wait forever for slots no worker runs: callers hold run_mutex()
  // from reading size() to the end of the job, and resizing takes the same lock.
  void run(int count, const std::function<void(int)>& task) {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      task_ = &task;
      task_count_ = count;
      pending_.store(count - 1);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    task(0);
    for (int i = 0; i < kSpinIterations && pending_.load(std::memory_order_acquire) != 0; ++i) cpu_relax();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return pending_.load() == 0; });
    task_ = nullptr;
  }

 private:
  void worker_loop(int slot, uint64_t seen) {
    for (;;) {
      for (int i = 0; i < kSpinIterations && generation_.load(std::memory_order_acquire) == seen && !stopping_.load(); ++i)
        cpu_relax();
      const std::function<void(int)>* task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
        if (stopping_) return;
        seen = generation_.load();
        if (slot >= task_count_) continue;
        task = task_;
      }
      (*task)(slot);
      if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        // Taking the lock orders this notify after the caller's predicate check.
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_one();
      }
    }
  }

  void stop_workers() {
    {
      std::unique_lock<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int)>* task_ = nullptr;
  int task_count_ = 0;
  std::atomic<int> pending_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<int> size_{1};
};

int default_threads() {
  if (const char* env = std::getenv("LGRPO_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

ThreadPool& pool() {
  static ThreadPool instance(default_threads());
  return instance;
}

// Test hook: LGRPO_DEBUG_PARALLEL_DELAY_US widens the gap between parallel_for's first
// read of the pool size and its run lock, so the resize race it once lost (a deadlock
// that took seconds of luck to hit) is hit every time by test/parallel.test.ts.
int debug_delay_us() {
  static const int delay = [] {
    const char* env = std::getenv("LGRPO_DEBUG_PARALLEL_DELAY_US");
    return env ? std::max(0, std::atoi(env)) : 0;
  }();
  return delay;
}

std::mutex& run_mutex() {
  static std::mutex m;
  return m;
}

}  // namespace

int num_threads() { return pool().size(); }

void set_num_threads(int n) {
  std::lock_guard<std::mutex> lock(run_mutex());
  pool().resize(std::max(1, n));
}

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t ranges = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (ranges <= 1) {
    body(0, n);
    return;
  }
  if (debug_delay_us() > 0) std::this_thread::sleep_for(std::chrono::microseconds(debug_delay_us()));
  // Nested or concurrent calls run inline rather than deadlock on the shared pool.
  std::unique_lock<std::mutex> lock(run_mutex(), std::try_to_lock);
  if (!lock.owns_lock()) {
    body(0, n);
    return;
  }
  // The pool size is read again under the run lock: set_num_threads() takes the same lock
  // to resize, so the count cannot shrink between this read and the job (it did, once:
  // the job then waited forever for slots no thread would run).
  ranges = std::min<int64_t>(pool().size(), ranges);
  if (ranges <= 1) {
    lock.unlock();
    body(0, n);
    return;
  }
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto task = [&](int slot) {
    int64_t begin = n * slot / ranges, end = n * (slot + 1) / ranges;
    try {
      body(begin, end);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
    }
  };
  pool().run(static_cast<int>(ranges), task);
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace lgrpo
