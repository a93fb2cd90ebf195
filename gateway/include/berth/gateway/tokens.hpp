#pragma once

// The gateway's credentials: a JSON file of names, scopes and sha256 hashes (never a secret
// itself), written by `berth token create|revoke`, `berth console` and the gateways that use
// it. Three kinds, told apart by their prefix:
//   "berth_"  an API token (Authorization: Bearer), until revoked;
//   "berthl_" a console login code, valid minutes and only once (the URL fragment of
//             `berth console`);
//   "berthc_" a browser session (the HttpOnly cookie a login code is exchanged for).
// Each is followed by 43 characters of base64url (32 random bytes); whoever holds one acts with
// its scope, under its name.

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace berth::gateway {

/// What a credential may do. Each scope includes the ones before it.
enum class scope { read = 1, write = 2, admin = 3 };

/// "read", "write", "admin"; nullopt for anything else.
[[nodiscard]] std::optional<scope> scope_from_name(const std::string& name);
[[nodiscard]] const char* scope_name(scope s);

enum class credential_kind { token, login, cookie };
[[nodiscard]] const char* kind_name(credential_kind k);

/// One credential as the file records it.
struct token_record {
  std::string name;
  gateway::scope scope = scope::read;
  std::string sha256;  ///< hex of the secret's sha256
  std::string created;
  credential_kind kind = credential_kind::token;
  std::int64_t expires_ms = 0;  ///< unix ms; 0: never (API tokens)
};

/// The tokens file. Thread-safe, and safe across processes (changes hold a lock file beside
/// it); reloads the file when it changes, so a revoked token stops working at the next
/// request without restarting a gateway.
class token_store {
 public:
  explicit token_store(std::string path);

  /// Add an API token named `name` (1-64 of [A-Za-z0-9_.-], unique among tokens) and return
  /// it: the only time it is shown. The file is written 0600, atomically.
  [[nodiscard]] result<std::string> create(const std::string& name, scope s);
  /// A one-time console login code for `name`, valid for `ttl`.
  [[nodiscard]] result<std::string> create_login(const std::string& name, scope s, millis ttl);
  /// Exchange a login code for a browser session valid for `ttl`: the code is gone afterwards
  /// (a second exchange fails), the returned secret is the cookie's value.
  [[nodiscard]] result<std::pair<std::string, token_record>> exchange_login(const std::string& code,
                                                                            millis ttl);
  /// Remove every credential named `name`: its token, login codes and browser sessions
  /// (errc::not_found when there is none).
  [[nodiscard]] status revoke(const std::string& name);
  /// End one browser session (logout); unknown values are ignored.
  [[nodiscard]] status end_cookie(const std::string& value);
  /// Every live credential's record (no secrets: there are none in the file).
  [[nodiscard]] result<std::vector<token_record>> list() const;
  /// The record of API token `token`, or nullopt (unknown, revoked, malformed).
  [[nodiscard]] std::optional<token_record> verify(const std::string& token) const;
  /// The record of browser session `value` (a cookie), or nullopt (unknown, ended, expired).
  [[nodiscard]] std::optional<token_record> verify_cookie(const std::string& value) const;

  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  [[nodiscard]] result<std::vector<token_record>> load() const;
  [[nodiscard]] status save(std::vector<token_record> all) const;
  [[nodiscard]] std::optional<token_record> find(const std::string& secret,
                                                 credential_kind kind) const;
  [[nodiscard]] result<std::string> add(const std::string& name, scope s, credential_kind kind,
                                        std::int64_t expires_ms);
  std::string path_;
  mutable std::mutex mu_;
  mutable std::vector<token_record> cached_;
  mutable std::int64_t cached_mtime_ns_ = -1;
  mutable std::int64_t cached_size_ = -1;
  mutable std::uint64_t cached_ino_ = 0;
};

}  // namespace berth::gateway
