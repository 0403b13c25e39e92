// libFuzzer target for a model folder's JSON configs: the input is written as config.json,
// sentence_bert_config.json and preprocessor_config.json of a folder under $TMPDIR, then read_model_type,
// load_bert_config, load_phi3v_config (core/model_config.h) and phi3v_image_config_from_json
// (image/phi3v_processor.h) read it, each on its own so that one refusing the input does not hide the next.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "core/model_config.h"
#include "image/phi3v_processor.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

template <typename F>
void expect_success_or_error(F&& f) {
  try {
    f();
  } catch (const xv::Error&) {
    // Bad input, reported as the format says it must be.
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::filesystem::path& dir = xv_fuzz::work_dir("model_config");
  static const std::string config = (dir / "config.json").string();
  static const std::string preprocessor = (dir / "preprocessor_config.json").string();
  const std::string_view bytes = xv_fuzz::as_text(data, size);
  xv_fuzz::write_bytes(config, bytes);
  xv_fuzz::write_bytes(dir / "sentence_bert_config.json", bytes);  // read once the BERT config is valid
  xv_fuzz::write_bytes(preprocessor, bytes);
  expect_success_or_error([&] { (void)xv::read_model_type(config); });
  expect_success_or_error([&] { (void)xv::load_bert_config(dir.string()); });
  expect_success_or_error([&] { (void)xv::load_phi3v_config(dir.string()); });
  expect_success_or_error([&] { (void)xv::phi3v_image_config_from_json(preprocessor); });
  return 0;
}
