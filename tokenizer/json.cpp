#include "tokenizer/json.h"

#include <fmt/format.h>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace xv::tok {

JsonAt JsonAt::operator/(std::string_view key) const {
  return {file, field.empty() ? std::string(key) : field + "." + std::string(key)};
}

JsonAt JsonAt::operator[](size_t i) const { return {file, fmt::format("{}[{}]", field, i)}; }

void JsonAt::fail(std::string_view what) const {
  if (field.empty()) xv::fail("{}: {}", file, what);
  xv::fail("{}: field '{}': {}", file, field, what);
}

std::string json_kind(const json& v) {
  if (v.is_string()) {
    std::string s = v.get_ref<const std::string&>();
    if (s.size() > 40) s = s.substr(0, 40) + "...";
    return fmt::format("string \"{}\"", s);
  }
  if (v.is_number() || v.is_boolean()) return fmt::format("{} {}", v.type_name(), v.dump());
  return v.type_name();
}

const json& json_object(const json& v, const JsonAt& at) {
  if (!v.is_object()) at.fail(fmt::format("expected an object, got {}", json_kind(v)));
  return v;
}

const json& json_array(const json& v, const JsonAt& at) {
  if (!v.is_array()) at.fail(fmt::format("expected an array, got {}", json_kind(v)));
  return v;
}

const json& json_member(const json& obj, const JsonAt& at, const char* key) {
  json_object(obj, at);
  auto it = obj.find(key);
  if (it == obj.end()) (at / key).fail("missing (expected this field to be present)");
  return *it;
}

const json* json_member_opt(const json& obj, const JsonAt& at, const char* key) {
  json_object(obj, at);
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string json_string(const json& v, const JsonAt& at) {
  if (!v.is_string()) at.fail(fmt::format("expected a string, got {}", json_kind(v)));
  const std::string& s = v.get_ref<const std::string&>();
  // nlohmann accepts any bytes in strings read from a file; the tokenizer works on valid UTF-8 only.
  size_t bad = utf8_invalid_at(s);
  if (bad != std::string::npos) at.fail(fmt::format("expected valid UTF-8, got an invalid byte at offset {}", bad));
  return s;
}

bool json_bool(const json& v, const JsonAt& at) {
  if (!v.is_boolean()) at.fail(fmt::format("expected true or false, got {}", json_kind(v)));
  return v.get<bool>();
}

int64_t json_int(const json& v, const JsonAt& at) {
  if (!v.is_number_integer()) at.fail(fmt::format("expected an integer, got {}", json_kind(v)));
  if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(INT64_MAX)) at.fail("integer out of range");
  return v.get<int64_t>();
}

std::string json_string_or(const json& obj, const JsonAt& at, const char* key, std::string_view dflt) {
  const json* v = json_member_opt(obj, at, key);
  return v ? json_string(*v, at / key) : std::string(dflt);
}

bool json_bool_or(const json& obj, const JsonAt& at, const char* key, bool dflt) {
  const json* v = json_member_opt(obj, at, key);
  return v ? json_bool(*v, at / key) : dflt;
}

int64_t json_int_or(const json& obj, const JsonAt& at, const char* key, int64_t dflt) {
  const json* v = json_member_opt(obj, at, key);
  return v ? json_int(*v, at / key) : dflt;
}

std::string json_type(const json& obj, const JsonAt& at) {
  return json_string(json_member(obj, at, "type"), at / "type");
}

char32_t json_char(const json& v, const JsonAt& at) {
  std::string s = json_string(v, at);
  char32_t c = 0;
  if (s.empty() || size_t(utf8_decode(s, 0, &c)) != s.size())
    at.fail(fmt::format("expected exactly one character, got \"{}\"", s));
  return c;
}

std::string json_string_pattern(const json& v, const JsonAt& at) {
  json_object(v, at);
  if (v.contains("Regex"))
    (at / "Regex").fail("regular-expression patterns are not supported (expected {\"String\": ...})");
  std::string s = json_string(json_member(v, at, "String"), at / "String");
  if (s.empty()) (at / "String").fail("expected a non-empty string");
  return s;
}

}  // namespace xv::tok
