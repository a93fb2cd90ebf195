// json::parse for the sandbox helper: a small recursive-descent parser, so that the helper
// links neither simdjson nor libstdc++ dynamically and starts about as fast as /bin/true (it
// starts twice per sandbox). It reads only what the node sends; malformed input is an error.
#include "berth/base/json.hpp"

#include <cstdlib>
#include <cstring>

namespace berth::json {

namespace {

class reader {
 public:
  explicit reader(std::string_view t) : t_(t) {}

  result<value> document() {
    auto v = any(0);
    if (!v) return v;
    space();
    if (i_ != t_.size()) return fail("trailing characters");
    return v;
  }

 private:
  error fail(const char* what) const {
    return error{errc::invalid_argument,
                 std::string("malformed JSON: ") + what + " at byte " + std::to_string(i_)};
  }
  void space() {
    while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\r' || t_[i_] == '\t'))
      ++i_;
  }
  bool word(std::string_view w) {
    if (t_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }

  result<value> any(int depth) {
    if (depth > 256) return fail("nesting too deep");
    space();
    if (i_ >= t_.size()) return fail("unexpected end");
    char c = t_[i_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') {
      auto s = string();
      if (!s) return s.err();
      return value(std::move(*s));
    }
    if (word("true")) return value(true);
    if (word("false")) return value(false);
    if (word("null")) return value();
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    return fail("unexpected character");
  }

  result<value> object(int depth) {
    ++i_;
    value::object o;
    space();
    if (i_ < t_.size() && t_[i_] == '}') {
      ++i_;
      return value(std::move(o));
    }
    for (;;) {
      space();
      if (i_ >= t_.size() || t_[i_] != '"') return fail("expected a key");
      auto k = string();
      if (!k) return k.err();
      space();
      if (i_ >= t_.size() || t_[i_] != ':') return fail("expected ':'");
      ++i_;
      auto v = any(depth + 1);
      if (!v) return v;
      o.emplace_back(std::move(*k), std::move(*v));
      space();
      if (i_ < t_.size() && t_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < t_.size() && t_[i_] == '}') {
        ++i_;
        return value(std::move(o));
      }
      return fail("expected ',' or '}'");
    }
  }

  result<value> array(int depth) {
    ++i_;
    value::array a;
    space();
    if (i_ < t_.size() && t_[i_] == ']') {
      ++i_;
      return value(std::move(a));
    }
    for (;;) {
      auto v = any(depth + 1);
      if (!v) return v;
      a.push_back(std::move(*v));
      space();
      if (i_ < t_.size() && t_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < t_.size() && t_[i_] == ']') {
        ++i_;
        return value(std::move(a));
      }
      return fail("expected ',' or ']'");
    }
  }

  static void utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool hex4(unsigned& cp) {
    if (i_ + 4 > t_.size()) return false;
    cp = 0;
    for (int k = 0; k < 4; ++k) {
      char h = t_[i_++];
      cp <<= 4;
      if (h >= '0' && h <= '9')
        cp |= static_cast<unsigned>(h - '0');
      else if (h >= 'a' && h <= 'f')
        cp |= static_cast<unsigned>(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        cp |= static_cast<unsigned>(h - 'A' + 10);
      else
        return false;
    }
    return true;
  }

  result<std::string> string() {
    ++i_;  // the opening quote
    std::string out;
    while (i_ < t_.size()) {
      char c = t_[i_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= t_.size()) break;
      char e = t_[i_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp;
          if (!hex4(cp)) return fail("bad \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            unsigned lo;
            if (!word("\\u") || !hex4(lo) || lo < 0xDC00 || lo > 0xDFFF)
              return fail("bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          utf8(out, cp);
          break;
        }
        default:
          return fail("bad escape");
      }
    }
    return fail("unterminated string");
  }

  result<value> number() {
    auto start = i_;
    bool real = false;
    if (t_[i_] == '-') ++i_;
    while (i_ < t_.size()) {
      char c = t_[i_];
      if (c >= '0' && c <= '9') {
        ++i_;
      } else if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        real = true;
        ++i_;
      } else {
        break;
      }
    }
    std::string text(t_.substr(start, i_ - start));
    char* end = nullptr;
    if (!real) {
      errno = 0;
      long long v = std::strtoll(text.c_str(), &end, 10);
      if (errno == 0 && end && *end == '\0') return value(static_cast<std::int64_t>(v));
    }
    double d = std::strtod(text.c_str(), &end);
    if (!end || *end != '\0') return fail("bad number");
    return value(d);
  }

  std::string_view t_;
  std::size_t i_ = 0;
};

}  // namespace

result<value> parse(std::string_view text) {
  return reader(text).document();
}

}  // namespace berth::json
