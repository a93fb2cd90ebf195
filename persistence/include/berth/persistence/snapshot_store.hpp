#pragma once

#include "berth/base/error.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace berth::persistence {

/// The on-disk schema this build reads and writes. Bump on incompatible changes; never reuse.
inline constexpr int schema_version = 1;

/// One synced write: session snapshots to put and to delete, plus meta keys.
struct write_set {
  std::vector<std::pair<std::string, std::string>> sessions;
  std::vector<std::string> deleted_sessions;
  std::vector<std::pair<std::string, std::string>> meta;
};

/// RocksDB-backed store of session snapshots (column family `sessions`) and node metadata
/// (column family `meta`, holding the schema version). Every `commit` is one synced
/// WriteBatch: the commit point the node relies on after a crash.
///
/// Thread-safe: RocksDB serialises writers and groups concurrent synced writes into one fsync.
class snapshot_store {
 public:
  /// Open (or create, when `dir` is absent or empty) the store in `dir`. Refuses, naming the
  /// path, a DB of another schema version, a damaged DB, and a DB locked by another process.
  [[nodiscard]] static result<std::unique_ptr<snapshot_store>> open(const std::string& dir);

  ~snapshot_store();
  snapshot_store(const snapshot_store&) = delete;
  snapshot_store& operator=(const snapshot_store&) = delete;

  /// Apply a write set atomically with `sync = true`.
  [[nodiscard]] status commit(const write_set& w);
  /// Apply a write set atomically without fsync (bookkeeping that can be rebuilt).
  [[nodiscard]] status commit_unsynced(const write_set& w);

  [[nodiscard]] result<std::optional<std::string>> get_session(const std::string& id);
  /// Visit every stored session snapshot in key order.
  [[nodiscard]] status for_each_session(
      const std::function<void(std::string_view id, std::string_view snapshot)>& fn);

  [[nodiscard]] result<std::optional<std::string>> get_meta(const std::string& key);

  [[nodiscard]] const std::string& path() const;

 private:
  struct impl;
  explicit snapshot_store(std::unique_ptr<impl> i);
  std::unique_ptr<impl> impl_;
};

}  // namespace berth::persistence
