#include "server/etcd_store.h"

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

using etcdserverpb::Compare;

std::string Where(const std::string& key) { return absl::StrCat("etcd key ", key); }

}  // namespace

absl::StatusOr<std::optional<CertificateState>> EtcdVersionStore::Load(const std::string& name) {
  RETURN_IF_ERROR(ValidateStateName(name));
  const std::string key = StateKey(name);
  etcdserverpb::RangeRequest request;
  request.set_key(key);
  absl::StatusOr<etcdserverpb::RangeResponse> range = client_->Range(request);
  if (!range.ok()) {
    return Annotate(range.status(), absl::StrCat("loading certificate \"", name, "\""));
  }
  if (range->kvs_size() == 0) return std::nullopt;
  mvccpb::KeyValue* kv = range->mutable_kvs(0);
  absl::Cleanup wipe_value = [kv] { CleanseString(kv->mutable_value()); };
  ASSIGN_OR_RETURN(std::string bytes, encryption_->Open(kv->value(), key, Where(key)));
  absl::Cleanup wipe_bytes = [&bytes] { CleanseString(&bytes); };
  ASSIGN_OR_RETURN(CertificateState state, DecodeState(name, bytes, Where(key)));
  state.store_revision = std::to_string(kv->mod_revision());
  return state;
}

absl::StatusOr<std::string> EtcdVersionStore::CompareAndPut(const std::string& name,
                                                            const std::string& revision,
                                                            const std::string& sealed) {
  const std::string key = StateKey(name);
  const int64_t lease = leader_lease_ ? leader_lease_() : 0;
  if (lease == 0) {
    return absl::AbortedError(absl::StrCat("not writing ", Where(key),
                                           ": this replica does not "
                                           "hold the leader key ",
                                           LeaderKey()));
  }
  etcdserverpb::TxnRequest txn;
  Compare* state = txn.add_compare();
  state->set_key(key);
  state->set_result(Compare::EQUAL);
  if (revision.empty()) {
    state->set_target(Compare::CREATE);
    state->set_create_revision(0);
  } else {
    int64_t mod_revision = 0;
    if (!absl::SimpleAtoi(revision, &mod_revision)) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(key), ": \"", revision, "\" is not an etcd revision"));
    }
    state->set_target(Compare::MOD);
    state->set_mod_revision(mod_revision);
  }
  Compare* leader = txn.add_compare();
  leader->set_key(LeaderKey());
  leader->set_result(Compare::EQUAL);
  leader->set_target(Compare::LEASE);
  leader->set_lease(lease);
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(key);
  put->set_value(sealed);
  txn.add_failure()->mutable_request_range()->set_key(LeaderKey());
  absl::StatusOr<etcdserverpb::TxnResponse> written = client_->Txn(txn);
  if (!written.ok()) {
    return Annotate(written.status(), absl::StrCat("saving certificate \"", name, "\""));
  }
  if (!written->succeeded()) {
    const etcdserverpb::RangeResponse& holder =
        written->responses_size() > 0 ? written->responses(0).response_range()
                                      : etcdserverpb::RangeResponse::default_instance();
    if (holder.kvs_size() == 0 || holder.kvs(0).lease() != lease) {
      return absl::AbortedError(
          absl::StrCat("not writing ", Where(key), ": the leader key ", LeaderKey(),
                       " is no longer bound to this replica's lease (held by \"",
                       holder.kvs_size() > 0 ? holder.kvs(0).value() : "", "\")"));
    }
    return absl::AbortedError(
        revision.empty() ? absl::StrCat(Where(key), " was created by another replica meanwhile")
                         : absl::StrCat(Where(key), " changed since revision ", revision,
                                        ": another replica wrote or deleted it"));
  }
  return std::to_string(written->header().revision());
}

absl::StatusOr<std::string> EtcdVersionStore::Save(const std::string& name,
                                                   const CertificateState& state) {
  RETURN_IF_ERROR(ValidateStateName(name));
  ASSIGN_OR_RETURN(std::string bytes, EncodeState(name, state, history_limit_));
  absl::Cleanup wipe_bytes = [&bytes] { CleanseString(&bytes); };
  ASSIGN_OR_RETURN(std::string sealed, encryption_->Seal(bytes, StateKey(name)));
  if (sealed.size() > kMaxEtcdStateBytes) {
    return absl::InvalidArgumentError(absl::StrCat("the state of certificate \"", name, "\" is ",
                                                   sealed.size(), " bytes sealed, more than the ",
                                                   kMaxEtcdStateBytes, " ", Where(StateKey(name)),
                                                   " may hold"));
  }
  return CompareAndPut(name, state.store_revision, sealed);
}

absl::StatusOr<std::string> EtcdVersionStore::Claim(const std::string& name,
                                                    const std::string& revision) {
  const std::string key = StateKey(name);
  etcdserverpb::RangeRequest request;
  request.set_key(key);
  absl::StatusOr<etcdserverpb::RangeResponse> range = client_->Range(request);
  if (!range.ok()) return Annotate(range.status(), absl::StrCat("claiming ", Where(key)));
  if (range->kvs_size() == 0) return absl::AbortedError(absl::StrCat(Where(key), " was deleted"));
  mvccpb::KeyValue* kv = range->mutable_kvs(0);
  absl::Cleanup wipe_value = [kv] { CleanseString(kv->mutable_value()); };
  if (std::to_string(kv->mod_revision()) != revision) {
    return absl::AbortedError(absl::StrCat(Where(key), " changed since revision ", revision,
                                           ": another replica wrote it"));
  }
  ASSIGN_OR_RETURN(std::string bytes, encryption_->Open(kv->value(), key, Where(key)));
  absl::Cleanup wipe_bytes = [&bytes] { CleanseString(&bytes); };
  // Always a new value (a fresh nonce), so the mod_revision moves even with the same key.
  ASSIGN_OR_RETURN(std::string sealed, encryption_->Seal(bytes, key));
  return CompareAndPut(name, revision, sealed);
}

}  // namespace certcast
