#include "client/shared_writer.h"

#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/secret_sink.h"
#include "client/state_store.h"
#include "common/logging.h"
#include "common/protocol.h"
#include "common/secret.h"

namespace certcast {
namespace {

// Writes only while this replica leads, so a replica that lost the lease (and has not stopped
// its sessions yet) never writes next to the new leader.
class LeaderGatedSink final : public Sink {
 public:
  LeaderGatedSink(Sink* sink, std::function<bool()> is_leader)
      : sink_(sink), is_leader_(std::move(is_leader)) {}
  std::string name() const override { return sink_->name(); }
  absl::StatusOr<ApplyResult> Apply(const VersionedMaterial& version) override {
    if (!is_leader_()) return NotLeader();
    return sink_->Apply(version);
  }
  absl::StatusOr<std::string> HeldFingerprint(const std::string& name) override {
    return sink_->HeldFingerprint(name);
  }
  absl::Status Remove(const std::string& name) override {
    if (!is_leader_()) return NotLeader();
    return sink_->Remove(name);
  }
  std::string LocationOf(const std::string& name) const override { return sink_->LocationOf(name); }

 private:
  static absl::Status NotLeader() {
    return absl::UnavailableError(
        "this shared-writer replica no longer holds the lease; the leader writes");
  }
  Sink* const sink_;
  const std::function<bool()> is_leader_;
};

// The RoleBinding subject for a certcast identity.
std::string Subject(const std::string& identity) {
  std::vector<std::string> parts = absl::StrSplit(identity, ':');
  if (parts.size() == 4 && parts[0] == "system" && parts[1] == "serviceaccount") {
    return absl::StrCat("ServiceAccount \"", parts[3], "\" of namespace \"", parts[2], "\"");
  }
  if (absl::StartsWith(identity, "spiffe://")) {
    std::vector<std::string> path = absl::StrSplit(identity.substr(9), '/');
    if (path.size() == 5 && path[1] == "ns" && path[3] == "sa") {
      return absl::StrCat("ServiceAccount \"", path[4], "\" of namespace \"", path[2], "\"");
    }
  }
  return absl::StrCat("User \"", identity, "\"");
}

}  // namespace

std::string OptInHint(const std::string& namespace_, const std::string& secret_name,
                      const std::string& role_name, const std::string& identity) {
  return absl::StrCat(
      "; namespace \"", namespace_,
      "\" has not opted in to the shared writer: create RoleBinding \"", role_name,
      "\" in namespace \"", namespace_, "\" (roleRef: Role \"", role_name,
      "\"; subject: ", Subject(identity), ") and the Role \"", role_name,
      "\" it names (get, update, patch on Secret \"", secret_name,
      "\"; create on secrets), e.g. with the shared-writer-tenant kustomize component");
}

struct SharedWriter::Tenant {
  std::unique_ptr<ClientStateStore> store;
  std::unique_ptr<SecretSink> secret;
  std::unique_ptr<LeaderGatedSink> sink;
  std::unique_ptr<Session> session;
  std::thread thread;
};

SharedWriter::SharedWriter(Options options, kube::KubeApi* api, Filesystem* fs,
                           CredentialsProvider* credentials, const Clock* clock,
                           std::function<bool()> is_leader)
    : options_(std::move(options)),
      api_(api),
      fs_(fs),
      credentials_(credentials),
      clock_(clock),
      is_leader_(std::move(is_leader)),
      limiter_(options_.max_connecting) {
  absl::MutexLock lock(&channel_mu_);
  channel_ =
      MakeServerChannel(options_.session.server, options_.session.tls_server_name, credentials_);
}

SharedWriter::~SharedWriter() {
  Stop();
  std::vector<std::unique_ptr<Tenant>> left;
  {
    absl::MutexLock lock(&tenants_mu_);
    for (auto& [ns, tenant] : tenants_) left.push_back(std::move(tenant));
    tenants_.clear();
  }
  StopTenants(std::move(left));
}

std::shared_ptr<grpc::Channel> SharedWriter::channel() {
  absl::MutexLock lock(&channel_mu_);
  return channel_;
}

void SharedWriter::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

void SharedWriter::Wake() {
  absl::MutexLock lock(&mu_);
  wake_ = true;
}

void SharedWriter::Reconnect() {
  {
    absl::MutexLock lock(&channel_mu_);
    channel_ =
        MakeServerChannel(options_.session.server, options_.session.tls_server_name, credentials_);
  }
  absl::ReaderMutexLock lock(&tenants_mu_);
  for (auto& [ns, tenant] : tenants_) tenant->session->Reconnect();
}

bool SharedWriter::leading() {
  absl::MutexLock lock(&mu_);
  return leading_;
}

bool SharedWriter::Alive(absl::Duration max_stall) {
  absl::MutexLock lock(&mu_);
  return absl::Now() - last_wake_ < max_stall;
}

std::string SharedWriter::last_refresh_error() {
  absl::MutexLock lock(&mu_);
  return last_refresh_error_;
}

std::vector<WriterNamespaceStatus> SharedWriter::Namespaces() {
  std::vector<WriterNamespaceStatus> out;
  absl::ReaderMutexLock lock(&tenants_mu_);
  for (auto& [ns, tenant] : tenants_) {
    WriterNamespaceStatus status;
    status.namespace_ = ns;
    status.liveness = tenant->session->liveness();
    std::map<std::string, AppliedCertificate> applied = tenant->session->applied();
    if (!applied.empty()) status.applied = applied.begin()->second;
    status.ready = tenant->session->Ready(nullptr);
    out.push_back(std::move(status));
  }
  return out;
}

void SharedWriter::Run() {
  absl::Time next_refresh = absl::InfinitePast();
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
    }
    const bool leader = is_leader_();
    bool was_leader = false;
    {
      absl::MutexLock lock(&mu_);
      was_leader = leading_;
      leading_ = leader;
    }
    if (!leader) {
      std::vector<std::unique_ptr<Tenant>> stopped;
      {
        absl::MutexLock lock(&tenants_mu_);
        for (auto& [ns, tenant] : tenants_) stopped.push_back(std::move(tenant));
        tenants_.clear();
      }
      if (was_leader || !stopped.empty()) {
        LogWarn("not the leader (any more): this replica writes no Secret",
                {{"namespaces_stopped", stopped.size()}});
      }
      StopTenants(std::move(stopped));
      next_refresh = absl::InfinitePast();  // look at once when leading again
    } else if (absl::Now() >= next_refresh) {
      Refresh();
      next_refresh = absl::Now() + options_.refresh_interval;
    }
    absl::MutexLock lock(&mu_);
    auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || wake_; };
    last_wake_ = absl::Now();
    mu_.AwaitWithTimeout(absl::Condition(&wake),
                         leader
                             ? std::min(options_.leader_check_interval,
                                        std::max(absl::ZeroDuration(), next_refresh - absl::Now()))
                             : options_.leader_check_interval);
    wake_ = false;
    last_wake_ = absl::Now();
  }
  std::vector<std::unique_ptr<Tenant>> left;
  {
    absl::MutexLock lock(&tenants_mu_);
    for (auto& [ns, tenant] : tenants_) left.push_back(std::move(tenant));
    tenants_.clear();
  }
  StopTenants(std::move(left));
}

void SharedWriter::Refresh() {
  const std::string certificate = options_.session.certificates.front();
  std::unique_ptr<v1::Distribution::Stub> stub = v1::Distribution::NewStub(channel());
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
  absl::StatusOr<std::string> token = credentials_->BearerToken();
  grpc::Status status;
  v1::ListWriterNamespacesResponse response;
  if (!token.ok()) {
    status = grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          absl::StrCat("cannot read the token: ", token.status().message()));
  } else {
    if (!token->empty()) {
      context.AddMetadata("authorization", "Bearer " + *token);
      CleanseString(&*token);
    }
    v1::ListWriterNamespacesRequest request;
    request.set_certificate(certificate);
    status = stub->ListWriterNamespaces(&context, request, &response);
  }
  if (!status.ok()) {
    const std::string message_text = status.error_message();  // a copy: fields hold views
    const std::string error = absl::StrCat(StatusCodeName(status.error_code()), ": ", message_text);
    bool repeated = false;
    {
      absl::MutexLock lock(&mu_);
      repeated = last_refresh_error_ == error;
      last_refresh_error_ = error;
    }
    const LogFields fields = {{"certificate", certificate},
                              {"code", StatusCodeName(status.error_code())},
                              {"error", Peer(message_text)}};
    const char* message =
        "cannot get the namespaces to write from the server; keeping the current ones";
    if (repeated) {
      LogDebug(message, fields);
    } else {
      LogWarn(message, fields);
    }
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    last_refresh_error_.clear();
  }
  const std::set<std::string> wanted(response.namespaces().begin(), response.namespaces().end());
  std::vector<std::unique_ptr<Tenant>> gone;
  std::vector<std::string> added;
  std::vector<std::string> removed;
  {
    absl::MutexLock lock(&tenants_mu_);
    for (auto it = tenants_.begin(); it != tenants_.end();) {
      if (wanted.count(it->first) > 0) {
        ++it;
        continue;
      }
      removed.push_back(it->first);
      gone.push_back(std::move(it->second));
      it = tenants_.erase(it);
    }
    for (const std::string& ns : wanted) {
      if (tenants_.count(ns) == 0) added.push_back(ns);
    }
  }
  StopTenants(std::move(gone));
  for (const std::string& ns : added) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (!is_leader_()) return;  // the control loop stops what runs
    std::unique_ptr<Tenant> tenant = StartTenant(ns, response.identity());
    if (tenant == nullptr) continue;
    absl::MutexLock lock(&tenants_mu_);
    tenants_[ns] = std::move(tenant);
  }
  if (!added.empty() || !removed.empty()) {
    LogInfo(
        absl::StrCat("writing certificate ", certificate, " into ", wanted.size(), " namespaces"),
        {{"certificate", certificate},
         {"namespaces", wanted.size()},
         {"added", added.size()},
         {"removed", removed.empty() ? std::string("-") : absl::StrJoin(removed, ",")}});
  }
}

std::unique_ptr<SharedWriter::Tenant> SharedWriter::StartTenant(const std::string& namespace_,
                                                                const std::string& identity) {
  auto tenant = std::make_unique<Tenant>();
  tenant->store = std::make_unique<ClientStateStore>(fs_, JoinPath(options_.state_dir, namespace_));
  if (absl::Status ready = tenant->store->Init(); !ready.ok()) {
    LogError("cannot keep state for a namespace; not writing it",
             {{"namespace", namespace_}, {"error", ready}});
    return nullptr;
  }
  SecretSink::Options secret;
  secret.namespace_ = namespace_;
  secret.secret_name = options_.secret_name;
  secret.permission_hint =
      OptInHint(namespace_, options_.secret_name, options_.role_name, identity);
  tenant->secret = std::make_unique<SecretSink>(api_, std::move(secret));
  tenant->sink = std::make_unique<LeaderGatedSink>(tenant->secret.get(), is_leader_);
  SessionOptions session = options_.session;
  session.namespace_ = namespace_;
  session.channel = [this] { return channel(); };
  session.connect_limiter = &limiter_;
  tenant->session =
      std::make_unique<Session>(std::move(session), std::vector<Sink*>{tenant->sink.get()},
                                std::vector<Hook*>{}, tenant->store.get(), credentials_, clock_);
  tenant->session->Init();
  Session* runner = tenant->session.get();
  tenant->thread = std::thread([runner] { runner->Run(); });
  return tenant;
}

void SharedWriter::StopTenants(std::vector<std::unique_ptr<Tenant>> tenants) {
  for (auto& tenant : tenants) tenant->session->Stop();
  for (auto& tenant : tenants) {
    if (tenant->thread.joinable()) tenant->thread.join();
  }
}

}  // namespace certcast
