#pragma once

#include "berth/base/error.hpp"
#include "berth/base/time.hpp"

#include <cstdint>
#include <string>

namespace berth::lease {

struct pr_request {
  std::string forge;     ///< "github" | "gitlab"
  std::string api_url;   ///< e.g. https://api.github.com, https://gitlab.example.com/api/v4
  std::string repo_url;  ///< the remote; owner/name (GitHub) or the project path (GitLab) from it
  std::string head;      ///< the pushed session branch
  std::string base;      ///< the branch to merge into
  std::string title;
  std::string body;
  std::string token;  ///< the session's lease
};

struct pr_result {
  std::string url;
  std::int64_t number = 0;
  bool existed = false;  ///< an open request for the same head was found and reused
};

/// Open a pull request (GitHub: POST /repos/{o}/{r}/pulls) or merge request (GitLab: POST
/// /projects/{path}/merge_requests). An open one for the same head is looked up first, so a
/// retry never opens two. Errors carry the forge's message, never the token.
[[nodiscard]] result<pr_result> open_pull_request(const pr_request& r, millis timeout);

/// The default API URL for a remote: https://api.github.com for github.com remotes,
/// <scheme>://<host>/api/v4 for GitLab; empty when it cannot be guessed.
[[nodiscard]] std::string default_api_url(const std::string& forge, const std::string& repo_url);

}  // namespace berth::lease
