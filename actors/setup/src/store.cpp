#include "store.hpp"

#include "berth/base/fs.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

namespace berth::setup::detail {
namespace sfs = std::filesystem;

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// A complete tree's record (written last when it was built): nullopt while being built.
std::optional<json::value> tree_record(const std::string& dir, struct stat* st) {
  auto path = dir + "/" + tree_complete;
  if (::lstat(path.c_str(), st) != 0 || !S_ISREG(st->st_mode)) return std::nullopt;
  auto text = fs::read_file(path);
  if (!text) return std::nullopt;
  auto v = json::parse(*text);
  if (!v || !v->is_object()) return std::nullopt;
  return *v;
}

// Tarballs at <root>/npm/<algo>/<hh>/<hex>, installed trees at <root>/npm-tree/<key>/.
std::vector<entry> all_entries(const std::string& root) {
  std::vector<entry> out;
  std::error_code ec;
  for (const char* eco : file_ecosystems) {
    for (sfs::recursive_directory_iterator it(root + "/" + eco, ec), end; !ec && it != end;
         it.increment(ec)) {
      if (it.depth() != 2 || !it->is_regular_file(ec)) continue;
      if (it->path().filename().string().rfind(".tmp-", 0) == 0) continue;
      struct stat st {};
      if (::lstat(it->path().c_str(), &st) != 0) continue;
      out.push_back(
          {it->path().string(), static_cast<std::uint64_t>(st.st_size), mtime_ns(st), eco});
    }
    ec.clear();
  }
  for (sfs::directory_iterator it(root + "/" + npm_tree_dir, ec), end; !ec && it != end;
       it.increment(ec)) {
    auto name = it->path().filename().string();
    if (name.empty() || name[0] == '.' || !it->is_directory(ec)) continue;
    struct stat st {};
    auto rec = tree_record(it->path().string(), &st);
    if (!rec) continue;
    out.push_back({it->path().string(), static_cast<std::uint64_t>(rec->get_int("bytes")),
                   mtime_ns(st), npm_tree_dir, true});
  }
  return out;
}

// Remove a tree: renamed out of the way first, so that no restore sees half of it.
bool remove_entry(const entry& e) {
  if (!e.tree) return ::unlink(e.path.c_str()) == 0;
  auto parent = sfs::path(e.path).parent_path().string();
  auto trash = parent + "/.trash-" + sfs::path(e.path).filename().string() + "-" +
               std::to_string(::getpid());
  if (::rename(e.path.c_str(), trash.c_str()) != 0) return false;
  fs::remove_tree(trash);
  return true;
}

pruned evict(const std::string& root, std::uint64_t keep) {
  auto all = all_entries(root);
  std::uint64_t total = 0;
  for (const auto& e : all) total += e.bytes;
  pruned p;
  if (total <= keep) return p;
  std::sort(all.begin(), all.end(),
            [](const entry& a, const entry& b) { return a.mtime_ns < b.mtime_ns; });
  for (const auto& e : all) {
    if (total <= keep) break;
    if (!remove_entry(e)) continue;
    total -= e.bytes;
    p.entries++;
    p.bytes += e.bytes;
  }
  return p;
}

void finish_promotion(const std::string& root, std::uint64_t cap, json::value& report,
                      std::uint64_t added, std::uint64_t bytes, std::uint64_t refused) {
  auto gone = evict(root, cap);
  report.set("added", static_cast<std::int64_t>(added));
  report.set("added_bytes", static_cast<std::int64_t>(bytes));
  if (refused) report.set("refused", static_cast<std::int64_t>(refused));
  if (gone.entries) report.set("evicted", static_cast<std::int64_t>(gone.entries));
}

bool share_file(int in, int dir, const std::string& name, bool link, int uid, int gid) {
  bool done = false;
  if (link) done = ::linkat(in, "", dir, name.c_str(), AT_EMPTY_PATH) == 0 || errno == EEXIST;
  if (!done) done = copy_into(in, dir, name, 0444, uid, gid, false) || errno == EEXIST;
  if (done) (void)::futimens(in, nullptr);  // used now: the least recently used go first
  return done;
}

bool add_file(int in, const std::string& dir, const std::string& name) {
  std::error_code ec;
  sfs::create_directories(dir, ec);
  auto out = open_root(dir);
  if (!out) return false;
  auto tmp = ".tmp-" + name;
  ::unlinkat(out.fd, tmp.c_str(), 0);
  if (!copy_into(in, out.fd, tmp, 0444, -1, -1, true)) return false;
  if (::renameat(out.fd, tmp.c_str(), out.fd, name.c_str()) != 0) {
    ::unlinkat(out.fd, tmp.c_str(), 0);
    return false;
  }
  return true;
}

}  // namespace berth::setup::detail
