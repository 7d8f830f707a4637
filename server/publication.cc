#include "server/publication.h"

#include <openssl/rand.h>

#include <cstdlib>

#include "absl/strings/escaping.h"
#include "common/secret.h"

namespace certcast {
namespace {

void WipeAndFree(void* p, size_t n) {
  CleanseMemory(p, n);
  std::free(p);
}

}  // namespace

grpc::ByteBuffer SerializeWiped(const google::protobuf::MessageLite& message) {
  const size_t size = message.ByteSizeLong();
  void* buffer = std::malloc(size > 0 ? size : 1);
  message.SerializeWithCachedSizesToArray(static_cast<uint8_t*>(buffer));
  grpc::Slice slice(buffer, size, &WipeAndFree);
  return grpc::ByteBuffer(&slice, 1);
}

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

std::string RandomNonce() {
  unsigned char bytes[16];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // no entropy: nothing is safe
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

google::protobuf::Timestamp ToProtoTime(absl::Time t) {
  google::protobuf::Timestamp ts;
  const int64_t nanos = absl::ToUnixNanos(t);
  ts.set_seconds(nanos / 1'000'000'000);
  ts.set_nanos(static_cast<int32_t>(nanos % 1'000'000'000));
  if (ts.nanos() < 0) {
    ts.set_seconds(ts.seconds() - 1);
    ts.set_nanos(ts.nanos() + 1'000'000'000);
  }
  return ts;
}

absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

std::shared_ptr<const Publication> MakePublication(const std::string& name, uint64_t version,
                                                   bool pinned, const CertificateInfo& info,
                                                   const CertificateMaterial& material) {
  auto publication = std::make_shared<Publication>();
  publication->name = name;
  publication->version = version;
  publication->nonce = RandomNonce();
  publication->pinned = pinned;
  publication->info = info;

  v1::SubscribeResponse response;
  v1::CertificateUpdate* update = response.mutable_update();
  update->set_name(name);
  update->set_version(version);
  update->set_nonce(publication->nonce);
  update->set_fingerprint(info.fingerprint);
  update->set_chain_pem(material.chain_pem);
  update->set_private_key_pem(std::string(material.key_pem.reveal()));
  update->set_ca_pem(material.ca_pem);
  *update->mutable_not_before() = ToProtoTime(info.not_before);
  *update->mutable_not_after() = ToProtoTime(info.not_after);
  for (const std::string& dns : info.dns_names) update->add_dns_names(dns);
  update->set_pinned(pinned);
  publication->update_bytes = SerializeWiped(response);
  CleanseString(update->mutable_private_key_pem());
  return publication;
}

}  // namespace certcast
