// xvlm2vec train: self-knowledge distillation from a YAML config (docs/config.md).
#include "core/train_config.h"
#include "core/trainer.h"
#include "launch/commands.h"

namespace xv::cli {

namespace {

struct TrainArgs {
  std::string config;
  std::vector<std::string> sets;
  bool resume = false, quiet = false;
};

}  // namespace

Runner add_train(CLI::App& app) {
  auto* sub = app.add_subcommand("train", "Train a student by self-knowledge distillation (YAML config: docs/config.md)");
  auto a = std::make_shared<TrainArgs>();
  sub->add_option("config", a->config, "YAML config file")->required();
  sub->add_option("--set", a->sets, "Override a config key, YAML value: --set train.lr=2e-5 --set lora.targets=[query,value]")
      ->allow_extra_args(false)
      ->type_name("KEY=VALUE");
  sub->add_flag("--resume", a->resume, "Continue from the newest checkpoint in output_dir (bit-identical to an uninterrupted run)");
  sub->add_flag("--quiet", a->quiet, "No terminal output (output_dir/metrics.jsonl is still written)");
  return [a] {
    TrainConfig cfg = load_train_config(a->config, a->sets);
    TrainOptions opt;
    opt.resume = a->resume;
    opt.quiet = a->quiet;
    train(cfg, opt);
    return 0;
  };
}

}  // namespace xv::cli
