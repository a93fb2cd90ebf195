#pragma once

#include "berth/base/error.hpp"

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace berth::workspace {

/// HTTP basic credentials for a remote (a lease's token). Given to libgit2 only through its
/// credential callback, offered once per operation: a second request means the server refused
/// it, which is "authentication failed for <url>".
struct credential {
  std::string username = "x-access-token";
  std::string token;  ///< empty: anonymous
  /// When it becomes true, a transfer under way is abandoned ("cancelled"): a session that is
  /// cancelled, times out or stops does not wait for a long clone or push to end.
  const std::atomic<bool>* cancel = nullptr;
};

/// Per node, one bare mirror per remote URL under `root`, created once and fetched
/// incrementally (libgit2 has no shallow clone and a slow pack fetch on big repositories: the
/// mirror makes that a one-time cost). Concurrent sessions on one URL share its mirror: updates
/// of one URL are serialised. Global and system git configuration are never read.
class mirror_cache {
 public:
  explicit mirror_cache(std::string root);
  /// Bring the mirror of `url` up to date, creating it on first use; returns its path.
  [[nodiscard]] result<std::string> update(const std::string& url, const credential& cred = {});
  /// Where the mirror of `url` lives (whether or not it exists yet).
  [[nodiscard]] std::string path_of(const std::string& url) const;

 private:
  std::string root_;
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<std::mutex>> locks_;
};

/// Whether a node may clone `url`: file:// only for paths inside one of `file_allowlist`
/// (a node's own disk is not every session's to read). The error names the field `repo`.
[[nodiscard]] status check_remote_allowed(const std::string& url,
                                          const std::vector<std::string>& file_allowlist);

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

/// The branch the mirror's HEAD names (the remote's default branch), e.g. "main".
[[nodiscard]] result<std::string> default_branch(const std::string& mirror);

/// The commit id `spec` (e.g. "HEAD") names in the repository at `dest`.
[[nodiscard]] result<std::string> resolve(const std::string& dest, const std::string& spec);

/// Whether `ref` names a branch of the mirror (refs/heads/<ref>).
[[nodiscard]] bool has_branch(const std::string& mirror, const std::string& ref);

/// Initialise and clone the workspace's submodules (one level), only when a session asks for
/// them. Each submodule's URL, resolved against the workspace's origin, must pass `allowed`
/// (the same rules as a session's repo); `cred` is offered only to URLs starting with
/// `cred_prefix`. Returns the submodule paths checked out.
[[nodiscard]] result<std::vector<std::string>> init_submodules(
    const std::string& dest, const std::function<status(const std::string& url)>& allowed,
    const credential& cred, const std::string& cred_prefix);

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

/// A session's changes: what `to` has that `from` had not, file by file, and as a unified
/// patch (cut at `max_patch_bytes`; binary files named, not shown).
struct change_set {
  struct file {
    std::string path;
    std::string old_path;  ///< renamed from; empty otherwise
    std::string status;    ///< added, modified, deleted, renamed, ...
    std::int64_t additions = 0, deletions = 0;
    bool binary = false;
  };
  std::vector<file> files;
  std::int64_t additions = 0, deletions = 0;
  std::string patch;
  bool truncated = false;  ///< the patch was cut at max_patch_bytes
};
/// The changes between two commits of the repository at `dest` (a workspace or a mirror).
[[nodiscard]] result<change_set> diff_commits(const std::string& dest, const std::string& from,
                                              const std::string& to, std::size_t max_patch_bytes);

/// Push `refspecs` of the workspace to `url` through an anonymous remote built here: the
/// repository's own remote.*, url.*.insteadOf and pushurl settings play no part. The
/// credential goes only through libgit2's callback — never into the repository or an error
/// message. A refused ref is an error naming it.
[[nodiscard]] status push_refs(const std::string& dest, const std::string& url,
                               const std::vector<std::string>& refspecs, const credential& cred);

/// Push `branch` (refs/heads/<branch>) of the workspace to `url` (see push_refs). `token`, if
/// given, is offered as user `x-access-token`.
[[nodiscard]] status push_branch(const std::string& dest, const std::string& url,
                                 const std::string& branch, const std::string& token = {});

/// Another node's restore of a workspace: refs/berth/checkpoints/<session> is fetched from the
/// (freshly updated) mirror, and the files of checkpoint `commit` become the working tree; HEAD,
/// the branch and the index stay where they are, so the agent sees its uncommitted changes
/// again, and the next checkpoint chains onto the restored one.
[[nodiscard]] status restore_checkpoint(const std::string& dest, const std::string& mirror,
                                        const std::string& session, const std::string& commit);

/// Point the checked-out branch at `commit` (an object already in the repository) without
/// touching the working tree: a restored workspace gets back the commits its session made.
[[nodiscard]] status reset_branch(const std::string& dest, const std::string& commit);

/// Create a bare repository at `path` with one commit on `main` holding `files` (path ->
/// content): the demo's and the benchmark's sample repositories.
[[nodiscard]] status create_repository(const std::string& path,
                                       const std::map<std::string, std::string>& files,
                                       const std::string& message = "initial commit");

}  // namespace berth::workspace
