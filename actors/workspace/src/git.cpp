#include "berth/workspace/git.hpp"

#include <git2.h>
#include <git2/sys/repository.h>

#include <cstdio>
#include <filesystem>
#include <functional>

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

result<std::string> mirror_cache::update(const std::string& url) {
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
  rc = git_remote_fetch(remote.get(), nullptr, &fo, "berth: mirror update");
  if (rc < 0) {
    auto e = lib_error("fetch " + url, rc);
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
  if (!oraw)
    return error{errc::not_found,
                 "ref: \"" + opts.ref + "\" is no branch, tag or commit of " + url};
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
                                               const std::string& own_index = {}) {
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
  if (git_oid_equal(&tree_id, git_commit_tree_id(parent))) return std::optional<std::string>();
  git_tree* traw = nullptr;
  if ((rc = git_tree_lookup(&traw, repo.get(), &tree_id)) < 0) return lib_error("tree", rc);
  owned<git_tree> tree(traw, git_tree_free);
  git_signature* sraw = nullptr;
  if ((rc = git_signature_default(&sraw, repo.get())) < 0)
    return lib_error("commit identity (user.name, user.email)", rc);
  owned<git_signature> sig(sraw, git_signature_free);
  git_oid id;
  const git_commit* parents[] = {parent};
  if ((rc = git_commit_create(&id, repo.get(), ref, sig.get(), sig.get(), nullptr, message.c_str(),
                              tree.get(), 1, parents)) < 0)
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
                     "berth checkpoint of session " + session, "berth-checkpoint-index");
}

namespace {

struct push_auth {
  std::string token;
  int attempts = 0;
  std::string rejected;  ///< the server's reason for refusing a ref, if it did
};

int ref_status(const char* ref, const char* status, void* payload) {
  if (status) static_cast<push_auth*>(payload)->rejected = std::string(ref) + ": " + status;
  return 0;
}

int credentials(git_credential** out, const char*, const char*, unsigned int allowed,
                void* payload) {
  auto* a = static_cast<push_auth*>(payload);
  // Offered once: a second request means the forge refused it.
  if (a->token.empty() || a->attempts++ > 0 || !(allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT))
    return GIT_EAUTH;
  return git_credential_userpass_plaintext_new(out, "x-access-token", a->token.c_str());
}

}  // namespace

status push_branch(const std::string& dest, const std::string& url, const std::string& branch,
                   const std::string& token) {
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
  push_auth auth{token};
  git_push_options po = GIT_PUSH_OPTIONS_INIT;
  po.callbacks.credentials = credentials;
  po.callbacks.push_update_reference = ref_status;
  po.callbacks.payload = &auth;
  auto spec = "refs/heads/" + branch + ":refs/heads/" + branch;
  char* specs[] = {spec.data()};
  git_strarray refspecs{specs, 1};
  rc = git_remote_push(remote.get(), &refspecs, &po);
  if (rc == GIT_EAUTH || (rc < 0 && auth.attempts > 1))
    return error{errc::permission_denied, "authentication failed for " + url};
  if (rc < 0) return lib_error("push " + branch + " to " + url, rc);
  if (!auth.rejected.empty())
    return error{errc::conflict, "push to " + url + " refused: " + auth.rejected};
  return {};
}

}  // namespace berth::workspace
