// Workspaces and credential leases end to end: a real `berth node`, a real smart-HTTP git server
// (lighttpd + git http-backend) whose tokens are scoped to one repository, and a local stand-in
// for GitHub's API that mints those tokens, revokes them and accepts pull requests.

#include "github_standin.hpp"
#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/redact.hpp"
#include "berth/config/config.hpp"
#include "berth/lease/provider.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

using namespace berth;
using test::run_berth;
namespace sfs = std::filesystem;

namespace {

std::vector<std::string> types(const std::vector<json::value>& evs) {
  std::vector<std::string> out;
  for (const auto& e : evs) out.push_back(e.get_string("type"));
  return out;
}

std::vector<json::value> of_type(const std::vector<json::value>& evs, const std::string& type) {
  std::vector<json::value> out;
  for (const auto& e : evs)
    if (e.get_string("type") == type) out.push_back(*e.find("data"));
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::size_t index_of(const std::vector<std::string>& v, const std::string& x) {
  return static_cast<std::size_t>(std::find(v.begin(), v.end(), x) - v.begin());
}

std::string read_binary(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Every place a secret could have leaked to, searched for the token, its base64 and the base64
// of x-access-token:<token>. Returns where it was found.
std::vector<std::string> leaks(const std::string& token, const std::vector<std::string>& roots,
                               const std::vector<std::string>& texts) {
  std::vector<std::string> forms = {token, redact::base64(token),
                                    redact::base64("x-access-token:" + token)};
  std::vector<std::string> found;
  auto scan = [&](const std::string& what, const std::string& data) {
    for (const auto& f : forms)
      if (data.find(f) != std::string::npos) found.push_back(what);
  };
  for (const auto& root : roots) {
    std::error_code ec;
    for (sfs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file()) scan(it->path().string(), read_binary(it->path().string()));
  }
  for (std::size_t i = 0; i < texts.size(); ++i) scan("text #" + std::to_string(i), texts[i]);
  return found;
}

struct forge_fixture : ::testing::Test {
  test::temp_dir dir;
  test::git_server git{dir / "git"};
  test::github_standin github{git, "acme", 12345, 678};
  std::unique_ptr<test::node_process> node;
  std::string config_path;
  int counter = 0;

  void SetUp() override {
    git.start_with_grants();
    git.repo("acme/app", {{"README.md", "hello\n"}, {"src/app.py", "print('app')\n"}});
    git.repo("acme/other", {{"README.md", "other\n"}});
    github.start();
    test::write_file(dir / "app.pem", github.private_key_pem());
    ::chmod((dir / "app.pem").c_str(), 0600);
  }

  std::string prefix() const {
    auto u = git.url("acme/app");
    return u.substr(0, u.rfind('/') + 1);
  }

  void start_node(const std::string& credentials, std::map<std::string, std::string> env = {}) {
    config_path = dir / "berth.toml";
    test::write_file(config_path, credentials);
    node = std::make_unique<test::node_process>(
        dir / "node", std::vector<std::string>{"--config", config_path}, std::move(env));
    node->start();
  }

  std::string github_app_config() const {
    return "[[credentials.github_app]]\nurl_prefix = \"" + prefix() +
           "\"\napp_id = 12345\ninstallation_id = 678\nprivate_key_file = \"" + dir / "app.pem" +
           "\"\napi_url = \"" + github.api_url() + "\"\n";
  }

  test::run_result cli(const std::vector<std::string>& args) { return test::cli(*node, args); }

  std::string workflow(const std::string& text) {
    auto path = dir / ("wf-" + std::to_string(counter++) + ".toml");
    test::write_file(path, text);
    return path;
  }

  std::string start(const std::string& wf, const std::vector<std::string>& extra = {}) {
    std::string err;
    auto id = test::start_session(*node, workflow(wf), extra, &err);
    EXPECT_FALSE(id.empty()) << err;
    return id;
  }

  std::string status(const std::string& id) { return test::session_field(*node, id, "status"); }

  // Ended, and the clean-up after the end journaled: the workspace removed, every lease
  // granted or renewed revoked.
  bool settled(const std::string& id, std::chrono::seconds t = std::chrono::seconds(90)) {
    return test::eventually(
        [&] {
          auto t2 = types(test::journal(*node, id));
          auto count = [&](const char* x) { return std::count(t2.begin(), t2.end(), x); };
          return count("workspace.removed") == 1 &&
                 count("lease.revoked") == count("lease.granted") + count("lease.renewed");
        },
        t);
  }

  std::string reason(const std::string& id) { return test::session_field(*node, id, "reason"); }

  std::string git_out(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"git"};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run_checked(argv);
  }

  // Zero hits for every token the stand-in minted, in the data dir, the node's log, the
  // journal and the command output.
  void expect_no_token_anywhere(const std::string& id) {
    auto journal = cli({"session", "events", id, "-o", "jsonl"}).out;
    auto logs = cli({"session", "logs", id}).out;
    for (const auto& m : github.tokens()) {
      auto where = leaks(m.token, {node->data_dir()}, {node->log(), journal, logs});
      EXPECT_TRUE(where.empty()) << "token found in: " << where.front();
    }
  }
};

// A workflow: one command step, then commit and push.
std::string run_commit_push(const std::string& step, const std::string& run,
                            const std::string& message) {
  return "[[steps]]\nid = \"" + step + "\"\nrun = " + run +
         "\n\n[[steps]]\nid = \"commit\"\nkind = \"commit\"\nmessage = \"" + message +
         "\"\n\n[[steps]]\nid = \"push\"\nkind = \"push\"\n";
}

constexpr const char* fix_and_open_pr = R"(
[session]
goal = "fix the greeting"

[[steps]]
id = "edit"
run = ["sh", "-c", "echo fixed > FIX.md"]

[[steps]]
id = "commit"
kind = "commit"
message = "Fix the greeting"

[[steps]]
id = "push"
kind = "push"

[[steps]]
id = "pr"
kind = "pull_request"
title = "Fix the greeting"
body = "Opened by Berth"

[[steps]]
id = "pr-again"
kind = "pull_request"
title = "Fix the greeting"
)";

}  // namespace

TEST_F(forge_fixture, a_session_clones_commits_pushes_opens_one_pr_and_revokes_its_token) {
  start_node(github_app_config());
  auto id = start(fix_and_open_pr, {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  auto t = types(evs);
  for (const char* want :
       {"lease.granted", "workspace.ready", "workspace.checkpointed", "git.committed", "git.pushed",
        "pr.opened", "session.succeeded", "lease.revoked", "workspace.removed"})
    EXPECT_TRUE(has(t, want)) << want;
  EXPECT_LT(index_of(t, "lease.granted"), index_of(t, "workspace.ready"));
  EXPECT_LT(index_of(t, "session.succeeded"), index_of(t, "lease.revoked"));

  // The lease: scoped to the one repository, contents and pull requests only, revoked once.
  auto granted = of_type(evs, "lease.granted");
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].get_string("provider"), "github_app");
  EXPECT_EQ(granted[0].find("scope")->get_string("repository"), "acme/app");
  EXPECT_FALSE(granted[0].find("token"));
  auto minted = github.tokens();
  ASSERT_EQ(minted.size(), 1u);
  EXPECT_EQ(minted[0].repo, "acme/app");
  EXPECT_EQ(minted[0].permissions.dump(), R"({"contents":"write","pull_requests":"write"})");
  EXPECT_EQ(github.revocations(), (std::map<std::string, int>{{minted[0].token, 1}}));
  EXPECT_TRUE(github.refusals().empty()) << github.refusals().front();

  // The branch and the checkpoint reached the forge; one pull request for the head.
  auto ready = of_type(evs, "workspace.ready")[0];
  auto branch = ready.get_string("branch");
  std::string shortid = id.size() <= 16 ? id : id.substr(id.size() - 12);
  for (auto& c : shortid) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  EXPECT_EQ(branch, "berth/" + shortid);
  EXPECT_EQ(ready.get_string("base"), "main");
  EXPECT_EQ(git_out({"-C", git.repo_dir("acme/app"), "show", branch + ":FIX.md"}), "fixed\n");
  auto cp = of_type(evs, "workspace.checkpointed");
  ASSERT_FALSE(cp.empty());
  EXPECT_TRUE(cp[0].get_bool("pushed")) << cp[0].dump();
  EXPECT_EQ(git_out({"-C", git.repo_dir("acme/app"), "rev-parse", "refs/berth/checkpoints/" + id}),
            cp.back().get_string("commit") + "\n");
  auto pulls = github.pulls();
  ASSERT_EQ(pulls.size(), 1u);
  EXPECT_EQ(pulls[0].get_string("head"), branch);
  EXPECT_EQ(pulls[0].get_string("base"), "main");
  auto prs = of_type(evs, "pr.opened");
  ASSERT_EQ(prs.size(), 2u);
  EXPECT_EQ(prs[0].get_string("url"), pulls[0].get_string("html_url"));
  EXPECT_TRUE(prs[1].get_bool("existed"));

  // Nothing left behind, and the token nowhere.
  EXPECT_FALSE(sfs::exists(node->data_dir() + "/work/" + id));
  EXPECT_TRUE(sfs::is_empty(node->data_dir() + "/leases"));
  expect_no_token_anywhere(id);
}

TEST_F(forge_fixture, long_tokens_survive_a_crash_and_are_revoked_exactly_once) {
  github.long_tokens(true);  // the ~520-character ghs_ format
  start_node(github_app_config());
  auto id = start(
      run_commit_push("work", R"(["sh", "-c", "echo one > one.txt; sleep 4; echo two > two.txt"])",
                      "Work"),
      {"--repo", git.url("acme/app")});
  ASSERT_TRUE(
      test::eventually([&] { return has(types(test::journal(*node, id)), "step.started"); }));
  node->signal(SIGKILL);
  node->wait_exit();
  node->start();
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  EXPECT_TRUE(has(types(evs), "step.interrupted"));
  // Every token minted is revoked exactly once; the journal agrees.
  auto minted = github.tokens();
  ASSERT_FALSE(minted.empty());
  EXPECT_GT(minted[0].token.size(), 500u);
  for (const auto& m : minted) EXPECT_EQ(github.revocations()[m.token], 1) << m.token.substr(0, 8);
  EXPECT_EQ(of_type(evs, "lease.revoked").size(), of_type(evs, "lease.granted").size());
  EXPECT_EQ(git_out({"-C", git.repo_dir("acme/app"), "show",
                     of_type(evs, "workspace.ready")[0].get_string("branch") + ":two.txt"}),
            "two\n");
  expect_no_token_anywhere(id);
}

TEST_F(forge_fixture, a_failing_revocation_is_retried_with_backoff_until_it_succeeds_once) {
  github.fail_revokes(2);
  start_node(github_app_config());
  auto id = start("[[steps]]\nid = \"a\"\nrun = [\"true\"]\n", {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded");
  auto minted = github.tokens();
  ASSERT_EQ(minted.size(), 1u);
  EXPECT_EQ(github.revoke_attempts(), 3);
  EXPECT_EQ(github.revocations()[minted[0].token], 1);
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
  EXPECT_NE(node->log().find("revoking lease"), std::string::npos);
  auto stats = cli({"stats", "-o", "json"}).json();
  ASSERT_TRUE(stats);
  EXPECT_EQ(stats->get_int("lease_revoke_failures"), 2) << stats->dump();
}

TEST_F(forge_fixture, a_node_killed_before_it_could_revoke_revokes_once_on_recovery) {
  github.fail_revokes(1000);  // the session ends, its revocation cannot get through
  start_node(github_app_config());
  auto id = start("[[steps]]\nid = \"a\"\nrun = [\"true\"]\n", {"--repo", git.url("acme/app")});
  ASSERT_TRUE(test::eventually([&] { return github.revoke_attempts() >= 1; }));
  EXPECT_EQ(status(id), "succeeded");
  node->signal(SIGKILL);
  node->wait_exit();
  EXPECT_TRUE(sfs::exists(node->data_dir() + "/leases/" + id + ".json"));
  github.fail_revokes(0);
  node->start();
  ASSERT_TRUE(settled(id)) << node->log();
  auto minted = github.tokens();
  ASSERT_EQ(minted.size(), 1u);
  EXPECT_EQ(github.revocations()[minted[0].token], 1);
  EXPECT_EQ(test::journal_problems(test::journal(*node, id)), "");
  EXPECT_FALSE(sfs::exists(node->data_dir() + "/leases/" + id + ".json"));
  expect_no_token_anywhere(id);
}

TEST_F(forge_fixture, a_lease_is_renewed_before_it_expires_and_the_old_token_revoked) {
  github.token_lifetime(6);  // renewed at half its lifetime
  start_node(github_app_config());
  auto id =
      start(run_commit_push("slow", R"(["sh", "-c", "sleep 5; echo late > late.txt"])", "Late"),
            {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  auto renewed = of_type(evs, "lease.renewed");
  ASSERT_GE(renewed.size(), 1u);
  EXPECT_EQ(renewed[0].get_string("replaces"),
            of_type(evs, "lease.granted")[0].get_string("lease"));
  // Every token is revoked once when the session ends — the replaced one too, unless it ran
  // out first; the push in between used the new one.
  auto minted = github.tokens();
  ASSERT_GE(minted.size(), 2u);
  auto ended = std::time(nullptr);
  for (const auto& m : minted) {
    auto n = github.revocations()[m.token];
    EXPECT_LE(n, 1);
    if (m.expires_unix > ended + 1) {
      EXPECT_EQ(n, 1) << m.token.substr(0, 8);
    }
  }
  EXPECT_EQ(github.revocations()[minted.back().token], 1);
  EXPECT_EQ(of_type(evs, "lease.revoked").size(), minted.size());
  expect_no_token_anywhere(id);
}

TEST_F(forge_fixture, a_cancelled_session_revokes_its_lease_and_removes_its_workspace) {
  start_node(github_app_config());
  auto id =
      start("[[steps]]\nid = \"a\"\nrun = [\"sleep\", \"60\"]\n", {"--repo", git.url("acme/app")});
  ASSERT_TRUE(
      test::eventually([&] { return has(types(test::journal(*node, id)), "step.started"); }));
  ASSERT_EQ(cli({"session", "cancel", id}).code, 0);
  ASSERT_TRUE(settled(id));
  EXPECT_EQ(status(id), "cancelled");
  auto minted = github.tokens();
  ASSERT_EQ(minted.size(), 1u);
  EXPECT_EQ(github.revocations()[minted[0].token], 1);
  EXPECT_FALSE(sfs::exists(node->data_dir() + "/work/" + id));
}

TEST_F(forge_fixture, a_token_for_another_repository_or_an_expired_one_fails_clearly) {
  auto tokens = dir / "tokens";
  sfs::create_directories(tokens);
  test::write_file(tokens + "/other", "tok-other-0123456789\n");
  ::chmod((tokens + "/other").c_str(), 0600);
  git.grant("tok-other-0123456789", "acme/other");
  start_node("[[credentials.static]]\nurl_prefix = \"" + prefix() + "\"\ntoken_file = \"" + tokens +
             "/other\"\n");
  auto id = start("[[steps]]\nid = \"a\"\nrun = [\"true\"]\n", {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id));
  EXPECT_EQ(status(id), "failed");
  EXPECT_NE(reason(id).find("authentication failed for " + git.url("acme/app")), std::string::npos)
      << reason(id);
  EXPECT_EQ(reason(id).find("tok-other"), std::string::npos);

  // A token that expires while the session runs: the clone works, the push does not.
  test::write_file(tokens + "/other", "tok-brief-0123456789\n");
  git.grant("tok-brief-0123456789", "acme/app", std::time(nullptr) + 3);
  auto id2 = start(run_commit_push("slow", R"(["sh", "-c", "sleep 4; echo x > x.txt"])", "x"),
                   {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id2));
  EXPECT_EQ(status(id2), "failed");
  EXPECT_NE(reason(id2).find("step push failed"), std::string::npos) << reason(id2);
  EXPECT_NE(reason(id2).find("authentication failed for"), std::string::npos) << reason(id2);
  auto journal = cli({"session", "events", id2, "-o", "jsonl"}).out;
  EXPECT_EQ(journal.find("tok-brief"), std::string::npos);
  EXPECT_EQ(node->log().find("tok-brief"), std::string::npos);
}

TEST_F(forge_fixture, a_token_file_readable_by_others_stops_the_node_with_a_clear_error) {
  test::write_file(dir / "token", "tok-0123456789\n");
  ::chmod((dir / "token").c_str(), 0644);
  test::write_file(dir / "berth.toml", "[[credentials.static]]\nurl_prefix = \"" + prefix() +
                                           "\"\ntoken_file = \"" + dir / "token" + "\"\n");
  auto r = run_berth({"node", "--config", dir / "berth.toml", "--data-dir", dir / "node"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("token_file " + dir / "token" + ": mode 0644"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("must be 0600"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("tok-0123456789"), std::string::npos);
  // It stopped before starting anything: no embedded nats-server is left running.
  EXPECT_FALSE(sfs::exists(dir / "node/nats/nats-server.pid"));
}

TEST_F(forge_fixture, a_command_provider_mints_and_revokes_through_the_operators_helper) {
  git.grant("tok-from-helper-123456", "acme/app");
  auto helper = dir / "mint";
  test::write_file(helper, "#!/bin/sh\necho \"$1\" >> " + dir / "asked" +
                               "\necho '{\"token\": \"tok-from-helper-123456\", \"expires_at\": "
                               "\"2099-01-01T00:00:00Z\"}'\n");
  auto revoke = dir / "revoke";
  test::write_file(revoke, "#!/bin/sh\ncat >> " + dir / "revoked" + "\n");
  ::chmod(helper.c_str(), 0755);
  ::chmod(revoke.c_str(), 0755);
  start_node("[[credentials.command]]\nurl_prefix = \"" + prefix() + "\"\nrun = [\"" + helper +
             "\"]\nrevoke = [\"" + revoke + "\"]\n");
  auto id = start("[[steps]]\nid = \"a\"\nrun = [\"cat\", \"README.md\"]\n",
                  {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id));
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  EXPECT_EQ(fs::read_file(dir / "asked").value(), git.url("acme/app") + "\n");
  EXPECT_EQ(fs::read_file(dir / "revoked").value(), "tok-from-helper-123456\n");
  auto granted = of_type(test::journal(*node, id), "lease.granted");
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].get_string("expires_at"), "2099-01-01T00:00:00.000Z");
  EXPECT_TRUE(leaks("tok-from-helper-123456", {node->data_dir()}, {node->log()}).empty());
}

TEST_F(forge_fixture, a_broader_token_than_asked_for_is_given_back_unused) {
  github.broaden(true);
  start_node(github_app_config());
  auto id = start("[[steps]]\nid = \"a\"\nrun = [\"true\"]\n", {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id));
  EXPECT_EQ(status(id), "failed");
  EXPECT_NE(reason(id).find("covers more than acme/app"), std::string::npos) << reason(id);
  auto minted = github.tokens();
  ASSERT_EQ(minted.size(), 1u);
  EXPECT_EQ(github.revocations()[minted[0].token], 1);
}

TEST_F(forge_fixture, gitlab_merge_requests_and_forge_none) {
  auto token = dir / "gl-token";
  test::write_file(token, "glpat-0123456789abcdefghij\n");
  ::chmod(token.c_str(), 0600);
  git.grant("glpat-0123456789abcdefghij", "acme/app");
  github.gitlab_token("glpat-0123456789abcdefghij", "git/acme/app");
  start_node("[[credentials.static]]\nurl_prefix = \"" + prefix() + "\"\ntoken_file = \"" + token +
             "\"\napi_url = \"" + github.api_url() + "/api/v4\"\n");
  auto id = start(run_commit_push("edit", R"(["sh", "-c", "echo gl > GL.md"])", "GitLab") + R"(
[[steps]]
id = "mr"
kind = "pull_request"
title = "From Berth"
forge = "gitlab"

[[steps]]
id = "mr-again"
kind = "pull_request"
title = "From Berth"
forge = "gitlab"

[[steps]]
id = "leave"
kind = "pull_request"
title = "Just the branch"
forge = "none"
)",
                  {"--repo", git.url("acme/app")});
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  auto evs = test::journal(*node, id);
  auto branch = of_type(evs, "workspace.ready")[0].get_string("branch");
  auto pulls = github.pulls();
  ASSERT_EQ(pulls.size(), 1u);
  EXPECT_EQ(pulls[0].get_string("source_branch"), branch);
  EXPECT_EQ(pulls[0].get_string("target_branch"), "main");
  auto prs = of_type(evs, "pr.opened");
  ASSERT_EQ(prs.size(), 2u);  // forge "none" opens nothing
  EXPECT_EQ(prs[0].get_string("url"), pulls[0].get_string("web_url"));
  EXPECT_TRUE(prs[1].get_bool("existed"));
  // A static lease cannot be revoked at the source: the journal says so.
  auto revoked = of_type(evs, "lease.revoked");
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_FALSE(revoked[0].get_bool("revoked"));
  EXPECT_TRUE(leaks("glpat-0123456789abcdefghij", {node->data_dir()}, {node->log()}).empty());
}

TEST_F(forge_fixture, a_token_revoked_while_the_session_runs_fails_its_push_clearly) {
  auto token = dir / "token";
  test::write_file(token, "tok-revoked-0123456789\n");
  ::chmod(token.c_str(), 0600);
  git.grant("tok-revoked-0123456789", "acme/app");
  start_node("[[credentials.static]]\nurl_prefix = \"" + prefix() + "\"\ntoken_file = \"" + token +
             "\"\n");
  auto id = start(run_commit_push("slow", R"(["sh", "-c", "sleep 3; echo x > x.txt"])", "x"),
                  {"--repo", git.url("acme/app")});
  ASSERT_TRUE(test::eventually([&] {
    auto t = types(test::journal(*node, id));
    return has(t, "step.started");
  }));
  git.revoke("tok-revoked-0123456789");
  ASSERT_TRUE(settled(id));
  EXPECT_EQ(status(id), "failed");
  EXPECT_NE(reason(id).find("step push failed: authentication failed for " + git.url("acme/app")),
            std::string::npos)
      << reason(id);
  auto cps = of_type(test::journal(*node, id), "workspace.checkpointed");
  ASSERT_FALSE(cps.empty());
  EXPECT_FALSE(cps.back().get_bool("pushed"));
  EXPECT_NE(cps.back().get_string("push_error").find("authentication failed"), std::string::npos);
}

TEST_F(forge_fixture, at_start_a_node_removes_leftover_workspaces_and_revokes_leftover_leases) {
  // A lease minted for a session this node no longer knows, as a crash could leave it.
  config::credential_rule rule;
  rule.provider = "github_app";
  rule.url_prefix = prefix();
  rule.app_id = 12345;
  rule.installation_id = 678;
  rule.private_key_file = dir / "app.pem";
  rule.api_url = github.api_url();
  auto provider = lease::make_provider(rule);
  ASSERT_TRUE(provider.ok()) << provider.err().message;
  auto g = (*provider)->mint(git.url("acme/app"));
  ASSERT_TRUE(g.ok()) << g.err().message;
  lease::vault v(dir / "node/leases");
  ASSERT_TRUE(v.put("ghost", *g).ok());
  sfs::create_directories(dir / "node/work/ghost/src");
  test::write_file(dir / "node/work/ghost/src/x", "left over\n");
  // Older than the node's start.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  start_node(github_app_config());
  EXPECT_TRUE(test::eventually([&] { return !sfs::exists(dir / "node/work/ghost"); }));
  EXPECT_TRUE(test::eventually([&] { return github.revocations()[g->token] == 1; }));
  EXPECT_TRUE(test::eventually([&] { return !sfs::exists(dir / "node/leases/ghost.json"); }));
  EXPECT_NE(node->log().find("revoked leftover lease " + g->id), std::string::npos) << node->log();
}

// The agent controls the workspace, .git/config included. Nothing it plants there may run on
// the node, redirect the push, or reach another host with the token.
TEST_F(forge_fixture, hostile_git_config_in_the_workspace_runs_nothing_and_redirects_nothing) {
  test::temp_dir evil_dir;
  test::git_server evil(evil_dir / "git");
  evil.start();
  evil.repo("acme/app", {{"README.md", "evil\n"}});
  auto canary = dir / "canary";
  std::string evil_url = evil.url("acme/app");
  std::string real_url = git.url("acme/app");
  std::string plant =
      "set -e\n"
      "git config core.fsmonitor 'touch " +
      canary +
      "'\n"
      "git config core.hooksPath .githooks\n"
      "git config filter.evil.clean 'touch " +
      canary +
      "; cat'\n"
      "git config filter.evil.smudge 'touch " +
      canary +
      "; cat'\n"
      "git config filter.evil.process 'touch " +
      canary +
      "'\n"
      "git config filter.evil.required true\n"
      "git config core.sshCommand 'touch " +
      canary +
      "'\n"
      "git config credential.helper '!touch " +
      canary +
      "'\n"
      "git config core.askPass /bin/true\n"
      "git config http.extraHeader 'X-Evil: 1'\n"
      "git config http.proxy http://127.0.0.1:1\n"
      "git config url." +
      evil_url + ".insteadOf " + real_url +
      "\n"
      "git config url." +
      evil_url + ".pushInsteadOf " + real_url +
      "\n"
      "git config remote.origin.pushurl " +
      evil_url +
      "\n"
      "git config remote.origin.url " +
      evil_url +
      "\n"
      "mkdir -p .githooks\n"
      "for h in pre-commit post-commit pre-push reference-transaction post-checkout; do\n"
      "  printf '#!/bin/sh\\ntouch " +
      canary +
      "\\n' > .githooks/$h; chmod +x .githooks/$h\n"
      "  cp .githooks/$h .git/hooks/$h\n"
      "done\n"
      "echo '* filter=evil' > .gitattributes\n"
      "echo changed > README.md\n";
  git.repo("acme/hostile", {{"README.md", "hi\n"}, {"plant.sh", plant}});
  start_node(github_app_config());
  auto evil_before = evil.requests();
  auto id = start(run_commit_push("plant", R"(["sh", "plant.sh"])", "Planted") + R"(
[[steps]]
id = "pr"
kind = "pull_request"
title = "Planted"
)",
                  {"--repo", git.url("acme/hostile")});
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  EXPECT_FALSE(sfs::exists(canary));
  EXPECT_EQ(evil.requests(), evil_before);
  auto branch = of_type(test::journal(*node, id), "workspace.ready")[0].get_string("branch");
  EXPECT_EQ(git_out({"-C", git.repo_dir("acme/hostile"), "show", branch + ":README.md"}),
            "changed\n");
  EXPECT_EQ(git_out({"-C", evil.repo_dir("acme/app"), "branch", "--list", branch}), "");
  EXPECT_EQ(github.pulls().size(), 1u);
  expect_no_token_anywhere(id);
}

// CVE-2024-32002's shape: a submodule whose path leads through a symlink into .git, with a
// hook waiting there. Submodules are not initialised, hooks never run, the symlink stays one.
TEST_F(forge_fixture, a_submodule_symlinked_into_git_dir_with_a_hook_is_inert) {
  auto canary = dir / "canary";
  auto seed = dir / "seed-sub";
  test::run_checked({"git", "init", "-q", "-b", "main", seed});
  sfs::create_directories(seed + "/A/modules/x/hooks");
  test::write_file(seed + "/A/modules/x/hooks/post-checkout", "#!/bin/sh\ntouch " + canary + "\n");
  ::chmod((seed + "/A/modules/x/hooks/post-checkout").c_str(), 0755);
  sfs::create_symlink(".git", seed + "/a");
  test::write_file(seed + "/.gitmodules", "[submodule \"x\"]\n\tpath = A/modules/x\n\turl = " +
                                              git.url("acme/other") + "\n");
  test::run_checked({"git", "-C", seed, "add", "-A"});
  test::run_checked({"git", "-C", seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                     "-m", "shape"});
  git.repo("acme/sub", {{"README.md", "x\n"}});
  test::run_checked({"git", "-C", seed, "push", "-q", "-f", git.repo_dir("acme/sub"), "main"});
  start_node(github_app_config());
  auto id = start(R"(
[[steps]]
id = "look"
run = ["sh", "-c", "test -L a && test ! -e .git/modules && echo inert"]
)",
                  {"--repo", git.url("acme/sub")});
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  EXPECT_FALSE(sfs::exists(canary));
  EXPECT_NE(cli({"session", "logs", id}).out.find("inert"), std::string::npos);
}

TEST_F(forge_fixture, restored_on_a_node_without_the_workspace_from_the_pushed_checkpoint) {
  start_node(github_app_config());
  auto id = start(R"(
[[steps]]
id = "write"
run = ["sh", "-c", "echo kept > kept.txt"]

)" + run_commit_push("wait", R"(["sleep", "4"])", "Kept"),
                  {"--repo", git.url("acme/app")});
  ASSERT_TRUE(test::eventually([&] {
    auto t = types(test::journal(*node, id));
    return has(t, "workspace.checkpointed") && std::count(t.begin(), t.end(), "step.started") == 2;
  }));
  node->signal(SIGKILL);
  node->wait_exit();
  // As if another node took over: no workspace, no mirror.
  fs::remove_tree(node->data_dir() + "/work/" + id);
  fs::remove_tree(node->data_dir() + "/mirrors");
  node->start();
  ASSERT_TRUE(settled(id)) << node->log();
  EXPECT_EQ(status(id), "succeeded") << reason(id);
  auto evs = test::journal(*node, id);
  EXPECT_EQ(test::journal_problems(evs), "");
  ASSERT_EQ(of_type(evs, "workspace.restored").size(), 1u);
  auto branch = of_type(evs, "workspace.ready")[0].get_string("branch");
  EXPECT_EQ(git_out({"-C", git.repo_dir("acme/app"), "show", branch + ":kept.txt"}), "kept\n");
}

// --- without credentials: an anonymous git server -------------------------------------------

struct open_forge : ::testing::Test {
  test::temp_dir dir;
  test::git_server git{dir / "git"};
  std::unique_ptr<test::node_process> node;

  void SetUp() override {
    git.start();
    git.repo("app",
             {{"README.md", "hello\n"},
              {"Makefile", "all:\n\ttrue\n"},
              {"CMakeLists.txt", "cmake_minimum_required(VERSION 3.16)\nproject(x NONE)\n"}});
    test::run_checked({"git", "init", "-q", "--bare", "-b", "main", git.repo_dir("empty")});
    sfs::create_directories(dir / "allowed");
    git.repo("local", {{"README.md", "local\n"}});
    node = std::make_unique<test::node_process>(
        dir / "node", std::vector<std::string>{},
        std::map<std::string, std::string>{{"BERTH_WORKSPACE_QUOTA_BYTES", "4000000"},
                                           {"BERTH_WORKSPACE_FILE_ALLOWLIST", dir / "git/repos"}});
    node->start();
  }

  test::run_result cli(const std::vector<std::string>& args) { return test::cli(*node, args); }

  // A session's final state and reason, after it ended.
  std::pair<std::string, std::string> run(const std::string& repo, std::vector<std::string> extra,
                                          const std::string& cmd = "true") {
    std::vector<std::string> args = {"session", "start", "--repo", repo, "-o", "json"};
    args.insert(args.end(), extra.begin(), extra.end());
    args.insert(args.end(), {"--", "sh", "-c", cmd});
    auto r = cli(args);
    EXPECT_EQ(r.code, 0) << r.err;
    auto id = r.json() ? r.json()->get_string("id") : std::string();
    std::string st;
    test::eventually(
        [&] {
          st = test::session_field(*node, id, "status");
          return st == "succeeded" || st == "failed";
        },
        std::chrono::seconds(60));
    return {st, test::session_field(*node, id, "reason")};
  }
};

TEST_F(open_forge, a_checkpoint_that_never_left_the_node_cannot_be_restored_elsewhere) {
  auto wf = dir / "restore.toml";
  test::write_file(wf, R"(
[[steps]]
id = "write"
run = ["sh", "-c", "echo mine > mine.txt"]

[[steps]]
id = "wait"
run = ["sleep", "30"]
)");
  auto r = cli({"session", "start", "--repo", git.url("app"), "--workflow", wf, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto id = r.json()->get_string("id");
  ASSERT_TRUE(test::eventually([&] {
    auto evs = test::journal(*node, id);
    return std::count_if(evs.begin(), evs.end(), [](const json::value& e) {
             return e.get_string("type") == "step.started";
           }) == 2;
  }));
  node->signal(SIGKILL);
  node->wait_exit();
  fs::remove_tree(node->data_dir() + "/work/" + id);
  fs::remove_tree(node->data_dir() + "/mirrors");
  node->start();
  std::string why;
  ASSERT_TRUE(test::eventually(
      [&] {
        auto v = cli({"session", "show", id, "-o", "json"}).json();
        why = v ? v->get_string("reason") : "";
        return v && v->get_string("status") == "failed";
      },
      std::chrono::seconds(60)))
      << node->log();
  EXPECT_NE(why.find("workspace: cannot restore checkpoint"), std::string::npos) << why;
  EXPECT_NE(why.find("only when a lease lets them be pushed"), std::string::npos) << why;
}

TEST_F(open_forge, bad_remotes_and_refs_fail_the_session_with_a_clear_reason) {
  auto [st1, why1] = run("http://127.0.0.1:1/git/app.git", {});
  EXPECT_EQ(st1, "failed");
  EXPECT_NE(why1.find("repo: fetch http://127.0.0.1:1/git/app.git"), std::string::npos) << why1;
  auto [st2, why2] = run(git.url("app"), {"--ref", "no-such-branch"});
  EXPECT_EQ(st2, "failed");
  EXPECT_NE(why2.find("ref: \"no-such-branch\" is no branch, tag or commit of " + git.url("app")),
            std::string::npos)
      << why2;
  auto [st3, why3] = run(git.url("missing"), {});
  EXPECT_EQ(st3, "failed");
  EXPECT_NE(why3.find("repo: fetch " + git.url("missing")), std::string::npos) << why3;
  auto [st4, why4] = run(git.url("empty"), {});
  EXPECT_EQ(st4, "failed");
  EXPECT_NE(why4.find("is an empty repository"), std::string::npos) << why4;
  // A web page that is not a git repository.
  auto [st5, why5] = run("http://127.0.0.1:1/index.html", {});
  EXPECT_EQ(st5, "failed");
  EXPECT_NE(why5.find("repo:"), std::string::npos) << why5;
}

TEST_F(open_forge, file_remotes_need_the_allowlist_and_nothing_is_stored_otherwise) {
  auto before = cli({"session", "list", "-o", "json"}).out;
  auto r = cli({"session", "start", "--repo", "file:///etc/app.git", "--", "true"});
  EXPECT_EQ(r.code, 2) << r.err;  // bad input
  EXPECT_NE(r.err.find("repo: file:// remotes outside workspace.file_allowlist are refused"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(cli({"session", "list", "-o", "json"}).out, before);
  auto [st, why] = run("file://" + git.repo_dir("local"), {}, "cat README.md");
  EXPECT_EQ(st, "succeeded") << why;
}

TEST_F(open_forge, the_disk_quota_fails_the_session_instead_of_filling_the_disk) {
  auto [st, why] = run(git.url("app"), {}, "head -c 8000000 /dev/zero > big");
  EXPECT_EQ(st, "failed");
  EXPECT_NE(why.find("workspace: uses"), std::string::npos) << why;
  EXPECT_NE(why.find("workspace.quota_bytes"), std::string::npos) << why;
}

TEST_F(open_forge, setup_detects_the_tool_chains_and_keeps_their_output_out_of_commits) {
  auto wf = dir / "setup.toml";
  test::write_file(wf, R"(
[[steps]]
id = "setup"
kind = "setup"

[[steps]]
id = "build"
run = ["sh", "-c", "mkdir -p build node_modules .venv target && touch build/CMakeCache.txt node_modules/x .venv/y target/z && test -z \"$(git status --porcelain)\""]

[[steps]]
id = "commit"
kind = "commit"
message = "after setup"
)");
  auto r =
      cli({"session", "start", "--repo", git.url("app"), "--workflow", wf, "--wait", "-o", "json"});
  EXPECT_EQ(r.code, 0) << r.err << r.out;
  auto id = r.json() ? r.json()->get_string("id") : std::string();
  auto evs = test::journal(*node, id);
  json::value setup;
  for (const auto& e : evs)
    if (e.get_string("type") == "step.finished" && e.find("data")->get_string("step") == "setup")
      setup = *e.find("data");
  ASSERT_TRUE(setup.is_object()) << cli({"session", "logs", id}).out;
  EXPECT_EQ(setup.find("detected")->dump(), R"(["cmake","make"])");
  // CMake and Make fetch nothing: detected, nothing ran.
  EXPECT_EQ(setup.find("ran")->dump(), "[]");
  // Nothing to commit: build/ is excluded, so the tree did not change.
  for (const auto& e : evs) {
    if (e.get_string("type") == "step.finished" && e.find("data")->get_string("step") == "commit") {
      EXPECT_EQ(e.find("data")->get_string("note"), "nothing to commit");
    }
  }
}

namespace {
// A repository on `git` whose lib/<name> is a submodule at `url`, pinned to `commit`.
void repo_with_submodule(test::git_server& git, const std::string& dir, const std::string& repo,
                         const std::string& url, const std::string& commit) {
  git.repo(repo, {{"README.md", "outer\n"}});
  auto seed = dir + "/seed-sm-" + repo;
  test::run_checked({"git", "clone", "-q", git.repo_dir(repo), seed});
  test::write_file(seed + "/.gitmodules",
                   "[submodule \"dep\"]\n\tpath = lib/dep\n\turl = " + url + "\n");
  test::run_checked(
      {"git", "-C", seed, "update-index", "--add", "--cacheinfo", "160000," + commit + ",lib/dep"});
  test::run_checked({"git", "-C", seed, "add", ".gitmodules"});
  test::run_checked({"git", "-C", seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                     "-m", "submodule"});
  test::run_checked({"git", "-C", seed, "push", "-q", "origin", "main"});
}
}  // namespace

TEST_F(open_forge, submodules_are_cloned_only_when_asked_and_only_from_allowed_remotes) {
  auto head = test::run_checked({"git", "-C", git.repo_dir("app"), "rev-parse", "main"});
  head = head.substr(0, head.find('\n'));
  repo_with_submodule(git, dir.path(), "outer", "../app.git", head);
  // Not asked: the submodule's directory stays empty.
  auto [st1, why1] = run(git.url("outer"), {}, "test -d lib/dep && test -z \"$(ls -A lib/dep)\"");
  EXPECT_EQ(st1, "succeeded") << why1;
  // Asked: the relative URL resolves against the repo's, and the pinned commit is checked out.
  auto wf = dir / "sub.toml";
  test::write_file(wf,
                   "[session]\nsubmodules = true\n[[steps]]\nid = \"look\"\nrun = [\"cat\", "
                   "\"lib/dep/README.md\"]\n");
  auto r = cli(
      {"session", "start", "--repo", git.url("outer"), "--workflow", wf, "--wait", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  auto id = r.json()->get_string("id");
  EXPECT_NE(cli({"session", "logs", id}).out.find("hello"), std::string::npos);
  for (const auto& e : test::journal(*node, id))
    if (e.get_string("type") == "workspace.ready") {
      EXPECT_EQ(e.find("data")->find("submodules")->dump(), R"(["lib/dep"])");
    }
  // Hostile submodule remotes: refused with the reason, nothing fetched.
  repo_with_submodule(git, dir.path(), "ssh-sub", "ssh://127.0.0.1:1/x.git", head);
  repo_with_submodule(git, dir.path(), "file-sub", "file:///etc/x.git", head);
  for (const auto& [repo, needle] : std::vector<std::pair<std::string, std::string>>{
           {"ssh-sub", "submodule dep: url: the ssh:// scheme is not supported"},
           {"file-sub", "submodule dep: repo: file:// remotes outside workspace.file_allowlist"}}) {
    auto r2 = cli(
        {"session", "start", "--repo", git.url(repo), "--workflow", wf, "--wait", "-o", "json"});
    EXPECT_EQ(r2.code, 1) << r2.out;
    auto v = cli({"session", "show", r2.json()->get_string("id"), "-o", "json"}).json();
    EXPECT_NE(v->get_string("reason").find(needle), std::string::npos) << v->get_string("reason");
  }
}
