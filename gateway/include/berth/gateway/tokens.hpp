#pragma once

// The gateway's API tokens: a JSON file of names, scopes and sha256 hashes (never a token
// itself), written by `berth token create|revoke` and read by every gateway that uses it. A
// token is "berth_" followed by 43 characters of base64url (32 random bytes); whoever holds it
// acts with its scope, under its name.

#include "berth/base/error.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace berth::gateway {

/// What a token may do. Each scope includes the ones before it.
enum class scope { read = 1, write = 2, admin = 3 };

/// "read", "write", "admin"; nullopt for anything else.
[[nodiscard]] std::optional<scope> scope_from_name(const std::string& name);
[[nodiscard]] const char* scope_name(scope s);

/// One token as the file records it.
struct token_record {
  std::string name;
  gateway::scope scope = scope::read;
  std::string sha256;  ///< hex of the token's sha256
  std::string created;
};

/// The tokens file. Thread-safe; reloads the file when it changes (a revoked token stops
/// working at the next request, without restarting the gateway).
class token_store {
 public:
  explicit token_store(std::string path);

  /// Add a token named `name` (1-64 of [A-Za-z0-9_.-], unique) and return it: the only time
  /// it is shown. The file is written 0600, atomically.
  [[nodiscard]] result<std::string> create(const std::string& name, scope s);
  /// Remove the token named `name` (errc::not_found when there is none).
  [[nodiscard]] status revoke(const std::string& name);
  /// Every token's record (no secrets: there are none in the file).
  [[nodiscard]] result<std::vector<token_record>> list() const;
  /// The record of the token `token`, or nullopt (unknown, revoked, malformed).
  [[nodiscard]] std::optional<token_record> verify(const std::string& token) const;

  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  [[nodiscard]] result<std::vector<token_record>> load() const;
  [[nodiscard]] status save(const std::vector<token_record>& all) const;
  std::string path_;
  mutable std::mutex mu_;
  mutable std::vector<token_record> cached_;
  mutable std::int64_t cached_mtime_ns_ = -1;
  mutable std::int64_t cached_size_ = -1;
};

}  // namespace berth::gateway
