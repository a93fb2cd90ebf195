#include "berth/base/redact.hpp"

#include <algorithm>
#include <atomic>
#include <bitset>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

namespace berth::redact {
namespace {

constexpr std::string_view marker = "[REDACTED]";

constexpr std::size_t key_len = 8;  // every registered form is at least this long

struct registry {
  std::shared_mutex mu;
  std::map<std::string, int> secrets;  // every form -> how many registrations use it
  // The forms by their first 8 bytes, longest first: one pass over a text finds them all, at
  // a cost that does not grow with the number of live leases.
  std::unordered_map<std::string, std::vector<std::string>> by_prefix;
  // The first two bytes of every prefix: most positions of a text are ruled out here.
  std::bitset<65536> first2;
  std::atomic<bool> any{false};

  static std::size_t pair(const char* p) {
    return static_cast<std::size_t>(static_cast<unsigned char>(p[0])) << 8 |
           static_cast<unsigned char>(p[1]);
  }

  void index(const std::string& form) {
    auto& v = by_prefix[form.substr(0, key_len)];
    auto at = std::find_if(v.begin(), v.end(),
                           [&](const std::string& x) { return x.size() < form.size(); });
    v.insert(at, form);  // longest first
    first2.set(pair(form.data()));
  }
  void unindex(const std::string& form) {
    auto it = by_prefix.find(form.substr(0, key_len));
    if (it == by_prefix.end()) return;
    std::erase(it->second, form);
    if (!it->second.empty()) return;
    by_prefix.erase(it);
    first2.reset();
    for (const auto& [k, _] : by_prefix) first2.set(pair(k.data()));
  }
};

registry& reg() {
  static registry r;
  return r;
}

std::vector<std::string> forms(const std::string& secret, const std::string& username) {
  std::vector<std::string> f = {secret, base64(secret), base64(username + ":" + secret)};
  // The base64 of the pair without padding also appears (some clients strip '=').
  auto unpadded = f.back();
  while (!unpadded.empty() && unpadded.back() == '=') unpadded.pop_back();
  f.push_back(unpadded);
  return f;
}

bool token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

// Spans [begin, end) of token-shaped text nobody registered.
std::vector<std::pair<std::size_t, std::size_t>> shaped(std::string_view t) {
  static constexpr std::string_view prefixes[] = {"ghs_", "ghp_", "gho_",
                                                  "ghu_", "ghr_", "github_pat_"};
  std::vector<std::pair<std::size_t, std::size_t>> out;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (i > 0 && token_char(t[i - 1])) continue;
    std::size_t body = 0;
    if (t[i] == 'g') {
      for (auto p : prefixes)
        if (t.substr(i, p.size()) == p) body = p.size();
    } else if (t.substr(i, 3) == "eyJ") {
      // a JWT: three base64url parts separated by dots
      std::size_t j = i, dots = 0;
      while (j < t.size() && token_char(t[j])) dots += t[j++] == '.';
      if (dots == 2 && j - i >= 40) {
        out.emplace_back(i, j);
        i = j;
      }
      continue;
    }
    if (body == 0) continue;
    std::size_t j = i + body;
    while (j < t.size() && token_char(t[j])) ++j;
    if (j - i - body >= 20) {
      out.emplace_back(i, j);
      i = j;
    }
  }
  return out;
}

}  // namespace

std::string base64(std::string_view data) {
  static constexpr char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < data.size(); i += 3) {
    auto n = (static_cast<unsigned char>(data[i]) << 16) |
             (static_cast<unsigned char>(data[i + 1]) << 8) |
             static_cast<unsigned char>(data[i + 2]);
    out += tbl[(n >> 18) & 63];
    out += tbl[(n >> 12) & 63];
    out += tbl[(n >> 6) & 63];
    out += tbl[n & 63];
  }
  if (i + 1 == data.size()) {
    auto n = static_cast<unsigned char>(data[i]) << 16;
    out += tbl[(n >> 18) & 63];
    out += tbl[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == data.size()) {
    auto n = (static_cast<unsigned char>(data[i]) << 16) |
             (static_cast<unsigned char>(data[i + 1]) << 8);
    out += tbl[(n >> 18) & 63];
    out += tbl[(n >> 12) & 63];
    out += tbl[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string base64url(std::string_view data) {
  auto s = base64(data);
  while (!s.empty() && s.back() == '=') s.pop_back();
  std::replace(s.begin(), s.end(), '+', '-');
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

void add(const std::string& secret, const std::string& username) {
  if (secret.size() < 8) return;
  auto& r = reg();
  std::unique_lock lock(r.mu);
  for (auto& f : forms(secret, username))
    if (r.secrets[f]++ == 0) r.index(f);
  r.any = true;
}

void remove(const std::string& secret, const std::string& username) {
  if (secret.size() < 8) return;
  auto& r = reg();
  std::unique_lock lock(r.mu);
  for (auto& f : forms(secret, username)) {
    auto it = r.secrets.find(f);
    if (it != r.secrets.end() && --it->second <= 0) {
      r.unindex(f);
      r.secrets.erase(it);
    }
  }
  r.any = !r.secrets.empty();
}

std::string apply(std::string_view text) {
  std::string out;
  auto& r = reg();
  if (r.any.load(std::memory_order_acquire) && text.size() >= key_len) {
    std::shared_lock lock(r.mu);
    out.reserve(text.size());
    std::size_t i = 0;
    std::string key(key_len, '\0');
    while (i < text.size()) {
      const std::string* hit = nullptr;
      if (i + key_len <= text.size() && r.first2.test(registry::pair(text.data() + i))) {
        key.assign(text.substr(i, key_len));
        if (auto it = r.by_prefix.find(key); it != r.by_prefix.end())
          for (const auto& form : it->second)
            if (text.substr(i, form.size()) == form) {
              hit = &form;  // the longest matching form (sorted longest first)
              break;
            }
      }
      if (hit) {
        out += marker;
        i += hit->size();
      } else {
        out += text[i++];
      }
    }
  } else {
    out.assign(text);
  }
  auto spans = shaped(out);
  for (auto it = spans.rbegin(); it != spans.rend(); ++it)
    out.replace(it->first, it->second - it->first, marker);
  return out;
}

}  // namespace berth::redact
