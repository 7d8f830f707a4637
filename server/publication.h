// A Publication is one version of one certificate as pushed to clients: its metadata plus the
// serialized SubscribeResponse{update}, built once and shared by every stream.
// Immutable after construction; safe to share across threads (via shared_ptr<const>).
#ifndef CERTCAST_SERVER_PUBLICATION_H_
#define CERTCAST_SERVER_PUBLICATION_H_

#include <cstdint>
#include <memory>
#include <string>

#include "certcast/v1/certcast.pb.h"
#include "common/certificate.h"
#include "grpcpp/support/byte_buffer.h"

namespace certcast {

struct Publication {
  std::string name;
  uint64_t version = 0;
  std::string nonce;  // random, identifies this publication on every stream
  bool pinned = false;
  CertificateInfo info;
  // SubscribeResponse{update} with the key inside. The bytes live in a buffer that is wiped when
  // the last stream releases it. Never log it.
  grpc::ByteBuffer update_bytes;
};

// Builds the publication of `material` as `version` of `name`, with a fresh nonce.
std::shared_ptr<const Publication> MakePublication(const std::string& name, uint64_t version,
                                                   bool pinned, const CertificateInfo& info,
                                                   const CertificateMaterial& material);

// Serializes `message` into a single slice owned by certcast that is wiped when freed: for
// messages that carry key material.
grpc::ByteBuffer SerializeWiped(const google::protobuf::MessageLite& message);

// Plain serialization, for messages without secrets.
grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message);

// Random 128-bit value, lowercase hex.
std::string RandomNonce();

google::protobuf::Timestamp ToProtoTime(absl::Time t);
absl::Time FromProtoTime(const google::protobuf::Timestamp& t);

}  // namespace certcast

#endif  // CERTCAST_SERVER_PUBLICATION_H_
