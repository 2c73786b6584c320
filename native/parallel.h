// A small persistent thread pool. Work is split into fixed contiguous ranges that
// depend only on the problem size and the thread count, never on timing, so every
// kernel gives the same bits run after run.
#pragma once

#include <cstdint>
#include <functional>

namespace lgrpo {

int num_threads();
void set_num_threads(int n);

// Calls body(begin, end) over [0, n) split into at most num_threads() ranges of at
// least `grain` items each. Runs inline when one range suffices. The first exception a
// range throws is rethrown on the calling thread after every range has finished.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body);

}  // namespace lgrpo
