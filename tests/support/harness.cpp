#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/net.hpp"
#include "berth/base/process.hpp"
#include "berth/fixtures/run.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace berth::test {

namespace sfs = std::filesystem;

void check(const status& st) {
  if (!st) throw std::runtime_error(st.err().message);
}

void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// --- nats_server ---------------------------------------------------------------------------------

nats_server::nats_server(const std::string& dir) : dir_(dir) {
  sfs::create_directories(dir_ + "/ports");
}

nats_server::~nats_server() {
  kill(SIGKILL);
}

void nats_server::start(int port) {
  sfs::remove_all(dir_ + "/ports");
  sfs::create_directories(dir_ + "/ports");
  process::spawn_options so;
  std::string log = dir_ + "/nats.log";
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  so.stdout_fd = fd;
  so.stderr_fd = fd;
  auto pid = process::spawn({"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port),
                             "-sd", dir_ + "/store", "--ports_file_dir", dir_ + "/ports"},
                            so);
  ::close(fd);
  if (!pid) throw std::runtime_error("nats-server: " + pid.err().message);
  pid_ = *pid;
  for (int i = 0; i < 300; ++i) {
    for (const auto& e : sfs::directory_iterator(dir_ + "/ports")) {
      auto text = fs::read_file(e.path().string());
      if (!text) continue;
      auto p = text->find("nats://");
      if (p == std::string::npos) continue;
      url_ = text->substr(p, text->find('"', p) - p);
      port_ = std::stoi(url_.substr(url_.rfind(':') + 1));
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("nats-server did not write its ports file");
}

void nats_server::kill(int sig) {
  if (pid_ <= 0) return;
  ::kill(pid_, sig);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void nats_server::pause(bool paused) {
  if (pid_ <= 0) return;
  ::kill(pid_, paused ? SIGSTOP : SIGCONT);
  if (!paused) return;
  // kill() returns before the process is stopped: wait until every thread is ("T" in stat).
  auto stopped = [&] {
    for (const auto& t :
         std::filesystem::directory_iterator("/proc/" + std::to_string(pid_) + "/task")) {
      auto stat = fs::read_file(t.path().string() + "/stat");
      if (!stat) continue;
      auto close = stat->rfind(')');
      if (close == std::string::npos || close + 2 >= stat->size() || (*stat)[close + 2] != 'T')
        return false;
    }
    return true;
  };
  eventually(stopped, std::chrono::seconds(2));
}

// --- set-up commands ---------------------------------------------------------------------------

void write_go_module_zip(const std::string& path, const std::string& go_mod) {
  run_checked({"python3", "-c",
               "import zipfile, sys\n"
               "z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n"
               "z.writestr('example.com/lib@v1.0.0/go.mod', sys.argv[2])\n"
               "z.writestr('example.com/lib@v1.0.0/lib.go', "
               "'package lib\\n\\nfunc Answer() int { return 42 }\\n')\n"
               "z.close()\n",
               path, go_mod});
}

std::string run_checked(const std::vector<std::string>& argv, const std::string& cwd) {
  auto out = fixtures::run(argv, cwd);
  if (!out) throw std::runtime_error(out.err().message);
  return *out;
}

// --- running the CLI -----------------------------------------------------------------------------

std::optional<json::value> run_result::json() const {
  auto v = json::parse(out);
  if (!v) return std::nullopt;
  return *v;
}

run_result run_berth(const std::vector<std::string>& args,
                     const std::map<std::string, std::string>& env, std::chrono::seconds timeout) {
  int out[2];
  int err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    throw std::runtime_error("pipe");
  std::vector<std::string> argv = {BERTH_BINARY};
  argv.insert(argv.end(), args.begin(), args.end());
  process::spawn_options so;
  so.stdout_fd = out[1];
  so.stderr_fd = err[1];
  so.search_path = false;
  if (!env.empty()) {
    auto full = process::current_env();
    for (const auto& [k, v] : env) full[k] = v;
    so.env = full;
  }
  auto pid = process::spawn(argv, so);
  ::close(out[1]);
  ::close(err[1]);
  if (!pid) throw std::runtime_error("spawn berth: " + pid.err().message);
  run_result r;
  pollfd fds[2] = {{out[0], POLLIN, 0}, {err[0], POLLIN, 0}};
  int open = 2;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[65536];
  while (open > 0 && std::chrono::steady_clock::now() < deadline) {
    ::poll(fds, 2, 100);
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP))) continue;
      auto n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0)
        (i == 0 ? r.out : r.err).append(buf, static_cast<std::size_t>(n));
      else {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open;
      }
    }
  }
  if (open > 0) ::kill(*pid, SIGKILL);
  for (auto& f : fds)
    if (f.fd >= 0) ::close(f.fd);
  int status = 0;
  ::waitpid(*pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

run_result cli(const node_process& node, const std::vector<std::string>& args) {
  std::vector<std::string> full = node.target();
  full.insert(full.end(), args.begin(), args.end());
  return run_berth(full);
}

std::string start_session(const node_process& node, const std::string& workflow_file,
                          const std::vector<std::string>& extra, std::string* error) {
  std::vector<std::string> args = {"session", "start", "--workflow", workflow_file, "-o", "json"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = cli(node, args);
  auto v = r.json();
  if (r.code == 0 && v) return v->get_string("id");
  if (error) *error = r.err;
  return {};
}

std::string session_field(const node_process& node, const std::string& id,
                          const std::string& field) {
  auto v = cli(node, {"session", "show", id, "-o", "json"}).json();
  return v ? v->get_string(field) : std::string("?");
}

std::vector<json::value> journal(const node_process& node, const std::string& id) {
  auto r = run_berth({"--data-dir", node.data_dir(), "session", "events", id, "-o", "jsonl"});
  std::vector<json::value> out;
  std::istringstream in(r.out);
  std::string line;
  while (std::getline(in, line)) {
    auto v = json::parse(line);
    if (v) out.push_back(std::move(*v));
  }
  return out;
}

}  // namespace berth::test

namespace berth::test {

std::string journal_problems(const std::vector<json::value>& events, bool must_end) {
  std::string problems;
  std::map<std::string, int> results;               // "step#attempt" -> results seen
  std::map<std::string, std::int64_t> interrupted;  // step -> attempt interrupted, awaiting retry
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    auto n = e.get_int("n");
    if (n != static_cast<std::int64_t>(i) + 1)
      problems += "event " + std::to_string(i) + " has n=" + std::to_string(n) + "; ";
    auto type = e.get_string("type");
    const json::value* d = e.find("data");
    auto step = d ? d->get_string("step") : std::string();
    auto attempt = d ? d->get_int("attempt") : 0;
    if (type == "step.finished" || type == "step.failed" || type == "step.interrupted") {
      if (++results[step + "#" + std::to_string(attempt)] > 1)
        problems += "step " + step + " attempt " + std::to_string(attempt) + " has two results; ";
    }
    // An agent step ended by its agent's agent_done carries an outcome instead.
    if (type == "step.finished" && (!d || (!d->find("exit_code") && !d->find("outcome"))))
      problems += "step.finished without exit_code; ";
    if (type == "step.interrupted") interrupted[step] = attempt;
    if (type == "step.started") {
      auto it = interrupted.find(step);
      if (it != interrupted.end()) {
        if (attempt != it->second + 1)
          problems += "interrupted step " + step + " not retried as attempt+1; ";
        interrupted.erase(it);
      }
    }
  }
  // After the terminal event only the clean-up may follow: leases revoked, workspace removed.
  // Nothing else, and nothing more than once per lease.
  std::size_t end = events.size();
  std::set<std::string> revoked;
  while (end > 0) {
    auto t = events[end - 1].get_string("type");
    if (t != "lease.revoked" && t != "workspace.removed") break;
    if (t == "lease.revoked") {
      const auto* d = events[end - 1].find("data");
      auto lease = d ? d->get_string("lease") : std::string();
      if (!revoked.insert(lease).second) problems += "lease " + lease + " revoked twice; ";
    }
    --end;
  }
  for (std::size_t i = 0; i < end; ++i) {
    if (events[i].get_string("type") != "lease.revoked") continue;
    const auto* d = events[i].find("data");
    auto lease = d ? d->get_string("lease") : std::string();
    if (!revoked.insert(lease).second) problems += "lease " + lease + " revoked twice; ";
  }
  // An interrupted attempt must be retried unless the session then ended without success
  // (cancelled, failed by escalation, timed out).
  auto last_type = end == 0 ? std::string() : events[end - 1].get_string("type");
  bool stopped = last_type == "session.cancelled" || last_type == "session.failed" ||
                 last_type == "session.timed_out";
  for (const auto& [step, attempt] : interrupted)
    if (!stopped) problems += "interrupted step " + step + " never retried; ";
  if (must_end) {
    auto last = last_type;
    if (last != "session.succeeded" && last != "session.failed" && last != "session.cancelled" &&
        last != "session.timed_out")
      problems += "journal does not end in a terminal state (last: " + last + "); ";
  }
  return problems;
}

}  // namespace berth::test

namespace berth::test {

const char* const agent_fix_workflow = R"(
[session]
goal = "make the failing test pass"

[[steps]]
id = "write"
run = ["sh", "-c", "printf 'add() { echo $(($1 - $2)); }\n' > calc.sh; printf '. ./calc.sh\n[ \"$(add 2 3)\" = 5 ] || { echo \"FAIL: add 2 3 = $(add 2 3), expected 5\"; exit 1; }\necho ok\n' > test.sh"]

[[steps]]
id = "fix"
kind = "agent"
agent = { mode = "external", turn_timeout = "2m" }

[[steps]]
id = "verify"
run = ["sh", "test.sh"]
)";

std::vector<std::string> agent_fix_args() {
  return {"--test",   "sh test.sh",   "--file",    "calc.sh",
          "--search", "$(($1 - $2))", "--replace", "$(($1 + $2))"};
}

}  // namespace berth::test
