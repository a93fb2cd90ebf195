#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/net.hpp"
#include "berth/base/process.hpp"

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

temp_dir::temp_dir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/berth-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
  // Traversable (not listable) by a sandbox user, like a node's data dir.
  ::chmod(path_.c_str(), 0711);
}

temp_dir::~temp_dir() {
  std::error_code ec;
  sfs::remove_all(path_, ec);
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

// --- git_server ----------------------------------------------------------------------------------

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
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  process::spawn_options so;
  so.cwd = cwd;
  so.stdout_fd = out[1];
  so.stderr_fd = out[1];
  auto env = process::current_env();
  // Tests must not depend on the machine's git configuration.
  env["GIT_CONFIG_GLOBAL"] = "/dev/null";
  env["GIT_CONFIG_NOSYSTEM"] = "1";
  env["GIT_AUTHOR_NAME"] = env["GIT_COMMITTER_NAME"] = "Test";
  env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "test@example.com";
  so.env = env;
  auto pid = process::spawn(argv, so);
  ::close(out[1]);
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<std::size_t>(n));
  ::close(out[0]);
  if (!pid) throw std::runtime_error(argv[0] + ": " + pid.err().message);
  int st = 0;
  ::waitpid(*pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("failed: " + cmd + "\n" + text);
  }
  return text;
}

git_server::git_server(const std::string& dir) : dir_(dir) {
  sfs::create_directories(dir_ + "/repos");
}

git_server::~git_server() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void git_server::start(const std::string& token) {
  if (token.empty()) return launch(false);
  grant(token, "*");
  launch(true);
}

void git_server::start_with_grants() {
  launch(true);
}

void git_server::grant(const std::string& token, const std::string& name,
                       std::int64_t expires_unix) {
  std::lock_guard lock(mu_);
  grants_[token] = {name, expires_unix};
  write_grants_locked();
}

void git_server::revoke(const std::string& token) {
  std::lock_guard lock(mu_);
  grants_.erase(token);
  write_grants_locked();
}

// Replaced in one rename: a request never reads a half-written file.
void git_server::write_grants_locked() {
  std::string text;
  for (const auto& [t, g] : grants_)
    text += t + " " + g.first + " " + std::to_string(g.second) + "\n";
  write_file(dir_ + "/tokens.tmp", text);
  sfs::rename(dir_ + "/tokens.tmp", dir_ + "/tokens");
}

std::size_t git_server::requests() const {
  std::ifstream in(dir_ + "/access.log");
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) ++n;
  return n;
}

npm_registry::npm_registry(const std::string& dir, const json::value& packages) : dir_(dir) {
  sfs::create_directories(dir_);
  write_file(dir_ + "/packages.json", packages.dump());
}

npm_registry::~npm_registry() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void npm_registry::start() {
  auto ports = dir_ + "/port";
  sfs::remove(ports);
  process::spawn_options so;
  int fd =
      ::open((dir_ + "/registry.out").c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  so.stdout_fd = fd;
  so.stderr_fd = fd;
  auto pid = process::spawn(
      {"node", std::string(BERTH_SUPPORT_DIR) + "/npm_registry.mjs", "--packages",
       dir_ + "/packages.json", "--ports-file", ports, "--log", dir_ + "/requests.log"},
      so);
  ::close(fd);
  if (!pid) throw std::runtime_error("npm registry: " + pid.err().message);
  pid_ = *pid;
  for (int i = 0; i < 500; ++i) {
    if (auto text = fs::read_file(ports); text && !text->empty()) {
      port_ = std::stoi(*text);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto out = fs::read_file(dir_ + "/registry.out");
  throw std::runtime_error("npm registry did not start: " + (out ? *out : std::string()));
}

std::string npm_registry::url() const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/";
}

std::size_t npm_registry::tarballs() const {
  auto text = fs::read_file(dir_ + "/requests.log");
  if (!text) return 0;
  std::size_t n = 0;
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line))
    if (line.find("/-/") != std::string::npos && line.size() > 4 &&
        line.compare(line.size() - 4, 4, " 200") == 0)
      n++;
  return n;
}

void npm_registry::lock(const std::string& project) const {
  // An empty user config: the lockfile is what npm writes by default, whatever ~/.npmrc says.
  write_file(dir_ + "/npmrc", "");
  run_checked(
      {"npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
       "--userconfig", dir_ + "/npmrc", "--cache", dir_ + "/host-cache", "--registry", url()},
      project);
}

void git_server::launch(bool grants) {
  port_ = net::free_loopback_port();  // handed to lighttpd, which cannot report its own
  // With grants, a small CGI in front of git-http-backend checks the basic-auth token against
  // <dir>/tokens ("token repo expires" per line) for the repository the path names, as a forge
  // checks an installation token's repository scope.
  std::string backend = "/usr/lib/git-core/git-http-backend/";
  if (grants) {
    if (!sfs::exists(dir_ + "/tokens")) write_file(dir_ + "/tokens", "");
    write_file(
        dir_ + "/auth.cgi",
        "#!/bin/sh\n"
        "cred=$(printf '%s' \"${HTTP_AUTHORIZATION#Basic }\" | base64 -d 2>/dev/null)\n"
        "tok=${cred#*:}\n"
        "repo=$(printf '%s' \"$PATH_INFO\" | sed -n 's#^/\\(.*\\)\\.git/.*#\\1#p')\n"
        "now=$(date +%s)\n"
        "if [ -n \"$HTTP_AUTHORIZATION\" ] && [ -n \"$tok\" ] && awk -v t=\"$tok\" -v r=\"$repo\" "
        "-v n=\"$now\" '$1==t && ($2==r || $2==\"*\") && ($3==0 || $3>n) {f=1} END {exit "
        "!f}' \"" +
            dir_ +
            "/tokens\"; then\n"
            "  exec /usr/lib/git-core/git-http-backend\n"
            "fi\n"
            "printf 'Status: 401 Unauthorized\\r\\nWWW-Authenticate: Basic realm=\"git\"\\r\\n"
            "Content-Type: text/plain\\r\\n\\r\\nunauthorized\\n'\n");
    ::chmod((dir_ + "/auth.cgi").c_str(), 0755);
    backend = dir_ + "/auth.cgi/";
  }
  auto conf = dir_ + "/lighttpd.conf";
  write_file(conf,
             "server.modules = (\"mod_alias\", \"mod_setenv\", \"mod_cgi\", \"mod_accesslog\")\n"
             "server.document-root = \"" +
                 dir_ +
                 "/repos\"\n"
                 "server.bind = \"127.0.0.1\"\n"
                 "server.port = " +
                 std::to_string(port_) +
                 "\n"
                 "server.errorlog = \"" +
                 dir_ +
                 "/lighttpd.log\"\n"
                 "accesslog.filename = \"" +
                 dir_ +
                 "/access.log\"\n"
                 "alias.url = (\"/git/\" => \"" +
                 backend +
                 "\")\n"
                 // After the alias splits off PATH_INFO the URI is "/git": match it too.
                 "$HTTP[\"url\"] =~ \"^/git\" {\n"
                 "  cgi.assign = (\"\" => \"\")\n"
                 "  setenv.add-environment = (\"GIT_PROJECT_ROOT\" => \"" +
                 dir_ +
                 "/repos\", "
                 "\"GIT_HTTP_EXPORT_ALL\" => \"1\", \"GIT_CONFIG_NOSYSTEM\" => \"1\")\n"
                 "}\n");
  process::spawn_options so;
  auto pid = process::spawn({"lighttpd", "-D", "-f", conf}, so);
  if (!pid) throw std::runtime_error("lighttpd: " + pid.err().message);
  pid_ = *pid;
  if (net::wait_listening(port_, millis(5000))) return;
  throw std::runtime_error("lighttpd did not listen on port " + std::to_string(port_));
}

void git_server::repo(const std::string& name, const std::map<std::string, std::string>& files) {
  auto bare = repo_dir(name);
  run_checked({"git", "init", "-q", "--bare", "-b", "main", bare});
  run_checked({"git", "-C", bare, "config", "http.receivepack", "true"});
  auto work = dir_ + "/seed-" + name;
  run_checked({"git", "init", "-q", "-b", "main", work});
  for (const auto& [path, content] : files) {
    sfs::create_directories(sfs::path(work + "/" + path).parent_path());
    write_file(work + "/" + path, content);
  }
  run_checked({"git", "-C", work, "add", "-A"});
  run_checked({"git", "-C", work, "commit", "-q", "-m", "initial"});
  run_checked({"git", "-C", work, "push", "-q", bare, "main"});
}

std::string git_server::url(const std::string& name) const {
  return "http://127.0.0.1:" + std::to_string(port_) + "/git/" + name + ".git";
}

std::string git_server::repo_dir(const std::string& name) const {
  return dir_ + "/repos/" + name + ".git";
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

// --- node_process --------------------------------------------------------------------------------

node_process::node_process(std::string data_dir, std::vector<std::string> extra_args,
                           std::map<std::string, std::string> env)
    : data_dir_(std::move(data_dir)), extra_(std::move(extra_args)), env_(std::move(env)) {}

node_process::~node_process() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  kill_embedded_server();
}

void node_process::start() {
  sfs::create_directories(data_dir_);
  std::error_code ec;
  sfs::remove(data_dir_ + "/node.json", ec);
  std::vector<std::string> argv = {BERTH_BINARY, "node", "--data-dir", data_dir_};
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  std::string log = data_dir_ + "/node-" + std::to_string(log_no_++) + ".log";
  int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  process::spawn_options so;
  so.stdout_fd = fd;
  so.stderr_fd = fd;
  so.search_path = false;
  auto full = process::current_env();
  full["XDG_STATE_HOME"] = data_dir_ + "/state";  // keep the user's last-node pointer alone
  for (const auto& [k, v] : env_) full[k] = v;
  so.env = full;
  auto pid = process::spawn(argv, so);
  ::close(fd);
  if (!pid) throw std::runtime_error("spawn node: " + pid.err().message);
  pid_ = *pid;
  for (int i = 0; i < 600; ++i) {
    if (fs::read_file(data_dir_ + "/node.json").ok()) return;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("node exited during start-up:\n" + this->log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("node did not become ready:\n" + this->log());
}

void node_process::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

int node_process::wait_exit(std::chrono::seconds timeout) {
  if (pid_ <= 0) return -1;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      pid_ = -1;
      return st;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

bool node_process::running() {
  if (pid_ <= 0) return false;
  int st = 0;
  if (::waitpid(pid_, &st, WNOHANG) == pid_) {
    pid_ = -1;
    return false;
  }
  return true;
}

std::string node_process::log() const {
  std::string all;
  for (int i = 0; i < log_no_; ++i) {
    auto text = fs::read_file(data_dir_ + "/node-" + std::to_string(i) + ".log");
    if (text) all += *text;
  }
  return all;
}

void node_process::kill_embedded_server() {
  auto text = fs::read_file(data_dir_ + "/nats/nats-server.pid");
  if (!text) return;
  try {
    pid_t p = static_cast<pid_t>(std::stol(*text));
    if (process::alive(p)) {
      ::kill(p, SIGKILL);
      for (int i = 0; i < 100 && process::alive(p); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  } catch (const std::exception&) {
  }
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
