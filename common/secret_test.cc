#include "common/secret.h"

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace certcast {
namespace {

// Copies every buffer it releases into `released` before freeing it, so a test can see what a
// string left behind in memory without reading freed memory.
struct Released {
  std::vector<std::string> buffers;
};

template <typename T>
struct WatchingAllocator {
  using value_type = T;
  explicit WatchingAllocator(Released* r) : released(r) {}
  template <typename U>
  WatchingAllocator(const WatchingAllocator<U>& other) : released(other.released) {}  // NOLINT
  T* allocate(std::size_t n) { return std::allocator<T>().allocate(n); }
  void deallocate(T* p, std::size_t n) {
    released->buffers.emplace_back(reinterpret_cast<const char*>(p), n * sizeof(T));
    std::allocator<T>().deallocate(p, n);
  }
  bool operator==(const WatchingAllocator& o) const { return released == o.released; }
  bool operator!=(const WatchingAllocator& o) const { return released != o.released; }
  Released* released;
};

using WatchedString = std::basic_string<char, std::char_traits<char>, WatchingAllocator<char>>;

bool AllZero(const std::string& bytes) { return bytes.find_first_not_of('\0') == bytes.npos; }

// Proves CleanseString empties the string and wipes the heap buffer it releases: no copy of the
// key is left in freed memory (fails when the cleanse is removed).
TEST(SecretTest, CleanseStringEmptiesTheString) {
  Released released;
  WatchedString s(100, 'k', WatchingAllocator<char>(&released));
  CleanseString(&s);
  EXPECT_TRUE(s.empty());
  ASSERT_EQ(released.buffers.size(), 1u);
  EXPECT_GE(released.buffers[0].size(), 100u);
  EXPECT_TRUE(AllZero(released.buffers[0]));
}

// Proves the bytes behind the end of a shortened string are wiped too, not just size() of them.
TEST(SecretTest, CleanseStringWipesTheWholeCapacity) {
  Released released;
  WatchedString s(200, 'k', WatchingAllocator<char>(&released));
  s.resize(20);  // keeps the 200-byte buffer; 180 key bytes now sit behind the end
  CleanseString(&s);
  EXPECT_TRUE(s.empty());
  ASSERT_EQ(released.buffers.size(), 1u);
  EXPECT_GE(released.buffers[0].size(), 200u);
  EXPECT_TRUE(AllZero(released.buffers[0]));
}

// Proves the accessor gives back exactly the stored bytes and comparison works.
TEST(SecretTest, RevealReturnsTheBytes) {
  SecretBytes a("not a real key, just bytes");
  SecretBytes b(a);
  EXPECT_EQ(a.reveal(), "not a real key, just bytes");
  EXPECT_EQ(a, b);
  EXPECT_NE(a, SecretBytes("other"));
}

}  // namespace
}  // namespace certcast
