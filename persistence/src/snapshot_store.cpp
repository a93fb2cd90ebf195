#include "berth/persistence/snapshot_store.hpp"

#include "berth/base/log.hpp"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <filesystem>

namespace berth::persistence {

namespace {
constexpr const char* cf_meta = "meta";
constexpr const char* cf_sessions = "sessions";
constexpr const char* key_schema = "schema_version";

// Translate a rocksdb::Status once, with the library's text and the path.
error translate(const rocksdb::Status& s, const std::string& path, const std::string& what) {
  errc c = errc::io_error;
  std::string hint;
  if (s.IsCorruption()) {
    c = errc::corrupt;
    hint =
        "; the snapshot store is damaged: restore it from a backup or move it away to start empty "
        "(sessions then resume from the JetStream journal)";
  } else if (s.IsIOError() && s.ToString().find("lock") != std::string::npos) {
    c = errc::unavailable;
    hint = "; another berth node is using this data dir";
  } else if (s.IsNotFound()) {
    c = errc::not_found;
  }
  return error{c, "snapshot store " + path + ": " + what + ": " + s.ToString() + hint};
}
}  // namespace

struct snapshot_store::impl {
  std::string path;
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // default, meta, sessions
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* sessions = nullptr;

  // A destructor has no one to tell: every write was synced (or reported) when it was made,
  // so what Close could still fail at is releasing handles the process is dropping anyway.
  ~impl() {
    for (auto* h : handles)
      if (db && h) (void)db->DestroyColumnFamilyHandle(h);
    if (db) (void)db->Close();
  }

  status write(const write_set& w, bool sync) {
    rocksdb::WriteBatch batch;
    for (const auto& [k, v] : w.sessions) batch.Put(sessions, k, v);
    for (const auto& k : w.deleted_sessions) batch.Delete(sessions, k);
    for (const auto& [k, v] : w.meta) batch.Put(meta, k, v);
    rocksdb::WriteOptions wo;
    wo.sync = sync;
    auto s = db->Write(wo, &batch);
    if (!s.ok()) return translate(s, path, "write");
    return {};
  }
};

snapshot_store::snapshot_store(std::unique_ptr<impl> i) : impl_(std::move(i)) {}
snapshot_store::~snapshot_store() = default;

result<std::unique_ptr<snapshot_store>> snapshot_store::open(const std::string& dir) {
  namespace sfs = std::filesystem;
  std::error_code ec;
  bool exists = sfs::exists(dir, ec);
  bool is_new = !exists || sfs::is_empty(dir, ec);
  if (exists && !sfs::is_directory(dir, ec))
    return error{errc::invalid_argument,
                 "snapshot store " + dir + ": exists and is not a directory"};
  if (!is_new && !sfs::exists(sfs::path(dir) / "CURRENT", ec))
    return error{
        errc::corrupt,
        "snapshot store " + dir +
            ": the directory is not empty but has no CURRENT file; "
            "it is not a RocksDB database or it is damaged. Refusing to start empty over it"};
  if (is_new) {
    sfs::create_directories(dir, ec);
    if (ec)
      return error{errc::permission_denied,
                   "snapshot store " + dir + ": cannot create: " + ec.message()};
  }

  rocksdb::DBOptions opts;
  opts.create_if_missing = is_new;
  opts.create_missing_column_families = is_new;
  opts.error_if_exists = false;
  opts.paranoid_checks = true;
  opts.max_open_files = 256;
  opts.keep_log_file_num = 3;
  opts.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;

  rocksdb::ColumnFamilyOptions cfo;
  cfo.OptimizeForPointLookup(16);
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs = {
      {rocksdb::kDefaultColumnFamilyName, cfo}, {cf_meta, cfo}, {cf_sessions, cfo}};

  auto i = std::make_unique<impl>();
  i->path = dir;
  rocksdb::DB* raw = nullptr;
  auto s = rocksdb::DB::Open(opts, dir, cfs, &i->handles, &raw);
  if (!s.ok()) {
    if (s.IsInvalidArgument() && s.ToString().find("Column famil") != std::string::npos)
      return error{errc::unsupported, "snapshot store " + dir +
                                          ": its column families do not match this berth's "
                                          "schema (" +
                                          s.ToString() + "); it was written by another version"};
    return translate(s, dir, "open");
  }
  i->db.reset(raw);
  i->meta = i->handles[1];
  i->sessions = i->handles[2];

  std::string v;
  s = i->db->Get(rocksdb::ReadOptions(), i->meta, key_schema, &v);
  if (s.IsNotFound()) {
    if (!is_new)
      return error{errc::corrupt,
                   "snapshot store " + dir + ": no schema version recorded; refusing to use it"};
    write_set w;
    w.meta.emplace_back(key_schema, std::to_string(schema_version));
    BERTH_TRY(i->write(w, true));
  } else if (!s.ok()) {
    return translate(s, dir, "read schema version");
  } else {
    int found = 0;
    try {
      found = std::stoi(v);
    } catch (const std::exception&) {
      return error{errc::corrupt,
                   "snapshot store " + dir + ": schema version \"" + v + "\" is not a number"};
    }
    if (found != schema_version)
      return error{errc::unsupported,
                   "snapshot store " + dir + ": schema version " + std::to_string(found) +
                       " but this berth reads version " + std::to_string(schema_version) +
                       (found > schema_version ? "; it was written by a newer berth: upgrade berth"
                                               : "; it was written by an older berth")};
  }
  return std::unique_ptr<snapshot_store>(new snapshot_store(std::move(i)));
}

status snapshot_store::commit(const write_set& w) {
  return impl_->write(w, true);
}
status snapshot_store::commit_unsynced(const write_set& w) {
  return impl_->write(w, false);
}

result<std::optional<std::string>> snapshot_store::get_session(const std::string& id) {
  std::string v;
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->sessions, id, &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return translate(s, impl_->path, "read session " + id);
  return std::optional<std::string>(std::move(v));
}

result<std::optional<std::string>> snapshot_store::get_meta(const std::string& key) {
  std::string v;
  auto s = impl_->db->Get(rocksdb::ReadOptions(), impl_->meta, key, &v);
  if (s.IsNotFound()) return std::optional<std::string>();
  if (!s.ok()) return translate(s, impl_->path, "read meta " + key);
  return std::optional<std::string>(std::move(v));
}

status snapshot_store::for_each_session(
    const std::function<void(std::string_view, std::string_view)>& fn) {
  std::unique_ptr<rocksdb::Iterator> it(
      impl_->db->NewIterator(rocksdb::ReadOptions(), impl_->sessions));
  for (it->SeekToFirst(); it->Valid(); it->Next())
    fn(std::string_view(it->key().data(), it->key().size()),
       std::string_view(it->value().data(), it->value().size()));
  if (!it->status().ok()) return translate(it->status(), impl_->path, "scan sessions");
  return {};
}

const std::string& snapshot_store::path() const {
  return impl_->path;
}

}  // namespace berth::persistence
