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
// sleeping thread needs to wake up. So threads spin briefly (~70 µs) for the next job or
// for the last worker, then yield for a while (wait_briefly), before they block on a
// condition variable.
constexpr int kSpinIterations = 4000;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// After the spin, a thread waiting for work (or for the last worker) yields its core for up
// to this long before it sleeps: waking a sleeping thread costs 50-160 µs in this VM, and
// the training step's jobs come between serial stretches (JavaScript, small kernels run
// inline) of 0.1-1 ms. Yielding leaves the core to any other runnable thread meanwhile.
constexpr auto kYieldFor = std::chrono::microseconds(1000);

// Spins, then yields, until done() or the budget is spent; returns done().
template <class Done>
bool wait_briefly(Done&& done) {
  for (int i = 0; i < kSpinIterations; ++i) {
    if (done()) return true;
    cpu_relax();
  }
  const auto until = std::chrono::steady_clock::now() + kYieldFor;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return done();
    std::this_thread::yield();
  }
  return true;
}

// Dispatch and completion take no lock unless a thread really sleeps: with one mutex
// taken at both ends of every job (as before), the waiting thread and the finishing one
// met on it at each join, and the loser slept in the kernel — a few microseconds per job
// in a VM, paid by the next job too (the worker started 5.7 µs late on average even
// when the jobs came back to back, 160 jobs per training step). Which thread runs which
// slot is unchanged: slot i always runs on worker i (slot 0 on the caller).
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
    // The job's fields are written between two increments of the generation (odd while
    // they change), so a worker can tell a whole job from one half-written.
    generation_.fetch_add(1);
    task_.store(&task, std::memory_order_relaxed);
    task_count_.store(count, std::memory_order_relaxed);
    pending_.store(count - 1, std::memory_order_relaxed);
    generation_.fetch_add(1);
    // A worker about to sleep counts itself under the lock and then checks the generation;
    // this load comes after the increment, so one of the two sees the other.
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    task(0);
    if (!wait_briefly([this] { return pending_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      caller_sleeping_.store(true);
      done_.wait(lock, [this] { return pending_.load() == 0; });
      caller_sleeping_.store(false);
    }
  }

 private:
  void worker_loop(int slot, uint64_t seen) {
    for (;;) {
      uint64_t now = generation_.load(std::memory_order_acquire);
      auto is_new = [&](uint64_t g) { return g != seen && (g & 1) == 0; };
      wait_briefly([&] {
        now = generation_.load(std::memory_order_acquire);
        return is_new(now) || stopping_.load(std::memory_order_relaxed);
      });
      if (stopping_.load()) return;
      if (!is_new(now)) {
        if (now == seen) {
          std::unique_lock<std::mutex> lock(mutex_);
          sleepers_.fetch_add(1);
          wake_.wait(lock, [&] { return stopping_.load() || generation_.load() != seen; });
          sleepers_.fetch_sub(1);
        }
        continue;
      }
      // The job's fields, read after its generation (acquire above) and checked against it
      // after: a worker outside a job may still be reading when the caller, which waits
      // only for the job's own slots, begins writing the next one.
      const int count = task_count_.load(std::memory_order_relaxed);
      const std::function<void(int)>* task = task_.load(std::memory_order_relaxed);
      std::atomic_thread_fence(std::memory_order_acquire);
      if (generation_.load(std::memory_order_relaxed) != now) continue;
      seen = now;
      if (slot >= count) continue;
      (*task)(slot);
      if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
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
  std::atomic<const std::function<void(int)>*> task_{nullptr};
  std::atomic<int> task_count_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> caller_sleeping_{false};
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
