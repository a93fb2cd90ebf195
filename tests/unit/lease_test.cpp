#include "github_standin.hpp"
#include "harness.hpp"

#include "berth/base/fs.hpp"
#include "berth/base/redact.hpp"
#include "berth/config/config.hpp"
#include "berth/lease/http.hpp"
#include "berth/lease/provider.hpp"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

using namespace berth;

using test::base64url_decode;
using test::pem_of;

TEST(credentials_config, every_provider_parses_and_the_longest_prefix_wins) {
  auto c = config::parse(R"(
[credentials]
renew_before = "5m"

[[credentials.static]]
url_prefix = "https://git.example.com/"
token_file = "/etc/berth/tokens/all"

[[credentials.static]]
url_prefix = "https://git.example.com/acme/"
username = "oauth2"
token_file = "/etc/berth/tokens/acme"

[[credentials.command]]
url_prefix = "https://vault-backed.example.com/"
run = ["/usr/local/bin/mint-token", "--repo"]

[[credentials.github_app]]
url_prefix = "https://github.com/acme/"
app_id = 12345
installation_id = 678
private_key_file = "/etc/berth/app.pem"
)",
                         "b.toml");
  ASSERT_TRUE(c.ok()) << c.err().message;
  EXPECT_EQ(c->credentials.rules.size(), 4u);
  EXPECT_EQ(c->credentials.renew_before, millis(300'000));
  const auto* r = config::credential_for(c->credentials, "https://git.example.com/acme/app.git");
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->token_file, "/etc/berth/tokens/acme");
  EXPECT_EQ(r->username, "oauth2");
  EXPECT_EQ(config::credential_for(c->credentials, "https://git.example.com/x/y.git")->token_file,
            "/etc/berth/tokens/all");
  EXPECT_EQ(config::credential_for(c->credentials, "https://github.com/acme/app")->api_url,
            "https://api.github.com");
  EXPECT_EQ(config::credential_for(c->credentials, "https://gitlab.com/a/b.git"), nullptr);
}

TEST(credentials_config, hostile_entries_name_the_field_and_the_position) {
  struct bad {
    std::string text, needle;
  };
  for (const auto& b : std::vector<bad>{
           {"[[credentials.static]]\ntoken_file = \"/t\"\n",
            "b.toml:1:1: credentials.static[0].url_prefix: is required"},
           {"[[credentials.static]]\nurl_prefix = \"https://h/\"\n", "token_file: is required"},
           {"[[credentials.static]]\nurl_prefix = \"h/\"\ntoken_file = \"/t\"\n",
            "is not a URL prefix"},
           {"[[credentials.static]]\nurl_prefix = \"https://h/\"\ntoken = \"abc\"\n",
            "b.toml:3:1: credentials.static[0].token: unknown key"},
           {"[[credentials.command]]\nurl_prefix = \"https://h/\"\nrun = [\"mint\"]\n",
            "the first element must be an absolute program path"},
           {"[[credentials.command]]\nurl_prefix = \"https://h/\"\nrun = \"/bin/mint\"\n",
            "expected an array of strings"},
           {"[[credentials.github_app]]\nurl_prefix = \"https://h/\"\napp_id = -1\n",
            "app_id: expected a positive integer"},
           {"[[credentials.github_app]]\nurl_prefix = \"https://h/\"\napp_id = 1\n",
            "installation_id: is required"},
           {"[credentials.static]\nurl_prefix = \"https://h/\"\n",
            "expected [[credentials.static]] tables"},
           {"[[credentials.vault]]\nurl_prefix = \"https://h/\"\n",
            "unknown key credentials.vault"},
           {"[[credentials.static]]\nurl_prefix = \"https://h/\"\ntoken_file = \"/a\"\n"
            "[[credentials.command]]\nurl_prefix = \"https://h/\"\nrun = [\"/m\"]\n",
            "is already served by"},
       }) {
    auto c = config::parse(b.text, "b.toml");
    ASSERT_FALSE(c.ok()) << b.text;
    EXPECT_NE(c.err().message.find(b.needle), std::string::npos)
        << c.err().message << "\n  wanted: " << b.needle;
  }
}

TEST(redactor, registered_tokens_their_base64_and_basic_auth_forms_are_replaced) {
  std::string tok = "ghs_registeredTokenValue0123456789";
  redact::add(tok);
  auto basic = redact::base64("x-access-token:" + tok);
  std::string text = "token " + tok + " header Basic " + basic + " b64 " + redact::base64(tok);
  auto out = redact::apply(text);
  EXPECT_EQ(out.find(tok), std::string::npos) << out;
  EXPECT_EQ(out.find(basic), std::string::npos) << out;
  EXPECT_EQ(out.find(redact::base64(tok)), std::string::npos) << out;
  EXPECT_NE(out.find("[REDACTED]"), std::string::npos);
  redact::remove(tok);
  // Still caught by its shape after it is forgotten.
  EXPECT_EQ(redact::apply(tok), "[REDACTED]");
  // A plain secret is only caught while registered.
  std::string plain = "plain-secret-value-42";
  redact::add(plain, "oauth2");
  EXPECT_EQ(redact::apply("x " + plain), "x [REDACTED]");
  EXPECT_EQ(redact::apply(redact::base64("oauth2:" + plain)), "[REDACTED]");
  redact::remove(plain, "oauth2");
  EXPECT_EQ(redact::apply("x " + plain), "x " + plain);
}

TEST(redactor, token_shaped_text_is_replaced_even_when_never_registered) {
  std::string long_token = "ghs_" + std::string(516, 'a');
  EXPECT_EQ(redact::apply("push with " + long_token + " failed"), "push with [REDACTED] failed");
  EXPECT_EQ(redact::apply("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
            "[REDACTED]");
  std::string jwt = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIxMjM0NSJ9.c2lnbmF0dXJlc2lnbmF0dXJl";
  EXPECT_EQ(redact::apply("Bearer " + jwt), "Bearer [REDACTED]");
  // Ordinary text, short prefixes and short secrets stay as they are.
  for (std::string keep : {"ghs_short", "the ghost_of_a_chance", "eyJ alone", "a.b.c"})
    EXPECT_EQ(redact::apply(keep), keep);
  redact::add("short");
  EXPECT_EQ(redact::apply("short"), "short");
}

TEST(secret_files, a_file_others_can_read_a_symlink_or_a_missing_file_is_refused) {
  test::temp_dir dir;
  auto f = dir / "token";
  test::write_file(f, "tok\n");
  ::chmod(f.c_str(), 0644);
  auto r = lease::read_secret_file(f, "credentials.static token_file");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.err().message.find("token_file " + f +
                                 ": mode 0644 lets other users read it; it "
                                 "must be 0600 (chmod 600 " +
                                 f + ")"),
            std::string::npos)
      << r.err().message;
  ::chmod(f.c_str(), 0600);
  ASSERT_TRUE(lease::read_secret_file(f, "x").ok());
  std::filesystem::create_symlink(f, dir / "link");
  EXPECT_FALSE(lease::read_secret_file(dir / "link", "x").ok());
  auto missing = lease::read_secret_file(dir / "nope", "credentials.static token_file");
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.err().is(errc::not_found));
  EXPECT_EQ(missing.err().message.find("tok"), missing.err().message.find("token_file"));
}

TEST(lease_vault, grants_are_kept_owner_only_and_removed_when_revoked) {
  test::temp_dir dir;
  lease::vault v(dir / "leases");
  lease::grant g;
  g.id = "lease-1";
  g.provider = "static";
  g.url = "https://h/a/b.git";
  g.token = "tok-123456789";
  g.expires_ms = 42;
  ASSERT_TRUE(v.put("s1", g).ok());
  struct stat st {};
  ASSERT_EQ(::stat((dir / "leases").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((dir / "leases/s1.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto back = v.of("s1");
  ASSERT_EQ(back.size(), 1u);
  EXPECT_EQ(back[0].token, g.token);
  EXPECT_EQ(back[0].expires_ms, 42);
  EXPECT_EQ(v.all().size(), 1u);
  EXPECT_FALSE(g.metadata().find("token"));
  ASSERT_TRUE(v.remove("s1", "lease-1").ok());
  EXPECT_FALSE(std::filesystem::exists(dir / "leases/s1.json"));
  EXPECT_TRUE(v.all().empty());
}

TEST(github_app, the_jwt_is_rs256_signed_with_bounded_claims) {
  EVP_PKEY* key = EVP_RSA_gen(2048);
  ASSERT_NE(key, nullptr);
  auto priv = pem_of(key, true);
  auto jwt = lease::github_app_jwt(priv, 12345, 1'800'000'000);
  ASSERT_TRUE(jwt.ok()) << jwt.err().message;
  auto d1 = jwt->find('.');
  auto d2 = jwt->find('.', d1 + 1);
  auto header = json::parse(base64url_decode(jwt->substr(0, d1)));
  auto claims = json::parse(base64url_decode(jwt->substr(d1 + 1, d2 - d1 - 1)));
  ASSERT_TRUE(header && claims);
  EXPECT_EQ(header->get_string("alg"), "RS256");
  EXPECT_EQ(claims->get_int("iat"), 1'800'000'000 - 60);
  EXPECT_LE(claims->get_int("exp") - 1'800'000'000, 600);
  EXPECT_EQ(claims->get_string("iss"), "12345");
  auto sig = base64url_decode(jwt->substr(d2 + 1));
  auto input = jwt->substr(0, d2);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EXPECT_EQ(EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key), 1);
  EXPECT_EQ(EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                             reinterpret_cast<const unsigned char*>(input.data()), input.size()),
            1);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
  EXPECT_FALSE(lease::github_app_jwt("not a key", 1, 0).ok());
  EVP_PKEY* ec = EVP_EC_gen("P-256");
  auto r = lease::github_app_jwt(pem_of(ec, true), 1, 0);
  EVP_PKEY_free(ec);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.err().message.find("an RSA key is required"), std::string::npos);
}

TEST(github_app, repositories_and_urls_are_split_as_the_api_expects) {
  auto r = lease::repo_of("https://github.com/acme/app.git");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->first, "acme");
  EXPECT_EQ(r->second, "app");
  EXPECT_EQ(lease::repo_of("http://127.0.0.1:9/git/acme/app.git")->first, "acme");
  EXPECT_EQ(lease::repo_of("https://github.com/acme/app/")->second, "app");
  EXPECT_FALSE(lease::repo_of("https://github.com/app.git").ok());
  auto u = lease::split_url("https://api.github.com/app/installations/1?x=1", "api_url");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "api.github.com");
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->target, "/app/installations/1?x=1");
  EXPECT_EQ(lease::split_url("http://[::1]:8080/x", "f")->host, "::1");
  EXPECT_FALSE(lease::split_url("ftp://h/x", "api_url").ok());
  EXPECT_FALSE(lease::split_url("https://user:pw@h/x", "api_url").ok());
}

TEST(redactor, many_live_tokens_are_all_found_in_one_pass) {
  std::vector<std::string> tokens;
  for (int i = 0; i < 500; ++i) tokens.push_back("tok-" + std::to_string(100000 + i) + "-secret");
  for (const auto& t : tokens) redact::add(t);
  auto text = "a " + tokens[250] + " b " + redact::base64("x-access-token:" + tokens[400]) + " c " +
              tokens[0] + tokens[1] + " tok-1 d";
  EXPECT_EQ(redact::apply(text), "a [REDACTED] b [REDACTED] c [REDACTED][REDACTED] tok-1 d");
  for (const auto& t : tokens) redact::remove(t);
  EXPECT_EQ(redact::apply(tokens[250]), tokens[250]);
}
