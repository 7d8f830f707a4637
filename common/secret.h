// SecretBytes holds private key material. Its buffers are wiped (OPENSSL_cleanse) whenever they
// are freed, including on reallocation, and it deliberately has no printing or formatting
// helpers, so key bytes cannot reach a log line or an error message by accident.
// Value type; not thread-safe (like std::string).
#ifndef CERTCAST_COMMON_SECRET_H_
#define CERTCAST_COMMON_SECRET_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace certcast {

// Allocator that wipes memory before releasing it.
template <typename T>
struct CleansingAllocator {
  using value_type = T;
  CleansingAllocator() = default;
  template <typename U>
  CleansingAllocator(const CleansingAllocator<U>&) {}  // NOLINT: allocator rebind
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n);
  bool operator==(const CleansingAllocator&) const { return true; }
  bool operator!=(const CleansingAllocator&) const { return false; }
};

void CleanseMemory(void* p, std::size_t n);

template <typename T>
void CleansingAllocator<T>::deallocate(T* p, std::size_t n) {
  CleanseMemory(p, n * sizeof(T));
  std::allocator<T>().deallocate(p, n);
}

// Wipes a string that held key material (e.g. a protobuf field) and empties it, releasing its
// buffer. The whole capacity is wiped, not just size(): a string that once held a longer key and
// was shortened still has those bytes behind its end. A template so tests can watch the buffer
// being released through their own allocator; callers pass a std::string*.
template <typename Traits, typename Alloc>
void CleanseString(std::basic_string<char, Traits, Alloc>* s) {
  // resize() zero-fills [size, capacity) through the string's own interface (writing past size()
  // through data() would be undefined), then the cleanse covers every byte of the buffer.
  s->resize(s->capacity());
  CleanseMemory(s->data(), s->size());
  s->clear();
  s->shrink_to_fit();
}

class SecretBytes {
 public:
  SecretBytes() = default;
  explicit SecretBytes(absl::string_view bytes) : bytes_(bytes.data(), bytes.size()) {}
  ~SecretBytes() { CleanseMemory(bytes_.data(), bytes_.size()); }  // covers the inline buffer
  SecretBytes(const SecretBytes&) = default;
  SecretBytes& operator=(const SecretBytes&) = default;
  SecretBytes(SecretBytes&&) = default;
  SecretBytes& operator=(SecretBytes&&) = default;

  // The raw bytes. Callers must not log or format them.
  absl::string_view reveal() const { return absl::string_view(bytes_.data(), bytes_.size()); }
  bool empty() const { return bytes_.empty(); }
  std::size_t size() const { return bytes_.size(); }
  bool operator==(const SecretBytes& other) const { return bytes_ == other.bytes_; }
  bool operator!=(const SecretBytes& other) const { return !(*this == other); }

 private:
  std::basic_string<char, std::char_traits<char>, CleansingAllocator<char>> bytes_;
};

}  // namespace certcast

#endif  // CERTCAST_COMMON_SECRET_H_
