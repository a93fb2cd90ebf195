#pragma once

// The store's layout and the parts every ecosystem's code shares (private to berth::setup):
//
//   <root>/.lock                            flock: promote, evict and prune one at a time
//   <root>/npm/<algo>/<hh>/<hex>            npm tarballs, named by their integrity digest
//   <root>/pip/sha256/<hh>/<hex>--<file>    wheels and sdists, named by their sha256
//   <root>/go/h1/<hh>/<hex>.{zip,mod}       Go module zips and go.mod files, by their h1 hash
//   <root>/cargo/sha256/<hh>/<hex>.crate    crates, by Cargo.lock's checksum
//   <root>/cargo/registries                 cargo's registry cache directory names, learned
//   <root>/npm-tree/<key>/{node_modules,.complete}   installed trees the node built
//
// Every file is root-owned and read-only; the root is 0700, never mounted into a sandbox.

#include "files.hpp"

#include "berth/base/json.hpp"
#include "berth/setup/cache.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace berth::setup {

/// The store's background builder of installed npm trees (one thread, one build per key).
struct cache_store::tree_worker {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<npm_tree> queue;
  std::set<std::string, std::less<>> pending;  ///< keys queued or being built
  std::atomic<bool> stop{false};
  std::thread thread;
};

}  // namespace berth::setup

namespace berth::setup::detail {

inline constexpr const char* npm = "npm";
inline constexpr const char* pip = "pip";
inline constexpr const char* go = "go";
inline constexpr const char* cargo = "cargo";
inline constexpr const char* npm_tree_dir = "npm-tree";
inline constexpr const char* file_ecosystems[] = {npm, pip, go, cargo};  ///< stores of single files
inline constexpr const char* tree_complete = ".complete";  ///< a tree's record, written last
inline constexpr std::uint64_t max_tree_bytes = 8ULL << 30;
inline constexpr std::uint64_t max_tree_files = 2000000;
inline constexpr std::uint64_t max_entry_bytes = 1ULL << 30;  ///< larger files are never shared

/// A store-wide lock: promote, evict and prune never run at once (several sessions, and the
/// CLI's prune, share one store).
struct store_lock {
  fd_t f;
  explicit store_lock(const std::string& root)
      : f(::open((root + "/.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (f) (void)::flock(f.fd, LOCK_EX);  // EINTR/ENOLCK only: the rename-based writes stay safe
  }
};

/// One evictable entry: a file, or an installed tree (a directory).
struct entry {
  std::string path;
  std::uint64_t bytes;
  std::int64_t mtime_ns;
  std::string ecosystem;
  bool tree = false;
};

std::int64_t mtime_ns(const struct stat& st);
/// A complete tree's record (written last when it was built): nullopt while being built.
std::optional<json::value> tree_record(const std::string& dir, struct stat* st);
std::vector<entry> all_entries(const std::string& root);
/// Remove an entry; a tree is renamed out of the way first, so that no restore sees half of it.
bool remove_entry(const entry& e);
/// Remove least recently used entries until the store holds at most `keep` bytes.
pruned evict(const std::string& root, std::uint64_t keep);

/// What one promotion did, into its report: evict past `cap`, then "added", "added_bytes",
/// and "refused" / "evicted" when not zero.
void finish_promotion(const std::string& root, std::uint64_t cap, json::value& report,
                      std::uint64_t added, std::uint64_t bytes, std::uint64_t refused);

/// Give a session the store's file open at `in` as `dir`/`name`: a hard link when `link` (the
/// sandbox user cannot write a root-owned 0444 file), a copy owned by uid/gid otherwise. Marks
/// the entry used (LRU). True when it is there (or was already).
bool share_file(int in, int dir, const std::string& name, bool link, int uid, int gid);

/// Add the verified file open at `in` to the store as `dir`/`name` (made if needed): a synced
/// copy renamed into place. False on any failure (nothing half-written is left).
bool add_file(int in, const std::string& dir, const std::string& name);

}  // namespace berth::setup::detail
