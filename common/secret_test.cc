#include "common/secret.h"

#include <string>

#include "gtest/gtest.h"

namespace certcast {
namespace {

// Proves CleanseString empties the string so no copy of the key lingers in it.
TEST(SecretTest, CleanseStringEmptiesTheString) {
  std::string s(100, 'k');
  CleanseString(&s);
  EXPECT_TRUE(s.empty());
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
