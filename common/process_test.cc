#include "common/process.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <unistd.h>

#include "gtest/gtest.h"

namespace certcast {
namespace {

// Runs after every atexit handler registered later, OpenSSL's own among them (handlers run in
// reverse order): what a gRPC thread still handshaking while main() returns would see.
void DrawRandomBytesDuringExit() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) _exit(3);
}

void ExitWhileOpenSslIsInUse(bool keep) {
  std::atexit(DrawRandomBytesDuringExit);
  if (keep) KeepOpenSslUntilExit();
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) _exit(4);
  std::exit(0);
}

TEST(KeepOpenSslUntilExitTest, OpenSslStillWorksWhileTheProcessExits) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(ExitWhileOpenSslIsInUse(/*keep=*/true), testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace certcast
