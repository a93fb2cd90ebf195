#pragma once

// A WebSocket client for tests (Boost.Beast, client role): text, binary and fragmented frames,
// reads with a timeout, and the close code the server sent.

#include "berth/base/json.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

namespace berth::test {

class ws_client {
 public:
  struct options {
    std::map<std::string, std::string> headers;  ///< e.g. Origin, Cookie
    std::string subprotocol = "berth.v1.json";   ///< empty: none asked for
    std::size_t receive_buffer = 0;              ///< SO_RCVBUF in bytes (0: the kernel's default)
  };
  /// Connect to `base` ("http://host:port") at `path`. A refused upgrade is not an exception:
  /// connected() is false and status() is the HTTP status the server answered.
  static std::unique_ptr<ws_client> open(const std::string& base, const std::string& path,
                                         options o);
  static std::unique_ptr<ws_client> open(const std::string& base) {
    return open(base, "/v1/ws", options{});
  }
  ~ws_client();

  [[nodiscard]] bool connected() const;
  [[nodiscard]] int status() const;            ///< the upgrade's HTTP status (101 when it worked)
  [[nodiscard]] std::string protocol() const;  ///< the subprotocol the server chose

  /// One text frame (bytes as given: invalid UTF-8 goes out as it is).
  void send(const std::string& text);
  void send(const char* text) { send(std::string(text)); }
  void send(const json::value& v) { send(v.dump()); }
  void send_binary(const std::string& data);
  /// `text` as a message of many frames of `piece` bytes each.
  void send_fragmented(const std::string& text, std::size_t piece);

  /// The next message, or nullopt after `timeout` or when the connection closed.
  [[nodiscard]] std::optional<std::string> read(
      std::chrono::milliseconds timeout = std::chrono::seconds(15));
  /// The next message that parses with "type" == `type` (others skipped), or nullopt.
  [[nodiscard]] std::optional<json::value> expect(
      const std::string& type, std::chrono::milliseconds timeout = std::chrono::seconds(15));
  [[nodiscard]] bool closed() const;
  [[nodiscard]] int close_code() const;  ///< 0 until a close frame came (1006: dropped)
  [[nodiscard]] std::string close_reason() const;

  struct impl;

 private:
  explicit ws_client(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

}  // namespace berth::test
