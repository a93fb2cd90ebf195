// The smart-HTTP git server the workspace tests clone from and push to (lighttpd + git
// http-backend): it must behave like a forge's for real git.
#include "harness.hpp"

#include "berth/base/fs.hpp"

#include <gtest/gtest.h>

using namespace berth;

TEST(git_server, real_git_clones_and_pushes_over_smart_http) {
  test::temp_dir dir;
  test::git_server server(dir / "git");
  server.start();
  server.repo("app", {{"README.md", "hello\n"}, {"src/main.py", "print(1)\n"}});
  auto clone = dir / "clone";
  test::run_checked({"git", "clone", "-q", server.url("app"), clone});
  EXPECT_EQ(*fs::read_file(clone + "/src/main.py"), "print(1)\n");
  test::write_file(clone + "/NEW", "x\n");
  test::run_checked({"git", "-C", clone, "add", "NEW"});
  test::run_checked({"git", "-C", clone, "commit", "-q", "-m", "new"});
  test::run_checked({"git", "-C", clone, "push", "-q", "origin", "HEAD:refs/heads/feature"});
  auto branches = test::run_checked({"git", "-C", server.repo_dir("app"), "branch", "--list"});
  EXPECT_NE(branches.find("feature"), std::string::npos) << branches;
  // A repository that does not exist is a clear failure, as on a forge.
  EXPECT_THROW(test::run_checked({"git", "clone", "-q", server.url("missing"), dir / "m"}),
               std::runtime_error);
}
