#pragma once

// The node's dependency cache: a content-addressed store that the sessions of a node share
// without being able to poison one another.
//
// Entries are files named by the digest of their content (npm: the sha512/sha1 of a package
// tarball, the key of npm's own cacache). Before a setup step, the entries that the
// workspace's lockfile pins are linked (or copied) into the session's own package-manager
// cache, where the package manager verifies them again against the lockfile. After a setup
// step, what the session fetched is added to the store only if its content hashes to its
// name, computed by the node. Store files are root-owned and read-only, in a directory the
// sandbox never sees: a session can replace its own links, never the store.

#include "berth/base/error.hpp"
#include "berth/base/json.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace berth::setup {

/// One ecosystem's share of the store.
struct cache_usage {
  std::string ecosystem;
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
  std::int64_t oldest_ms = 0;  ///< least recently used entry (0: none)
  std::int64_t newest_ms = 0;
};

/// What prune removed.
struct pruned {
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
};

class cache_store {
 public:
  /// `root`: the store's directory (created 0700); `max_bytes`: the cap LRU eviction keeps the
  /// store under; `uid`/`gid`: the sandbox user that owns what is created in a session's home
  /// (-1: the node's own user, and entries are copied, never linked).
  cache_store(std::string root, std::uint64_t max_bytes, int uid, int gid);

  /// Create the store's directories. Errors name the path.
  [[nodiscard]] status open() const;

  /// Before a setup step: link the entries pinned by the lockfiles of the workspace at host
  /// path `workspace` into the session's home at host path `home`. Returns the journal's
  /// `cache` report: {"npm": {"pinned", "seeded", "seeded_bytes"}}.
  [[nodiscard]] json::value seed(const std::string& workspace, const std::string& home) const;

  /// After a setup step: verify and add what the session's package managers fetched into its
  /// home, then evict the least recently used entries beyond the cap. `report` (from seed)
  /// gains "added" and "added_bytes" per ecosystem.
  void promote(const std::string& home, json::value& report) const;

  /// Every ecosystem's entries and bytes.
  [[nodiscard]] std::vector<cache_usage> usage() const;

  /// Remove least recently used entries until the store holds at most `keep_bytes`
  /// (0: everything).
  [[nodiscard]] result<pruned> prune(std::uint64_t keep_bytes) const;

  [[nodiscard]] const std::string& root() const { return root_; }

 private:
  std::string root_;
  std::uint64_t max_bytes_;
  int uid_, gid_;
};

/// The pins of an npm lockfile (package-lock.json or npm-shrinkwrap.json text): each
/// integrity as {algorithm, lowercase hex digest}. Unknown algorithms and malformed entries are
/// skipped.
struct pin {
  std::string algorithm;
  std::string hex;
};
[[nodiscard]] std::vector<pin> npm_pins(std::string_view lockfile);

}  // namespace berth::setup
