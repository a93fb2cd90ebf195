#pragma once

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"
#include "berth/base/time.hpp"
#include "berth/config/config.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace berth::lease {

/// A credential leased for one session and one remote. `token` is the only secret: it is
/// registered with the redactor when minted and reaches git only through libgit2's credential
/// callback. Everything else is `metadata()`, which is what the journal records.
struct grant {
  std::string id;        ///< lease-<ulid>
  std::string provider;  ///< static | command | github_app
  std::string url;       ///< the remote the lease is for
  std::string username = "x-access-token";
  std::string token;
  std::int64_t issued_ms = 0;
  std::int64_t expires_ms = 0;  ///< 0: no expiry
  json::value scope;            ///< what the provider narrowed it to (repository, permissions)
  std::string api_url;          ///< the forge API that accepts the token, if known
  /// Replaced by a renewal: no longer handed to new jobs, but left valid (a clone or push that
  /// started with it is not cut off) until the session ends, when it is revoked with the rest.
  bool retired = false;

  [[nodiscard]] json::value metadata() const;
  /// The vault form (with the token) and back.
  [[nodiscard]] json::value to_json() const;
  [[nodiscard]] static result<grant> from_json(const json::value& v);
};

/// Mints and revokes tokens for the remotes of one `[[credentials.*]]` rule.
class provider {
 public:
  virtual ~provider() = default;
  [[nodiscard]] virtual std::string name() const = 0;
  /// A new token for `url`, narrowed to that one repository where the provider can do so.
  [[nodiscard]] virtual result<grant> mint(const std::string& url) = 0;
  /// Make the token unusable. Success also when it already is (revoked or expired). A
  /// provider that cannot revoke (static) forgets it and returns ok.
  [[nodiscard]] virtual status revoke(const grant& g) = 0;
  /// Whether `revoke` makes the token unusable at the source.
  [[nodiscard]] virtual bool revocable() const = 0;
};

/// The provider for one rule. Files are read (and their mode checked) when tokens are minted,
/// so a rotated token file takes effect without a restart; `check` reads them now.
[[nodiscard]] result<std::unique_ptr<provider>> make_provider(const config::credential_rule& rule);

/// Every rule's provider, chosen per remote by the longest matching URL prefix.
class registry {
 public:
  /// Fails on the first rule whose files are unusable (missing, mode too open, bad key).
  [[nodiscard]] static result<std::shared_ptr<registry>> create(
      const config::credentials_section& cfg);
  /// nullptr: no rule matches (the remote is used without credentials).
  [[nodiscard]] provider* for_url(const std::string& url) const;
  /// The provider by name and prefix, to revoke a grant read back from the vault.
  [[nodiscard]] provider* for_grant(const grant& g) const;

 private:
  config::credentials_section cfg_;
  std::vector<std::unique_ptr<provider>> providers_;  ///< one per rule of cfg_, same order
};

/// Check that a secret file is a regular file readable only by its owner (mode 0600 or
/// stricter), then read it. The error names `field` and the file, never its content.
[[nodiscard]] result<std::string> read_secret_file(const std::string& path,
                                                   const std::string& field);

/// The live grants of this node's sessions, so that a node that crashed can revoke them when it
/// comes back: `<dir>/<session>.json`, mode 0600 in a 0700 directory. A grant is removed as soon
/// as it is revoked. This is the only place a token is at rest.
class vault {
 public:
  explicit vault(std::string dir);
  [[nodiscard]] status put(const std::string& session, const grant& g);
  [[nodiscard]] status remove(const std::string& session, const std::string& lease_id);
  /// The live grants of one session / of every session.
  [[nodiscard]] std::vector<grant> of(const std::string& session) const;
  [[nodiscard]] std::map<std::string, std::vector<grant>> all() const;
  [[nodiscard]] const std::string& dir() const { return dir_; }

 private:
  [[nodiscard]] status write(const std::string& session, const std::vector<grant>& gs);
  std::string dir_;
  mutable std::mutex mu_;
};

/// An RS256 JWT for a GitHub App: iat 60 s in the past, exp 9 minutes ahead, iss = app id.
[[nodiscard]] result<std::string> github_app_jwt(const std::string& private_key_pem,
                                                 std::int64_t app_id, std::int64_t now_s);

/// "owner/name" of a remote URL (its last two path components, ".git" dropped).
[[nodiscard]] result<std::pair<std::string, std::string>> repo_of(const std::string& url);

}  // namespace berth::lease
