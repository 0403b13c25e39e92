// libFuzzer target for training configs (train/train_config.h): the input up to its first NUL byte is the
// YAML text, and each NUL-separated piece after it is a `--set key=value` override, all given to
// parse_train_config. A config that parses must also read back: train_config_yaml's text of it, resolved,
// parses again to the same text (the contract of train_config_yaml); a difference or an error is a finding.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "train/train_config.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input = xv_fuzz::as_text(data, size);
  size_t end = input.find('\0');
  const std::string yaml(input.substr(0, end));
  std::vector<std::string> overrides;
  while (end != std::string_view::npos) {
    const size_t next = input.find('\0', end + 1);
    overrides.emplace_back(input.substr(end + 1, next == std::string_view::npos ? next : next - end - 1));
    end = next;
  }
  xv::TrainConfig cfg;
  try {
    cfg = xv::parse_train_config(yaml, "fuzz.yaml", overrides);
  } catch (const xv::Error&) {
    return 0;  // bad input, reported as the format says it must be
  }
  // train_config_yaml writes a resolved config: the trainer has put the backbone's default LoRA targets in
  // place of none (resolve_train_config, which reads the model folder).
  if (cfg.lora.targets.empty()) cfg.lora.targets = {"query", "value"};
  const std::string text = xv::train_config_yaml(cfg);
  std::string again;
  try {
    again = xv::train_config_yaml(xv::parse_train_config(text, "resolved.yaml"));
  } catch (const xv::Error& e) {
    std::fprintf(stderr, "the resolved config does not read back: %s\n--- resolved\n%s", e.what(), text.c_str());
    std::abort();
  }
  if (again != text) {
    std::fprintf(stderr, "the resolved config reads back differently\n--- first\n%s--- again\n%s", text.c_str(),
                 again.c_str());
    std::abort();
  }
  return 0;
}
