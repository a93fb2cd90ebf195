// Mirrors and workspaces with libgit2 against a real smart-HTTP git server.
#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/workspace/git.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <thread>

using namespace berth;

namespace {
struct workspace_fixture : ::testing::Test {
  test::temp_dir dir;
  test::git_server server{dir / "git"};
  std::unique_ptr<workspace::mirror_cache> mirrors;
  void SetUp() override {
    server.start();
    server.repo("app", {{"README.md", "hello\n"}, {"src/main.py", "print(1)\n"}});
    mirrors = std::make_unique<workspace::mirror_cache>(dir / "mirrors");
  }
  // A new commit on `branch` of the served repository, through a scratch clone.
  std::string push_commit(const std::string& branch, const std::string& file,
                          const std::string& content, const std::string& tag = {}) {
    auto scratch = dir / ("scratch-" + std::to_string(counter_++));
    test::run_checked({"git", "clone", "-q", server.repo_dir("app"), scratch});
    test::run_checked({"git", "-C", scratch, "checkout", "-q", "-B", branch});
    test::write_file(scratch + "/" + file, content);
    test::run_checked({"git", "-C", scratch, "add", "-A"});
    test::run_checked({"git", "-C", scratch, "commit", "-q", "-m", "change " + file});
    if (!tag.empty()) test::run_checked({"git", "-C", scratch, "tag", tag});
    test::run_checked({"git", "-C", scratch, "push", "-q", "--tags", "origin", "+" + branch});
    auto id = test::run_checked({"git", "-C", scratch, "rev-parse", "HEAD"});
    return id.substr(0, id.find('\n'));
  }
  // A workspace of app.git on `branch`, through the mirror; returns its path.
  std::string fresh_workspace(const std::string& branch) {
    auto url = server.url("app");
    auto m = mirrors->update(url);
    EXPECT_TRUE(m.ok()) << m.err().message;
    auto ws = dir / ("ws-" + std::to_string(counter_++));
    workspace::clone_options o;
    o.branch = branch;
    auto head = workspace::clone_workspace(m ? *m : std::string(), url, ws, o);
    EXPECT_TRUE(head.ok()) << head.err().message;
    return ws;
  }
  int counter_ = 0;
};
}  // namespace

TEST_F(workspace_fixture, a_mirror_is_made_once_then_fetched_incrementally) {
  auto url = server.url("app");
  auto m = mirrors->update(url);
  ASSERT_TRUE(m.ok()) << m.err().message;
  EXPECT_EQ(*m, mirrors->path_of(url));
  auto id = push_commit("main", "NEW", "new\n", "v2");
  auto again = mirrors->update(url);
  ASSERT_TRUE(again.ok()) << again.err().message;
  auto heads = test::run_checked({"git", "-C", *m, "rev-parse", "refs/heads/main", "refs/tags/v2"});
  EXPECT_EQ(heads, id + "\n" + id + "\n");
}

TEST_F(workspace_fixture, a_workspace_checks_out_a_branch_a_tag_or_a_commit_on_the_session_branch) {
  auto url = server.url("app");
  auto first = test::run_checked({"git", "-C", server.repo_dir("app"), "rev-parse", "main"});
  first = first.substr(0, first.find('\n'));
  auto tagged = push_commit("main", "TAGGED", "t\n", "v1");
  auto feature = push_commit("feature", "FEATURE", "f\n");
  auto m = mirrors->update(url);
  ASSERT_TRUE(m.ok()) << m.err().message;
  struct c {
    std::string ref, want, file;
  };
  for (const auto& [ref, want, file] : std::vector<c>{{"main", tagged, "TAGGED"},
                                                      {"", tagged, "TAGGED"},
                                                      {"v1", tagged, "TAGGED"},
                                                      {"feature", feature, "FEATURE"},
                                                      {first, first, "README.md"}}) {
    auto dest = dir / ("ws-" + std::to_string(counter_++));
    workspace::clone_options o;
    o.ref = ref;
    o.branch = "berth/abc123";
    auto head = workspace::clone_workspace(*m, url, dest, o);
    ASSERT_TRUE(head.ok()) << ref << ": " << head.err().message;
    EXPECT_EQ(*head, want) << ref;
    EXPECT_TRUE(fs::read_file(dest + "/" + file).ok()) << ref;
    EXPECT_EQ(test::run_checked({"git", "-C", dest, "symbolic-ref", "HEAD"}),
              "refs/heads/berth/abc123\n");
    EXPECT_EQ(test::run_checked({"git", "-C", dest, "remote", "get-url", "origin"}), url + "\n");
    EXPECT_EQ(test::run_checked({"git", "-C", dest, "config", "user.name"}), "Berth\n");
    EXPECT_EQ(test::run_checked({"git", "-C", dest, "status", "--porcelain"}), "");
  }
}

TEST_F(workspace_fixture, unknown_refs_and_unreachable_remotes_are_clear_errors) {
  auto url = server.url("app");
  auto m = mirrors->update(url);
  ASSERT_TRUE(m.ok());
  workspace::clone_options o;
  o.ref = "no-such-branch";
  auto r = workspace::clone_workspace(*m, url, dir / "ws", o);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::not_found));
  EXPECT_NE(r.err().message.find("no-such-branch"), std::string::npos) << r.err().message;
  auto missing = mirrors->update(server.url("missing"));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.err().message.find(server.url("missing")), std::string::npos)
      << missing.err().message;
  EXPECT_FALSE(std::filesystem::exists(mirrors->path_of(server.url("missing"))))
      << "no half mirror";
}

TEST_F(workspace_fixture, concurrent_sessions_share_one_mirror_safely) {
  auto url = server.url("app");
  std::vector<std::thread> ts;
  std::vector<int> ok(6, 0);
  for (int i = 0; i < 6; ++i)
    ts.emplace_back([&, i] {
      auto m = mirrors->update(url);
      if (!m) return;
      workspace::clone_options o;
      o.branch = "berth/s" + std::to_string(i);
      ok[static_cast<std::size_t>(i)] =
          workspace::clone_workspace(*m, url, dir / ("c" + std::to_string(i)), o).ok();
    });
  for (auto& t : ts) t.join();
  for (int i = 0; i < 6; ++i) EXPECT_EQ(ok[static_cast<std::size_t>(i)], 1) << i;
}

TEST_F(workspace_fixture, changes_are_committed_and_pushed_past_the_repositorys_own_remote_config) {
  auto url = server.url("app");
  auto ws = fresh_workspace("berth/s1");
  // What a hostile repository or agent could plant in .git/config: all of it must be ignored.
  auto base = url.substr(0, url.rfind('/') + 1);
  test::run_checked({"git", "-C", ws, "config", "url.http://127.0.0.1:1/.insteadOf", base});
  test::run_checked(
      {"git", "-C", ws, "config", "remote.origin.pushurl", "http://127.0.0.1:1/x.git"});
  test::write_file(ws + "/README.md", "changed\n");
  test::write_file(ws + "/added.txt", "new\n");
  std::filesystem::remove(ws + "/src/main.py");
  auto id = workspace::commit_all(ws, "session work");
  ASSERT_TRUE(id.ok()) << id.err().message;
  ASSERT_TRUE(id->has_value());
  auto pushed = workspace::push_branch(ws, url, "berth/s1");
  ASSERT_TRUE(pushed.ok()) << pushed.err().message;
  auto remote = test::run_checked({"git", "-C", server.repo_dir("app"), "rev-parse", "berth/s1"});
  EXPECT_EQ(remote, **id + "\n");
  auto files = test::run_checked(
      {"git", "-C", server.repo_dir("app"), "ls-tree", "-r", "--name-only", "berth/s1"});
  EXPECT_EQ(files, "README.md\nadded.txt\n");
  auto msg = test::run_checked(
      {"git", "-C", server.repo_dir("app"), "log", "-1", "--format=%an %s", "berth/s1"});
  EXPECT_EQ(msg, "Berth session work\n");
  // Nothing changed since: no empty commit.
  auto none = workspace::commit_all(ws, "again");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  // A push the server refuses (not a fast-forward) is an error, not a silent success.
  push_commit("berth/s1", "OTHER", "elsewhere\n");  // the branch moved elsewhere meanwhile
  test::write_file(ws + "/later.txt", "later\n");
  ASSERT_TRUE(workspace::commit_all(ws, "later").ok());
  auto refused = workspace::push_branch(ws, url, "berth/s1");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.err().message.find(url), std::string::npos) << refused.err().message;
  auto missing = workspace::push_branch(ws, server.url("missing"), "berth/s1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.err().message.find(server.url("missing")), std::string::npos)
      << missing.err().message;
}

TEST_F(workspace_fixture, a_push_token_goes_only_through_the_credential_callback) {
  // A forge that wants an installation token for every request.
  test::git_server forge(dir / "forge");
  const std::string token = "ghs_" + std::string(36, 'T');
  forge.start(token);
  forge.repo("app", {{"README.md", "forge\n"}});
  auto ws = fresh_workspace("berth/tok");
  auto target = forge.url("app");
  for (const std::string& bad : {std::string(), std::string("ghs_wrong")}) {
    auto r = workspace::push_branch(ws, target, "berth/tok", bad);
    ASSERT_FALSE(r.ok()) << "token \"" << bad << "\" was accepted";
    EXPECT_TRUE(r.err().is(errc::permission_denied)) << r.err().message;
    EXPECT_EQ(r.err().message, "authentication failed for " + target);
  }
  auto ok = workspace::push_branch(ws, target, "berth/tok", token);
  ASSERT_TRUE(ok.ok()) << ok.err().message;
  EXPECT_NE(
      test::run_checked({"git", "-C", forge.repo_dir("app"), "branch", "--list"}).find("berth/tok"),
      std::string::npos);
  // The token is nowhere in the workspace (.git/config included).
  auto grep = test::run_checked({"sh", "-c", "grep -rl -- \"$0\" \"$1\" || true", token, ws});
  EXPECT_EQ(grep, "");
}

TEST_F(workspace_fixture, checkpoints_record_the_files_on_a_hidden_ref_and_leave_the_branch_alone) {
  auto ws = fresh_workspace("berth/cp");
  auto branch_before = test::run_checked({"git", "-C", ws, "rev-parse", "HEAD"});
  auto none = workspace::checkpoint(ws, "s1");
  ASSERT_TRUE(none.ok()) << none.err().message;
  EXPECT_FALSE(none->has_value()) << "nothing changed: no checkpoint";
  test::write_file(ws + "/step1.txt", "one\n");
  auto first = workspace::checkpoint(ws, "s1");
  ASSERT_TRUE(first.ok() && first->has_value());
  test::write_file(ws + "/step2.txt", "two\n");
  auto second = workspace::checkpoint(ws, "s1");
  ASSERT_TRUE(second.ok() && second->has_value());
  EXPECT_EQ(test::run_checked({"git", "-C", ws, "rev-parse", "refs/berth/checkpoints/s1"}),
            **second + "\n");
  EXPECT_EQ(test::run_checked({"git", "-C", ws, "rev-parse", "refs/berth/checkpoints/s1^"}),
            **first + "\n");  // a chain of checkpoints
  EXPECT_EQ(test::run_checked({"git", "-C", ws, "ls-tree", "--name-only", **second}),
            "README.md\nsrc\nstep1.txt\nstep2.txt\n");
  // The session branch did not move, and the index the agent sees is untouched.
  EXPECT_EQ(test::run_checked({"git", "-C", ws, "rev-parse", "HEAD"}), branch_before);
  EXPECT_EQ(test::run_checked({"git", "-C", ws, "status", "--porcelain"}),
            "?? step1.txt\n?? step2.txt\n");
  auto again = workspace::checkpoint(ws, "s1");
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
}

TEST(workspace, the_machines_global_git_config_plays_no_part) {
  // libgit2 reads HOME once, when it starts: in a process where another test started it, a
  // HOME set here would prove nothing. So the check runs in a fresh process (gtest's
  // threadsafe death-test style re-executes this binary for just this test), where the
  // global config below is in place before libgit2 starts. It would send every fetch of the
  // server elsewhere.
  ::testing::GTEST_FLAG(death_test_style) = "threadsafe";
  test::temp_dir dir;
  test::git_server server(dir / "git");
  server.start();
  server.repo("app", {{"README.md", "hello\n"}});
  auto home = dir / "home";
  std::filesystem::create_directories(home);
  auto base = server.url("app").substr(0, server.url("app").rfind('/') + 1);
  test::write_file(home + "/.gitconfig",
                   "[url \"http://127.0.0.1:1/\"]\n\tinsteadOf = " + base + "\n");
  EXPECT_EXIT(
      {
        ::setenv("HOME", home.c_str(), 1);
        ::setenv("XDG_CONFIG_HOME", home.c_str(), 1);
        workspace::mirror_cache mirrors(dir / "mirrors");
        auto m = mirrors.update(server.url("app"));
        if (!m) std::fprintf(stderr, "update failed: %s\n", m.err().message.c_str());
        std::fflush(stderr);
        std::_Exit(m.ok() ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

TEST_F(workspace_fixture, attributes_still_apply_and_a_tree_without_them_checks_out_byte_for_byte) {
  // Without .gitattributes the checkout skips filters (fast path): bytes as stored.
  push_commit("main", "dos.txt", "line\r\n");
  auto plain = fresh_workspace("berth/plain");
  EXPECT_EQ(fs::read_file(plain + "/dos.txt").value(), "line\r\n");
  // With them, the eol attribute converts as git would.
  push_commit("main", ".gitattributes", "*.txt eol=crlf\n");
  push_commit("main", "unix.txt", "a\nb\n");
  auto converted = fresh_workspace("berth/attrs");
  EXPECT_EQ(fs::read_file(converted + "/unix.txt").value(), "a\r\nb\r\n");
}

TEST_F(workspace_fixture, a_cancelled_fetch_or_push_stops_and_leaves_no_half_mirror) {
  std::atomic<bool> cancel{true};
  workspace::credential c;
  c.cancel = &cancel;
  auto url = server.url("app");
  auto m = mirrors->update(url, c);
  ASSERT_FALSE(m.ok());
  EXPECT_TRUE(m.err().is(errc::cancelled)) << m.err().message;
  EXPECT_EQ(m.err().message, "fetch " + url + ": cancelled");
  EXPECT_FALSE(std::filesystem::exists(mirrors->path_of(url)));
  cancel = false;
  auto ws = fresh_workspace("berth/cancel");
  test::write_file(ws + "/new.txt", "new\n");
  ASSERT_TRUE(workspace::commit_all(ws, "new").ok());
  cancel = true;
  auto pushed =
      workspace::push_refs(ws, url, {"refs/heads/berth/cancel:refs/heads/berth/cancel"}, c);
  ASSERT_FALSE(pushed.ok());
  EXPECT_TRUE(pushed.err().is(errc::cancelled)) << pushed.err().message;
  EXPECT_NE(
      test::run_checked({"git", "-C", server.repo_dir("app"), "branch", "--list"}).find("main"),
      std::string::npos);
  EXPECT_EQ(
      test::run_checked({"git", "-C", server.repo_dir("app"), "branch", "--list", "berth/cancel"}),
      "");
}
