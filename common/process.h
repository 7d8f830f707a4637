// Process set-up shared by the binaries' main(): hardening for a process that holds private
// keys, the signals main() waits for, and the start-up failure convention.
#ifndef CERTCAST_COMMON_PROCESS_H_
#define CERTCAST_COMMON_PROCESS_H_

#include <signal.h>

#include <optional>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/strings/string_view.h"

namespace certcast {

// No core dumps and no ptrace by unprivileged peers (the process holds private keys); abseil's
// mutex deadlock detection off (Debian's build keeps it on: it costs CPU and ~4 KB per gRPC
// stream; certcast documents its lock order next to each mutex instead). Call first in main().
void HardenKeyHoldingProcess();

// Keeps OpenSSL's global state until the process is gone: no OPENSSL_cleanup() at exit. gRPC's
// threads (handshakes, executors) outlive main() and may still use OpenSSL while exit() runs the
// atexit handlers; a cleanup under them fails their calls and loses the per-thread random
// generators of a thread that ends after it (LeakSanitizer reported one). Call before anything
// uses OpenSSL: the first initialisation decides.
void KeepOpenSslUntilExit();

// One malloc arena for the whole process, unless its environment chooses (MALLOC_ARENA_MAX, or
// GLIBC_TUNABLES naming glibc.malloc.arena_max). glibc's default is an arena per thread that
// allocates, up to 8 per core, each keeping pages of its own: right for a server whose threads
// allocate at once (certcast-server keeps it: one arena slowed its shutdown and reconnect storms
// at 10,000 clients), wasteful for a daemon that allocates little and rarely. Call before any
// thread starts.
void UseOneMallocArena();

// Raises the soft limit on open files to the hard limit (as Go's runtime does for etcd): every
// client stream is a socket, and the soft limit is often 1,024. Returns the limit now in force.
long RaiseOpenFileLimit();

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and every thread started after it)
// and returns the set, for main() to sigwait on.
sigset_t BlockControlSignals();

// Prints "PROGRAM: MESSAGE" to stderr (a JSON line once --log-format=json is configured) and
// returns the exit status (2) for a local permanent error (bad flags, unreadable files), so a
// supervisor shows why the process did not start.
int FailStartup(absl::string_view program, absl::string_view message);

// What every binary does with its command line before its own flags: both flag spellings
// accepted (NormalizeFlagNames), --help (`help()`) and --version answered on stdout, logging set
// up from argv so that start-up errors are logged in the chosen format, and the values of
// duration flags checked. Returns the status main() returns at once (0 after --help or
// --version, FailStartup's for a bad duration), or nullopt to go on parsing.
std::optional<int> BeginCommandLine(int argc, char** argv, absl::string_view program,
                                    absl::FunctionRef<std::string()> help);

}  // namespace certcast

#endif  // CERTCAST_COMMON_PROCESS_H_
