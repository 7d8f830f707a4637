#include "common/process.h"

#include <malloc.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

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

constexpr int kNoArenaCount = 100;

// Four threads allocate and stay until all four have (an ended thread's arena is handed to the
// next one): without a cap glibc gives each its own arena. Exits with the number of arenas
// malloc_info reports.
void ExitWithArenaCount(bool one_arena, const char* malloc_arena_max) {
  if (malloc_arena_max != nullptr) setenv("MALLOC_ARENA_MAX", malloc_arena_max, 1);
  if (one_arena) UseOneMallocArena();
  std::atomic<int> allocated{0};
  std::array<std::atomic<void*>, 4> blocks{};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&allocated, &blocks, i] {
      blocks[static_cast<size_t>(i)].store(malloc(64));  // escapes: the compiler keeps the call
      allocated.fetch_add(1);
      while (allocated.load() < 4) std::this_thread::yield();
      free(blocks[static_cast<size_t>(i)].load());
    });
  }
  for (std::thread& thread : threads) thread.join();
  char* text = nullptr;
  size_t size = 0;
  FILE* out = open_memstream(&text, &size);
  if (out == nullptr || malloc_info(0, out) != 0) _exit(kNoArenaCount);
  fclose(out);
  int arenas = 0;
  for (size_t at = std::string(text).find("<heap nr="); at != std::string::npos;
       at = std::string(text).find("<heap nr=", at + 1)) {
    ++arenas;
  }
  _exit(arenas);
}

// glibc's default: more than one arena (how many depends on the cores).
bool SeveralArenas(int status) {
  return WIFEXITED(status) && WEXITSTATUS(status) > 1 && WEXITSTATUS(status) < kNoArenaCount;
}

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kGlibcMalloc = false;  // the sanitizer allocates, not glibc's arenas
#else
constexpr bool kGlibcMalloc = true;
#endif

// An environment that already chose an arena count (the call then stands back by design).
bool ArenasChosenByEnvironment() {
  const char* tunables = getenv("GLIBC_TUNABLES");
  return getenv("MALLOC_ARENA_MAX") != nullptr ||
         (tunables != nullptr && std::string(tunables).find("arena_max") != std::string::npos);
}

TEST(UseOneMallocArenaTest, ThreadsShareOneArena) {
  if (!kGlibcMalloc) GTEST_SKIP() << "malloc is the sanitizer's";
  if (ArenasChosenByEnvironment()) GTEST_SKIP() << "the environment chose the arena count";
  GTEST_FLAG_SET(death_test_style, "threadsafe");  // a fresh process: no arenas from other tests
  EXPECT_EXIT(ExitWithArenaCount(/*one_arena=*/true, nullptr), testing::ExitedWithCode(1), "");
  // The control: without the call the threads get arenas of their own.
  EXPECT_EXIT(ExitWithArenaCount(/*one_arena=*/false, nullptr), SeveralArenas, "");
}

TEST(UseOneMallocArenaTest, LeavesTheChoiceToAnOperatorWhoMadeOne) {
  if (!kGlibcMalloc) GTEST_SKIP() << "malloc is the sanitizer's";
  if (ArenasChosenByEnvironment()) GTEST_SKIP() << "the environment chose the arena count";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // glibc reads MALLOC_ARENA_MAX when the process starts, so setting it here only shows that
  // the call stood back: the threads get glibc's default.
  EXPECT_EXIT(ExitWithArenaCount(/*one_arena=*/true, "8"), SeveralArenas, "");
}

}  // namespace
}  // namespace certcast
