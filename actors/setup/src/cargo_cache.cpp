// The store's share for cargo: .crate files named by the sha256 that Cargo.lock's `checksum`
// gives them. Cargo keeps downloaded crates in $CARGO_HOME/registry/cache/<dir>/, where <dir>
// is named by cargo's own hash of the registry's URL; the node learns those names from the
// sessions whose crates it verified and links a session's pinned crates into each, so cargo
// finds them and does not download them again.

#include "store.hpp"

#include "berth/base/fs.hpp"
#include "berth/setup/cache.hpp"
#include "berth/setup/environment.hpp"

#include <algorithm>
#include <set>
#include <sstream>

namespace berth::setup {

using namespace detail;

namespace {

constexpr std::size_t max_registries = 16;  // registry cache directories remembered

bool plain(std::string_view s, std::string_view extra) {
  return !s.empty() && s.size() <= 128 && s != "." && s != ".." &&
         std::all_of(s.begin(), s.end(), [&](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) ||
                  extra.find(c) != std::string_view::npos;
         });
}

// The value of a `key = "value"` line, or "".
std::string quoted_value(const std::string& line, std::string_view key) {
  auto t = trim_blanks(line);
  if (t.rfind(key, 0) != 0) return {};
  auto rest = trim_blanks(std::string_view(t).substr(key.size()));
  if (rest.empty() || rest[0] != '=') return {};
  rest = trim_blanks(std::string_view(rest).substr(1));
  if (rest.size() < 2 || rest.front() != '"' || rest.back() != '"') return {};
  return rest.substr(1, rest.size() - 2);
}

std::vector<std::string> cache_dirs() {
  auto parts = split_slash(cargo_home_dir);
  parts.emplace_back("registry");
  parts.emplace_back("cache");
  return parts;
}

}  // namespace

std::vector<crate_pin> parse_cargo_lock(std::string_view text) {
  std::vector<crate_pin> out;
  crate_pin cur;
  auto flush = [&] {
    if (plain(cur.name, "_-") && plain(cur.version, ".+-") && cur.hex.size() == 64 &&
        is_hex(cur.hex))
      out.push_back(cur);
    cur = {};
  };
  std::istringstream in{std::string(text)};
  for (std::string line; std::getline(in, line);) {
    if (trim_blanks(line) == "[[package]]") {
      flush();
      continue;
    }
    if (auto v = quoted_value(line, "name"); !v.empty()) cur.name = v;
    if (auto v = quoted_value(line, "version"); !v.empty()) cur.version = v;
    if (auto v = quoted_value(line, "checksum"); !v.empty()) cur.hex = v;
  }
  flush();
  return out;
}

json::value cache_store::seed_cargo(const std::vector<crate_pin>& pins,
                                    const std::string& home) const {
  json::value n = json::value::make_object();
  n.set("pinned", static_cast<std::int64_t>(pins.size()));
  std::vector<std::string> registries;
  if (auto text = fs::read_file(root_ + "/" + cargo + "/registries")) {
    std::istringstream in(*text);
    for (std::string d; std::getline(in, d);)
      if (plain(d, ".-_")) registries.push_back(d);
  }
  auto hm = open_root(home);
  bool link = ::geteuid() == 0 && uid_ > 0;
  std::int64_t seeded = 0;
  std::uint64_t bytes = 0;
  for (const auto& p : pins) {
    auto src = root_ + "/" + cargo + "/sha256/" + p.hex.substr(0, 2) + "/" + p.hex + ".crate";
    fd_t in(::open(src.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st {};
    if (!in || !hm || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
    bool any = false;
    for (const auto& r : registries) {
      auto parts = cache_dirs();
      parts.push_back(r);
      auto dir = open_dirs(hm.fd, parts, true, uid_, gid_);
      if (dir && share_file(in.fd, dir.fd, p.name + "-" + p.version + ".crate", link, uid_, gid_))
        any = true;
    }
    if (!any) continue;
    seeded++;
    bytes += static_cast<std::uint64_t>(st.st_size);
  }
  n.set("seeded", seeded);
  n.set("seeded_bytes", static_cast<std::int64_t>(bytes));
  n.set("registries", static_cast<std::int64_t>(registries.size()));
  return n;
}

void cache_store::promote_cargo(const std::vector<crate_pin>& pins, const std::string& home,
                                json::value& report) const {
  auto hm = open_root(home);
  auto cache = hm ? open_dirs(hm.fd, cache_dirs(), false, -1, -1) : fd_t();
  if (!cache) return;
  store_lock guard(root_);
  std::int64_t added = 0, refused = 0;
  std::uint64_t bytes = 0;
  std::vector<std::string> learned;
  for (const auto& r : names_in(cache.fd)) {
    if (!plain(r, ".-_")) continue;
    auto dir = open_dirs(cache.fd, {r}, false, -1, -1);
    if (!dir) continue;
    bool verified = false;
    for (const auto& p : pins) {
      auto name = p.name + "-" + p.version + ".crate";
      fd_t in(::openat(dir.fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      struct stat st {};
      if (!in || ::fstat(in.fd, &st) != 0 || !S_ISREG(st.st_mode)) continue;
      if (st.st_uid == 0 && st.st_nlink > 1) {  // a link to the store's own file
        verified = true;
        continue;
      }
      // Verified by the node: the sha256 Cargo.lock pins.
      auto got = static_cast<std::uint64_t>(st.st_size) <= max_entry_bytes
                     ? digest_of(in.fd, "sha256")
                     : std::nullopt;
      if (!got || *got != p.hex) {
        refused++;
        continue;
      }
      verified = true;
      auto bucket = root_ + "/" + cargo + "/sha256/" + p.hex.substr(0, 2);
      if (::access((bucket + "/" + p.hex + ".crate").c_str(), F_OK) == 0) continue;
      if (!add_file(in.fd, bucket, p.hex + ".crate")) continue;
      added++;
      bytes += static_cast<std::uint64_t>(st.st_size);
    }
    // Only a directory that held a crate its lockfile pins is remembered: where cargo keeps
    // that registry's crates.
    if (verified) learned.push_back(r);
  }
  if (!learned.empty()) {
    std::vector<std::string> all;
    if (auto text = fs::read_file(root_ + "/" + cargo + "/registries")) {
      std::istringstream in(*text);
      for (std::string d; std::getline(in, d);)
        if (plain(d, ".-_") && std::find(learned.begin(), learned.end(), d) == learned.end())
          all.push_back(d);
    }
    all.insert(all.end(), learned.begin(), learned.end());
    if (all.size() > max_registries)
      all.erase(all.begin(), all.end() - static_cast<std::ptrdiff_t>(max_registries));
    std::string text;
    for (const auto& d : all) text += d + "\n";
    // The list only saves the next seed a directory scan; without it the crates still count.
    if (auto wrote = fs::write_file_atomic(root_ + "/" + cargo + "/registries", text); !wrote)
      report.set("registries_error", wrote.err().message);
  }
  finish_promotion(root_, max_bytes_, report, static_cast<std::uint64_t>(added), bytes,
                   static_cast<std::uint64_t>(refused));
}

}  // namespace berth::setup
