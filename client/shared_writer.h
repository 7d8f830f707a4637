// SharedWriter is certcast-client --shared-writer: one Deployment in certcast's own namespace
// writes one certificate as a kubernetes.io/tls Secret into every namespace the certificate is
// granted to whose grant names this writer (policy: `writers`). The server says which namespaces
// those are (Distribution/ListWriterNamespaces, asked every refresh interval), so the writer
// needs no cluster-wide reads. Each namespace gets its own Session: its own Subscribe stream,
// state directory, ACKs and NACKs and row in the server's fleet view, exactly as a client in
// that namespace would have, all over one channel.
//
// A namespace opts in by granting the writer a RoleBinding on that one Secret (no ClusterRole on
// Secrets, ever). Without it the write is 403 and the NACK names the Role and RoleBinding to
// create (OptInHint).
//
// Only the leader writes: `is_leader` (the Lease election) is asked every leader-check interval
// and before every Secret write. A replica that is not the leader runs no sessions; one that
// loses the lease stops them all and writes nothing more.
//
// Thread-safe: Run() is the control thread, each namespace adds its session's threads; the
// observers may be called from any thread. Does not own api, fs, credentials or clock.
#ifndef CERTCAST_CLIENT_SHARED_WRITER_H_
#define CERTCAST_CLIENT_SHARED_WRITER_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/credentials.h"
#include "client/server_channel.h"
#include "client/session.h"
#include "common/clock.h"
#include "common/filesystem.h"
#include "kube/api.h"

namespace certcast {

// What a tenant must create to opt in, appended to the 403 of a Secret write: the Role
// `role_name` (get, update, patch on Secret `secret_name`; create on secrets) and the
// RoleBinding of the same name in `namespace_`, bound to the writer's `identity` as a subject
// (a ServiceAccount for system:serviceaccount:NS:SA and spiffe://TD/ns/NS/sa/SA, else a User).
std::string OptInHint(const std::string& namespace_, const std::string& secret_name,
                      const std::string& role_name, const std::string& identity);

struct WriterNamespaceStatus {
  std::string namespace_;
  StreamLiveness liveness;
  AppliedCertificate applied;
  bool ready = false;  // holds the newest version received (Session::Ready)
};

class SharedWriter {
 public:
  struct Options {
    // server, tls_server_name, client_id, certificates (exactly one) and backoffs; the namespace,
    // channel and limiter are set per namespace.
    SessionOptions session;
    std::string secret_name;
    std::string state_dir;  // one subdirectory per namespace
    std::string role_name = "certcast-writer";
    absl::Duration refresh_interval = absl::Seconds(30);
    absl::Duration leader_check_interval = absl::Seconds(1);
    // Streams that may wait for their first answer at once (the server allows 64 per
    // connection awaiting their hello by default).
    int max_connecting = 32;
  };

  SharedWriter(Options options, kube::KubeApi* api, Filesystem* fs,
               CredentialsProvider* credentials, const Clock* clock,
               std::function<bool()> is_leader);
  ~SharedWriter();

  // The control loop, until Stop(): follows leadership and the server's namespace list.
  void Run();
  void Stop();
  // Leadership was gained: look at once instead of at the next check.
  void Wake();
  // New credentials (SIGHUP): a new channel, and every stream connects again on it.
  void Reconnect();

  // Observers.
  bool leading();
  std::vector<WriterNamespaceStatus> Namespaces();
  // The control loop ran within `max_stall`.
  bool Alive(absl::Duration max_stall);
  // The last error asking the server for the namespaces; empty after a success.
  std::string last_refresh_error();

 private:
  struct Tenant;

  // Asks the server for the namespaces and starts and stops sessions to match.
  void Refresh();
  std::unique_ptr<Tenant> StartTenant(const std::string& namespace_, const std::string& identity);
  // Stops every session first, then waits for them: 1,000 sessions stop in parallel.
  static void StopTenants(std::vector<std::unique_ptr<Tenant>> tenants);
  std::shared_ptr<grpc::Channel> channel();

  const Options options_;
  kube::KubeApi* const api_;
  Filesystem* const fs_;
  CredentialsProvider* const credentials_;
  const Clock* const clock_;
  const std::function<bool()> is_leader_;
  ConnectLimiter limiter_;

  absl::Mutex channel_mu_;
  std::shared_ptr<grpc::Channel> channel_ ABSL_GUARDED_BY(channel_mu_);

  absl::Mutex mu_;  // never held together with tenants_mu_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_ ABSL_GUARDED_BY(mu_) = false;
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_wake_ ABSL_GUARDED_BY(mu_) = absl::Now();
  std::string last_refresh_error_ ABSL_GUARDED_BY(mu_);
  // The sessions by namespace. Only the control thread adds and removes them; observers read
  // them under a reader lock. Sessions are stopped after they left the map, outside the lock.
  absl::Mutex tenants_mu_;
  std::map<std::string, std::unique_ptr<Tenant>> tenants_ ABSL_GUARDED_BY(tenants_mu_);
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SHARED_WRITER_H_
