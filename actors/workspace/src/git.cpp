#include "berth/workspace/git.hpp"

#include <git2.h>
#include <git2/sys/repository.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <set>

namespace berth::workspace {

namespace {

// libgit2 once per process, with the machine's global, XDG and system configuration shut out:
// a workspace must behave the same on every node (no url.insteadOf, credential helpers...).
void init_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    git_libgit2_init();
    for (int level : {GIT_CONFIG_LEVEL_SYSTEM, GIT_CONFIG_LEVEL_XDG, GIT_CONFIG_LEVEL_GLOBAL,
                      GIT_CONFIG_LEVEL_PROGRAMDATA})
      git_libgit2_opts(GIT_OPT_SET_SEARCH_PATH, level, "");
    // Workspaces belong to the sandbox user, and the node opens them as root: the ownership
    // check (safe.directory) guards shared directories; these are the node's own, under its
    // data dir, and only libgit2 (which runs no hooks, filters or fsmonitor) opens them.
    git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
  });
}

error lib_error(const std::string& what, int rc) {
  const ::git_error* e = git_error_last();
  std::string msg =
      what + ": " +
      (e && e->message ? std::string(e->message) : "libgit2 error " + std::to_string(rc));
  errc code = errc::io_error;
  if (rc == GIT_ENOTFOUND) code = errc::not_found;
  if (rc == GIT_EAUTH) code = errc::permission_denied;
  if (e && (e->klass == GIT_ERROR_NET || e->klass == GIT_ERROR_HTTP)) code = errc::unavailable;
  return error{code, msg};
}

template <class T>
using owned = std::unique_ptr<T, void (*)(T*)>;

}  // namespace

namespace {

struct push_auth {
  credential cred;
  int attempts = 0;
  std::string rejected;  ///< the server's reason for refusing a ref, if it did
};

bool cancelled(void* payload) {
  const auto* c = static_cast<push_auth*>(payload)->cred.cancel;
  return c && c->load(std::memory_order_relaxed);
}

// Progress callbacks: the points where libgit2 lets a transfer be abandoned.
void watch_cancel(git_remote_callbacks& cb) {
  cb.transfer_progress = [](const git_indexer_progress*, void* p) { return cancelled(p) ? -1 : 0; };
  cb.sideband_progress = [](const char*, int, void* p) { return cancelled(p) ? -1 : 0; };
  cb.push_transfer_progress = [](unsigned int, unsigned int, size_t, void* p) {
    return cancelled(p) ? -1 : 0;
  };
  cb.pack_progress = [](int, std::uint32_t, std::uint32_t, void* p) {
    return cancelled(p) ? -1 : 0;
  };
}

int ref_status(const char* ref, const char* status, void* payload) {
  if (status) static_cast<push_auth*>(payload)->rejected = std::string(ref) + ": " + status;
  return 0;
}

int credentials(git_credential** out, const char*, const char*, unsigned int allowed,
                void* payload) {
  auto* a = static_cast<push_auth*>(payload);
  // Offered once: a second request means the forge refused it.
  if (a->cred.token.empty() || a->attempts++ > 0 || !(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT))
    return GIT_EAUTH;
  return git_credential_userpass_plaintext_new(out, a->cred.username.c_str(),
                                               a->cred.token.c_str());
}

}  // namespace

mirror_cache::mirror_cache(std::string root) : root_(std::move(root)) {
  init_library();
}

std::string mirror_cache::path_of(const std::string& url) const {
  // Readable and unique: the URL's last component plus a hash of the whole URL.
  auto name = url.substr(url.find_last_of('/') + 1);
  for (auto& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '_';
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016zx", std::hash<std::string>{}(url));
  return root_ + "/" + name + "-" + hash;
}

result<std::string> mirror_cache::update(const std::string& url, const credential& cred) {
  std::shared_ptr<std::mutex> lock;
  {
    std::lock_guard g(mu_);
    auto& l = locks_[url];
    if (!l) l = std::make_shared<std::mutex>();
    lock = l;
  }
  std::lock_guard serial(*lock);
  auto path = path_of(url);
  git_repository* raw = nullptr;
  int rc = 0;
  bool fresh = !std::filesystem::exists(path + "/HEAD");
  if (fresh) {
    std::error_code ec;
    std::filesystem::create_directories(root_, ec);
    rc = git_repository_init(&raw, path.c_str(), 1);
  } else {
    rc = git_repository_open_bare(&raw, path.c_str());
  }
  if (rc < 0) return lib_error("mirror " + path, rc);
  owned<git_repository> repo(raw, git_repository_free);
  git_remote* rraw = nullptr;
  rc = fresh ? git_remote_create_with_fetchspec(&rraw, repo.get(), "origin", url.c_str(),
                                                "+refs/*:refs/*")
             : git_remote_lookup(&rraw, repo.get(), "origin");
  if (rc < 0) return lib_error("mirror " + path + ": remote", rc);
  owned<git_remote> remote(rraw, git_remote_free);
  git_fetch_options fo = GIT_FETCH_OPTIONS_INIT;
  fo.prune = GIT_FETCH_PRUNE;
  fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_ALL;
  push_auth auth{cred};
  fo.callbacks.credentials = credentials;
  fo.callbacks.payload = &auth;
  watch_cancel(fo.callbacks);
  rc = git_remote_fetch(remote.get(), nullptr, &fo, "berth: mirror update");
  if (rc < 0) {
    auto e = cancelled(&auth) ? error{errc::cancelled, "fetch " + url + ": cancelled"}
             : rc == GIT_EAUTH || auth.attempts > 1
                 ? error{errc::permission_denied, "authentication failed for " + url}
                 : lib_error("fetch " + url, rc);
    if (fresh) {
      repo.reset();
      std::error_code ec;
      std::filesystem::remove_all(path, ec);  // no half-made mirror
    }
    return e;
  }
  // The mirror's HEAD follows the remote's default branch, so that a clone of the mirror
  // without a ref gets what a clone of the remote would.
  git_buf head = GIT_BUF_INIT;
  if (git_remote_default_branch(&head, remote.get()) == 0) {
    git_repository_set_head(repo.get(), head.ptr);
    git_buf_dispose(&head);
  }
  return path;
}

namespace {

// Whether the commit's tree holds a .gitattributes file anywhere.
bool has_attributes(git_commit* commit) {
  git_tree* tree = nullptr;
  if (git_commit_tree(&tree, commit) < 0) return true;  // cannot tell: keep filters on
  bool found = false;
  git_tree_walk(
      tree, GIT_TREEWALK_PRE,
      [](const char*, const git_tree_entry* e, void* payload) {
        if (std::string_view(git_tree_entry_name(e)) == ".gitattributes") {
          *static_cast<bool*>(payload) = true;
          return -1;  // stop
        }
        return 0;
      },
      &found);
  git_tree_free(tree);
  return found;
}

}  // namespace

status check_remote_allowed(const std::string& url, const std::vector<std::string>& allowlist) {
  if (!url.starts_with("file://")) return {};
  auto path = std::filesystem::path(url.substr(7)).lexically_normal();
  for (const auto& allowed : allowlist) {
    if (allowed.empty() || allowed.front() != '/') continue;
    auto rel = path.lexically_relative(std::filesystem::path(allowed).lexically_normal());
    if (!rel.empty() && *rel.begin() != ".." && rel != ".") return {};
  }
  return error{errc::invalid_argument,
               "repo: file:// remotes outside workspace.file_allowlist are refused (" + url + ")"};
}

result<std::string> clone_workspace(const std::string& mirror, const std::string& url,
                                    const std::string& dest, const clone_options& opts) {
  init_library();
  git_clone_options co = GIT_CLONE_OPTIONS_INIT;
  co.checkout_opts.checkout_strategy = GIT_CHECKOUT_NONE;  // checked out below, at `ref`
  git_repository* raw = nullptr;
  int rc = git_clone(&raw, mirror.c_str(), dest.c_str(), &co);
  if (rc < 0) return lib_error("clone into " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  if ((rc = git_remote_set_url(repo.get(), "origin", url.c_str())) < 0)
    return lib_error("set origin", rc);
  // The ref: a branch of the remote, a tag, or a commit; default: the remote's HEAD.
  git_object* oraw = nullptr;
  std::string spec;
  for (const auto& candidate : opts.ref.empty()
                                   ? std::vector<std::string>{"HEAD"}
                                   : std::vector<std::string>{"refs/remotes/origin/" + opts.ref,
                                                              "refs/tags/" + opts.ref, opts.ref}) {
    if (git_revparse_single(&oraw, repo.get(), (candidate + "^{commit}").c_str()) == 0) {
      spec = candidate;
      break;
    }
  }
  if (!oraw) {
    git_reference_iterator* it = nullptr;
    git_reference* any = nullptr;
    bool empty = git_reference_iterator_new(&it, repo.get()) == 0 &&
                 git_reference_next(&any, it) == GIT_ITEROVER;
    git_reference_free(any);
    git_reference_iterator_free(it);
    if (empty)
      return error{errc::not_found, "repo: " + url + " is an empty repository (no commits)"};
    if (opts.ref.empty())
      return error{errc::not_found,
                   "repo: " + url + " has no default branch to check out; give a ref"};
    return error{errc::not_found,
                 "ref: \"" + opts.ref + "\" is no branch, tag or commit of " + url};
  }
  owned<git_object> target(oraw, git_object_free);
  auto* commit = reinterpret_cast<git_commit*>(target.get());
  char id[GIT_OID_HEXSZ + 1];
  git_oid_tostr(id, sizeof(id), git_commit_id(commit));
  if (!opts.branch.empty()) {
    git_reference* bref = nullptr;
    rc = git_branch_create(&bref, repo.get(), opts.branch.c_str(), commit, 0);
    if (rc < 0) return lib_error("branch " + opts.branch, rc);
    git_reference_free(bref);
    if ((rc = git_repository_set_head(repo.get(), ("refs/heads/" + opts.branch).c_str())) < 0)
      return lib_error("checkout " + opts.branch, rc);
  } else if ((rc = git_repository_set_head_detached(repo.get(), git_commit_id(commit))) < 0) {
    return lib_error("checkout " + opts.ref, rc);
  }
  git_checkout_options cko = GIT_CHECKOUT_OPTIONS_INIT;
  cko.checkout_strategy = GIT_CHECKOUT_FORCE;
  // Without any .gitattributes no filter can apply (Berth reads no core.autocrlf), and libgit2
  // 1.5 resolves every file's directory with realpath(3) to look for attributes: skipping
  // that halves the checkout of a large tree.
  if (!has_attributes(commit)) cko.disable_filters = 1;
  if ((rc = git_checkout_head(repo.get(), &cko)) < 0) return lib_error("checkout", rc);
  git_config* craw = nullptr;
  if ((rc = git_repository_config(&craw, repo.get())) < 0) return lib_error("config", rc);
  owned<git_config> cfg(craw, git_config_free);
  git_config_set_string(cfg.get(), "user.name", opts.author_name.c_str());
  git_config_set_string(cfg.get(), "user.email", opts.author_email.c_str());
  return std::string(id);
}

namespace {

// Commit every file of the workspace onto `ref` (updated), with `parent_spec` as the parent;
// nullopt when the tree equals the parent's. Shared by commit_all and checkpoint.
// `own_index` (a file under .git) stages into an index of its own, so that the repository's
// index — what the agent and `git status` see — is left as it was.
result<std::optional<std::string>> commit_tree(const std::string& dest, const char* ref,
                                               const std::string& parent_spec,
                                               const std::string& message,
                                               const std::string& own_index = {},
                                               bool carry_head = false) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("workspace " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  git_index* iraw = nullptr;
  if (own_index.empty()) {
    if ((rc = git_repository_index(&iraw, repo.get())) < 0) return lib_error("index", rc);
  } else {
    auto path = std::string(git_repository_path(repo.get())) + own_index;
    // Seeded from the repository's index on first use: its stat data (from the checkout) lets
    // staging skip every unchanged file instead of hashing the whole tree.
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      std::filesystem::copy_file(std::string(git_repository_path(repo.get())) + "index", path, ec);
    if ((rc = git_index_open(&iraw, path.c_str())) < 0) return lib_error("index " + path, rc);
    // Owned by this repository object only (in memory): the repository's own index file is
    // not touched.
    git_repository_set_index(repo.get(), iraw);
  }
  owned<git_index> index(iraw, git_index_free);
  const char* all = "*";
  git_strarray paths{const_cast<char**>(&all), 1};
  if ((rc = git_index_add_all(index.get(), &paths, GIT_INDEX_ADD_DEFAULT, nullptr, nullptr)) < 0 ||
      (rc = git_index_update_all(index.get(), &paths, nullptr, nullptr)) < 0 ||
      (rc = git_index_write(index.get())) < 0)
    return lib_error("staging the changes of " + dest, rc);
  git_oid tree_id;
  if ((rc = git_index_write_tree(&tree_id, index.get())) < 0) return lib_error("tree", rc);
  git_object* hraw = nullptr;
  if ((rc = git_revparse_single(&hraw, repo.get(), (parent_spec + "^{commit}").c_str())) < 0)
    return lib_error(parent_spec + " of " + dest, rc);
  owned<git_object> head(hraw, git_object_free);
  auto* parent = reinterpret_cast<git_commit*>(head.get());
  // `carry_head`: HEAD becomes a second parent unless the first already reaches it, so that
  // the commits the session made travel with a pushed checkpoint.
  git_object* xraw = nullptr;
  if (carry_head && git_revparse_single(&xraw, repo.get(), "HEAD^{commit}") == 0) {
    const auto* x = git_commit_id(reinterpret_cast<git_commit*>(xraw));
    const auto* p = git_commit_id(parent);
    if (git_oid_equal(x, p) || git_graph_descendant_of(repo.get(), p, x) == 1) {
      git_object_free(xraw);
      xraw = nullptr;
    }
  }
  owned<git_object> extra(xraw, git_object_free);
  if (git_oid_equal(&tree_id, git_commit_tree_id(parent)) && !extra)
    return std::optional<std::string>();
  git_tree* traw = nullptr;
  if ((rc = git_tree_lookup(&traw, repo.get(), &tree_id)) < 0) return lib_error("tree", rc);
  owned<git_tree> tree(traw, git_tree_free);
  git_signature* sraw = nullptr;
  if ((rc = git_signature_default(&sraw, repo.get())) < 0)
    return lib_error("commit identity (user.name, user.email)", rc);
  owned<git_signature> sig(sraw, git_signature_free);
  git_oid id;
  const git_commit* parents[] = {parent, reinterpret_cast<git_commit*>(extra.get())};
  if ((rc = git_commit_create(&id, repo.get(), ref, sig.get(), sig.get(), nullptr, message.c_str(),
                              tree.get(), extra ? 2 : 1, parents)) < 0)
    return lib_error("commit in " + dest, rc);
  char hex[GIT_OID_HEXSZ + 1];
  git_oid_tostr(hex, sizeof(hex), &id);
  return std::optional<std::string>(hex);
}

}  // namespace

result<std::optional<std::string>> commit_all(const std::string& dest, const std::string& message) {
  return commit_tree(dest, "HEAD", "HEAD", message);
}

result<std::optional<std::string>> checkpoint(const std::string& dest, const std::string& session) {
  init_library();
  auto ref = "refs/berth/checkpoints/" + session;
  // The previous checkpoint if there is one, else where the session's branch is.
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("workspace " + dest, rc);
  git_reference* existing = nullptr;
  bool have = git_reference_lookup(&existing, raw, ref.c_str()) == 0;
  git_reference_free(existing);
  git_repository_free(raw);
  return commit_tree(dest, ref.c_str(), have ? ref : std::string("HEAD"),
                     "berth checkpoint of session " + session, "berth-checkpoint-index", true);
}

namespace {
const char* delta_name(git_delta_t d) {
  switch (d) {
    case GIT_DELTA_ADDED:
      return "added";
    case GIT_DELTA_DELETED:
      return "deleted";
    case GIT_DELTA_MODIFIED:
      return "modified";
    case GIT_DELTA_RENAMED:
      return "renamed";
    case GIT_DELTA_COPIED:
      return "copied";
    case GIT_DELTA_TYPECHANGE:
      return "typechange";
    default:
      return "changed";
  }
}
}  // namespace

result<change_set> diff_commits(const std::string& dest, const std::string& from,
                                const std::string& to, std::size_t max_patch_bytes) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("repository " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  auto tree_of = [&](const std::string& rev) -> result<owned<git_tree>> {
    git_object* obj = nullptr;
    int r = git_revparse_single(&obj, repo.get(), (rev + "^{tree}").c_str());
    if (r < 0) return lib_error("commit " + rev, r);
    return owned<git_tree>(reinterpret_cast<git_tree*>(obj), git_tree_free);
  };
  auto a = tree_of(from);
  if (!a) return a.err();
  auto b = tree_of(to);
  if (!b) return b.err();
  git_diff_options o = GIT_DIFF_OPTIONS_INIT;
  git_diff* draw = nullptr;
  if ((rc = git_diff_tree_to_tree(&draw, repo.get(), a->get(), b->get(), &o)) < 0)
    return lib_error("diff " + from + ".." + to, rc);
  owned<git_diff> diff(draw, git_diff_free);
  git_diff_find_options fo = GIT_DIFF_FIND_OPTIONS_INIT;
  fo.flags = GIT_DIFF_FIND_RENAMES;
  git_diff_find_similar(diff.get(), &fo);
  change_set out;
  auto n = git_diff_num_deltas(diff.get());
  for (std::size_t i = 0; i < n; ++i) {
    git_patch* praw = nullptr;
    if ((rc = git_patch_from_diff(&praw, diff.get(), i)) < 0) return lib_error("diff", rc);
    const git_diff_delta* d = git_diff_get_delta(diff.get(), i);
    change_set::file f;
    f.path = d->new_file.path ? d->new_file.path : "";
    if (d->status == GIT_DELTA_DELETED && d->old_file.path) f.path = d->old_file.path;
    if (d->status == GIT_DELTA_RENAMED && d->old_file.path) f.old_path = d->old_file.path;
    f.status = delta_name(d->status);
    f.binary = (d->flags & GIT_DIFF_FLAG_BINARY) != 0;
    if (!praw) {  // binary: no patch object
      out.files.push_back(std::move(f));
      continue;
    }
    owned<git_patch> patch(praw, git_patch_free);
    std::size_t ctx = 0, add = 0, del = 0;
    git_patch_line_stats(&ctx, &add, &del, patch.get());
    f.additions = static_cast<std::int64_t>(add);
    f.deletions = static_cast<std::int64_t>(del);
    out.additions += f.additions;
    out.deletions += f.deletions;
    if (!out.truncated) {
      git_buf buf = GIT_BUF_INIT;
      if (git_patch_to_buf(&buf, patch.get()) == 0) {
        if (out.patch.size() + buf.size > max_patch_bytes)
          out.truncated = true;
        else
          out.patch.append(buf.ptr, buf.size);
      }
      git_buf_dispose(&buf);
    }
    out.files.push_back(std::move(f));
  }
  return out;
}

status push_refs(const std::string& dest, const std::string& url,
                 const std::vector<std::string>& refspecs, const credential& cred) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("workspace " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  git_remote_create_options ro = GIT_REMOTE_CREATE_OPTIONS_INIT;
  ro.repository = repo.get();
  ro.name = nullptr;  // anonymous: nothing of the repository's remote configuration applies
  ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
  git_remote* rraw = nullptr;
  if ((rc = git_remote_create_with_opts(&rraw, url.c_str(), &ro)) < 0)
    return lib_error("remote " + url, rc);
  owned<git_remote> remote(rraw, git_remote_free);
  push_auth auth{cred};
  git_push_options po = GIT_PUSH_OPTIONS_INIT;
  po.callbacks.credentials = credentials;
  po.callbacks.push_update_reference = ref_status;
  po.callbacks.payload = &auth;
  watch_cancel(po.callbacks);
  std::vector<char*> specs;
  std::vector<std::string> copies = refspecs;
  specs.reserve(copies.size());
  for (auto& sp : copies) specs.push_back(sp.data());
  git_strarray arr{specs.data(), specs.size()};
  rc = git_remote_push(remote.get(), &arr, &po);
  if (rc < 0 && cancelled(&auth)) return error{errc::cancelled, "push to " + url + ": cancelled"};
  if (rc == GIT_EAUTH || (rc < 0 && auth.attempts > 1))
    return error{errc::permission_denied, "authentication failed for " + url};
  if (rc < 0) return lib_error("push to " + url, rc);
  if (!auth.rejected.empty())
    return error{errc::conflict, "push to " + url + " refused: " + auth.rejected};
  return {};
}

status push_branch(const std::string& dest, const std::string& url, const std::string& branch,
                   const std::string& token) {
  return push_refs(dest, url, {"refs/heads/" + branch + ":refs/heads/" + branch},
                   credential{"x-access-token", token});
}

result<std::string> default_branch(const std::string& mirror) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open_bare(&raw, mirror.c_str());
  if (rc < 0) return lib_error("mirror " + mirror, rc);
  owned<git_repository> repo(raw, git_repository_free);
  git_reference* h = nullptr;
  if ((rc = git_reference_lookup(&h, repo.get(), "HEAD")) < 0) return lib_error("HEAD", rc);
  std::string target = git_reference_symbolic_target(h) ? git_reference_symbolic_target(h) : "";
  git_reference_free(h);
  if (!target.starts_with("refs/heads/"))
    return error{errc::not_found, "mirror " + mirror + ": HEAD names no branch"};
  return target.substr(11);
}

result<std::vector<std::string>> init_submodules(
    const std::string& dest, const std::function<status(const std::string& url)>& allowed,
    const credential& cred, const std::string& cred_prefix) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("workspace " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  std::vector<std::string> names;
  git_submodule_foreach(
      repo.get(),
      [](git_submodule*, const char* name, void* payload) {
        static_cast<std::vector<std::string>*>(payload)->push_back(name);
        return 0;
      },
      &names);
  std::vector<std::string> paths;
  for (const auto& name : names) {
    git_submodule* sraw = nullptr;
    if ((rc = git_submodule_lookup(&sraw, repo.get(), name.c_str())) < 0)
      return lib_error("submodule " + name, rc);
    owned<git_submodule> sm(sraw, git_submodule_free);
    const char* configured = git_submodule_url(sm.get());
    git_buf resolved = GIT_BUF_INIT;
    if (!configured || git_submodule_resolve_url(&resolved, repo.get(), configured) < 0)
      return error{errc::invalid_argument, "submodule " + name + ": has no usable url"};
    std::string url = resolved.ptr;
    git_buf_dispose(&resolved);
    if (auto ok = allowed(url); !ok)
      return error{ok.err().code, "submodule " + name + ": " + ok.err().message};
    // The resolved, checked URL is the one used, whatever .gitmodules says later.
    if ((rc = git_submodule_set_url(repo.get(), name.c_str(), url.c_str())) < 0 ||
        (rc = git_submodule_init(sm.get(), 1)) < 0)
      return lib_error("submodule " + name, rc);
    push_auth auth{url.starts_with(cred_prefix) && !cred_prefix.empty()
                       ? cred
                       : credential{.username = {}, .token = {}, .cancel = cred.cancel}};
    git_submodule_update_options uo = GIT_SUBMODULE_UPDATE_OPTIONS_INIT;
    uo.fetch_opts.callbacks.credentials = credentials;
    uo.fetch_opts.callbacks.payload = &auth;
    watch_cancel(uo.fetch_opts.callbacks);
    uo.checkout_opts.checkout_strategy = GIT_CHECKOUT_FORCE;
    rc = git_submodule_update(sm.get(), 0, &uo);
    if (rc == GIT_EAUTH || (rc < 0 && auth.attempts > 1))
      return error{errc::permission_denied,
                   "submodule " + name + ": authentication failed for " + url};
    if (rc < 0) return lib_error("submodule " + name + " (" + url + ")", rc);
    paths.push_back(git_submodule_path(sm.get()));
  }
  return paths;
}

result<std::string> resolve(const std::string& dest, const std::string& spec) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open_ext(&raw, dest.c_str(), GIT_REPOSITORY_OPEN_NO_SEARCH, nullptr);
  if (rc < 0) return lib_error("repository " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  git_object* o = nullptr;
  if ((rc = git_revparse_single(&o, repo.get(), (spec + "^{commit}").c_str())) < 0)
    return lib_error(spec + " in " + dest, rc);
  char hex[GIT_OID_HEXSZ + 1];
  git_oid_tostr(hex, sizeof(hex), git_object_id(o));
  git_object_free(o);
  return std::string(hex);
}

bool has_branch(const std::string& mirror, const std::string& ref) {
  init_library();
  git_repository* raw = nullptr;
  if (git_repository_open_bare(&raw, mirror.c_str()) < 0) return false;
  git_reference* r = nullptr;
  bool found = git_reference_lookup(&r, raw, ("refs/heads/" + ref).c_str()) == 0;
  git_reference_free(r);
  git_repository_free(raw);
  return found;
}

status restore_checkpoint(const std::string& dest, const std::string& mirror,
                          const std::string& session, const std::string& commit) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("workspace " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  auto ref = "refs/berth/checkpoints/" + session;
  {
    git_remote_create_options ro = GIT_REMOTE_CREATE_OPTIONS_INIT;
    ro.repository = repo.get();
    ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
    git_remote* rraw = nullptr;
    if ((rc = git_remote_create_with_opts(&rraw, mirror.c_str(), &ro)) < 0)
      return lib_error("mirror " + mirror, rc);
    owned<git_remote> remote(rraw, git_remote_free);
    auto spec = "+" + ref + ":" + ref;
    char* specs[] = {spec.data()};
    git_strarray arr{specs, 1};
    git_fetch_options fo = GIT_FETCH_OPTIONS_INIT;
    fo.download_tags = GIT_REMOTE_DOWNLOAD_TAGS_NONE;
    if ((rc = git_remote_fetch(remote.get(), &arr, &fo, nullptr)) < 0)
      return lib_error("fetching the checkpoint of session " + session + " from the mirror", rc);
  }
  git_object* craw = nullptr;
  if ((rc = git_revparse_single(&craw, repo.get(), (commit + "^{commit}").c_str())) < 0)
    return lib_error("checkpoint " + commit, rc);
  owned<git_object> cp(craw, git_object_free);
  // Write the checkpoint's files into the working tree through a scratch index, so that the
  // repository's index keeps matching HEAD.
  git_index* iraw = nullptr;
  if ((rc = git_index_new(&iraw)) < 0) return lib_error("index", rc);
  owned<git_index> scratch(iraw, git_index_free);
  git_tree* traw = nullptr;
  if ((rc = git_commit_tree(&traw, reinterpret_cast<git_commit*>(cp.get()))) < 0)
    return lib_error("checkpoint tree", rc);
  owned<git_tree> tree(traw, git_tree_free);
  if ((rc = git_index_read_tree(scratch.get(), tree.get())) < 0) return lib_error("index", rc);
  git_checkout_options co = GIT_CHECKOUT_OPTIONS_INIT;
  co.checkout_strategy =
      GIT_CHECKOUT_FORCE | GIT_CHECKOUT_REMOVE_UNTRACKED | GIT_CHECKOUT_DONT_UPDATE_INDEX;
  if ((rc = git_checkout_index(repo.get(), scratch.get(), &co)) < 0)
    return lib_error("restoring checkpoint " + commit + " into " + dest, rc);
  return {};
}

status reset_branch(const std::string& dest, const std::string& commit) {
  init_library();
  git_repository* raw = nullptr;
  int rc = git_repository_open(&raw, dest.c_str());
  if (rc < 0) return lib_error("workspace " + dest, rc);
  owned<git_repository> repo(raw, git_repository_free);
  git_object* craw = nullptr;
  if ((rc = git_revparse_single(&craw, repo.get(), (commit + "^{commit}").c_str())) < 0)
    return lib_error("commit " + commit, rc);
  owned<git_object> c(craw, git_object_free);
  if ((rc = git_reset(repo.get(), c.get(), GIT_RESET_MIXED, nullptr)) < 0)
    return lib_error("moving the branch of " + dest + " to " + commit, rc);
  return {};
}

status create_repository(const std::string& path, const std::map<std::string, std::string>& files,
                         const std::string& message) {
  init_library();
  git_repository_init_options io = GIT_REPOSITORY_INIT_OPTIONS_INIT;
  io.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH;
  io.initial_head = "main";
  git_repository* raw = nullptr;
  int rc = git_repository_init_ext(&raw, path.c_str(), &io);
  if (rc < 0) return lib_error("init " + path, rc);
  owned<git_repository> repo(raw, git_repository_free);
  // Nested paths: trees are built bottom-up, directory by directory.
  std::map<std::string, std::map<std::string, git_oid>> blobs;
  std::set<std::string> all_dirs = {""};
  for (const auto& [file, content] : files) {
    git_oid b;
    if ((rc = git_blob_create_from_buffer(&b, repo.get(), content.data(), content.size())) < 0)
      return lib_error("blob " + file, rc);
    auto slash = file.rfind('/');
    auto dir = slash == std::string::npos ? std::string() : file.substr(0, slash);
    blobs[dir][file.substr(slash == std::string::npos ? 0 : slash + 1)] = b;
    for (auto d = dir; !d.empty();
         d = d.find('/') == std::string::npos ? "" : d.substr(0, d.rfind('/')))
      all_dirs.insert(d);
  }
  std::map<std::string, git_oid> trees;
  for (auto it = all_dirs.rbegin(); it != all_dirs.rend(); ++it) {  // children sort after parents
    const auto& dir = *it;
    git_treebuilder* tb = nullptr;
    if ((rc = git_treebuilder_new(&tb, repo.get(), nullptr)) < 0) return lib_error("tree", rc);
    owned<git_treebuilder> builder(tb, git_treebuilder_free);
    for (const auto& [name, oid] : blobs[dir])
      git_treebuilder_insert(nullptr, builder.get(), name.c_str(), &oid, GIT_FILEMODE_BLOB);
    for (const auto& [sub, oid] : trees) {
      auto parent =
          sub.find('/') == std::string::npos ? std::string() : sub.substr(0, sub.rfind('/'));
      if (parent != dir || sub == dir) continue;
      auto name = sub.substr(parent.empty() ? 0 : parent.size() + 1);
      git_treebuilder_insert(nullptr, builder.get(), name.c_str(), &oid, GIT_FILEMODE_TREE);
    }
    git_oid t;
    if ((rc = git_treebuilder_write(&t, builder.get())) < 0) return lib_error("tree", rc);
    trees[dir] = t;
  }
  git_tree* traw = nullptr;
  if ((rc = git_tree_lookup(&traw, repo.get(), &trees[""])) < 0) return lib_error("tree", rc);
  owned<git_tree> tree(traw, git_tree_free);
  git_signature* sraw = nullptr;
  if ((rc = git_signature_now(&sraw, "Berth", "berth@localhost")) < 0)
    return lib_error("signature", rc);
  owned<git_signature> sig(sraw, git_signature_free);
  git_oid id;
  if ((rc = git_commit_create(&id, repo.get(), "refs/heads/main", sig.get(), sig.get(), nullptr,
                              message.c_str(), tree.get(), 0, nullptr)) < 0)
    return lib_error("commit", rc);
  return {};
}

}  // namespace berth::workspace
