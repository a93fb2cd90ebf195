#include "berth/lease/forge.hpp"

#include "berth/base/json.hpp"
#include "berth/base/redact.hpp"
#include "berth/lease/http.hpp"
#include "berth/lease/provider.hpp"

namespace berth::lease {

namespace {

std::string url_encode(const std::string& s) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string forge_message(const http_response& r) {
  auto doc = json::parse(r.body);
  std::string m;
  if (doc && doc->is_object()) {
    m = doc->get_string("message");
    if (const auto* errs = doc->find("errors"); errs && errs->is_array())
      for (const auto& e : errs->as_array())
        if (e.is_object() && !e.get_string("message").empty()) m += "; " + e.get_string("message");
  }
  if (m.empty()) m = r.body.substr(0, 200);
  return "HTTP " + std::to_string(r.status) + (m.empty() ? "" : ": " + redact::apply(m));
}

std::string trimmed_api(std::string a) {
  while (!a.empty() && a.back() == '/') a.pop_back();
  return a;
}

// How one forge names things: where its requests live, and the fields of its answers.
struct forge_api {
  const char* name;
  std::string collection;  // POST here to open; GET with `find_query` to look for one
  std::string find_query;
  std::map<std::string, std::string> headers;
  json::value body;
  const char* url_field;
  const char* number_field;
};

// Look for an open request for the same head first (a retry never opens two), else open one.
result<pr_result> find_or_open(forge_api f, millis timeout) {
  auto refused = [&](const http_response& r) { return r.status == 401 || r.status == 403; };
  auto found = http_call("GET", f.collection + "?" + f.find_query, f.headers, {}, timeout);
  if (!found) return error{found.err().code, "pull_request: " + found.err().message};
  if (found->status == 200) {
    auto doc = json::parse(found->body);
    if (doc && doc->is_array() && !doc->as_array().empty()) {
      const auto& pr = doc->as_array()[0];
      return pr_result{pr.get_string(f.url_field), pr.get_int(f.number_field), true};
    }
  } else if (refused(*found)) {
    return error{errc::permission_denied, std::string("pull_request: ") + f.name +
                                              " refused the lease: " + forge_message(*found)};
  }
  f.headers["Content-Type"] = "application/json";
  auto made = http_call("POST", f.collection, f.headers, f.body.dump(), timeout);
  if (!made) return error{made.err().code, "pull_request: " + made.err().message};
  if (made->status != 201)
    return error{
        refused(*made) ? errc::permission_denied : errc::unavailable,
        std::string("pull_request: ") + f.name + " did not open it: " + forge_message(*made)};
  auto doc = json::parse(made->body);
  if (!doc || !doc->is_object())
    return error{errc::unavailable,
                 std::string("pull_request: ") + f.name + "'s answer is not JSON"};
  return pr_result{doc->get_string(f.url_field), doc->get_int(f.number_field), false};
}

result<pr_result> github(const pr_request& r, millis timeout) {
  auto repo = repo_of(r.repo_url);
  if (!repo) return repo.err();
  forge_api f{"GitHub",
              trimmed_api(r.api_url) + "/repos/" + repo->first + "/" + repo->second + "/pulls",
              "state=open&head=" + url_encode(repo->first + ":" + r.head),
              {{"Authorization", "token " + r.token},
               {"Accept", "application/vnd.github+json"},
               {"X-GitHub-Api-Version", "2022-11-28"}},
              json::value::make_object(),
              "html_url",
              "number"};
  f.body.set("title", r.title);
  f.body.set("body", r.body);
  f.body.set("head", r.head);
  f.body.set("base", r.base);
  return find_or_open(std::move(f), timeout);
}

result<pr_result> gitlab(const pr_request& r, millis timeout) {
  auto scheme = r.repo_url.find("://");
  auto path_at = scheme == std::string::npos ? std::string::npos : r.repo_url.find('/', scheme + 3);
  if (path_at == std::string::npos)
    return error{errc::invalid_argument, "pull_request: " + r.repo_url + " has no project path"};
  auto path = r.repo_url.substr(path_at + 1);
  if (path.ends_with(".git")) path.resize(path.size() - 4);
  forge_api f{"GitLab",
              trimmed_api(r.api_url) + "/projects/" + url_encode(path) + "/merge_requests",
              "state=opened&source_branch=" + url_encode(r.head),
              {{"Authorization", "Bearer " + r.token}},
              json::value::make_object(),
              "web_url",
              "iid"};
  f.body.set("title", r.title);
  f.body.set("description", r.body);
  f.body.set("source_branch", r.head);
  f.body.set("target_branch", r.base);
  return find_or_open(std::move(f), timeout);
}

}  // namespace

std::string default_api_url(const std::string& forge, const std::string& repo_url) {
  auto parts = split_url(repo_url, "repo");
  if (!parts) return {};
  if (forge == "github")
    return parts->host == "github.com" ? "https://api.github.com"
                                       : parts->scheme + "://" + parts->host + "/api/v3";
  if (forge == "gitlab") return parts->scheme + "://" + parts->host + ":" + parts->port + "/api/v4";
  return {};
}

result<pr_result> open_pull_request(const pr_request& r, millis timeout) {
  if (r.token.empty())
    return error{errc::permission_denied,
                 "pull_request: no credential for " + r.repo_url +
                     " (configure a [[credentials.*]] provider whose url_prefix matches it)"};
  if (r.api_url.empty())
    return error{errc::invalid_argument, "pull_request: no forge API URL known for " + r.repo_url +
                                             " (set api_url in its [[credentials.*]] entry)"};
  if (r.forge == "github") return github(r, timeout);
  if (r.forge == "gitlab") return gitlab(r, timeout);
  return error{errc::invalid_argument, "pull_request: unknown forge \"" + r.forge + "\""};
}

}  // namespace berth::lease
