// The bubblewrap sandbox against hostile commands and hostile paths: real bwrap, real cgroups,
// real seccomp. Each test asserts the specific outcome, then that the sandbox still works.
#include "berth/sandbox/sandbox.hpp"

#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/process.hpp"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

using namespace berth;
using namespace std::chrono_literals;

namespace {

// The helper copied where the sandbox user can reach it (the build tree may not be), as the
// node does.
std::string helper_path(const test::temp_dir& dir) {
  auto built = std::filesystem::path(BERTH_BINARY).parent_path().string() + "/berth-sandbox";
  auto installed = sandbox::install_helper(built, dir / "helper");
  EXPECT_TRUE(installed.ok()) << installed.err().message;
  return installed ? *installed : built;
}

struct ran {
  sandbox::outcome out;
  std::string stdout_text;
  std::string stderr_text;
  bool marked = false;
};

struct sandbox_fixture : ::testing::Test {
  test::temp_dir dir;
  std::string group = "test-" + std::to_string(::getpid());
  std::string ws = dir / "ws";
  std::shared_ptr<sandbox::sandbox> box;
  sandbox::sandbox_options opts;

  void SetUp() override {
    std::filesystem::create_directories(ws);
    ASSERT_EQ(::chown(ws.c_str(), 65534, 65534), 0);
    // The temporary directory's parents must be traversable by the sandbox user for the bind.
    opts.name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    opts.group = group;
    opts.workspace = ws;
    opts.helper = helper_path(dir);
    opts.uid = 65534;
    opts.gid = 65534;
    opts.lim.memory_bytes = 128LL << 20;
    opts.lim.pids = 64;
    opts.lim.cpu_percent = 20;
    opts.lim.tmp_bytes = 16LL << 20;
    opts.lim.nofile = 256;
    opts.lim.fsize_bytes = 64LL << 20;
    auto b = sandbox::sandbox::start(opts);
    ASSERT_TRUE(b.ok()) << b.err().message;
    box = *b;
  }
  void TearDown() override {
    if (box) box->stop();
  }

  ran run(std::vector<std::string> argv, millis stop_after = millis(0),
          std::int64_t cap = 1 << 20) {
    sandbox::command cmd;
    cmd.argv = std::move(argv);
    cmd.max_output_bytes = cap;
    ran r;
    std::mutex mu;
    auto c = box->exec(cmd, [&](int stream, std::string_view chunk, bool truncated) {
      std::lock_guard lock(mu);
      if (truncated) r.marked = true;
      (stream == 1 ? r.stdout_text : r.stderr_text).append(chunk);
    });
    EXPECT_TRUE(c.ok()) << c.err().message;
    if (!c) return r;
    std::thread stopper;
    if (stop_after.count() > 0)
      stopper = std::thread([&, s = stop_after] {
        std::this_thread::sleep_for(s);
        (*c)->stop(millis(100));
      });
    r.out = (*c)->wait();
    if (stopper.joinable()) stopper.join();
    return r;
  }

  // The sandbox still runs commands after whatever the test did.
  void expect_healthy() {
    auto r = run({"echo", "still here"});
    EXPECT_EQ(r.out.exit_code, 0);
    EXPECT_EQ(r.stdout_text, "still here\n");
  }
};

}  // namespace

TEST_F(sandbox_fixture, a_command_runs_in_the_workspace_as_the_unprivileged_user) {
  auto r = run(
      {"sh", "-c", "pwd; id -u; id -g; echo hello > made-inside; grep Cap[EPB] /proc/self/status"});
  ASSERT_EQ(r.out.exit_code, 0) << r.stderr_text;
  EXPECT_NE(r.stdout_text.find("/work\n65534\n65534\n"), std::string::npos) << r.stdout_text;
  EXPECT_NE(r.stdout_text.find("CapEff:\t0000000000000000"), std::string::npos) << r.stdout_text;
  EXPECT_NE(r.stdout_text.find("CapBnd:\t0000000000000000"), std::string::npos) << r.stdout_text;
  EXPECT_EQ(*fs::read_file(ws + "/made-inside"), "hello\n");
  EXPECT_GT(r.out.peak_memory_bytes, 0);
}

TEST_F(sandbox_fixture, arguments_and_environment_reach_the_command_byte_for_byte) {
  // Through the helper's own JSON reader: quotes, backslashes, control characters, UTF-8 and
  // a message too large for one packet (sent through a memfd).
  std::string odd = "a \"quoted\" \\ back\tslash\x01 caf\xc3\xa9 \xf0\x9f\x98\x80 {}[],:";
  sandbox::command cmd;
  cmd.argv = {"printf", "%s|%s", odd, std::string(60000, 'x')};
  cmd.env["BIG"] = std::string(70000, 'y');
  cmd.env["ODD"] = odd;
  std::string out;
  auto c = box->exec(cmd, [&](int stream, std::string_view chunk, bool) {
    if (stream == 1) out.append(chunk);
  });
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ((*c)->wait().exit_code, 0);
  EXPECT_EQ(out, odd + "|" + std::string(60000, 'x'));
  cmd.argv = {"sh", "-c", "printf %s \"$ODD\"; printf '|%s' \"${#BIG}\""};
  out.clear();
  c = box->exec(cmd, [&](int stream, std::string_view chunk, bool) {
    if (stream == 1) out.append(chunk);
  });
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ((*c)->wait().exit_code, 0);
  EXPECT_EQ(out, odd + "|70000");
}

TEST_F(sandbox_fixture, a_sandboxed_command_has_no_host_pid_to_signal_after_a_crash) {
  // Its pid inside the sandbox's PID namespace names some other process on the host; the
  // session must never record it for the leftover kill at the next start.
  sandbox::command cmd;
  cmd.argv = {"sh", "-c", "echo $$"};
  std::string out;
  auto c = box->exec(cmd, [&](int stream, std::string_view chunk, bool) {
    if (stream == 1) out.append(chunk);
  });
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ((*c)->pid(), -1);
  (void)(*c)->wait();
  EXPECT_LT(std::stoi(out), 100) << "a PID namespace of its own";
}

TEST_F(sandbox_fixture, rlimits_hold_core_zero_descriptors_and_file_size) {
  auto r = run({"sh", "-c", "ulimit -c; ulimit -n; ulimit -f"});
  ASSERT_EQ(r.out.exit_code, 0) << r.stderr_text;
  // core 0; nofile 256; fsize 64 MiB in 512-byte blocks.
  EXPECT_EQ(r.stdout_text, "0\n256\n131072\n");
  auto big = run({"sh", "-c", "head -c 80M /dev/zero > big; echo rc=$?; wc -c < big"});
  EXPECT_NE(big.stdout_text.find("67108864"), std::string::npos) << big.stdout_text;
  EXPECT_EQ(big.stdout_text.find("rc=0"), std::string::npos) << big.stdout_text;
  expect_healthy();
}

TEST_F(sandbox_fixture, a_missing_program_is_a_clear_error) {
  sandbox::command cmd;
  cmd.argv = {"no-such-program-xyz"};
  auto c = box->exec(cmd, [](int, std::string_view, bool) {});
  ASSERT_FALSE(c.ok());
  EXPECT_TRUE(c.err().is(errc::not_found));
  EXPECT_NE(c.err().message.find("no-such-program-xyz"), std::string::npos);
  expect_healthy();
}

TEST_F(sandbox_fixture, etc_shadow_is_not_there) {
  auto r = run({"cat", "/etc/shadow"});
  EXPECT_NE(r.out.exit_code, 0);
  EXPECT_NE(r.stderr_text.find("No such file"), std::string::npos) << r.stderr_text;
  expect_healthy();
}

TEST_F(sandbox_fixture, host_home_node_data_and_other_workspaces_are_invisible) {
  auto other = dir / "other-session";
  std::filesystem::create_directories(other);
  ASSERT_TRUE(fs::write_file_atomic(other + "/secret", "other session's secret").ok());
  auto data = dir / "node-data";
  std::filesystem::create_directories(data + "/snapshots");
  ASSERT_TRUE(fs::write_file_atomic(data + "/snapshots/CURRENT", "rocksdb").ok());
  for (const auto& path :
       {other + "/secret", data + "/snapshots/CURRENT", dir.path(), std::string("/root"),
        std::string("/var/lib/berth"), std::string("/home")}) {
    auto r = run({"sh", "-c", "ls -d \"$0\" || exit 3", path});
    EXPECT_EQ(r.out.exit_code, 3) << path << " is visible: " << r.stdout_text;
  }
  expect_healthy();
}

TEST_F(sandbox_fixture, only_descriptors_0_1_2_are_open) {
  // ls lists its own: 0-2 and the descriptor it reads the directory with (3).
  auto r = run({"ls", "/proc/self/fd"});
  ASSERT_EQ(r.out.exit_code, 0) << r.stderr_text;
  EXPECT_EQ(r.stdout_text, "0\n1\n2\n3\n");
}

TEST_F(sandbox_fixture, nothing_on_the_network_is_reachable) {
  // A listener on the host's loopback, like the node's nats-server: reachable from the host,
  // not from the sandbox.
  int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(s, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  auto port = std::to_string(ntohs(a.sin_port));
  for (const auto& target :
       {"127.0.0.1/" + port, std::string("169.254.169.254/80"), std::string("1.1.1.1/443")}) {
    auto r = run({"bash", "-c", "exec 3<>/dev/tcp/" + target + " && echo CONNECTED"});
    EXPECT_NE(r.out.exit_code, 0) << target;
    EXPECT_EQ(r.stdout_text.find("CONNECTED"), std::string::npos) << target;
  }
  ::close(s);
  auto r = run({"cat", "/etc/resolv.conf"});
  EXPECT_NE(r.out.exit_code, 0) << "resolv.conf is bound without network";
}

TEST_F(sandbox_fixture, a_fork_bomb_hits_the_pids_limit_and_is_cleaned_up) {
  auto r = run({"sh", "-c", "b() { b | b & }; b; sleep 2"}, millis(3000));
  EXPECT_GT(box->read_usage().pids_limit_hits, 0);
  // Everything the bomb started went with it.
  auto ps = run({"sh", "-c", "ls /proc | grep -c '^[0-9]'"});
  EXPECT_LE(std::stoi(ps.stdout_text), 5) << ps.stdout_text;  // init, helper, sh, ls, grep
  expect_healthy();
}

TEST_F(sandbox_fixture, unbounded_allocation_is_oom_killed_and_reported) {
  // One process that allocates 1 GiB at once: the OOM killer's only candidate. (A pipeline
  // such as head | tail lets it pick either end, and a killed head ends tail cleanly.)
  auto r = run({"perl", "-e", "$x = 1 x (1 << 30)"});
  EXPECT_TRUE(r.out.oom_killed) << "signal " << r.out.signal << " exit " << r.out.exit_code;
  EXPECT_GE(box->read_usage().oom_kills, 1);
  expect_healthy();
}

TEST_F(sandbox_fixture, a_busy_loop_is_held_to_the_cpu_quota) {
  auto r = run({"sh", "-c", "while :; do :; done"}, millis(1500));
  EXPECT_EQ(r.out.signal, SIGTERM);
  EXPECT_GT(box->read_usage().cpu_throttled, 0);
  expect_healthy();
}

TEST_F(sandbox_fixture, stopping_a_command_kills_its_whole_tree) {
  auto marker = "berth-tree-" + std::to_string(::getpid());
  auto r = run({"bash", "-c", "sleep 1000 & setsid sleep 1001 & exec -a " + marker + " sleep 1002"},
               millis(300));
  EXPECT_NE(r.out.signal, 0);
  EXPECT_LT(r.out.duration_ms, 5000);
  auto ps = run({"sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"});
  EXPECT_EQ(ps.stdout_text.find("sleep 100"), std::string::npos) << ps.stdout_text;
  EXPECT_EQ(ps.stdout_text.find(marker), std::string::npos) << ps.stdout_text;
  expect_healthy();
}

TEST_F(sandbox_fixture, tiocsti_injection_is_refused_also_with_high_bits_set) {
  for (const char* req : {"0x5412", "0x100005412"}) {
    auto r = run({"perl", "-e",
                  std::string("my $c = \"x\"; ioctl(STDIN, ") + req + ", $c) or die \"$!\\n\""});
    EXPECT_NE(r.out.exit_code, 0) << req;
    EXPECT_NE(r.stderr_text.find("Operation not permitted"), std::string::npos)
        << req << ": " << r.stderr_text << r.stdout_text << " exit " << r.out.exit_code;
  }
}

TEST_F(sandbox_fixture, new_user_namespaces_ptrace_and_mount_are_refused) {
  auto r = run({"unshare", "-U", "true"});
  EXPECT_NE(r.out.exit_code, 0);
  r = run({"sh", "-c", "mount -t tmpfs none /tmp 2>&1; echo rc=$?"});
  EXPECT_EQ(r.stdout_text.find("rc=0"), std::string::npos) << r.stdout_text;
  expect_healthy();
}

TEST_F(sandbox_fixture, writing_outside_the_workspace_fails) {
  for (const char* target : {"/usr/evil", "/etc/evil", "/evil", "/proc/evil"}) {
    auto r = run({"sh", "-c", std::string("echo x > ") + target});
    EXPECT_NE(r.out.exit_code, 0) << target;
  }
  EXPECT_FALSE(std::filesystem::exists("/usr/evil"));
  EXPECT_FALSE(std::filesystem::exists("/etc/evil"));
  // /tmp is private and capped.
  auto r = run({"sh", "-c", "head -c 32M /dev/zero > /tmp/big"});
  EXPECT_NE(r.out.exit_code, 0);
}

TEST_F(sandbox_fixture, a_gigabyte_of_stdout_is_capped_and_marked) {
  auto r = run({"head", "-c", "1G", "/dev/zero"}, millis(0), 1 << 20);
  EXPECT_EQ(r.out.exit_code, 0);
  EXPECT_TRUE(r.out.truncated);
  EXPECT_TRUE(r.marked);
  EXPECT_EQ(r.out.stdout_bytes, 1ULL << 30);
  EXPECT_EQ(r.stdout_text.size(), 1u << 20);
}

// --- file tools --------------------------------------------------------------------------------

TEST_F(sandbox_fixture, file_tools_read_write_edit_list_and_search) {
  ASSERT_TRUE(box->write_file("src/main.py", "def main():\n    return 1\n").ok());
  EXPECT_EQ(*box->read_file("src/main.py"), "def main():\n    return 1\n");
  EXPECT_EQ(*box->read_file("/work/src/main.py"), "def main():\n    return 1\n");
  ASSERT_TRUE(box->edit("src/main.py", "return 1", "return 2").ok());
  EXPECT_EQ(*fs::read_file(ws + "/src/main.py"), "def main():\n    return 2\n");
  auto none = box->edit("src/main.py", "return 9", "x");
  ASSERT_FALSE(none.ok());
  EXPECT_TRUE(none.err().is(errc::not_found)) << none.err().message;
  ASSERT_TRUE(box->write_file("twice.txt", "a a").ok());
  auto twice = box->edit("twice.txt", "a", "b");
  ASSERT_FALSE(twice.ok());
  EXPECT_NE(twice.err().message.find("2 times"), std::string::npos) << twice.err().message;
  auto ls = box->list_dir(".");
  ASSERT_TRUE(ls.ok()) << ls.err().message;
  std::string names;
  for (const auto& e : ls->find("entries")->as_array())
    names += e.get_string("name") + ":" + e.get_string("type") + " ";
  EXPECT_EQ(names, "src:dir twice.txt:file ");
  auto found = box->search("return [0-9]");
  ASSERT_TRUE(found.ok()) << found.err().message;
  ASSERT_EQ(found->find("matches")->as_array().size(), 1u);
  EXPECT_EQ(found->find("matches")->as_array()[0].get_string("path"), "src/main.py");
  EXPECT_EQ(found->find("matches")->as_array()[0].get_int("line"), 2);
  auto bad = box->search("([");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(bad.err().is(errc::invalid_argument));
  EXPECT_NE(bad.err().message.find("pattern"), std::string::npos);
}

TEST_F(sandbox_fixture, file_tools_never_leave_the_workspace) {
  std::filesystem::create_symlink("/etc/hostname", ws + "/abs-link");
  std::filesystem::create_symlink("../../..", ws + "/up-link");
  std::filesystem::create_directories(ws + "/d");
  for (const auto& p :
       {std::string("abs-link"), std::string("up-link/etc/hostname"), std::string("../x"),
        std::string("d/../../x"), std::string("/etc/passwd"), std::string("/work/../etc/passwd")}) {
    auto r = box->read_file(p);
    EXPECT_FALSE(r.ok()) << p << " was read: " << (r ? *r : "");
    if (!r) {
      EXPECT_TRUE(r.err().is(errc::permission_denied) || r.err().is(errc::not_found))
          << p << ": " << r.err().message;
    }
    auto w = box->write_file(p == "abs-link" ? "up-link/evil" : p, "x");
    EXPECT_FALSE(w.ok()) << p << " was written";
  }
  EXPECT_FALSE(std::filesystem::exists(dir.path() + "/evil"));
  EXPECT_FALSE(box->list_dir("up-link").ok());
  EXPECT_FALSE(box->edit("abs-link", "a", "b").ok());
  // A symlink pointing inside the workspace is fine.
  ASSERT_TRUE(box->write_file("real.txt", "inside").ok());
  std::filesystem::create_symlink("real.txt", ws + "/good-link");
  EXPECT_EQ(*box->read_file("good-link"), "inside");
}

TEST_F(sandbox_fixture, a_symlink_swapped_10000_times_during_reads_never_leaks_the_host) {
  ASSERT_TRUE(fs::write_file_atomic(ws + "/safe.txt", "safe").ok());
  std::atomic<bool> done{false};
  std::atomic<int> safe_seen{0};
  // 10,000 swaps, and on until a read has gone through (a slow machine may have read nothing
  // yet): the test proves reads work while the link moves, not only that they are refused.
  std::thread swapper([&] {
    for (int i = 0; i < 10000 || (safe_seen == 0 && i < 1'000'000); ++i) {
      auto tmp = ws + "/.swap";
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      std::filesystem::create_symlink(i % 2 ? "/etc/hostname" : "safe.txt", tmp, ec);
      std::filesystem::rename(tmp, ws + "/link", ec);
    }
    done = true;
  });
  int reads = 0, safe = 0;
  while (!done) {
    auto r = box->read_file("link");
    ++reads;
    if (r) {
      EXPECT_EQ(*r, "safe");
      safe += *r == "safe";
      safe_seen = safe;
    }
  }
  swapper.join();
  EXPECT_GT(reads, 10);
  EXPECT_GT(safe, 0) << "no read succeeded in " << reads << " tries";
  RecordProperty("reads", reads);
  RecordProperty("safe_reads", safe);
}

TEST(sandbox, leftovers_of_an_earlier_run_are_swept_and_this_runs_are_not) {
  test::temp_dir dir;
  auto ws = dir / "ws";
  std::filesystem::create_directories(ws);
  ASSERT_EQ(::chown(ws.c_str(), 65534, 65534), 0);
  auto group = "test-sweep-" + std::to_string(::getpid());
  // As an earlier run of the node left it: a cgroup with a process still inside.
  std::vector<std::string> dirs;
  for (const char* c : {"memory", "pids", "cpu"}) {
    auto d = std::string("/sys/fs/cgroup/") + c + "/berth/" + group + "/old-session-1";
    std::filesystem::create_directories(d);
    dirs.push_back(d);
  }
  process::spawn_options so;
  auto old = process::spawn({"sleep", "300"}, so);
  ASSERT_TRUE(old.ok());
  for (const auto& d : dirs)
    ASSERT_TRUE(fs::write_existing(d + "/cgroup.procs", std::to_string(*old)).ok());
  // And a sandbox of this run.
  sandbox::sandbox_options o;
  o.name = "current";
  o.group = group;
  o.workspace = ws;
  o.helper = helper_path(dir);
  o.uid = 65534;
  o.gid = 65534;
  auto box = sandbox::sandbox::start(o);
  ASSERT_TRUE(box.ok()) << box.err().message;
  EXPECT_EQ(sandbox::sweep_leftovers(group), 1u);
  int st = 0;
  EXPECT_EQ(::waitpid(*old, &st, 0), *old);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  for (const auto& d : dirs) EXPECT_FALSE(std::filesystem::exists(d)) << d;
  // This run's sandbox was left alone.
  sandbox::command cmd;
  cmd.argv = {"true"};
  auto c = (*box)->exec(cmd, [](int, std::string_view, bool) {});
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ((*c)->wait().exit_code, 0);
  (*box)->stop();
}

TEST(sandbox, a_missing_bwrap_is_a_clear_error_never_an_unsandboxed_run) {
  test::temp_dir dir;
  auto st = sandbox::check_host("/nonexistent/bwrap", helper_path(dir));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.err().message.find("bubblewrap"), std::string::npos) << st.err().message;
  EXPECT_NE(st.err().message.find("sandbox.mode"), std::string::npos) << st.err().message;
  sandbox::sandbox_options o;
  o.name = "nobwrap";
  o.group = "test-nobwrap-" + std::to_string(::getpid());
  o.workspace = dir.path();
  o.helper = helper_path(dir);
  o.bwrap = "/nonexistent/bwrap";
  auto box = sandbox::sandbox::start(o);
  ASSERT_FALSE(box.ok());
  EXPECT_NE(box.err().message.find("/nonexistent/bwrap"), std::string::npos) << box.err().message;
  EXPECT_EQ(sandbox::sweep_leftovers(o.group), 0u);
}
