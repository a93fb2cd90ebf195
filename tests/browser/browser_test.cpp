// The console in Debian's chromium (driven by npm playwright-core, tests/browser/console.mjs)
// against a real node, a real git server and an external agent; screenshots of each view land in
// the build tree (BERTH_SCREENSHOT_DIR), from where docs/console.md's were copied.

#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/json.hpp"
#include "berth/base/process.hpp"

#include <gtest/gtest.h>

#include <filesystem>

using namespace berth;

TEST(console, a_person_logs_in_starts_watches_cancels_retries_and_reloads_without_losing_anything) {
  std::string browser_dir = std::string(BERTH_SOURCE_DIR) + "/tests/browser";
  std::string agents_dir = std::string(BERTH_SOURCE_DIR) + "/examples/agents";
  ASSERT_TRUE(std::filesystem::exists(browser_dir + "/node_modules/playwright-core"))
      << "run `npm ci --prefix tests/browser` (scripts/test does)";
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/chromium")) << "apt-get install chromium";
  ASSERT_TRUE(std::filesystem::exists(agents_dir + "/node_modules/nats"))
      << "run `npm ci --prefix examples/agents` (scripts/test does)";
  test::temp_dir dir;
  test::git_server git(dir / "git");
  git.start();
  git.repo("app", {{"README.md", "hello\n"}});
  test::node_process node(dir / "node");
  node.start();
  auto info = json::parse(*fs::read_file(node.data_dir() + "/node.json"));
  ASSERT_TRUE(info);
  auto token = test::cli(node, {"token", "create", "browser-test", "--scope", "write"});
  ASSERT_EQ(token.code, 0) << token.err;
  auto login = test::cli(node, {"console", "--name", "browser", "--scope", "write"});
  ASSERT_EQ(login.code, 0) << login.err;
  auto trim = [](std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  };
  test::write_file(dir / "agent.toml", test::agent_fix_workflow);
  json::value cfg = json::value::make_object();
  cfg.set("url", info->get_string("console_url"));
  cfg.set("login", trim(login.out));
  cfg.set("token", trim(token.out));
  cfg.set("nats_url", info->get_string("nats_url"));
  cfg.set("shots", std::string(BERTH_SCREENSHOT_DIR));
  cfg.set("repo", git.url("app"));
  json::value agent = json::value::make_object();
  agent.set("script", agents_dir + "/scripted-agent.mjs");
  agent.set("workflow", dir / "agent.toml");
  json::value args = json::value::make_array();
  for (const auto& a : test::agent_fix_args()) args.push(a);
  for (const char* a : {"--slow", "2"}) args.push(a);
  agent.set("args", std::move(args));
  cfg.set("agent", std::move(agent));
  test::write_file(dir / "config.json", cfg.dump());
  auto out =
      process::run_capture({"node", browser_dir + "/console.mjs", "--config", dir / "config.json"},
                           "", std::chrono::minutes(8), 1 << 20);
  ASSERT_TRUE(out.ok()) << out.err().message;
  std::printf("%s%s", out->out.c_str(), out->err.c_str());
  EXPECT_EQ(out->exit_code, 0) << out->out << out->err << "\n(screenshots in "
                               << BERTH_SCREENSHOT_DIR << ")";
  EXPECT_TRUE(node.running());
}
