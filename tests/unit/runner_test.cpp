#include "berth/sandbox/runner.hpp"

#include "harness.hpp"

#include "berth/base/process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <mutex>
#include <thread>

using namespace berth;

namespace {
struct captured {
  std::mutex mu;
  std::string out, err;
  bool truncated = false;
  sandbox::output_fn fn() {
    return [this](int stream, std::string_view chunk, bool trunc) {
      std::lock_guard lock(mu);
      if (trunc) truncated = true;
      (stream == 1 ? out : err).append(chunk);
    };
  }
};

sandbox::command cmd(std::vector<std::string> argv, const std::string& cwd) {
  sandbox::command c;
  c.argv = std::move(argv);
  c.cwd = cwd;
  c.env = {{"PATH", "/usr/bin:/bin"}};
  return c;
}
}  // namespace

TEST(process_runner, captures_output_and_exit_code_in_the_working_directory) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  auto r = runner->start(cmd({"sh", "-c", "pwd; echo oops >&2; exit 3"}, dir.path()), cap.fn());
  ASSERT_TRUE(r.ok()) << r.err().message;
  auto out = (*r)->wait();
  EXPECT_EQ(out.exit_code, 3);
  EXPECT_EQ(cap.out, dir.path() + "\n");
  EXPECT_EQ(cap.err, "oops\n");
}

TEST(process_runner, missing_binary_is_a_clear_error) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  auto r = runner->start(cmd({"no-such-program-xyz"}, dir.path()), cap.fn());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.err().is(errc::not_found));
  EXPECT_NE(r.err().message.find("no-such-program-xyz"), std::string::npos);
}

TEST(process_runner, environment_is_exactly_what_was_given) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  auto c = cmd({"sh", "-c", "env | sort"}, dir.path());
  c.env["ONLY_THIS"] = "1";
  auto r = runner->start(c, cap.fn());
  ASSERT_TRUE(r.ok());
  (void)(*r)->wait();
  EXPECT_NE(cap.out.find("ONLY_THIS=1"), std::string::npos);
  EXPECT_EQ(cap.out.find("HOME="), std::string::npos) << cap.out;
}

TEST(process_runner, stop_kills_the_whole_process_group) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  // A background grandchild that would outlive a plain kill of the shell.
  auto r = runner->start(cmd({"sh", "-c", "sleep 300 & echo $!; wait"}, dir.path()), cap.fn());
  ASSERT_TRUE(r.ok());
  sandbox::outcome out;
  std::thread waiter(
      [&] { out = (*r)->wait(); });  // wait() delivers output; callers run it on a thread
  ASSERT_TRUE(test::eventually([&] {
    std::lock_guard lock(cap.mu);
    return !cap.out.empty();
  }));
  pid_t grandchild = std::stoi(cap.out);
  (*r)->stop(millis(100));
  waiter.join();
  EXPECT_EQ(out.signal, SIGTERM);
  EXPECT_TRUE(
      test::eventually([&] { return !process::alive(grandchild); }, std::chrono::seconds(5)));
}

TEST(process_runner, sigterm_ignoring_command_is_killed_after_the_grace) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  auto r = runner->start(
      cmd({"sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"}, dir.path()),
      cap.fn());
  ASSERT_TRUE(r.ok());
  sandbox::outcome out;
  std::thread waiter([&] { out = (*r)->wait(); });
  ASSERT_TRUE(test::eventually([&] {
    std::lock_guard lock(cap.mu);
    return !cap.out.empty();
  }));
  (*r)->stop(millis(200));
  waiter.join();
  EXPECT_EQ(out.signal, SIGKILL);
}

TEST(process_runner, output_past_the_cap_is_dropped_and_marked) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  auto c = cmd({"sh", "-c", "head -c 1000000 /dev/zero"}, dir.path());
  c.max_output_bytes = 4096;
  auto r = runner->start(c, cap.fn());
  ASSERT_TRUE(r.ok());
  auto out = (*r)->wait();
  EXPECT_EQ(out.exit_code, 0);
  EXPECT_EQ(cap.out.size(), 4096u);
  EXPECT_TRUE(cap.truncated);
  EXPECT_TRUE(out.truncated);
  EXPECT_EQ(out.stdout_bytes, 1000000u);
}

TEST(process_runner, leftover_is_killed_only_when_the_start_time_matches) {
  test::temp_dir dir;
  auto runner = sandbox::make_process_runner();
  captured cap;
  auto r = runner->start(cmd({"sleep", "300"}, dir.path()), cap.fn());
  ASSERT_TRUE(r.ok());
  auto pid = (*r)->pid();
  auto st = process::start_time(pid);
  ASSERT_TRUE(st.has_value());
  EXPECT_FALSE(sandbox::kill_leftover(pid, *st + 1));  // another process's start time: untouched
  EXPECT_TRUE(process::alive(pid));
  EXPECT_TRUE(sandbox::kill_leftover(pid, *st));
  auto out = (*r)->wait();
  EXPECT_EQ(out.signal, SIGKILL);
}

TEST(process_runner, the_command_inherits_only_stdin_stdout_and_stderr) {
  test::temp_dir dir;
  int leak = ::open("/dev/null", O_RDONLY);  // an fd of ours without O_CLOEXEC
  ASSERT_GE(leak, 3);
  auto runner = sandbox::make_process_runner();
  captured cap;
  // ls lists its own descriptors: 0-2, plus the one it reads the directory with (3). (Listing a
  // shell's from a pipeline races with the shell's own pipe descriptors.)
  auto r = runner->start(cmd({"ls", "/proc/self/fd"}, dir.path()), cap.fn());
  ASSERT_TRUE(r.ok());
  (void)(*r)->wait();
  ::close(leak);
  EXPECT_EQ(cap.out, "0\n1\n2\n3\n");
}
