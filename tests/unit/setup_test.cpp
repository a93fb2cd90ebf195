// berth::setup without a node: lockfile pins, detection, the script's report, failure reasons,
// and the cache store's verification and eviction.

#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/setup/cache.hpp"
#include "berth/setup/npm_tree.hpp"
#include "berth/setup/plan.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

using namespace berth;
namespace sfs = std::filesystem;

namespace {

std::string digest_hex(const std::string& data, const EVP_MD* md) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  EVP_Digest(data.data(), data.size(), out, &len, md, nullptr);
  static const char* d = "0123456789abcdef";
  std::string hex;
  for (unsigned i = 0; i < len; ++i) {
    hex += d[out[i] >> 4];
    hex += d[out[i] & 15];
  }
  return hex;
}

std::string sha512_hex(const std::string& data) {
  return digest_hex(data, EVP_sha512());
}
std::string sha256_hex(const std::string& data) {
  return digest_hex(data, EVP_sha256());
}

std::string b64_of_hex(const std::string& hex) {
  std::string raw;
  for (std::size_t i = 0; i < hex.size(); i += 2)
    raw.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  std::string out(4 * ((raw.size() + 2) / 3) + 1, '\0');
  auto n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                           reinterpret_cast<const unsigned char*>(raw.data()),
                           static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

// Put `data` where npm's cacache would keep it in `home`, under `hex` (its digest, or a lie).
void put_content(const std::string& home, const std::string& hex, const std::string& data) {
  auto dir = home + "/.npm/_cacache/content-v2/sha512/" + hex.substr(0, 2) + "/" + hex.substr(2, 2);
  sfs::create_directories(dir);
  test::write_file(dir + "/" + hex.substr(4), data);
}

}  // namespace

TEST(setup_pins, lockfiles_of_every_version_give_their_integrity_digests) {
  auto a = sha512_hex("a"), b = sha512_hex("b");
  auto v3 =
      "{\"lockfileVersion\": 3, \"packages\": {\"\": {}, \"node_modules/a\": {\"integrity\": "
      "\"sha512-" +
      b64_of_hex(a) + "\"}, \"node_modules/b\": {\"integrity\": \"sha512-" + b64_of_hex(b) +
      " sha1-" + b64_of_hex(std::string(40, 'f')) + "\"}}}";
  auto pins = setup::npm_pins(v3);
  ASSERT_EQ(pins.size(), 3u);
  EXPECT_EQ(pins[0].algorithm, "sha1");
  EXPECT_EQ(pins[1].hex == a || pins[2].hex == a, true);
  auto v1 = "{\"lockfileVersion\": 1, \"dependencies\": {\"a\": {\"integrity\": \"sha512-" +
            b64_of_hex(a) + "\", \"dependencies\": {\"b\": {\"integrity\": \"sha512-" +
            b64_of_hex(b) + "\"}}}}}";
  EXPECT_EQ(setup::npm_pins(v1).size(), 2u);
  // Hostile or broken pins are skipped, never thrown on.
  for (const char* bad :
       {"", "[]", "{\"packages\": 3}", "{\"packages\": {\"x\": {\"integrity\": 7}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"sha512-!!!\"}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"md5-AAAA\"}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"sha512-AAAA\"}}}",
        "{\"packages\": {\"x\": {\"integrity\": \"sha512-../../etc\"}}}"})
    EXPECT_TRUE(setup::npm_pins(bad).empty()) << bad;
}

TEST(setup_detect, each_ecosystem_by_its_files) {
  test::temp_dir d;
  auto dir = d / "ws";
  sfs::create_directories(dir);
  EXPECT_TRUE(setup::detect(dir, {}).detected.empty());
  test::write_file(dir + "/package.json", "{}");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].command, "npm install --no-audit --no-fund");
  test::write_file(dir + "/package-lock.json", "{}");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].command, "npm ci --no-audit --no-fund");
  test::write_file(dir + "/yarn.lock", "");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].manager, "yarn");
  test::write_file(dir + "/pnpm-lock.yaml", "");
  EXPECT_EQ(setup::detect(dir, {}).steps[0].command, "pnpm install --frozen-lockfile");
  test::write_file(
      dir + "/pyproject.toml",
      "[project]\nname = \"x\"\n[project.optional-dependencies]\ndev = [\"pytest\"]\n");
  auto p = setup::detect(dir, {});
  EXPECT_EQ(p.steps[1].command, "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'");
  // uv, when the sandbox's PATH has it.
  sfs::create_directories(d / "bin");
  test::write_file(d / "bin/uv", "#!/bin/sh\n");
  ::chmod((d / "bin/uv").c_str(), 0755);
  EXPECT_EQ(setup::detect(dir, {d / "bin"}).steps[1].manager, "uv");
  test::write_file(dir + "/go.mod", "module x\n");
  test::write_file(dir + "/Cargo.toml", "[package]\n");
  p = setup::detect(dir, {});
  EXPECT_EQ(p.detected, (std::vector<std::string>{"node", "python", "rust", "go"}));
  EXPECT_EQ(p.steps[2].command, "cargo fetch");
  EXPECT_EQ(p.steps[3].command, "go mod download");
  auto e = setup::explicit_plan(dir, {}, {"make", "deps"});
  EXPECT_EQ(e.detected.size(), 4u);
  ASSERT_EQ(e.steps.size(), 1u);
  EXPECT_EQ(e.steps[0].command, "make deps");
}

TEST(setup_report, the_script_reports_each_command_and_bad_lines_are_ignored) {
  test::temp_dir d;
  auto home = d / "home", ws = d / "ws";
  sfs::create_directories(home);
  sfs::create_directories(ws);
  setup::plan p;
  p.detected = {"node", "python"};
  p.steps = {{"node", "sh", "true", "package.json"}, {"python", "sh", "exit 3", "setup.py"}};
  auto argv = setup::script(p);
  auto out = test::run_checked(
      {"sh", "-c", "cd '" + ws + "' && HOME='" + home + "' sh -c \"$0\" || true", argv[2]});
  auto ran = setup::read_report(home);
  ASSERT_EQ(ran.size(), 2u) << out;
  EXPECT_EQ(ran[0].exit_code, 0);
  EXPECT_EQ(ran[1].exit_code, 3);
  auto why = setup::failure_reason(p, ran, false);
  ASSERT_TRUE(why);
  EXPECT_NE(why->find("`exit 3` (python) exited with code 3"), std::string::npos) << *why;
  EXPECT_NE(why->find("network = \"host\""), std::string::npos) << *why;
  EXPECT_FALSE(setup::failure_reason(p, {ran[0]}, false));
  test::write_file(home + "/" + setup::report_file, "0 0 5\nx y z\n9 -1 3\n1 300 1\n-2 0 0\n");
  ran = setup::read_report(home);
  ASSERT_EQ(ran.size(), 1u);  // negative, out-of-range and unparsable lines are dropped
  EXPECT_EQ(ran[0].duration_ms, 5);
  test::write_file(home + "/" + setup::report_file, "0 0 5\n9 0 1\n");
  EXPECT_EQ(setup::details(p, setup::read_report(home)).find("ran")->as_array().size(), 1u);
  // A symlinked report is never followed.
  sfs::remove(home + "/" + setup::report_file);
  test::write_file(d / "secret", "0 0 1\n");
  sfs::create_symlink(d / "secret", home + "/" + setup::report_file);
  EXPECT_TRUE(setup::read_report(home).empty());
}

TEST(setup_cache, only_content_that_hashes_to_its_name_is_shared_and_the_cap_holds) {
  test::temp_dir d;
  auto root = d / "store", home = d / "home", ws = d / "ws";
  sfs::create_directories(home);
  sfs::create_directories(ws);
  setup::cache_store store(root, 1 << 20, -1, -1);
  ASSERT_TRUE(store.open());
  std::string good = "a package tarball", other = "another one";
  put_content(home, sha512_hex(good), good);
  put_content(home, sha512_hex(other), "not what the name says");
  put_content(home, std::string(128, 'z'), "not hex");
  json::value rep = json::value::make_object();
  store.promote(home, rep);
  EXPECT_EQ(rep.find("npm")->get_int("added"), 1) << rep.dump();
  EXPECT_EQ(rep.find("npm")->get_int("refused"), 1) << rep.dump();
  auto stored = root + "/npm/sha512/" + sha512_hex(good).substr(0, 2) + "/" + sha512_hex(good);
  auto kept = fs::read_file(stored);
  ASSERT_TRUE(kept);
  EXPECT_EQ(*kept, good);
  struct stat st {};
  ASSERT_EQ(::stat(stored.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u);

  // A new session pinning it gets it seeded; one pinning something else gets nothing.
  test::write_file(ws + "/package-lock.json",
                   "{\"packages\": {\"node_modules/a\": {\"integrity\": \"sha512-" +
                       b64_of_hex(sha512_hex(good)) +
                       "\"}, \"node_modules/b\": {\"integrity\": "
                       "\"sha512-" +
                       b64_of_hex(sha512_hex(other)) + "\"}}}");
  auto home2 = d / "home2";
  sfs::create_directories(home2);
  auto seeded = store.seed(ws, home2);
  EXPECT_EQ(seeded.find("npm")->get_int("pinned"), 2);
  EXPECT_EQ(seeded.find("npm")->get_int("seeded"), 1);
  auto h = sha512_hex(good);
  auto linked = fs::read_file(home2 + "/.npm/_cacache/content-v2/sha512/" + h.substr(0, 2) + "/" +
                              h.substr(2, 2) + "/" + h.substr(4));
  ASSERT_TRUE(linked);
  EXPECT_EQ(*linked, good);
  // A symlinked .npm is never followed: nothing is written through it.
  auto home3 = d / "home3";
  sfs::create_directories(home3);
  sfs::create_directories(d / "elsewhere");
  sfs::create_symlink(d / "elsewhere", home3 + "/.npm");
  EXPECT_EQ(store.seed(ws, home3).find("npm")->get_int("seeded"), 0);
  EXPECT_TRUE(sfs::is_empty(d / "elsewhere"));

  auto u = store.usage();
  ASSERT_EQ(u.size(), 5u);  // npm tarballs, npm-tree, pip, go and cargo (none yet)
  EXPECT_EQ(u[0].ecosystem, "npm");
  EXPECT_EQ(u[1].ecosystem, "npm-tree");
  EXPECT_EQ(u[1].entries, 0u);
  EXPECT_EQ(u[0].entries, 1u);
  EXPECT_EQ(u[0].bytes, good.size());
  auto p = store.prune(0);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->entries, 1u);
  EXPECT_EQ(store.usage()[0].entries, 0u);

  // The cap: a store of 40 bytes keeps the most recently added entries within it.
  setup::cache_store small(d / "small", 40, -1, -1);
  ASSERT_TRUE(small.open());
  auto home4 = d / "home4";
  for (int i = 0; i < 4; ++i) {
    std::string data(16, static_cast<char>('a' + i));
    put_content(home4, sha512_hex(data), data);
    json::value r = json::value::make_object();
    small.promote(home4, r);
  }
  EXPECT_LE(small.usage()[0].bytes, 40u);
  EXPECT_EQ(small.usage()[0].entries, 2u);
}

namespace {

// A v3 lockfile of `pkgs` (path -> extra JSON members), each pinned by the sha512 of its name.
std::string lockfile(const std::vector<std::pair<std::string, std::string>>& pkgs,
                     const std::string& root = R"("dependencies": {"a": "^1.0.0"})") {
  std::string out = R"({"name": "app", "lockfileVersion": 3, "packages": {"": {)" + root + "}";
  for (const auto& [path, extra] : pkgs)
    out += ", \"" + path +
           "\": {\"resolved\": \"http://127.0.0.1/x.tgz\", \"integrity\": " + "\"sha512-" +
           b64_of_hex(sha512_hex(path)) + "\"" + (extra.empty() ? "" : ", ") + extra + "}";
  return out + "}}";
}

const char* app_json = R"({"name": "app", "dependencies": {"a": "^1.0.0"}})";

std::string why(const std::string& pkg, const std::string& lock,
                const std::vector<std::string>& config = {}) {
  return setup::plan_npm_tree(pkg, lock, config).ineligible;
}

}  // namespace

TEST(setup_npm_tree, only_lockfiles_that_npm_would_just_unpack_get_a_tree) {
  auto base = lockfile({{"node_modules/a", R"("bin": {"a": "./bin/a.js"})"},
                        {"node_modules/a/node_modules/@s/b", ""}});
  auto t = setup::plan_npm_tree(app_json, base, {"npm_config_registry=http://127.0.0.1/"});
  ASSERT_EQ(t.ineligible, "");
  ASSERT_EQ(t.packages.size(), 2u);
  EXPECT_EQ(t.packages[0].algorithm, "sha512");
  EXPECT_EQ(t.packages[0].hex, sha512_hex("node_modules/a"));
  ASSERT_EQ(t.packages[0].bins.size(), 1u);
  EXPECT_EQ(t.packages[0].bins[0].second, "bin/a.js");
  EXPECT_EQ(t.key.size(), 64u);
  // The key is the packages': another project name, the same tree.
  auto renamed = base;
  renamed.replace(renamed.find("\"app\""), 5, "\"other\"");
  EXPECT_EQ(setup::plan_npm_tree(app_json, renamed, {}).key, t.key);

  EXPECT_NE(why(R"({"dependencies": {"a": "^1.0.0"}, "scripts": {"postinstall": "x"}})", base)
                .find("postinstall"),
            std::string::npos);
  EXPECT_NE(why(R"({"dependencies": {"a": "^2.0.0"}})", base).find("out of sync"),
            std::string::npos);
  EXPECT_NE(why(app_json, lockfile({{"node_modules/a", R"("hasInstallScript": true)"}}))
                .find("install scripts"),
            std::string::npos);
  EXPECT_NE(why(app_json, lockfile({{"node_modules/a", R"("os": ["darwin"])"}}))
                .find("platform-specific"),
            std::string::npos);
  EXPECT_NE(why(app_json, lockfile({{"node_modules/a", R"("link": true)"}})).find("link"),
            std::string::npos);
  auto file_dep = lockfile({{"node_modules/a", ""}});
  file_dep.replace(file_dep.find("http://127.0.0.1/x.tgz"), 22, "file:../../etc");
  EXPECT_NE(why(app_json, file_dep).find("not a registry tarball"), std::string::npos);
  auto sha1 = lockfile({{"node_modules/a", ""}});
  sha1.replace(sha1.find("sha512-"), 7, "sha1-");
  EXPECT_FALSE(why(app_json, sha1).empty());
  EXPECT_NE(why(app_json, lockfile({{"node_modules/../../etc", ""}})).find("node_modules path"),
            std::string::npos);
  EXPECT_NE(why(app_json, lockfile({{"node_modules/a", R"("bin": {"a/b": "x.js"})"}})).find("bin"),
            std::string::npos);
  EXPECT_NE(
      why(app_json, lockfile({{"node_modules/a", R"("bin": {"a": "../../x.js"})"}})).find("bin"),
      std::string::npos);
  EXPECT_NE(why(app_json, lockfile({{"node_modules/a", R"("bin": {"x": "x.js"})"},
                                    {"node_modules/b", R"("bin": {"x": "y.js"})"}}))
                .find("two packages"),
            std::string::npos);
  auto v1 = base;
  v1.replace(v1.find("\"lockfileVersion\": 3"), 20, "\"lockfileVersion\": 1");
  EXPECT_NE(why(app_json, v1).find("lockfileVersion 1"), std::string::npos);
  EXPECT_NE(why(app_json, base, {"NODE_ENV=production"}).find("NODE_ENV"), std::string::npos);
  EXPECT_NE(why(app_json, base, {"npm_config_omit=dev"}).find("omit"), std::string::npos);
  EXPECT_NE(why(app_json, base, {"; a comment", "omit = dev"}).find("omit"), std::string::npos);
  EXPECT_NE(why(app_json, base, {"NPM_CONFIG_INSTALL_STRATEGY=nested"}).find("install-strategy"),
            std::string::npos);
  EXPECT_FALSE(why("not json", base).empty());
  EXPECT_FALSE(why(app_json, "{").empty());
}

TEST(setup_npm_tree, a_tarball_unpacks_as_npm_does_and_nothing_climbs_out) {
  test::temp_dir d;
  auto src = d / "src";
  sfs::create_directories(src + "/package/bin");
  test::write_file(src + "/package/index.js", "module.exports = 1;\n");
  test::write_file(src + "/package/bin/cli.js", "#!/usr/bin/env node\n");
  ::chmod((src + "/package/bin/cli.js").c_str(), 0755);
  std::string deep = "package/" + std::string(120, 'd') + "/" + std::string(60, 'e') + ".js";
  sfs::create_directories(sfs::path(src + "/" + deep).parent_path());
  test::write_file(src + "/" + deep, "long\n");
  sfs::create_symlink("/etc/passwd", src + "/package/link");
  sfs::create_hard_link(src + "/package/index.js", src + "/package/hard");
  test::write_file(src + "/package/escape", "out\n");
  test::run_checked({"tar", "-czf", d / "p.tgz", "-P", "--format=pax", "--transform",
                     "s,^package/escape,package/../../escape,", "package"},
                    src);
  auto out = d / "out";
  sfs::create_directories(out);
  int tgz = ::open((d / "p.tgz").c_str(), O_RDONLY | O_CLOEXEC);
  int dir = ::open(out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(tgz, 0);
  setup::unpacked used;
  auto st = setup::unpack_npm_tarball(tgz, dir, 1 << 20, 100, used);
  ASSERT_TRUE(st) << st.err().message;
  EXPECT_EQ(used.files, 3u);  // index.js, bin/cli.js, the long path
  EXPECT_EQ(*fs::read_file(out + "/index.js"), "module.exports = 1;\n");
  EXPECT_EQ(*fs::read_file(out + "/" + deep.substr(8)), "long\n");
  struct stat fst {};
  ASSERT_EQ(::stat((out + "/index.js").c_str(), &fst), 0);
  EXPECT_EQ(fst.st_mode & 0777, 0444u);
  ASSERT_EQ(::stat((out + "/bin/cli.js").c_str(), &fst), 0);
  EXPECT_EQ(fst.st_mode & 0777, 0555u);
  EXPECT_FALSE(sfs::exists(sfs::symlink_status(out + "/link")));
  EXPECT_FALSE(sfs::exists(out + "/hard"));
  EXPECT_FALSE(sfs::exists(d / "escape"));
  EXPECT_FALSE(sfs::exists(out + "/escape"));

  // Limits hold, and what is not a gzip'd tarball, or ends early, is an error.
  auto out2 = d / "out2";
  sfs::create_directories(out2);
  int dir2 = ::open(out2.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  setup::unpacked none;
  EXPECT_FALSE(setup::unpack_npm_tarball(tgz, dir2, 1 << 20, 1, none));
  setup::unpacked none2;
  EXPECT_FALSE(setup::unpack_npm_tarball(tgz, dir2, 10, 100, none2));
  test::write_file(d / "junk.tgz", "this is not gzip");
  int junk = ::open((d / "junk.tgz").c_str(), O_RDONLY | O_CLOEXEC);
  setup::unpacked none3;
  auto bad = setup::unpack_npm_tarball(junk, dir2, 1 << 20, 100, none3);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.err().message.find("gzip"), std::string::npos) << bad.err().message;
  auto whole = *fs::read_file(d / "p.tgz");
  test::write_file(d / "cut.tgz", whole.substr(0, whole.size() / 2));
  int cut = ::open((d / "cut.tgz").c_str(), O_RDONLY | O_CLOEXEC);
  setup::unpacked none4;
  EXPECT_FALSE(setup::unpack_npm_tarball(cut, dir2, 1 << 20, 100, none4));
  for (int fd : {tgz, dir, dir2, junk, cut}) ::close(fd);
}

TEST(setup_npm_tree, the_store_builds_a_tree_from_verified_tarballs_and_restores_it) {
  test::temp_dir d;
  auto root = d / "store", home = d / "home";
  // Two packages' tarballs, promoted into the store as a session's npm would leave them.
  auto pack = [&](const std::string& name, const std::string& files_dir) {
    test::run_checked({"tar", "-czf", d / (name + ".tgz"), "package"}, files_dir);
    return *fs::read_file(d / (name + ".tgz"));
  };
  sfs::create_directories(d / "a/package/bin");
  test::write_file(d / "a/package/index.js", "exports.a = 1;\n");
  test::write_file(d / "a/package/bin/a.js", "#!/usr/bin/env node\n");
  sfs::create_directories(d / "b/package");
  test::write_file(d / "b/package/index.js", "exports.b = 2;\n");
  auto ta = pack("a", d / "a"), tb = pack("b", d / "b");
  setup::cache_store store(root, 1 << 30, -1, -1);
  ASSERT_TRUE(store.open());
  put_content(home, sha512_hex(ta), ta);
  put_content(home, sha512_hex(tb), tb);
  json::value rep = json::value::make_object();
  store.promote(home, rep);
  ASSERT_EQ(rep.find("npm")->get_int("added"), 2);
  auto lock =
      std::string(R"({"lockfileVersion": 3, "packages": {"": {"dependencies": {"a": "1"}},)") +
      R"( "node_modules/a": {"integrity": "sha512-)" + b64_of_hex(sha512_hex(ta)) +
      R"(", "bin": {"a": "bin/a.js"}}, "node_modules/a/node_modules/@s/b": {"integrity": "sha512-)" +
      b64_of_hex(sha512_hex(tb)) + R"("}}})";
  auto t = setup::plan_npm_tree(R"({"dependencies": {"a": "1"}})", lock, {});
  ASSERT_EQ(t.ineligible, "");

  auto ws = d / "ws";
  sfs::create_directories(ws);
  EXPECT_EQ(store.restore_npm_tree(t, ws).state, "absent");
  auto built = store.build_npm_tree(t);
  ASSERT_EQ(built.state, "built") << built.reason;
  EXPECT_EQ(built.packages, 2u);
  EXPECT_EQ(built.files, 3u);
  EXPECT_EQ(store.build_npm_tree(t).state, "present");

  auto used = store.restore_npm_tree(t, ws);
  ASSERT_EQ(used.state, "restored") << used.reason;
  EXPECT_EQ(*fs::read_file(ws + "/node_modules/a/index.js"), "exports.a = 1;\n");
  EXPECT_EQ(*fs::read_file(ws + "/node_modules/a/node_modules/@s/b/index.js"), "exports.b = 2;\n");
  EXPECT_EQ(sfs::read_symlink(ws + "/node_modules/.bin/a").string(), "../a/bin/a.js");
  EXPECT_EQ(::access((ws + "/node_modules/.bin/a").c_str(), X_OK), 0);
  // A workspace that has a node_modules already is left to npm.
  EXPECT_EQ(store.restore_npm_tree(t, ws).state, "ineligible");
  auto ws2 = d / "ws2";
  sfs::create_directories(ws2);
  sfs::create_directories(d / "elsewhere");
  sfs::create_symlink(d / "elsewhere", ws2 + "/node_modules");
  EXPECT_EQ(store.restore_npm_tree(t, ws2).state, "ineligible");
  EXPECT_TRUE(sfs::is_empty(d / "elsewhere"));

  // A tree that lost a file's content (a crash before the disk had it) is dropped, not used.
  auto stored = root + "/npm-tree/" + t.key + "/node_modules/a/index.js";
  ::chmod(stored.c_str(), 0644);
  ::truncate(stored.c_str(), 0);
  auto ws4 = d / "ws4";
  sfs::create_directories(ws4);
  auto damaged = store.restore_npm_tree(t, ws4);
  EXPECT_EQ(damaged.state, "failed");
  EXPECT_NE(damaged.reason.find("damaged"), std::string::npos) << damaged.reason;
  EXPECT_FALSE(sfs::exists(sfs::symlink_status(ws4 + "/node_modules")));
  EXPECT_EQ(store.restore_npm_tree(t, ws4).state, "absent");
  ASSERT_EQ(store.build_npm_tree(t).state, "built");

  auto u = store.usage();
  ASSERT_EQ(u.size(), 5u);
  EXPECT_EQ(u[1].ecosystem, "npm-tree");
  EXPECT_EQ(u[1].entries, 1u);
  EXPECT_GT(u[1].bytes, 0u);

  // A tarball the store lacks: nothing is built, nothing half-built is left.
  auto missing = t;
  missing.packages[1].hex = sha512_hex("never stored");
  missing.key = std::string(64, 'f');
  auto f = store.build_npm_tree(missing);
  EXPECT_EQ(f.state, "failed");
  EXPECT_NE(f.reason.find("no tarball"), std::string::npos) << f.reason;
  for (const auto& e : sfs::directory_iterator(root + "/npm-tree"))
    EXPECT_EQ(e.path().filename().string(), t.key);

  // In the background: a restore right after waits for the build; a store that goes away
  // mid-build leaves nothing half-built.
  ASSERT_TRUE(store.prune(1ULL << 30));
  for (const auto& e : sfs::directory_iterator(root + "/npm-tree")) sfs::remove_all(e.path());
  EXPECT_EQ(store.build_npm_tree_later(t).state, "building");
  auto ws5 = d / "ws5";
  sfs::create_directories(ws5);
  EXPECT_EQ(store.restore_npm_tree(t, ws5).state, "restored");
  EXPECT_EQ(store.build_npm_tree_later(t).state, "present");
  {
    setup::cache_store other(root, 1 << 30, -1, -1);
    for (const auto& e : sfs::directory_iterator(root + "/npm-tree")) sfs::remove_all(e.path());
    EXPECT_EQ(other.build_npm_tree_later(t).state, "building");
  }
  for (const auto& e : sfs::directory_iterator(root + "/npm-tree"))
    EXPECT_EQ(e.path().filename().string(), t.key) << "left behind: " << e.path();
  if (!sfs::exists(root + "/npm-tree/" + t.key + "/.complete")) {
    ASSERT_EQ(store.build_npm_tree(t).state, "built");
  }

  auto p = store.prune(0);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->entries, 3u);  // two tarballs and the tree
  EXPECT_EQ(store.usage()[1].entries, 0u);
  EXPECT_EQ(store.restore_npm_tree(t, d / "ws3").state, "absent");
}

TEST(setup_pip, only_self_contained_hash_pinned_requirements_are_shared) {
  auto h1 = std::string(64, 'a'), h2 = std::string(64, 'b');
  auto p = setup::parse_pip_pins(
      "--index-url https://pypi.internal/simple\n"
      "# a comment\n"
      "requests==2.31.0 \\\n    --hash=sha256:" +
      h1 + " \\\n    --hash sha256:" + h2 +
      "  # via app\n"
      "idna==3.6 --hash=sha256:" +
      std::string(64, 'C') + "\n");
  ASSERT_EQ(p.unshareable, "");
  ASSERT_EQ(p.requirements.size(), 2u);
  EXPECT_EQ(p.requirements[0], (std::vector<std::string>{h1, h2}));
  EXPECT_EQ(p.requirements[1], (std::vector<std::string>{std::string(64, 'c')}));
  auto why = [](const std::string& text) { return setup::parse_pip_pins(text).unshareable; };
  EXPECT_NE(why("requests==2.31.0\n").find("pins no hashes"), std::string::npos);
  EXPECT_NE(why("a==1 --hash=sha256:" + h1 + "\nb==2\n").find("no --hash"), std::string::npos);
  EXPECT_NE(why("a==1 --hash=sha512:" + std::string(128, 'a') + "\n").find("sha256"),
            std::string::npos);
  EXPECT_NE(why("-r base.txt\na==1 --hash=sha256:" + h1 + "\n").find("-r"), std::string::npos);
  EXPECT_NE(why("-e .\n").find("-e"), std::string::npos);
  EXPECT_NE(why("./local.whl --hash=sha256:" + h1 + "\n").find("path or URL"), std::string::npos);
  EXPECT_NE(why("a @ https://x/a.whl --hash=sha256:" + h1 + "\n").find("path or URL"),
            std::string::npos);
}

TEST(setup_pip, the_store_takes_only_what_the_requirements_pin_and_serves_it_back) {
  test::temp_dir d;
  auto root = d / "store", home = d / "home";
  setup::cache_store store(root, 1 << 20, -1, -1);
  ASSERT_TRUE(store.open());
  auto wheels = home + "/.cache/berth/wheels";
  sfs::create_directories(wheels);
  std::string good = "a wheel's bytes", other = "some other wheel";
  test::write_file(wheels + "/tinylib-1.0-py3-none-any.whl", good);
  test::write_file(wheels + "/other-1.0-py3-none-any.whl", other);  // not pinned
  test::write_file(wheels + "/notes.txt", "not a distribution");
  sfs::create_symlink("/etc/passwd", wheels + "/passwd-1.0-py3-none-any.whl");
  auto sha = sha256_hex;
  auto pins = setup::parse_pip_pins("tinylib==1.0 --hash=sha256:" + sha(good) + "\n");
  ASSERT_EQ(pins.unshareable, "");
  json::value rep = json::value::make_object();
  store.promote_pip(pins, home, rep);
  EXPECT_EQ(rep.get_int("added"), 1) << rep.dump();
  EXPECT_EQ(rep.get_int("refused"), 2) << rep.dump();  // other-1.0 and notes.txt; the link skipped
  EXPECT_EQ(*fs::read_file(root + "/pip/sha256/" + sha(good).substr(0, 2) + "/" + sha(good) +
                           "--tinylib-1.0-py3-none-any.whl"),
            good);

  auto home2 = d / "home2";
  sfs::create_directories(home2);
  auto seeded = store.seed_pip(pins, home2);
  EXPECT_EQ(seeded.get_int("seeded"), 1);
  EXPECT_TRUE(seeded.get_bool("complete"));
  EXPECT_EQ(*fs::read_file(home2 + "/.cache/berth/wheels/tinylib-1.0-py3-none-any.whl"), good);
  // Another project pinning other content under the same name gets nothing.
  auto other_pins = setup::parse_pip_pins("tinylib==1.0 --hash=sha256:" + sha(other) + "\n");
  auto home3 = d / "home3";
  sfs::create_directories(home3);
  auto none = store.seed_pip(other_pins, home3);
  EXPECT_EQ(none.get_int("seeded"), 0);
  EXPECT_FALSE(none.get_bool("complete"));
  auto u = store.usage();
  ASSERT_EQ(u.size(), 5u);
  EXPECT_EQ(u[2].ecosystem, "pip");
  EXPECT_EQ(u[2].entries, 1u);
}

TEST(setup_go, go_sum_pins_and_hashes_are_the_go_commands) {
  // go.sum as go 1.19 wrote it for the module below (`go mod tidy` from a file:// proxy).
  auto pins = setup::parse_go_sum(
      "example.com/lib v1.0.0 h1:LsNSceuuGdiV1KnQpkI5hu587JaJyt1TUVVUIcKEmq4=\n"
      "example.com/lib v1.0.0/go.mod h1:HwqbfeMRqJtcNhqUwzjhPwsEB0Cr5U3U5sCLg7xgNyo=\n"
      "github.com/BurntSushi/toml v1.2.0/go.mod h1:CxXYINrC8qIiEnFrOxCa7Jy5BFHlXnUU2pbicEuybxQ=\n"
      "example.com/../../etc v1.0.0 h1:LsNSceuuGdiV1KnQpkI5hu587JaJyt1TUVVUIcKEmq4=\n"
      "example.com/x v1.0.0/../.. h1:LsNSceuuGdiV1KnQpkI5hu587JaJyt1TUVVUIcKEmq4=\n"
      "example.com/y v1.0.0 h1:notbase64!\n"
      "garbage\n");
  ASSERT_EQ(pins.size(), 2u);
  EXPECT_EQ(pins[0].module, "example.com/lib");
  EXPECT_EQ(pins[0].zip_hex.size(), 64u);
  EXPECT_EQ(pins[0].mod_hex.size(), 64u);
  EXPECT_EQ(pins[1].module, "github.com/BurntSushi/toml");
  EXPECT_TRUE(pins[1].zip_hex.empty());

  test::temp_dir d;
  const std::string mod = "module example.com/lib\n\ngo 1.19\n";
  test::write_file(d / "v1.0.0.mod", mod);
  auto zip = [&](const std::string& name, const std::string& extra) {
    test::run_checked({"python3", "-c",
                       "import zipfile, sys\n"
                       "z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n"
                       "z.writestr('example.com/lib@v1.0.0/go.mod', sys.argv[2])\n"
                       "z.writestr('example.com/lib@v1.0.0/lib.go', "
                       "'package lib\\n\\nfunc Answer() int { return 42 }\\n')\n" +
                           extra + "z.close()\n",
                       d / name, mod});
    return ::open((d / name).c_str(), O_RDONLY | O_CLOEXEC);
  };
  int good = zip("good.zip", "");
  auto h = setup::go_zip_hash(good);
  ASSERT_TRUE(h) << h.err().message;
  EXPECT_EQ(*h, pins[0].zip_hex);
  int m = ::open((d / "v1.0.0.mod").c_str(), O_RDONLY | O_CLOEXEC);
  auto mh = setup::go_mod_hash(m);
  ASSERT_TRUE(mh);
  EXPECT_EQ(*mh, pins[0].mod_hex);
  // One more file, a stored (uncompressed) one: another hash.
  int more = zip("more.zip",
                 "z.writestr(zipfile.ZipInfo('example.com/lib@v1.0.0/x.go'), 'x', "
                 "zipfile.ZIP_STORED)\n");
  auto h2 = setup::go_zip_hash(more);
  ASSERT_TRUE(h2) << h2.err().message;
  EXPECT_NE(*h2, *h);
  // What is not a plain module zip is refused with a reason: garbage, a cut zip, a bad CRC.
  test::write_file(d / "junk.zip", std::string(100, 'j'));
  int junk = ::open((d / "junk.zip").c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_FALSE(setup::go_zip_hash(junk));
  auto bytes = *fs::read_file(d / "good.zip");
  test::write_file(d / "cut.zip", bytes.substr(0, bytes.size() - 30));
  int cut = ::open((d / "cut.zip").c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_FALSE(setup::go_zip_hash(cut));
  auto flipped = bytes;
  flipped[62] = static_cast<char>(flipped[62] ^ 0x55);  // the first member's data (after 30 + 29)
  test::write_file(d / "flip.zip", flipped);
  int flip = ::open((d / "flip.zip").c_str(), O_RDONLY | O_CLOEXEC);
  auto fh = setup::go_zip_hash(flip);
  ASSERT_FALSE(fh);  // the member no longer inflates to its CRC
  EXPECT_FALSE(fh.err().message.empty());
  for (int fd : {good, m, more, junk, cut, flip}) ::close(fd);
}

TEST(setup_go, the_store_takes_only_what_go_sum_pins_and_lays_it_out_as_a_proxy) {
  test::temp_dir d;
  auto root = d / "store", home = d / "home";
  setup::cache_store store(root, 1 << 20, -1, -1);
  ASSERT_TRUE(store.open());
  const std::string mod = "module example.com/lib\n\ngo 1.19\n";
  auto cache = home + "/go/pkg/mod/cache/download/example.com/lib/@v";
  sfs::create_directories(cache);
  test::write_file(cache + "/v1.0.0.mod", mod);
  test::write_go_module_zip(cache + "/v1.0.0.zip", mod);
  // Another module whose zip is not what go.sum says (its name's hash pins other content).
  auto other = home + "/go/pkg/mod/cache/download/example.com/!upper/@v";
  sfs::create_directories(other);
  test::write_file(other + "/v2.0.0.zip", "not that module");
  auto pins = setup::parse_go_sum(
      "example.com/lib v1.0.0 h1:LsNSceuuGdiV1KnQpkI5hu587JaJyt1TUVVUIcKEmq4=\n"
      "example.com/lib v1.0.0/go.mod h1:HwqbfeMRqJtcNhqUwzjhPwsEB0Cr5U3U5sCLg7xgNyo=\n"
      "example.com/Upper v2.0.0 h1:LsNSceuuGdiV1KnQpkI5hu587JaJyt1TUVVUIcKEmq4X\n"
      "example.com/Upper v2.0.0 h1:HwqbfeMRqJtcNhqUwzjhPwsEB0Cr5U3U5sCLg7xgNyo=\n");
  ASSERT_EQ(pins.size(), 2u);
  json::value rep = json::value::make_object();
  store.promote_go(pins, home, rep);
  EXPECT_EQ(rep.get_int("added"), 2) << rep.dump();
  EXPECT_EQ(rep.get_int("refused"), 1) << rep.dump();

  auto home2 = d / "home2";
  sfs::create_directories(home2);
  auto seeded = store.seed_go(pins, home2);
  EXPECT_EQ(seeded.get_int("pinned"), 2);
  EXPECT_EQ(seeded.get_int("seeded"), 1) << seeded.dump();
  EXPECT_FALSE(seeded.get_bool("complete"));
  auto px = home2 + "/.cache/berth/goproxy/example.com/lib/@v/";
  EXPECT_EQ(*fs::read_file(px + "v1.0.0.mod"), mod);
  EXPECT_EQ(*fs::read_file(px + "v1.0.0.info"), R"({"Version":"v1.0.0"})");
  EXPECT_TRUE(sfs::exists(px + "v1.0.0.zip"));
  EXPECT_FALSE(sfs::exists(home2 + "/.cache/berth/goproxy/example.com/!upper"));
  auto u = store.usage();
  ASSERT_EQ(u.size(), 5u);
  EXPECT_EQ(u[3].ecosystem, "go");
  EXPECT_EQ(u[3].entries, 2u);
}

TEST(setup_cargo, the_store_takes_crates_cargo_lock_pins_and_learns_where_cargo_keeps_them) {
  auto sha = sha256_hex;
  const std::string crate = "a crate's bytes";
  auto pins = setup::parse_cargo_lock(
      "version = 3\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\n"
      "dependencies = [\n \"tinycrate\",\n]\n\n"
      "[[package]]\nname = \"tinycrate\"\nversion = \"1.0.0\"\n"
      "source = \"registry+https://github.com/rust-lang/crates.io-index\"\n"
      "checksum = \"" +
      sha(crate) + "\"\n\n[[package]]\nname = \"../evil\"\nversion = \"1.0.0\"\nchecksum = \"" +
      sha("x") + "\"\n");
  ASSERT_EQ(pins.size(), 1u);  // app has no checksum; ../evil is no crate name
  EXPECT_EQ(pins[0].name, "tinycrate");
  EXPECT_EQ(pins[0].hex, sha(crate));

  test::temp_dir d;
  auto root = d / "store", home = d / "home";
  setup::cache_store store(root, 1 << 20, -1, -1);
  ASSERT_TRUE(store.open());
  auto reg = home + "/.cargo/registry/cache/127.0.0.1-0123456789abcdef";
  auto evil = home + "/.cargo/registry/cache/evil-0000000000000000";
  sfs::create_directories(reg);
  sfs::create_directories(evil);
  test::write_file(reg + "/tinycrate-1.0.0.crate", crate);
  test::write_file(evil + "/tinycrate-1.0.0.crate", "not that crate");
  json::value rep = json::value::make_object();
  store.promote_cargo(pins, home, rep);
  EXPECT_EQ(rep.get_int("added"), 1) << rep.dump();
  EXPECT_EQ(rep.get_int("refused"), 1) << rep.dump();
  EXPECT_EQ(*fs::read_file(root + "/cargo/registries"), "127.0.0.1-0123456789abcdef\n");

  auto home2 = d / "home2";
  sfs::create_directories(home2);
  auto seeded = store.seed_cargo(pins, home2);
  EXPECT_EQ(seeded.get_int("seeded"), 1) << seeded.dump();
  EXPECT_EQ(seeded.get_int("registries"), 1);
  EXPECT_EQ(*fs::read_file(
                home2 + "/.cargo/registry/cache/127.0.0.1-0123456789abcdef/tinycrate-1.0.0.crate"),
            crate);
  auto u = store.usage();
  ASSERT_EQ(u.size(), 5u);
  EXPECT_EQ(u[4].ecosystem, "cargo");
  EXPECT_EQ(u[4].entries, 1u);
}
