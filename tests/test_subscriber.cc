#include "tests/test_subscriber.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "absl/strings/str_cat.h"

namespace certcast::scenario {

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration pause = absl::Milliseconds(1);
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(50));
  }
  return condition();
}

std::shared_ptr<grpc::Channel> InsecureChannel(int port) {
  return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
}

int HttpGet(int port, const std::string& path, std::string* body) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return 0;
  }
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: test\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return 0;
  }
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0)
    response.append(buffer, static_cast<size_t>(n));
  close(fd);
  if (response.rfind("HTTP/1.1 ", 0) != 0 || response.size() < 12) return 0;
  if (body != nullptr) {
    const size_t start = response.find("\r\n\r\n");
    *body = start == std::string::npos ? "" : response.substr(start + 4);
  }
  return std::stoi(response.substr(9, 3));
}

TestSubscriber::TestSubscriber(std::shared_ptr<grpc::Channel> channel, bool start_reading,
                               const std::string& bearer_token)
    : stub_(v1::Distribution::NewStub(std::move(channel))) {
  context_.set_deadline(absl::ToChronoTime(absl::Now() + absl::Minutes(5)));
  if (!bearer_token.empty()) context_.AddMetadata("authorization", "Bearer " + bearer_token);
  stream_ = stub_->Subscribe(&context_);
  if (start_reading) StartReading();
}

void TestSubscriber::StartReading() {
  reader_ = std::thread([this] { ReadLoop(); });
}

TestSubscriber::~TestSubscriber() {
  context_.TryCancel();
  if (!reader_.joinable()) StartReading();  // Finish needs the reads drained
  reader_.join();
}

void TestSubscriber::ReadLoop() {
  v1::SubscribeResponse response;
  while (stream_->Read(&response)) {
    absl::MutexLock lock(&mu_);
    received_.push_back(response);
  }
  grpc::Status status;
  {
    absl::MutexLock lock(&write_mu_);
    status = stream_->Finish();
  }
  absl::MutexLock lock(&mu_);
  ended_ = true;
  status_ = status;
}

bool TestSubscriber::Send(const v1::SubscribeRequest& request) {
  absl::MutexLock lock(&write_mu_);
  return stream_->Write(request);
}

bool TestSubscriber::SendHello(const std::string& ns, const std::string& client_id,
                               const std::vector<v1::HeldCertificate>& held) {
  v1::SubscribeRequest request;
  request.mutable_hello()->set_namespace_(ns);
  request.mutable_hello()->set_client_id(client_id);
  for (const auto& h : held) *request.mutable_hello()->add_certificates() = h;
  return Send(request);
}

bool TestSubscriber::SendAck(const v1::CertificateUpdate& update, const std::string& warning) {
  v1::SubscribeRequest request;
  request.mutable_ack()->set_name(update.name());
  request.mutable_ack()->set_version(update.version());
  request.mutable_ack()->set_nonce(update.nonce());
  if (!warning.empty()) request.mutable_ack()->add_warnings(warning);
  return Send(request);
}

bool TestSubscriber::SendNack(const v1::CertificateUpdate& update, const std::string& sink,
                              const std::string& error) {
  v1::SubscribeRequest request;
  request.mutable_nack()->set_name(update.name());
  request.mutable_nack()->set_version(update.version());
  request.mutable_nack()->set_nonce(update.nonce());
  v1::SinkError* sink_error = request.mutable_nack()->add_errors();
  sink_error->set_sink(sink);
  sink_error->set_error(error);
  return Send(request);
}

void TestSubscriber::CloseSend() {
  absl::MutexLock lock(&write_mu_);
  stream_->WritesDone();
}

std::optional<v1::SubscribeResponse> TestSubscriber::Next(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !received_.empty() || ended_; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  if (received_.empty()) return std::nullopt;
  v1::SubscribeResponse response = std::move(received_.front());
  received_.pop_front();
  return response;
}

std::optional<v1::SubscribeResponse> TestSubscriber::NextNonHeartbeat(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    std::optional<v1::SubscribeResponse> response = Next(deadline - absl::Now());
    if (!response.has_value() || !response->has_heartbeat()) return response;
  }
}

std::vector<v1::SubscribeResponse> TestSubscriber::received() {
  absl::MutexLock lock(&mu_);
  return std::vector<v1::SubscribeResponse>(received_.begin(), received_.end());
}

grpc::Status TestSubscriber::Finish(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ended = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return ended_; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ended), timeout)) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "test: stream did not end");
  }
  return *status_;
}

}  // namespace certcast::scenario
