#pragma once

#include "berth/base/error.hpp"
#include "berth/base/exit_code.hpp"
#include "berth/base/json.hpp"
#include "berth/bus/client.hpp"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace berth::cli {

// Exit codes and report(error): berth/base/exit_code.hpp (shared with `berth bench`).

/// Options every command shares.
struct globals {
  std::string server;           ///< --server / BERTH_SERVER
  std::string data_dir;         ///< --data-dir / BERTH_DATA_DIR: where node.json is
  std::string output = "text";  ///< -o text|json|jsonl
  std::string timeout = "30s";
  std::string prefix = "berth";
};

/// A connection to the node's NATS plus the API on top.
class api_client {
 public:
  static result<api_client> connect(const globals& g);
  /// Request berth.api.v1.<verb>; an {"error": ...} reply becomes an error value.
  result<json::value> call(const std::string& verb, const json::value& body);
  bus::client& bus() { return *bus_; }
  std::shared_ptr<bus::client> bus_shared() const { return bus_; }
  const bus::subjects& names() const { return names_; }
  millis timeout() const { return timeout_; }

 private:
  std::shared_ptr<bus::client> bus_;
  bus::subjects names_;
  millis timeout_{30'000};
};

/// One line for an event in the live view.
std::string event_line(const json::value& envelope, bool color);

/// `berth demo [--keep]`: with keep, the node stays up and the console's login link is printed.
int run_demo(const globals& g, bool keep);
/// `berth cache list|prune`: the dependency cache of the node whose data dir this is (`dir`:
/// another store); prune keeps at most `keep_bytes`, least recently used entries first.
int cmd_cache(const globals& g, const std::string& verb, const std::string& dir,
              std::int64_t keep_bytes);
/// `berth token create|list|revoke` on the tokens file `file` (empty: the local node's).
int cmd_token(const globals& g, const std::string& verb, const std::string& name,
              const std::string& scope, const std::string& file);
/// `berth gateway`: serve the gateway in front of the cluster --server points at, until
/// SIGTERM/SIGINT; prints its URL.
/// `berth console`: a one-time login link for the web console of the local node's gateway (or
/// --url with --tokens-file), printed and with --open opened.
int cmd_console(const globals& g, const std::string& name, const std::string& scope,
                const std::string& url, const std::string& tokens_file, bool open);
int cmd_gateway(const globals& g, const std::string& config_file, const std::string& listen,
                const std::string& tokens_file);

/// The path of this executable.
std::string self_exe();

}  // namespace berth::cli
