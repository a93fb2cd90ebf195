// The store's share for pip: wheels and sdists named by the sha256 that a hash-pinned
// requirements.txt gives them (pip-compile --generate-hashes, uv pip compile
// --generate-hashes). pip checks every file against those hashes itself; the node only ever
// serves a session the files its own requirements pin, and only accepts from a session files
// whose content hashes to a digest the session's requirements pin.

#include "store.hpp"

#include "berth/setup/cache.hpp"
#include "berth/setup/environment.hpp"

#include <algorithm>
#include <set>
#include <sstream>

namespace berth::setup {

using namespace detail;

namespace {

// A file name pip would take as a distribution: <name>-<version>...(.whl|.tar.gz|.zip).
bool distribution_name(std::string_view n) {
  if (n.empty() || n.size() > 200 || n[0] == '.' || n.find("--") != std::string_view::npos)
    return false;
  for (char c : n)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' ||
          c == '+' || c == '!'))
      return false;
  auto ends = [&](std::string_view s) {
    return n.size() > s.size() && n.substr(n.size() - s.size()) == s;
  };
  return ends(".whl") || ends(".tar.gz") || ends(".zip");
}

}  // namespace

pip_pins parse_pip_pins(std::string_view text) {
  pip_pins out;
  auto no = [&](std::string why) {
    out.requirements.clear();
    out.unshareable = std::move(why);
    return out;
  };
  // Logical lines: a trailing backslash continues a line; " #" starts a comment.
  std::vector<std::string> lines;
  std::string cur;
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty() && line.back() == '\\') {
      cur += line.substr(0, line.size() - 1) + " ";
      continue;
    }
    cur += line;
    lines.push_back(std::move(cur));
    cur.clear();
  }
  if (!cur.empty()) lines.push_back(cur);
  bool any_hash = false;
  for (auto& raw : lines) {
    auto hash_at = raw.find('#');
    while (hash_at != std::string::npos && hash_at > 0 && raw[hash_at - 1] != ' ' &&
           raw[hash_at - 1] != '\t')
      hash_at = raw.find('#', hash_at + 1);
    auto line =
        trim_blanks(hash_at == 0 ? std::string_view() : std::string_view(raw).substr(0, hash_at));
    if (line.empty()) continue;
    std::istringstream words(line);
    std::vector<std::string> w;
    for (std::string x; words >> x;) w.push_back(x);
    const auto& first = w[0];
    if (first[0] == '-') {
      for (const char* opt : {"-r", "--requirement", "-c", "--constraint", "-e", "--editable"})
        if (first == opt || first.rfind(std::string(opt) + "=", 0) == 0)
          return no("requirements.txt uses " + std::string(opt) +
                    " (only one self-contained, hash-pinned file is served from the cache)");
      continue;  // --index-url, --find-links, --no-index, ...: pip's business
    }
    if (first.find("://") != std::string::npos || first[0] == '.' || first[0] == '/' ||
        line.find('@') != std::string::npos)
      return no("requirements.txt names a path or URL (" + first + ")");
    std::vector<std::string> hashes;
    for (std::size_t i = 1; i < w.size(); ++i) {
      std::string h;
      if (w[i].rfind("--hash=", 0) == 0) h = w[i].substr(7);
      if (w[i] == "--hash" && i + 1 < w.size()) h = w[++i];
      if (h.rfind("sha256:", 0) != 0) continue;
      h = h.substr(7);
      std::transform(h.begin(), h.end(), h.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (h.size() == 64 && is_hex(h)) hashes.push_back(h);
    }
    if (hashes.empty()) {
      if (line.find("--hash") != std::string::npos)
        return no("`" + first + "` has no sha256 --hash");
      out.requirements.push_back({});  // unpinned: decided below
      continue;
    }
    any_hash = true;
    out.requirements.push_back(std::move(hashes));
  }
  if (!any_hash)
    return no(
        "requirements.txt pins no hashes (pip-compile --generate-hashes or uv pip compile "
        "--generate-hashes write them)");
  for (const auto& r : out.requirements)
    if (r.empty()) return no("a requirement has no --hash (pip's hash-checking mode needs all)");
  return out;
}

json::value cache_store::seed_pip(const pip_pins& pins, const std::string& home) const {
  json::value n = json::value::make_object();
  n.set("pinned", static_cast<std::int64_t>(pins.requirements.size()));
  auto hm = open_root(home);
  auto dir = hm ? open_dirs(hm.fd, split_slash(pip_wheel_dir), true, uid_, gid_) : fd_t();
  std::uint64_t seeded = 0, bytes = 0;
  std::size_t satisfied = 0;
  bool link = ::geteuid() == 0 && uid_ > 0;
  for (const auto& req : pins.requirements) {
    bool have = false;
    for (const auto& hex : req) {
      auto bucket = open_root(root_ + "/" + pip + "/sha256/" + hex.substr(0, 2));
      if (!bucket || !dir) continue;
      for (const auto& name : names_in(bucket.fd)) {
        if (name.rfind(hex + "--", 0) != 0) continue;
        auto file = name.substr(hex.size() + 2);
        fd_t in(::openat(bucket.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        struct stat st {};
        if (!in || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode) || !distribution_name(file))
          continue;
        if (!share_file(in.fd, dir.fd, file, link, uid_, gid_)) continue;
        have = true;
        seeded++;
        bytes += static_cast<std::uint64_t>(st.st_size);
      }
    }
    if (have) satisfied++;
  }
  n.set("seeded", static_cast<std::int64_t>(seeded));
  n.set("seeded_bytes", static_cast<std::int64_t>(bytes));
  n.set("complete", !pins.requirements.empty() && satisfied == pins.requirements.size());
  return n;
}

void cache_store::promote_pip(const pip_pins& pins, const std::string& home,
                              json::value& report) const {
  auto hm = open_root(home);
  auto dir = hm ? open_dirs(hm.fd, split_slash(pip_wheel_dir), false, -1, -1) : fd_t();
  if (!dir) return;
  std::set<std::string, std::less<>> pinned;
  for (const auto& r : pins.requirements) pinned.insert(r.begin(), r.end());
  store_lock guard(root_);
  std::uint64_t added = 0, bytes = 0, refused = 0;
  for (const auto& name : names_in(dir.fd)) {
    fd_t in(::openat(dir.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
    struct stat st {};
    if (!in || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (st.st_uid == 0 && st.st_nlink > 1) continue;  // a link to the store's own file
    if (!distribution_name(name) || static_cast<std::uint64_t>(st.st_size) > max_entry_bytes) {
      refused++;
      continue;
    }
    // Verified by the node: only content whose sha256 the requirements pin is shared.
    auto got = digest_of(in.fd, "sha256");
    if (!got || !pinned.count(*got)) {
      refused++;
      continue;
    }
    auto bucket = root_ + "/" + pip + "/sha256/" + got->substr(0, 2);
    if (::access((bucket + "/" + *got + "--" + name).c_str(), F_OK) == 0) continue;
    if (!add_file(in.fd, bucket, *got + "--" + name)) continue;
    added++;
    bytes += static_cast<std::uint64_t>(st.st_size);
  }
  finish_promotion(root_, max_bytes_, report, static_cast<std::uint64_t>(added), bytes,
                   static_cast<std::uint64_t>(refused));
}

}  // namespace berth::setup
