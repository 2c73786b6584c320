// A grow-only, 64-byte-aligned scratch block for kernels that repack an operand on every
// call. Held thread_local, so repeated calls (every decoding step) reuse one allocation and
// calls on different threads never share one.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

namespace lgrpo {

class ScratchBlock {
 public:
  ScratchBlock() = default;
  ScratchBlock(const ScratchBlock&) = delete;
  ScratchBlock& operator=(const ScratchBlock&) = delete;
  ~ScratchBlock() { std::free(data_); }

  // Room for `count` values of T; the contents are whatever the last user left.
  template <typename T = float>
  T* get(size_t count) {
    const size_t bytes = (count * sizeof(T) + 63) / 64 * 64;
    if (bytes > capacity_) {
      std::free(data_);
      data_ = nullptr;
      capacity_ = 0;
      data_ = std::aligned_alloc(64, bytes);
      if (!data_) throw std::bad_alloc();
      capacity_ = bytes;
    }
    return static_cast<T*>(data_);
  }

 private:
  void* data_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace lgrpo
