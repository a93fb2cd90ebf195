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
#include "berth/setup/npm_tree.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace berth::setup {

/// The sha256 digests a requirements.txt pins (pip's hash-checking mode), one set per
/// requirement: what the store may serve a session, and accept from it.
struct pip_pins {
  std::vector<std::vector<std::string>> requirements;  ///< lowercase hex, per requirement
  std::string unshareable;  ///< why the store cannot serve this file ("": it can)
};

/// Parse requirements.txt text. Unshareable when it pins nothing, when a requirement has no
/// sha256 --hash, or when it names other files, editables, paths or URLs (-r, -c, -e, ./x).
[[nodiscard]] pip_pins parse_pip_pins(std::string_view requirements);

/// One module version of a go.sum: the h1 hashes (as hex) of its zip and of its go.mod ("" when
/// go.sum lists only one of them).
struct go_pin {
  std::string module, version;
  std::string zip_hex, mod_hex;
};

/// The h1 pins of go.sum text; lines that do not parse, or whose module path or version could
/// name a path outside a proxy directory, are skipped.
[[nodiscard]] std::vector<go_pin> parse_go_sum(std::string_view text);

/// Go's h1 hash of the module zip open at `fd` (dirhash Hash1: sha256 of "<sha256>  <name>\n"
/// per member, sorted by name), as hex. Errors for what is not a plain module zip (zip64,
/// encryption, other compression, CRC or size mismatches, > 500 MiB, duplicate names).
[[nodiscard]] result<std::string> go_zip_hash(int fd);
/// Go's h1 hash of a go.mod file's content, as hex.
[[nodiscard]] result<std::string> go_mod_hash(int fd);

/// One crate of a Cargo.lock: name, version and the sha256 (hex) of its .crate file.
struct crate_pin {
  std::string name, version, hex;
};

/// The checksummed packages of Cargo.lock text (version 2 and 3 lockfiles); packages without
/// a checksum (path and git dependencies) and malformed names are skipped.
[[nodiscard]] std::vector<crate_pin> parse_cargo_lock(std::string_view text);

/// One ecosystem's share of the store.
struct cache_usage {
  std::string ecosystem;
  std::uint64_t entries = 0;
  std::uint64_t bytes = 0;
  std::int64_t oldest_ms = 0;  ///< least recently used entry (0: none)
  std::int64_t newest_ms = 0;
};

/// What a setup step did with the store's installed npm trees (the journal's `cache.npm.tree`).
struct tree_use {
  std::string state;   ///< "restored", "built", "present", "absent", "ineligible", "failed"
  std::string reason;  ///< why ineligible or failed
  std::string key;
  std::uint64_t packages = 0;
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;
  std::int64_t ms = 0;  ///< how long restoring or building took
  [[nodiscard]] json::value to_json() const;
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
  /// Stops the background tree builder: a build in progress is cancelled (nothing half-built
  /// is kept), queued ones are dropped.
  ~cache_store();
  cache_store(const cache_store&) = delete;
  cache_store& operator=(const cache_store&) = delete;

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

  /// Before a setup step that would run `npm ci`: put the installed tree of `t` that the store
  /// holds at <workspace>/node_modules (a workspace that has one already is left alone). Files
  /// are hard links to the store's root-owned, read-only files when the sandbox user is another
  /// user, copies otherwise; directories and bin targets belong to the sandbox user. On
  /// "restored" npm need not run; on anything else nothing was left behind.
  [[nodiscard]] tree_use restore_npm_tree(const npm_tree& t, const std::string& workspace) const;

  /// Build the installed tree of `t` from the store's verified tarballs (nothing of a session's
  /// is used), unless the store has it: "built", "present", or "failed" with the reason (a
  /// tarball the store lacks, one that does not unpack, `cancel` set).
  [[nodiscard]] tree_use build_npm_tree(const npm_tree& t,
                                        const std::atomic<bool>* cancel = nullptr) const;

  /// After `npm ci` succeeded: build the tree on the store's own thread, off the setup step's
  /// time (a restore of the same key waits for it, up to `tree_wait`). Returns the journal's
  /// "building" (or "present", "ineligible").
  [[nodiscard]] tree_use build_npm_tree_later(const npm_tree& t) const;

  /// How long a restore waits for a build of its tree that is in progress.
  static constexpr std::chrono::seconds tree_wait{30};

  /// Before a setup step of a hash-pinned requirements.txt: link the files the store holds for
  /// `pins` into the session's wheel directory (<home>/.cache/berth/wheels). Report: {"pinned":
  /// requirements, "seeded": files, "seeded_bytes", "complete": every requirement has a file}.
  [[nodiscard]] json::value seed_pip(const pip_pins& pins, const std::string& home) const;

  /// After it: add the files of the session's wheel directory whose sha256 `pins` names (the
  /// node hashes them); others are refused and counted. `report` gains added/added_bytes.
  void promote_pip(const pip_pins& pins, const std::string& home, json::value& report) const;

  /// Before a setup step of a Go module: the zips and go.mod files the store holds for `pins`,
  /// laid out as a GOPROXY in the session's home (<home>/.cache/berth/goproxy, which every
  /// command's GOPROXY lists first). Report: {"pinned", "seeded", "seeded_mods",
  /// "seeded_bytes", "complete"}.
  [[nodiscard]] json::value seed_go(const std::vector<go_pin>& pins, const std::string& home) const;

  /// After it: add the zips and go.mod files of the session's module cache whose h1 hash (the
  /// node computes it) is the one go.sum pins; others are refused and counted.
  void promote_go(const std::vector<go_pin>& pins, const std::string& home,
                  json::value& report) const;

  /// Before a setup step of a locked Rust project: link the .crate files the store holds for
  /// `pins` into each registry cache directory the store has learned
  /// (<home>/.cargo/registry/cache/<dir>/<name>-<version>.crate). Report: {"pinned",
  /// "seeded", "seeded_bytes", "registries"}.
  [[nodiscard]] json::value seed_cargo(const std::vector<crate_pin>& pins,
                                       const std::string& home) const;

  /// After it: add the session's cached .crate files whose sha256 (the node computes it) is
  /// the one Cargo.lock pins, and remember the directories they were in; others are refused.
  void promote_cargo(const std::vector<crate_pin>& pins, const std::string& home,
                     json::value& report) const;

  /// Every ecosystem's entries and bytes.
  [[nodiscard]] std::vector<cache_usage> usage() const;

  /// Remove least recently used entries until the store holds at most `keep_bytes`
  /// (0: everything).
  [[nodiscard]] result<pruned> prune(std::uint64_t keep_bytes) const;

  [[nodiscard]] const std::string& root() const { return root_; }

 private:
  struct tree_worker;
  std::string root_;
  std::uint64_t max_bytes_;
  int uid_, gid_;
  mutable std::unique_ptr<tree_worker> worker_;  ///< the background builder, made on first use
  mutable std::mutex worker_mu_;
};

/// The pins of an npm lockfile (package-lock.json or npm-shrinkwrap.json text): each
/// integrity as {algorithm, lowercase hex digest}. Unknown algorithms and malformed entries are
/// skipped.
struct pin {
  std::string algorithm;
  std::string hex;
};
[[nodiscard]] std::vector<pin> npm_pins(std::string_view lockfile);

/// A regular file of at most `cap` bytes directly in `dir` (a session's workspace or home),
/// opened without following a symlink; nullopt otherwise.
[[nodiscard]] std::optional<std::string> read_workspace_file(const std::string& dir,
                                                             const std::string& name,
                                                             std::size_t cap);

/// The digests of one integrity string ("sha512-<base64> sha1-<base64>"), as npm_pins.
[[nodiscard]] std::vector<pin> integrity_pins(std::string_view integrity);

}  // namespace berth::setup
