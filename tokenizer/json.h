// Typed access to the fields of a tokenizer.json, with errors that name the file, the field and what
// was expected. Internal to the tokenizer.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace xv::tok {

using json = nlohmann::json;

// Where a value sits: the file and a path such as "model.merges[12]".
struct JsonAt {
  std::string file;
  std::string field;

  JsonAt operator/(std::string_view key) const;  // field.key
  JsonAt operator[](size_t i) const;             // field[i]
  // Throws "<file>: field '<field>': <what>".
  [[noreturn]] void fail(std::string_view what) const;
};

// Short description of a JSON value for "got ..." in messages.
std::string json_kind(const json& v);

// `obj` (at `at`) must be an object holding `key`; returns the member (which may be null).
const json& json_member(const json& obj, const JsonAt& at, const char* key);
// The member, or nullptr when it is absent or null.
const json* json_member_opt(const json& obj, const JsonAt& at, const char* key);

std::string json_string(const json& v, const JsonAt& at);
bool json_bool(const json& v, const JsonAt& at);
int64_t json_int(const json& v, const JsonAt& at);
const json& json_array(const json& v, const JsonAt& at);
const json& json_object(const json& v, const JsonAt& at);

// Optional scalar members: absent or null gives the default.
std::string json_string_or(const json& obj, const JsonAt& at, const char* key, std::string_view dflt);
bool json_bool_or(const json& obj, const JsonAt& at, const char* key, bool dflt);
int64_t json_int_or(const json& obj, const JsonAt& at, const char* key, int64_t dflt);
// The "type" member of a component object.
std::string json_type(const json& obj, const JsonAt& at);
// A single Unicode character given as a string (Metaspace replacement, Strip content).
char32_t json_char(const json& v, const JsonAt& at);
// {"String": "..."} patterns (Replace normalizer/decoder); {"Regex": ...} is refused.
std::string json_string_pattern(const json& v, const JsonAt& at);

}  // namespace xv::tok
