// xvlm2vec init-model: a randomly initialised model folder in the Hugging Face layout.
#include <cstdio>

#include "models/init.h"
#include "core/file_util.h"
#include "launch/cli_checks.h"
#include "launch/commands.h"

namespace xv::cli {

Runner add_init_model(CLI::App& app) {
  auto* sub = app.add_subcommand("init-model", "Write a randomly initialised model (Hugging Face layout)");
  auto opt = std::make_shared<InitModelOptions>();
  auto dtype = std::make_shared<std::string>("f32");
  sub->add_option("--arch", opt->arch, "Backbone")->required()->check(CLI::IsMember({"phi3_v", "bert"}));
  sub->add_option("--preset", opt->preset, "Size: tiny | phi35v (phi3_v) | minilm (bert)")
      ->required()
      ->check(CLI::IsMember({"tiny", "phi35v", "minilm"}));
  sub->add_option("--out", opt->out_dir, "Output model folder")->required();
  sub->add_option("--seed", opt->seed, "Random seed")->default_val(0);
  sub->add_option("--layers", opt->layers, "Encoder (bert) / decoder (phi3_v) layers instead of the preset's")
      ->check(in_range(1, 1024));
  sub->add_option("--dtype", *dtype, "Weight storage dtype")->check(CLI::IsMember({"f32", "bf16", "f16"}))->default_val("f32");
  sub->add_option("--tokenizer", opt->tokenizer_json,
                  "tokenizer.json to copy in (default: a small byte-level BPE for phi3_v, WordPiece for bert)")
      ->check(CLI::ExistingFile);
  return [opt, dtype] {
    check_output_dir(opt->out_dir, "--out");
    opt->progress = true;
    opt->dtype = *dtype == "bf16" ? DType::BF16 : *dtype == "f16" ? DType::F16 : DType::F32;
    const int64_t n = init_model(*opt);
    std::printf("init-model: %s/%s with %lld parameters written to %s\n", opt->arch.c_str(), opt->preset.c_str(),
                static_cast<long long>(n), opt->out_dir.c_str());
    return 0;
  };
}

}  // namespace xv::cli
