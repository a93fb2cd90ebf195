#include "berth/session/workspace_ops.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/log.hpp"
#include "berth/base/redact.hpp"
#include "berth/base/time.hpp"
#include "berth/lease/forge.hpp"
#include "berth/setup/cache.hpp"
#include "berth/setup/environment.hpp"
#include "berth/workspace/git.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <set>

namespace berth::session::wsops {

using namespace core;  // NOLINT(google-build-using-namespace): the session runs the core

namespace sfs = std::filesystem;

namespace {

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("workspace");
  return l;
}

// Hand a tree to the sandbox user (the node runs libgit2 as root; the agent must be able to
// change every file, .git included). Symlinks are not followed.
void chown_tree(const runtime& rt, const std::string& path) {
  if (rt.ws_uid < 0 || ::geteuid() != 0) return;
  auto uid = static_cast<uid_t>(rt.ws_uid);
  auto gid = static_cast<gid_t>(rt.ws_gid >= 0 ? rt.ws_gid : rt.ws_uid);
  ::lchown(path.c_str(), uid, gid);
  std::error_code ec;
  for (sfs::recursive_directory_iterator
           it(path, sfs::directory_options::skip_permission_denied, ec),
       end;
       !ec && it != end; it.increment(ec))
    ::lchown(it->path().c_str(), uid, gid);
}

// Bytes the trees use on disk (allocated blocks; hard links counted once). Files a dependency
// cache seeded (hard links to the node's store, owned by the node's user, not the session's)
// cost the session nothing and are not counted.
std::int64_t disk_usage(const std::vector<std::string>& paths) {
  std::int64_t total = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  auto self = ::geteuid();
  for (const auto& path : paths) {
    std::error_code ec;
    for (sfs::recursive_directory_iterator
             it(path, sfs::directory_options::skip_permission_denied, ec),
         end;
         !ec && it != end; it.increment(ec)) {
      struct stat st {};
      if (::lstat(it->path().c_str(), &st) != 0) continue;
      if (st.st_nlink > 1 && !seen.insert({st.st_dev, st.st_ino}).second) continue;
      if (st.st_nlink > 1 && S_ISREG(st.st_mode) && st.st_uid == self && self == 0) continue;
      total += static_cast<std::int64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

// Remove what is inside `dir` (an earlier, half-made clone), keeping the directory itself.
void clear_dir(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : sfs::directory_iterator(dir, ec)) fs::remove_tree(e.path().string());
}

// The grant new work uses: the newest one not retired by a renewal.
const lease::grant* current(const std::vector<lease::grant>& grants) {
  for (auto it = grants.rbegin(); it != grants.rend(); ++it)
    if (!it->retired) return &*it;
  return nullptr;
}

workspace::credential cred_of(const std::vector<lease::grant>& grants,
                              const std::atomic<bool>* cancel) {
  const auto* g = current(grants);
  workspace::credential c;
  if (g) {
    c.username = g->username;
    c.token = g->token;
  }
  c.cancel = cancel;
  return c;
}

json::value revoked_note(const lease::grant& g, bool revoked, const std::string& reason) {
  json::value d = json::value::make_object();
  d.set("lease", g.id);
  d.set("provider", g.provider);
  d.set("revoked", revoked);
  if (!reason.empty()) d.set("reason", reason);
  return d;
}

}  // namespace

std::string workdir(const runtime& rt, const std::string& id) {
  return rt.work_root + "/" + id;
}

std::string homedir(const runtime& rt, const std::string& id) {
  return rt.home_root + "/" + id;
}

status check_remote(const runtime& rt, const std::string& url) {
  return workspace::check_remote_allowed(url, rt.cfg.workspace.file_allowlist);
}

outcome acquire(runtime& rt, const std::string& session, const std::string& url,
                std::vector<lease::grant> grants) {
  outcome out;
  out.grants = std::move(grants);
  auto* p = rt.credentials ? rt.credentials->for_url(url) : nullptr;
  if (!p) return out;  // no provider for this remote: it is used without credentials
  auto now = now_unix_ms();
  if (std::any_of(out.grants.begin(), out.grants.end(), [&](const lease::grant& g) {
        return !g.retired && g.url == url && (!g.expires_ms || g.expires_ms > now);
      }))
    return out;
  auto g = p->mint(url);
  if (!g) {
    out.failure = error{g.err().code, redact::apply("lease for " + url + ": " + g.err().message)};
    return out;
  }
  if (rt.leases)
    if (auto ok = rt.leases->put(session, *g); !ok) {
      // A lease the vault never recorded could not be revoked after a crash: give it back now
      // and fail the acquisition rather than hold a credential nothing would clean up.
      auto back = p->revoke(*g);
      logger()->error("{}: lease vault: {}; {}", session, ok.err().message,
                      back ? "revoked the new lease"
                           : "revoking the new lease failed too: " + back.err().message);
      out.failure = error{ok.err().code, "lease for " + url + ": the node's lease vault " +
                                             "cannot record it: " + ok.err().message};
      return out;
    }
  out.notes.emplace_back(ev::lease_granted, g->metadata());
  out.grants.push_back(std::move(*g));
  return out;
}

outcome prepare(runtime& rt, const session_state& st, std::vector<lease::grant> grants,
                bool restore, const std::atomic<bool>* cancel) {
  outcome out;
  out.grants = std::move(grants);
  const auto& url = st.spec.repo;
  auto dir = workdir(rt, st.id);
  auto fail = [&](const std::string& why) {
    out.failure = error{errc::invalid_argument, redact::apply(why)};
    return out;
  };
  if (auto ok = check_remote(rt, url); !ok) return fail(ok.err().message);
  if (!rt.mirrors) return fail("workspace: this node has no mirror cache");
  auto cred = cred_of(out.grants, cancel);
  auto mirror = rt.mirrors->update(url, cred);
  if (!mirror) return fail("repo: " + mirror.err().message);
  // Emptied, not removed: the session's sandbox may already hold this directory (it is bound
  // into the sandbox by descriptor), and must see the clone.
  clear_dir(dir);
  workspace::clone_options co;
  co.ref = restore ? st.ws.get_string("commit") : st.spec.ref;
  co.branch = session_branch(st.spec, st.id);
  co.author_name = rt.cfg.workspace.author_name;
  co.author_email = rt.cfg.workspace.author_email;
  auto commit = workspace::clone_workspace(*mirror, url, dir, co);
  if (!commit) {
    clear_dir(dir);
    return fail(commit.err().message);
  }
  json::value submodules;
  if (st.spec.submodules) {
    // The same rules as the session's repo: https/http, or file:// under the allowlist. The
    // lease is offered only to remotes its provider covers.
    auto allowed = [&](const std::string& u) -> status {
      BERTH_TRY(validate_repo_url(u, "url"));
      return check_remote(rt, u);
    };
    std::string prefix;
    if (const auto* g = current(out.grants); g && g->scope.is_object())
      prefix = g->scope.get_string("url_prefix");
    auto paths = workspace::init_submodules(dir, allowed, cred, prefix);
    if (!paths) {
      clear_dir(dir);
      return fail(paths.err().message);
    }
    submodules = json::value::make_array();
    for (const auto& p : *paths) submodules.push(p);
  }
  if (restore) {
    json::value d = json::value::make_object();
    d.set("node", rt.node_id);
    if (auto head = st.ws.get_string("head"); !head.empty()) {
      if (auto ok = workspace::reset_branch(dir, head); !ok)
        return fail("workspace: cannot restore the session's commit " + head +
                    " on this node: " + ok.err().message +
                    " (checkpoints carry it to other nodes only when a lease lets them be pushed)");
      d.set("head", head);
    }
    if (auto cp = st.ws.get_string("checkpoint"); !cp.empty()) {
      if (auto ok = workspace::restore_checkpoint(dir, *mirror, st.id, cp); !ok)
        return fail("workspace: cannot restore checkpoint " + cp +
                    " on this node: " + ok.err().message +
                    " (checkpoints reach other nodes only when a lease lets them be pushed)");
      d.set("checkpoint", cp);
    }
    chown_tree(rt, dir);
    out.notes.emplace_back(ev::workspace_restored, std::move(d));
    return out;
  }
  std::string base = st.spec.ref;
  if (base.empty() || !workspace::has_branch(*mirror, base)) {
    auto def = workspace::default_branch(*mirror);
    base = def ? *def : std::string();
  }
  chown_tree(rt, dir);
  json::value ready = json::value::make_object();
  ready.set("repo", url);
  ready.set("commit", *commit);
  ready.set("branch", co.branch);
  ready.set("base", base);
  if (!st.spec.ref.empty()) ready.set("ref", st.spec.ref);
  if (submodules.is_array()) ready.set("submodules", std::move(submodules));
  out.ready = std::move(ready);
  return out;
}

status check_quota(const runtime& rt, const std::string& id) {
  auto quota = rt.cfg.workspace.quota_bytes;
  if (quota <= 0) return {};
  std::vector<std::string> trees = {workdir(rt, id)};
  if (!rt.home_root.empty()) trees.push_back(homedir(rt, id));
  auto used = disk_usage(trees);
  if (used <= quota) return {};
  return error{errc::too_large, "workspace: uses " + std::to_string(used) +
                                    " bytes with the session's home, more than its quota of " +
                                    std::to_string(quota) + " (workspace.quota_bytes)"};
}

result<json::value> describe_changes(const std::string& dir, const std::string& id,
                                     const std::string& base, const std::string& commit,
                                     const std::string& step) {
  // 512 KiB of patch keeps the entry under NATS's default 1 MiB message size.
  auto cs = workspace::diff_commits(dir, base, commit, 512 << 10);
  if (!cs) return cs.err();
  json::value v = json::value::make_object();
  v.set("session", id);
  v.set("base", base);
  v.set("commit", commit);
  v.set("step", step);
  v.set("at", format_timestamp(now_unix_ms()));
  json::value files = json::value::make_array();
  for (const auto& f : cs->files) {
    json::value j = json::value::make_object();
    j.set("path", f.path);
    if (!f.old_path.empty()) j.set("old_path", f.old_path);
    j.set("status", f.status);
    j.set("additions", f.additions);
    j.set("deletions", f.deletions);
    if (f.binary) j.set("binary", true);
    files.push(std::move(j));
  }
  v.set("files", std::move(files));
  v.set("additions", cs->additions);
  v.set("deletions", cs->deletions);
  v.set("patch", redact::apply(cs->patch));
  v.set("truncated", cs->truncated);
  return v;
}

outcome after_change(runtime& rt, const std::string& id, const std::string& repo,
                     const std::string& base, std::vector<lease::grant> grants,
                     const std::string& step, const std::atomic<bool>* cancel) {
  outcome out;
  out.grants = std::move(grants);
  auto dir = workdir(rt, id);
  if (!sfs::exists(dir)) return out;
  if (auto quota = check_quota(rt, id); !quota) {
    out.failure = quota.err();
    return out;
  }
  if (repo.empty()) return out;
  auto cp = workspace::checkpoint(dir, id);
  if (!cp) {
    logger()->warn("{}: checkpoint after {}: {}", id, step, cp.err().message);
    return out;
  }
  chown_tree(rt, dir + "/.git");
  if (!*cp) return out;
  json::value d = json::value::make_object();
  d.set("commit", **cp);
  d.set("step", step);
  // What the console's changes tab shows: any gateway reads it from the bucket.
  if (!base.empty()) {
    auto changes = describe_changes(dir, id, base, **cp, step);
    auto put = changes ? rt.bus->kv_put(rt.names.bucket_diffs(), id, changes->dump())
                       : result<std::uint64_t>(changes.err());
    if (!put) logger()->warn("{}: recording the changes after {}: {}", id, step, put.err().message);
  }
  if (current(out.grants)) {
    auto ref = "refs/berth/checkpoints/" + id;
    auto pushed =
        workspace::push_refs(dir, repo, {"+" + ref + ":" + ref}, cred_of(out.grants, cancel));
    d.set("pushed", pushed.ok());
    if (!pushed) d.set("push_error", redact::apply(pushed.err().message));
  } else {
    d.set("pushed", false);
  }
  out.notes.emplace_back(ev::workspace_checkpointed, std::move(d));
  return out;
}

outcome git_step(runtime& rt, const session_state& st, std::vector<lease::grant> grants,
                 const step_spec& spec, const std::atomic<bool>* cancel) {
  outcome out;
  out.grants = std::move(grants);
  auto dir = workdir(rt, st.id);
  auto started = now_unix_ms();
  auto& x = out.exit;
  x.details = json::value::make_object();
  auto failed = [&](const error& e) {
    x.exit_code = 1;
    x.interrupted = e.is(errc::cancelled);  // the session is ending: not a failure of the step
    x.error = redact::apply(e.message);
    x.duration_ms = now_unix_ms() - started;
    return out;
  };
  auto branch = session_branch(st.spec, st.id);
  if (spec.kind == step_kind::commit) {
    auto c = workspace::commit_all(dir, spec.message);
    chown_tree(rt, dir + "/.git");
    if (!c) return failed(c.err());
    if (*c) {
      json::value d = json::value::make_object();
      d.set("commit", **c);
      d.set("branch", branch);
      d.set("message", spec.message.substr(0, spec.message.find('\n')));
      out.notes.emplace_back(ev::git_committed, std::move(d));
      x.details.set("commit", **c);
    } else {
      x.details.set("commit", json::value());
      x.details.set("note", "nothing to commit");
    }
  } else if (spec.kind == step_kind::push) {
    auto head = workspace::resolve(dir, "HEAD");
    if (!head) return failed(head.err());
    auto st_push =
        workspace::push_refs(dir, st.spec.repo, {"refs/heads/" + branch + ":refs/heads/" + branch},
                             cred_of(out.grants, cancel));
    if (!st_push) return failed(st_push.err());
    json::value d = json::value::make_object();
    d.set("branch", branch);
    d.set("commit", *head);
    d.set("remote", st.spec.repo);
    out.notes.emplace_back(ev::git_pushed, std::move(d));
    x.details.set("commit", *head);
  } else if (spec.kind == step_kind::pull_request) {
    x.details.set("forge", spec.forge);
    if (spec.forge != "none") {
      lease::pr_request r;
      r.forge = spec.forge;
      r.repo_url = st.spec.repo;
      r.head = branch;
      r.base = st.ws.get_string("base");
      r.title = spec.title;
      r.body = spec.body;
      if (const auto* g = current(out.grants)) {
        r.token = g->token;
        r.api_url = g->api_url;
      }
      if (r.api_url.empty()) r.api_url = lease::default_api_url(spec.forge, st.spec.repo);
      if (r.base.empty())
        return failed(error{errc::invalid_argument,
                            "pull_request: the remote has no default branch to merge into"});
      auto pr = lease::open_pull_request(r, std::chrono::seconds(60));
      if (!pr) return failed(pr.err());
      json::value d = json::value::make_object();
      d.set("url", pr->url);
      d.set("number", pr->number);
      d.set("head", branch);
      d.set("base", r.base);
      d.set("forge", spec.forge);
      if (pr->existed) d.set("existed", true);
      out.notes.emplace_back(ev::pr_opened, std::move(d));
      x.details.set("url", pr->url);
    } else {
      x.details.set("branch", branch);
    }
  }
  x.exit_code = 0;
  x.duration_ms = now_unix_ms() - started;
  return out;
}

setup_job plan_setup(const runtime& rt, const std::string& id, const std::vector<std::string>& run,
                     const std::map<std::string, std::string>& env, bool network) {
  setup_job job;
  job.run = run;
  job.npm_config = rt.cfg.sandbox.env;
  for (const auto& [k, v] : env) job.npm_config.push_back(k + "=" + v);
  job.workspace = workdir(rt, id);
  job.home = homedir(rt, id);
  job.network = network;
  // The sandbox's PATH is host directories bound read-only: `uv` is there if the host has it.
  std::vector<std::string> tool_dirs;
  auto path = rt.runner->layout_of(id).path;
  for (std::size_t at = 0; at <= path.size();) {
    auto colon = path.find(':', at);
    if (colon == std::string::npos) colon = path.size();
    if (colon > at) tool_dirs.push_back(path.substr(at, colon - at));
    at = colon + 1;
  }
  job.plan = run.empty() ? setup::detect(job.workspace, tool_dirs)
                         : setup::explicit_plan(job.workspace, tool_dirs, run);
  job.argv = setup::script(job.plan, run);
  if (auto st = setup::exclude_setup_outputs(job.workspace); !st)
    logger()->warn(
        "{}: setup outputs (.venv/, node_modules/, ...) are not excluded from commits: {}", id,
        st.err().message);
  return job;
}

namespace {

// A hash-pinned requirements.txt: the store's wheels into the session's wheel directory, and
// pip told to install from there — offline when the store had a file for every requirement,
// else after `pip download` fetched the rest there (where promote finds them).
void seed_pip(const runtime& rt, setup_job& job) {
  auto req = setup::read_workspace_file(job.workspace, "requirements.txt", 16 << 20);
  job.pip =
      req ? setup::parse_pip_pins(*req) : setup::pip_pins{{}, "requirements.txt is unreadable"};
  if (!job.pip.unshareable.empty()) {
    json::value n = json::value::make_object();
    n.set("shared", false);
    n.set("reason", job.pip.unshareable);
    job.cache.set("pip", std::move(n));
    return;
  }
  auto report = rt.cache->seed_pip(job.pip, job.home);
  const std::string wheels = "\"$HOME/" + std::string(setup::pip_wheel_dir) + "\"";
  auto install = ".venv/bin/pip install --no-index --find-links " + wheels + " -r requirements.txt";
  auto& st = job.plan.steps[static_cast<std::size_t>(job.pip_step)];
  st.command = "python3 -m venv .venv && " + (report.get_bool("complete")
                                                  ? install
                                                  : ".venv/bin/pip download --dest " + wheels +
                                                        " -r requirements.txt && " + install);
  job.cache.set("pip", std::move(report));
  job.argv = setup::script(job.plan, job.run);
}

}  // namespace

void begin_setup(const runtime& rt, setup_job& job) {
  setup::clear_report(job.home);
  if (!rt.cache) return;
  // The home is the sandbox user's: made here if the sandbox has not made it yet.
  std::error_code ec;
  if (!sfs::exists(job.home, ec)) {
    sfs::create_directories(job.home, ec);
    // A home the sandbox user cannot own is unwritable to it: its tools' caches then miss.
    if (rt.ws_uid >= 0)
      (void)::chown(job.home.c_str(), static_cast<uid_t>(rt.ws_uid),
                    static_cast<gid_t>(rt.ws_gid >= 0 ? rt.ws_gid : rt.ws_uid));
    ::chmod(job.home.c_str(), 0700);
  }
  job.cache = rt.cache->seed(job.workspace, job.home);
  int go_step = -1, rust_step = -1;
  for (std::size_t i = 0; i < job.plan.steps.size(); ++i) {
    const auto& st = job.plan.steps[i];
    if (st.manager == "npm" && st.command.rfind("npm ci", 0) == 0)
      job.npm_step = static_cast<int>(i);
    if (st.manager == "python3" && st.why == "requirements.txt") job.pip_step = static_cast<int>(i);
    if (st.ecosystem == "go" && st.why == "go.sum") go_step = static_cast<int>(i);
    if (st.ecosystem == "rust" && st.why == "Cargo.lock") rust_step = static_cast<int>(i);
  }
  if (job.pip_step >= 0) seed_pip(rt, job);
  if (go_step >= 0)
    if (auto sum = setup::read_workspace_file(job.workspace, "go.sum", 64 << 20)) {
      job.go = setup::parse_go_sum(*sum);
      job.cache.set("go", rt.cache->seed_go(job.go, job.home));
    }
  if (rust_step >= 0)
    if (auto lock = setup::read_workspace_file(job.workspace, "Cargo.lock", 64 << 20)) {
      job.crates = setup::parse_cargo_lock(*lock);
      job.cache.set("cargo", rt.cache->seed_cargo(job.crates, job.home));
    }
  if (job.npm_step < 0) return;
  auto& npm = job.plan.steps[static_cast<std::size_t>(job.npm_step)];
  // Files of the workspace and the home are the session's: read without following links.
  auto config = job.npm_config;
  for (const auto* dir : {&job.workspace, &job.home})
    if (auto text = setup::read_workspace_file(*dir, ".npmrc", 1 << 20)) {
      std::size_t at = 0;
      while (at < text->size()) {
        auto nl = text->find('\n', at);
        if (nl == std::string::npos) nl = text->size();
        config.push_back(text->substr(at, nl - at));
        at = nl + 1;
      }
    }
  auto pkg = setup::read_workspace_file(job.workspace, "package.json", 16 << 20);
  auto lock = setup::read_workspace_file(job.workspace, npm.why, 256 << 20);
  job.tree = pkg && lock ? setup::plan_npm_tree(*pkg, *lock, config)
                         : setup::npm_tree{{}, "package.json or " + npm.why + " is unreadable", {}};
  job.tree_use = rt.cache->restore_npm_tree(job.tree, job.workspace);
  if (job.tree_use.state != "restored") return;
  npm.restored = "restored node_modules from the node's cache (" +
                 std::to_string(job.tree_use.packages) + " packages, tree " +
                 job.tree.key.substr(0, 12) + ") instead of " + npm.command;
  job.argv = setup::script(job.plan, job.run);
}

void end_setup(const runtime& rt, setup_job& job) {
  if (rt.cache) rt.cache->promote(job.home, job.cache);
  job.ran = setup::read_report(job.home);
  setup::clear_report(job.home);
  if (rt.cache && job.pip_step >= 0 && job.pip.unshareable.empty() && job.cache.find("pip")) {
    auto n = *job.cache.find("pip");
    rt.cache->promote_pip(job.pip, job.home, n);
    job.cache.set("pip", std::move(n));
  }
  if (rt.cache && !job.go.empty() && job.cache.find("go")) {
    auto n = *job.cache.find("go");
    rt.cache->promote_go(job.go, job.home, n);
    job.cache.set("go", std::move(n));
  }
  if (rt.cache && !job.crates.empty() && job.cache.find("cargo")) {
    auto n = *job.cache.find("cargo");
    rt.cache->promote_cargo(job.crates, job.home, n);
    job.cache.set("cargo", std::move(n));
  }
  if (job.npm_step < 0 || !rt.cache) return;
  auto i = static_cast<std::size_t>(job.npm_step);
  if (job.tree_use.state == "restored") {
    job.ran.push_back({i, 0, job.tree_use.ms});
    std::sort(job.ran.begin(), job.ran.end(),
              [](const setup::ran& a, const setup::ran& b) { return a.index < b.index; });
  } else if (job.tree_use.state == "absent") {
    // npm ci installed what the lockfile pins: the next session gets the tree, built by the
    // node from the tarballs it verified, never from what this session's npm left.
    for (const auto& r : job.ran)
      if (r.index == i && r.exit_code == 0) job.tree_use = rt.cache->build_npm_tree_later(job.tree);
  }
  if (!job.tree_use.state.empty() && job.cache.is_object()) {
    json::value n = job.cache.find("npm") ? *job.cache.find("npm") : json::value::make_object();
    n.set("tree", job.tree_use.to_json());
    job.cache.set("npm", std::move(n));
  }
}

void describe_setup(const setup_job& job, exit_result& x) {
  x.details = setup::details(job.plan, job.ran);
  if (!job.cache.is_null()) x.details.set("cache", job.cache);
  if (!x.start_failed && !x.timed_out && !x.interrupted && x.exit_code != 0 && x.signal == 0)
    if (auto why = setup::failure_reason(job.plan, job.ran, job.network)) x.error = *why;
}

std::int64_t renew_due_ms(const runtime& rt, const std::vector<lease::grant>& grants) {
  std::int64_t due = 0;
  for (const auto& g : grants) {
    if (!g.expires_ms || g.retired) continue;
    auto before = rt.cfg.credentials.renew_before.count();
    if (g.issued_ms > 0) before = std::min<std::int64_t>(before, (g.expires_ms - g.issued_ms) / 2);
    auto at = g.expires_ms - before;
    due = due == 0 ? at : std::min(due, at);
  }
  return due;
}

outcome renew(runtime& rt, const std::string& session, std::vector<lease::grant> grants) {
  outcome out;
  auto now = now_unix_ms();
  std::vector<lease::grant> fresh_ones;
  for (auto& g : grants) {
    auto due = renew_due_ms(rt, {g});
    auto* p = rt.credentials ? rt.credentials->for_grant(g) : nullptr;
    if (!due || due > now || !p) {
      out.grants.push_back(std::move(g));
      continue;
    }
    auto fresh = p->mint(g.url);
    if (!fresh) {
      logger()->error("{}: renewing lease {} failed: {}; retrying", session, g.id,
                      fresh.err().message);
      out.grants.push_back(std::move(g));
      continue;
    }
    if (rt.leases) {
      if (auto ok = rt.leases->put(session, *fresh); !ok) {
        // Unrecorded, the new lease could not be revoked after a crash: give it back and keep
        // the old one (tried again at the next renewal).
        auto back = p->revoke(*fresh);
        logger()->error("{}: renewing lease {}: the vault cannot record the new one ({}); {}",
                        session, g.id, ok.err().message,
                        back ? "revoked it" : "revoking it failed too: " + back.err().message);
        out.grants.push_back(std::move(g));
        continue;
      }
    }
    // The old token is retired, not revoked yet: a clone or push that started with it must not
    // be cut off. It is revoked with the others when the session ends.
    g.retired = true;
    if (rt.leases)
      if (auto ok = rt.leases->put(session, g); !ok)
        // Still in the vault (as live): after a crash it is revoked like any other.
        logger()->warn("{}: marking lease {} retired in the vault failed: {}", session, g.id,
                       ok.err().message);
    json::value d = fresh->metadata();
    d.set("replaces", g.id);
    out.notes.emplace_back(ev::lease_renewed, std::move(d));
    out.grants.push_back(std::move(g));
    fresh_ones.push_back(std::move(*fresh));
  }
  for (auto& f : fresh_ones) out.grants.push_back(std::move(f));  // newest last: used next
  return out;
}

namespace {
// A revoked lease leaves the vault. If that write fails the entry stays, and the next start's
// sweep tries to revoke it once more (and logs what the provider says).
void forget_lease(runtime& rt, const std::string& session, const std::string& id) {
  if (!rt.leases) return;
  if (auto ok = rt.leases->remove(session, id); !ok)
    logger()->warn("{}: removing revoked lease {} from the vault failed: {}", session, id,
                   ok.err().message);
}
}  // namespace

outcome revoke_all(runtime& rt, const std::string& session, std::vector<lease::grant> grants,
                   const json::value& journal_live) {
  outcome out;
  std::set<std::string> held;
  for (auto& g : grants) {
    held.insert(g.id);
    auto* p = rt.credentials ? rt.credentials->for_grant(g) : nullptr;
    if (!p) {
      forget_lease(rt, session, g.id);
      out.notes.emplace_back(ev::lease_revoked,
                             revoked_note(g, false, "its provider is no longer configured"));
      continue;
    }
    auto ok = p->revoke(g);
    if (!ok) {
      rt.counters.lease_revoke_failures++;
      logger()->error("{}: revoking lease {} failed: {}; retrying with backoff", session, g.id,
                      ok.err().message);
      out.still_live.push_back(g.id);
      out.grants.push_back(std::move(g));
      continue;
    }
    forget_lease(rt, session, g.id);
    out.notes.emplace_back(ev::lease_revoked, revoked_note(g, p->revocable(), ""));
  }
  // Leases the journal holds live whose token this node never had (another node minted them):
  // nothing can revoke them here; they run out at their expiry.
  if (journal_live.is_object())
    for (const auto& [id, meta] : journal_live.as_object()) {
      if (held.count(id)) continue;
      lease::grant g;
      g.id = id;
      g.provider = meta.get_string("provider");
      auto expires = meta.get_string("expires_at");
      out.notes.emplace_back(
          ev::lease_revoked,
          revoked_note(g, false,
                       "its token is not held by this node" +
                           (expires.empty() ? std::string() : "; it expires at " + expires)));
    }
  return out;
}

outcome remove_workspace(runtime& rt, const session_state& st) {
  outcome out;
  if (rt.runner) rt.runner->release(st.id);  // the sandbox lets go of the workspace first
  auto dir = workdir(rt, st.id);
  bool existed = sfs::exists(dir);
  fs::remove_tree(dir);
  if (!rt.home_root.empty()) fs::remove_tree(homedir(rt, st.id));
  if (st.has_repo() && !st.ws.get_bool("removed")) {
    json::value d = json::value::make_object();
    d.set("existed", existed);
    out.notes.emplace_back(ev::workspace_removed, std::move(d));
  }
  return out;
}

namespace {
// Made before this run of the node started (a session placed since then is not a leftover).
bool older_than_start(const runtime& rt, const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return false;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1'000'000 <
         rt.started_ms;
}
}  // namespace

void sweep_workspaces(runtime& rt, const std::vector<std::string>& live_sessions) {
  std::set<std::string> live(live_sessions.begin(), live_sessions.end());
  std::size_t removed = 0;
  for (const auto& root : {rt.work_root, rt.home_root}) {
    if (root.empty()) continue;
    std::error_code ec;
    for (const auto& e : sfs::directory_iterator(root, ec)) {
      auto name = e.path().filename().string();
      if (live.count(name) || !older_than_start(rt, e.path().string())) continue;
      fs::remove_tree(e.path().string());
      removed += root == rt.work_root;
    }
  }
  if (removed)
    logger()->info("removed {} workspace(s) of sessions this node no longer runs", removed);
  // Leases in the vault of sessions this node does not run: revoke them now.
  if (!rt.leases) return;
  for (auto& [session, gs] : rt.leases->all()) {
    if (live.count(session) || !older_than_start(rt, rt.leases->dir() + "/" + session + ".json"))
      continue;
    for (const auto& g : gs) {
      auto* p = rt.credentials ? rt.credentials->for_grant(g) : nullptr;
      auto ok = p ? p->revoke(g) : status{};
      if (!ok) {
        rt.counters.lease_revoke_failures++;
        logger()->error("{}: revoking leftover lease {} failed: {}", session, g.id,
                        ok.err().message);
        continue;
      }
      forget_lease(rt, session, g.id);
      logger()->info("{}: revoked leftover lease {} of a session this node no longer runs", session,
                     g.id);
    }
  }
}

}  // namespace berth::session::wsops
