#pragma once

#include "berth/base/error.hpp"

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

namespace berth::workspace {

/// Per node, one bare mirror per remote URL under `root`, created once and fetched
/// incrementally (libgit2 has no shallow clone and a slow pack fetch on big repositories: the
/// mirror makes that a one-time cost). Concurrent sessions on one URL share its mirror: updates
/// of one URL are serialised. Global and system git configuration are never read.
class mirror_cache {
 public:
  explicit mirror_cache(std::string root);
  /// Bring the mirror of `url` up to date, creating it on first use; returns its path.
  [[nodiscard]] result<std::string> update(const std::string& url);
  /// Where the mirror of `url` lives (whether or not it exists yet).
  [[nodiscard]] std::string path_of(const std::string& url) const;

 private:
  std::string root_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;
};

struct clone_options {
  std::string ref;     ///< branch, tag or commit; empty: the remote's default branch
  std::string branch;  ///< the session's branch, created at `ref` and checked out
  std::string author_name = "Berth";
  std::string author_email = "berth@localhost";
};

/// A session's workspace: a local clone of `mirror` at `dest` (fast: no network), `origin` set
/// to the real `url`, `ref` resolved and `branch` created there and checked out, the commit
/// identity in the repository's own config. Returns the checked-out commit id.
[[nodiscard]] result<std::string> clone_workspace(const std::string& mirror, const std::string& url,
                                                  const std::string& dest,
                                                  const clone_options& opts);

/// Commit every change of the workspace (new, modified and deleted files) on its current branch
/// with the repository's identity. Returns the new commit id, or nullopt when nothing changed.
[[nodiscard]] result<std::optional<std::string>> commit_all(const std::string& dest,
                                                            const std::string& message);

/// Record the workspace's current files on the hidden ref `refs/berth/checkpoints/<session>`
/// (a commit whose parent is the previous checkpoint, else HEAD), leaving HEAD and the session
/// branch alone: another node can restore the workspace from it. Returns the commit id, or
/// nullopt when nothing changed since the last checkpoint (or HEAD).
[[nodiscard]] result<std::optional<std::string>> checkpoint(const std::string& dest,
                                                            const std::string& session);

/// Push `branch` of the workspace to `url` through an anonymous remote built here: the
/// repository's own remote.*, url.*.insteadOf and pushurl settings play no part. `token`, if
/// given, is offered once as HTTP basic credentials (user `x-access-token`) through libgit2's
/// credential callback — never written to the repository or an error message. A rejected
/// credential is "authentication failed for <url>".
[[nodiscard]] status push_branch(const std::string& dest, const std::string& url,
                                 const std::string& branch, const std::string& token = {});

}  // namespace berth::workspace
