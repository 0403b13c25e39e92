// xvlm2vec export: a training checkpoint as a PEFT adapter folder and/or a merged Hugging Face model folder.
#include <cstdio>
#include <filesystem>

#include "train/checkpoint.h"
#include "models/kd/kd_model.h"
#include "train/train_config.h"
#include "core/file_util.h"
#include "launch/commands.h"

namespace xv::cli {

namespace fs = std::filesystem;

namespace {

struct ExportArgs {
  std::string checkpoint, model, adapter, merged;
};

int run_export(const ExportArgs& a) {
  XV_CHECK(!a.adapter.empty() || !a.merged.empty(), "export: give --adapter OUT and/or --merged OUT");
  if (!a.adapter.empty()) check_output_dir(a.adapter, "--adapter");
  if (!a.merged.empty()) check_output_dir(a.merged, "--merged");
  XV_CHECK(a.adapter.empty() || a.merged.empty() || !same_file(a.adapter, a.merged),
           "--merged: {} is also --adapter: give two folders", a.merged);
  std::string ckpt = a.checkpoint;
  require_dir(ckpt, "checkpoint folder (--checkpoint)");
  if (fs::exists(fs::path(ckpt) / "checkpoints") && !fs::exists(fs::path(ckpt) / "state.json")) {
    // An output_dir: its newest intact checkpoint (a damaged newer one is named and skipped).
    const IntactCheckpoint c = newest_intact_checkpoint(ckpt);
    XV_CHECK(!c.dir.empty() || !c.skipped.empty(), "{}: an output_dir without checkpoints", ckpt);
    for (const auto& s : c.skipped) std::fprintf(stderr, "export: skipping a damaged checkpoint: %s\n", s.c_str());
    XV_CHECK(!c.dir.empty(), "{}: no intact checkpoint in {}/checkpoints", ckpt, ckpt);
    ckpt = c.dir;
  } else {
    const std::string why = checkpoint_problem(ckpt);
    XV_CHECK(why.empty(), "--checkpoint: {} is not an intact checkpoint: {}", ckpt, why);
  }
  const std::string cfg_file = (fs::path(ckpt) / "config.yaml").string();
  const TrainConfig cfg = parse_train_config(read_checkpoint_config(ckpt), cfg_file);
  const std::string model_dir = a.model.empty() ? cfg.model : a.model;
  require_dir(model_dir, a.model.empty() ? "model folder (from the checkpoint's config.yaml; give --model)" : "model folder");
  auto model = KdModel::load(model_dir, cfg.trainable, cfg.lora_config(), uint64_t(cfg.seed));
  load_checkpoint(ckpt, model->trainable());
  if (!a.adapter.empty()) {
    model->save_adapter(a.adapter);
    std::fprintf(stderr, "export: adapter of %s -> %s\n", ckpt.c_str(), a.adapter.c_str());
  }
  if (!a.merged.empty()) {
    model->save_merged(a.merged);
    std::fprintf(stderr, "export: merged model of %s -> %s\n", ckpt.c_str(), a.merged.c_str());
  }
  return 0;
}

}  // namespace

Runner add_export(CLI::App& app) {
  auto* sub = app.add_subcommand("export", "Export a training checkpoint as a PEFT adapter and/or a merged model");
  auto a = std::make_shared<ExportArgs>();
  sub->add_option("--checkpoint", a->checkpoint, "Checkpoint folder (output_dir/checkpoints/step-N), or an output_dir (its newest)")
      ->required();
  sub->add_option("--model", a->model, "Base model folder (default: the one in the checkpoint's config.yaml)");
  sub->add_option("--adapter", a->adapter, "Output PEFT adapter folder (adapter_model.safetensors + adapter_config.json)");
  sub->add_option("--merged", a->merged, "Output model folder with the adapters merged into the weights");
  return [a] { return run_export(*a); };
}

}  // namespace xv::cli
