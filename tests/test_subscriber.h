// Test helpers for scenario tests: a Subscribe client whose received messages are queued by a
// reader thread, and condition waits with deadlines (never fixed sleeps).
#ifndef CERTCAST_TESTS_TEST_SUBSCRIBER_H_
#define CERTCAST_TESTS_TEST_SUBSCRIBER_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace certcast::scenario {

// Polls `condition` until it holds or `timeout` passes; returns the last result.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout = absl::Seconds(20));

std::shared_ptr<grpc::Channel> InsecureChannel(int port);

// Plain HTTP GET to 127.0.0.1:port; returns the status code (0 on connection failure) and the
// body in `body` when given.
int HttpGet(int port, const std::string& path, std::string* body = nullptr);

class TestSubscriber {
 public:
  // With `start_reading` false, nothing is read until StartReading(): the client stops reading.
  // `bearer_token` (optional) is sent as `authorization: Bearer T`.
  explicit TestSubscriber(std::shared_ptr<grpc::Channel> channel, bool start_reading = true,
                          const std::string& bearer_token = "");
  void StartReading();
  ~TestSubscriber();

  bool Send(const v1::SubscribeRequest& request);
  bool SendHello(const std::string& ns, const std::string& client_id,
                 const std::vector<v1::HeldCertificate>& held);
  bool SendAck(const v1::CertificateUpdate& update, const std::string& warning = "");
  bool SendNack(const v1::CertificateUpdate& update, const std::string& sink,
                const std::string& error);
  void CloseSend();

  // Next message, or nullopt when none arrives within `timeout` or the stream ended.
  std::optional<v1::SubscribeResponse> Next(absl::Duration timeout = absl::Seconds(20));
  // Skips heartbeats and returns the next update or in-sync message.
  std::optional<v1::SubscribeResponse> NextNonHeartbeat(absl::Duration timeout = absl::Seconds(20));
  // Every message received so far (read without consuming).
  std::vector<v1::SubscribeResponse> received();
  // Waits for the stream's final status.
  grpc::Status Finish(absl::Duration timeout = absl::Seconds(20));

 private:
  void ReadLoop();

  grpc::ClientContext context_;
  std::unique_ptr<v1::Distribution::Stub> stub_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>> stream_;
  absl::Mutex mu_;
  std::deque<v1::SubscribeResponse> received_ ABSL_GUARDED_BY(mu_);
  bool ended_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> status_ ABSL_GUARDED_BY(mu_);
  absl::Mutex write_mu_;  // Write and Finish must not run concurrently
  std::thread reader_;
};

}  // namespace certcast::scenario

#endif  // CERTCAST_TESTS_TEST_SUBSCRIBER_H_
