#pragma once

#include "harness.hpp"

#include "berth/base/json.hpp"

#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

struct evp_pkey_st;  // OpenSSL's EVP_PKEY

namespace berth::test {

/// A key as PEM text: the private key (PKCS#8) or its public half.
std::string pem_of(evp_pkey_st* key, bool private_key);
/// Decode base64url without padding (JWT parts); empty when malformed.
std::string base64url_decode(std::string s);

/// A local stand-in for the parts of GitHub's REST API Berth uses, speaking its real endpoints:
/// a GitHub App's installation tokens (POST /app/installations/{id}/access_tokens with an RS256
/// app JWT, DELETE /installation/token) and pull requests (GET/POST /repos/{o}/{r}/pulls). The
/// tokens it mints are granted on a `git_server` for exactly the repository asked for, so git
/// itself enforces their scope; revoking one removes the grant.
class github_standin {
 public:
  struct minted {
    std::string token;
    std::string repo;  ///< owner/name
    json::value permissions;
    std::int64_t expires_unix = 0;
  };

  /// `owner`: the account whose repositories the installation covers ("acme").
  github_standin(git_server& git, std::string owner, std::int64_t app_id,
                 std::int64_t installation_id);
  ~github_standin();
  void start();
  [[nodiscard]] std::string api_url() const;
  /// The App's private key (PEM, RSA 2048, generated per instance).
  [[nodiscard]] const std::string& private_key_pem() const { return key_pem_; }

  // Knobs.
  void token_lifetime(std::int64_t seconds) { lifetime_s_ = seconds; }
  void long_tokens(bool on) { long_tokens_ = on; }  ///< the ~520-character ghs_ format
  void fail_revokes(int n) { fail_revokes_ = n; }   ///< the next n revocations answer 502
  void broaden(bool on) { broaden_ = on; }          ///< answer with more repositories than asked
  /// GitLab's merge requests too (/api/v4/projects/{path}/merge_requests), for a project
  /// access token the test hands out itself: `token` may act on `project` ("git/acme/app").
  void gitlab_token(const std::string& token, const std::string& project) {
    std::lock_guard lock(mu_);
    gitlab_tokens_[token] = project;
  }

  // What happened.
  [[nodiscard]] std::vector<minted> tokens() const;
  /// Successful revocations per token (204 answers).
  [[nodiscard]] std::map<std::string, int> revocations() const;
  [[nodiscard]] int revoke_attempts() const { return revoke_attempts_; }
  [[nodiscard]] std::vector<json::value> pulls() const;
  /// Requests it refused, and why (a bad JWT, a token out of scope...).
  [[nodiscard]] std::vector<std::string> refusals() const;

 private:
  struct reply {
    int status = 200;
    std::string body;
  };
  reply handle(const std::string& method, const std::string& target,
               const std::string& authorization, const std::string& body);
  bool jwt_ok(const std::string& authorization, std::string& why) const;
  // The live token's grant, if `authorization` ("token X") carries one valid for `repo`.
  const minted* token_for(const std::string& authorization, const std::string& repo);
  void serve();

  git_server& git_;
  std::string owner_;
  std::int64_t app_id_;
  std::int64_t installation_id_;
  std::string key_pem_;
  std::string pub_pem_;
  int listen_fd_ = -1;
  int port_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::int64_t lifetime_s_ = 3600;
  bool long_tokens_ = false;
  std::atomic<int> fail_revokes_{0};
  bool broaden_ = false;
  std::atomic<int> revoke_attempts_{0};
  mutable std::mutex mu_;
  std::vector<minted> minted_;
  std::map<std::string, int> revoked_;
  std::vector<json::value> pulls_;
  std::vector<std::string> refusals_;
  std::map<std::string, std::string> gitlab_tokens_;
};

}  // namespace berth::test
