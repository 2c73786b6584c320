// A small persistent thread pool. Work is split into fixed contiguous ranges that
// depend only on the problem size and the thread count, never on timing, so every
// kernel gives the same bits run after run.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>

namespace lgrpo {

int num_threads();
void set_num_threads(int n);

// Calls body(begin, end) over [0, n) split into at most num_threads() ranges of at
// least `grain` items each. Runs inline when one range suffices. The first exception a
// range throws is rethrown on the calling thread after every range has finished.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

// Calls body(c) once for every chunk c in [0, chunks), the pool's threads claiming chunks one
// at a time. For streaming kernels whose every output has the same bits whichever thread
// makes it: a thread that wakes late or runs slow (a busy host) takes fewer chunks instead of
// holding up the join with a fixed half. body must not throw.
template <class Body>
void parallel_chunks(int64_t chunks, Body&& body) {
  if (chunks <= 0) return;
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(num_threads(), chunks), 1, [&](int64_t, int64_t) {
    for (int64_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) body(c);
  });
}

}  // namespace lgrpo
