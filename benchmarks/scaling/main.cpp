// scaling_model: the cost model of the distributed trainer on the command line (benchmarks/scaling/README.md).
//
//   scaling_model predict  [--hardware F.json] [--measured-units F.json] [--out DIR] [--set key=value ...]
//                          [workload options]
//       -> DIR/scaling.json, DIR/scaling.md, DIR/step_time.svg, DIR/efficiency.svg, DIR/memory.svg
//   scaling_model validate --config MODEL.json --bandwidth LINK.json --measured-units UNITS.json
//                          --runs metrics.jsonl:RANKS ... [--out DIR]
//       -> predicted vs measured step time on the terminal (and DIR/validation.{json,md})
//   scaling_model fit-link --comm bench_comm.json ... [--out LINK.json] [--no-overlap] [--min-bytes N]
//                          [--max-bytes N]
//       -> alpha and bus bandwidth fitted to bench_comm's all-gather timings (the --bandwidth input)
//
// Only file handling and formatting live here; the model is scaling_model.cpp.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "benchmarks/scaling/scaling_model.h"
#include "eval/svg_chart.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace xv::scaling;

namespace {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

json load_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Failure(fmt::format("{}: cannot open", path));
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw Failure(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
}

// Written to a temporary name, flushed, then renamed: nothing is left half-written.
void write_file(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    f << text;
    f.flush();
    if (!f) throw Failure(fmt::format("{}: write failed", tmp.string()));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw Failure(fmt::format("{}: rename failed ({})", path.string(), ec.message()));
}

double number(const json& v, const std::string& where) {
  if (!v.is_number()) throw Failure(fmt::format("{}: expected a number, got {}", where, v.dump()));
  return v.get<double>();
}
double positive(const json& v, const std::string& where) {
  const double x = number(v, where);
  if (!(x > 0) || !std::isfinite(x)) throw Failure(fmt::format("{}: expected a number > 0, got {}", where, v.dump()));
  return x;
}
int64_t integer(const json& v, const std::string& where, int64_t min) {
  if (!v.is_number_integer() || v.get<int64_t>() < min)
    throw Failure(fmt::format("{}: expected an integer >= {}, got {}", where, min, v.dump()));
  return v.get<int64_t>();
}
bool boolean(const json& v, const std::string& where) {
  if (!v.is_boolean()) throw Failure(fmt::format("{}: expected true or false, got {}", where, v.dump()));
  return v.get<bool>();
}

// ---------------------------------------------------------------------------------------------------------
// Hardware: every field of hardware-h100.json; "notes" documents them and is not read.
const std::pair<const char*, double Hardware::*> kHardwareNumbers[] = {
    {"peak_tflops", &Hardware::peak_tflops},
    {"mfu", &Hardware::mfu},
    {"hbm_GBps", &Hardware::hbm_GBps},
    {"memory_GB", &Hardware::memory_GB},
    {"intra_bw_GBps", &Hardware::intra_bw_GBps},
    {"intra_alpha_us", &Hardware::intra_alpha_us},
    {"inter_bw_GBps", &Hardware::inter_bw_GBps},
    {"inter_alpha_us", &Hardware::inter_alpha_us},
    {"backward_linear_factor", &Hardware::backward_linear_factor},
    {"backward_attention_factor", &Hardware::backward_attention_factor},
    {"optimizer_bytes_per_param", &Hardware::optimizer_bytes_per_param},
    {"workspace_GB", &Hardware::workspace_GB},
};

void set_hardware(Hardware& hw, const std::string& key, const json& v, const std::string& where) {
  if (key == "name") {
    if (!v.is_string()) throw Failure(fmt::format("{}: expected a string", where));
    hw.name = v.get<std::string>();
    return;
  }
  if (key == "gpus_per_node") {
    hw.gpus_per_node = integer(v, where, 1);
    return;
  }
  if (key == "overlap") {
    hw.overlap = boolean(v, where);
    return;
  }
  for (const auto& [k, member] : kHardwareNumbers)
    if (key == k) {
      const double x = number(v, where);
      if (!(x >= 0) || !std::isfinite(x)) throw Failure(fmt::format("{}: expected a number >= 0, got {}", where, v.dump()));
      hw.*member = x;
      return;
    }
  std::string known = "name, gpus_per_node, overlap";
  for (const auto& [k, member] : kHardwareNumbers) known += std::string(", ") + k;
  throw Failure(fmt::format("{}: unknown field (known: {})", where, known));
}

json hardware_json(const Hardware& hw) {
  json j;
  j["name"] = hw.name;
  for (const auto& [k, member] : kHardwareNumbers) j[k] = hw.*member;
  j["gpus_per_node"] = hw.gpus_per_node;
  j["overlap"] = hw.overlap;
  return j;
}

Hardware load_hardware(const std::string& path, const std::vector<std::string>& sets) {
  Hardware hw;
  if (!path.empty()) {
    const json j = load_json(path);
    if (!j.is_object()) throw Failure(fmt::format("{}: expected a JSON object", path));
    for (const auto& [k, v] : j.items())
      if (k != "notes") set_hardware(hw, k, v, fmt::format("{}: field '{}'", path, k));
  }
  for (const std::string& s : sets) {
    const size_t eq = s.find('=');
    if (eq == std::string::npos || eq == 0) throw Failure(fmt::format("--set {}: expected key=value", s));
    const std::string key = s.substr(0, eq), text = s.substr(eq + 1);
    json v;
    try {
      v = json::parse(text);
    } catch (const json::exception&) {
      v = text;  // a bare string (the name)
    }
    set_hardware(hw, key, v, fmt::format("--set {}", s));
  }
  if (!(hw.peak_tflops > 0 && hw.mfu > 0 && hw.intra_bw_GBps > 0 && hw.inter_bw_GBps > 0 && hw.hbm_GBps > 0))
    throw Failure("hardware: peak_tflops, mfu, hbm_GBps, intra_bw_GBps and inter_bw_GBps must be > 0");
  return hw;
}

// ---------------------------------------------------------------------------------------------------------
// Measured per-unit compute (README.md): {"units": {NAME_OR_KIND: {forward_s, teacher_forward_s, backward_s}},
// "optimizer_s", "overhead_s", "by_ranks": {"N": {the same fields, overriding for N ranks}}}.
void read_measured_fields(const json& j, MeasuredUnits& m, const std::string& where) {
  if (!j.is_object()) throw Failure(fmt::format("{}: expected a JSON object", where));
  for (const auto& [k, v] : j.items()) {
    const std::string w = fmt::format("{}: field '{}'", where, k);
    if (k == "units") {
      if (!v.is_object()) throw Failure(fmt::format("{}: expected an object of unit names or kinds", w));
      for (const auto& [name, t] : v.items()) {
        const std::string wu = fmt::format("{}: unit '{}'", where, name);
        if (!t.is_object()) throw Failure(fmt::format("{}: expected an object", wu));
        MeasuredTime mt = m.units.count(name) ? m.units[name] : MeasuredTime{};
        for (const auto& [f, x] : t.items()) {
          const std::string wf = fmt::format("{}: field '{}'", wu, f);
          if (f == "forward_s")
            mt.forward_s = positive(x, wf);
          else if (f == "teacher_forward_s")
            mt.teacher_forward_s = positive(x, wf);
          else if (f == "backward_s")
            mt.backward_s = positive(x, wf);
          else
            throw Failure(fmt::format("{}: unknown field (known: forward_s, teacher_forward_s, backward_s)", wf));
        }
        if (!std::isfinite(mt.forward_s)) throw Failure(fmt::format("{}: forward_s is required", wu));
        m.units[name] = mt;
      }
    } else if (k == "optimizer_s") {
      m.optimizer_s = number(v, w);
      if (m.optimizer_s < 0) throw Failure(fmt::format("{}: expected >= 0", w));
    } else if (k == "overhead_s") {
      m.overhead_s = number(v, w);
      if (m.overhead_s < 0) throw Failure(fmt::format("{}: expected >= 0", w));
    } else if (k != "by_ranks" && k != "notes") {
      throw Failure(fmt::format("{}: unknown field (known: units, optimizer_s, overhead_s, by_ranks, notes)", w));
    }
  }
}

struct MeasuredFile {
  MeasuredUnits base;
  json by_ranks;  // {"N": {...}}
  std::string path;
  MeasuredUnits at(int64_t n) const {
    MeasuredUnits m = base;
    const std::string key = std::to_string(n);
    if (by_ranks.is_object() && by_ranks.contains(key))
      read_measured_fields(by_ranks[key], m, fmt::format("{}: by_ranks.{}", path, key));
    return m;
  }
};

MeasuredFile load_measured(const std::string& path) {
  MeasuredFile mf;
  mf.path = path;
  const json j = load_json(path);
  read_measured_fields(j, mf.base, path);
  if (j.contains("by_ranks")) {
    mf.by_ranks = j["by_ranks"];
    if (!mf.by_ranks.is_object()) throw Failure(fmt::format("{}: field 'by_ranks': expected an object", path));
    for (const auto& [k, v] : mf.by_ranks.items()) {
      MeasuredUnits scratch = mf.base;
      read_measured_fields(v, scratch, fmt::format("{}: by_ranks.{}", path, k));  // fail early on bad input
    }
  }
  return mf;
}

// ---------------------------------------------------------------------------------------------------------
// Formatting.
double GB(double bytes) { return bytes / 1e9; }
std::string thousands(double x) {  // 4035522560 -> 4,035,522,560
  std::string d = fmt::format("{:.0f}", x), out;
  for (size_t i = 0; i < d.size(); ++i) {
    if (i > 0 && d[i - 1] != '-' && (d.size() - i) % 3 == 0) out += ',';
    out += d[i];
  }
  return out;
}
std::string pct(double x) { return std::isfinite(x) ? fmt::format("{:.1f}%", 100 * x) : "-"; }

json prediction_json(const StepPrediction& p) {
  json j;
  j["strategy"] = strategy_name(p.strategy);
  j["ranks"] = p.ranks;
  j["shard_group"] = p.shard_group;
  j["step_s"] = p.step_s;
  j["compute_s"] = p.compute_s;
  j["gather_s"] = p.gather_s;
  j["gather_exposed_s"] = p.gather_exposed_s;
  j["trainable_comm_s"] = p.trainable_comm_s;
  j["optimizer_s"] = p.optimizer_s;
  j["comm_s"] = p.comm_s;
  j["exposed_comm_s"] = p.exposed_comm_s;
  j["hidden_fraction"] = std::isfinite(p.hidden_fraction) ? json(p.hidden_fraction) : json(nullptr);
  j["bytes_received_per_step"] = p.bytes_received;
  j["frozen_bytes_per_step"] = p.frozen_bytes;
  j["grad_bytes_per_step"] = p.grad_bytes;
  j["param_bytes_per_step"] = p.param_bytes;
  j["pairs_per_s"] = p.pairs_per_s;
  j["efficiency"] = std::isfinite(p.efficiency) ? json(p.efficiency) : json(nullptr);
  j["memory_bytes"] = {{"base", p.memory.base},
                       {"gathered", p.memory.gathered},
                       {"trainable", p.memory.trainable},
                       {"activations", p.memory.activations},
                       {"workspace", p.memory.workspace},
                       {"total", p.memory.total()}};
  return j;
}

json workload_json(const Workload& w) {
  return {{"pairs_per_rank", w.pairs_per_rank}, {"grad_accum", w.grad_accum},   {"text_tokens", w.text_tokens},
          {"image_tokens", w.image_tokens},     {"crops", w.crops},             {"lora_rank", w.lora_rank},
          {"clip_layers_per_unit", w.clip_layers_per_unit}, {"checkpointing", w.checkpointing}};
}

// The units grouped by kind (name of the first, count, parameters each).
std::string units_table(const ModelDesc& m, const Workload& w, const Hardware& hw, const MeasuredUnits* meas) {
  std::string s = "| unit | frozen params | bf16 MB | LoRA params | forward / backward per micro-batch (ms) |\n"
                  "|---|---:|---:|---:|---:|\n";
  for (size_t i = 0; i < m.units.size(); ++i) {
    const Unit& u = m.units[i];
    size_t j = i;  // a run of identical units (the decoder layers) is one row
    while (j + 1 < m.units.size() && m.units[j + 1].kind == u.kind && m.units[j + 1].base_params == u.base_params)
      ++j;
    const UnitTimes t = unit_times(u, w, hw, meas);
    const std::string name = j > i ? fmt::format("{} .. {} ({}x)", u.name, m.units[j].name, j - i + 1) : u.name;
    s += fmt::format("| {} | {} | {:.1f} | {} | {:.2f} / {:.2f} |\n", name, thousands(u.base_params),
                     u.base_params * m.base_bytes_per_param / 1e6, thousands(u.lora_params), 1e3 * t.forward_s,
                     1e3 * t.backward_s);
    i = j;
  }
  return s;
}

std::string predictions_markdown(const ModelDesc& m, const Workload& w, const Hardware& hw,
                                 const std::vector<StepPrediction>& ps, const MeasuredUnits* meas,
                                 const std::string& label) {
  std::string s = fmt::format("# Predicted scaling: {}{}\n\n", m.name, label.empty() ? "" : " (" + label + ")");
  s += fmt::format(
      "Generated by `scaling_model predict` (benchmarks/scaling). Hardware: {}; {:.0f} TFLOP/s peak x MFU {:.2f}; "
      "NVLink {:.0f} GB/s, alpha {:.0f} us; inter-node {:.0f} GB/s per GPU, alpha {:.0f} us; {} GPUs per node; "
      "overlap {}. Compute from {}.\n\n",
      hw.name, hw.peak_tflops, hw.mfu, hw.intra_bw_GBps, hw.intra_alpha_us, hw.inter_bw_GBps, hw.inter_alpha_us,
      hw.gpus_per_node, hw.overlap ? "on" : "off", meas ? "the measured per-unit table" : "FLOPs");
  s += fmt::format(
      "Workload per GPU: {} pairs per micro-batch x {} accumulation steps; {} decoder positions per side ({} text + "
      "{} image), {} CLIP crops per image; LoRA r={}; activation checkpointing {}; {} CLIP layers per unit.\n\n",
      w.pairs_per_rank, w.grad_accum, w.text_tokens + w.image_tokens, w.text_tokens, w.image_tokens, w.crops,
      w.lora_rank, w.checkpointing ? "on" : "off", w.clip_layers_per_unit);
  s += fmt::format(
      "Parameters: {} loaded ({:.3f} B, {:.2f} GB in bf16); the checkpoint has {} ({:.3f} B). {}. "
      "Trainable (LoRA): {} ({:.1f} MB in fp32).\n\n",
      thousands(m.loaded_params), m.loaded_params / 1e9, GB(m.loaded_params * m.base_bytes_per_param),
      thousands(m.checkpoint_params), m.checkpoint_params / 1e9, m.counted, thousands(m.trainable_params),
      m.trainable_params * m.trainable_bytes_per_param / 1e6);
  s += units_table(m, w, hw, meas);
  s += "\n## Scaling efficiency (throughput(n) / (n x throughput(1)))\n\n| GPUs |";
  for (const Strategy st : kStrategies) s += fmt::format(" {} |", strategy_name(st));
  s += "\n|---:|";
  for (size_t i = 0; i < std::size(kStrategies); ++i) s += "---:|";
  s += "\n";
  std::vector<int64_t> ns;
  for (const auto& p : ps)
    if (p.strategy == Strategy::full) ns.push_back(p.ranks);
  for (const int64_t n : ns) {
    s += fmt::format("| {} |", n);
    for (const Strategy st : kStrategies)
      for (const auto& p : ps)
        if (p.strategy == st && p.ranks == n) s += fmt::format(" {} |", pct(p.efficiency));
    s += "\n";
  }
  for (const Strategy st : kStrategies) {
    s += fmt::format("\n## {}\n\n", strategy_name(st));
    s += "| GPUs | step (s) | compute (s) | exposed comm (s) | comm hidden | pairs/s | efficiency | "
         "memory/GPU (GB) | base + gathered + trainable + activations (GB) | received/GPU/step (GB) |\n"
         "|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n";
    for (const auto& p : ps) {
      if (p.strategy != st) continue;
      const Memory& mm = p.memory;
      s += fmt::format("| {} | {:.3f} | {:.3f} | {:.3f} | {} | {:.1f} | {} | {:.2f}{} | {:.2f} + {:.2f} + {:.3f} + {:.2f} | {:.2f} |\n",
                       p.ranks, p.step_s, p.compute_s, p.exposed_comm_s, pct(p.hidden_fraction), p.pairs_per_s,
                       pct(p.efficiency), GB(mm.total()), GB(mm.total()) > hw.memory_GB ? " (too big)" : "",
                       GB(mm.base), GB(mm.gathered), GB(mm.trainable), GB(mm.activations), GB(p.bytes_received));
    }
  }
  s += fmt::format("\nMemory totals include {:.1f} GB of workspace (CUDA context, cuBLAS, NCCL). GB = 1e9 bytes.\n",
                   hw.workspace_GB);
  return s;
}

void write_plots(const fs::path& dir, const std::vector<StepPrediction>& ps, const std::string& label) {
  std::vector<xv::LineSeries> step, eff, mem;
  for (const Strategy st : kStrategies) {
    xv::LineSeries a{strategy_name(st), {}, {}}, b = a, c = a;
    for (const auto& p : ps) {
      if (p.strategy != st) continue;
      const double x = std::log2(double(p.ranks));
      a.x.push_back(x), a.y.push_back(p.step_s);
      b.x.push_back(x), b.y.push_back(100 * p.efficiency);
      c.x.push_back(x), c.y.push_back(GB(p.memory.total()));
    }
    step.push_back(a), eff.push_back(b), mem.push_back(c);
  }
  const std::string x = "log2(GPUs): 0 = 1 GPU, 3 = one node of 8, 10 = 1024";
  const std::string sfx = label.empty() ? "" : " (" + label + ")";
  write_file(dir / "step_time.svg", xv::svg_lines("Step time (one optimizer step)" + sfx, step, x, "seconds"));
  write_file(dir / "efficiency.svg", xv::svg_lines("Scaling efficiency" + sfx, eff, x, "% of linear"));
  write_file(dir / "memory.svg", xv::svg_lines("Memory per GPU" + sfx, mem, x, "GB"));
}

// ---------------------------------------------------------------------------------------------------------
struct PredictArgs {
  std::string hardware, measured, out = "runs/scaling", label;
  std::vector<std::string> sets;
  Workload w;
  bool no_checkpointing = false;
  int64_t max_gpus = 1024;
};

int run_predict(const PredictArgs& a) {
  const Hardware hw = load_hardware(a.hardware, a.sets);
  Workload w = a.w;
  w.checkpointing = !a.no_checkpointing;
  const ModelDesc m = phi35v_model(w);
  MeasuredFile mf;
  if (!a.measured.empty()) mf = load_measured(a.measured);
  const MeasuredUnits* meas = a.measured.empty() ? nullptr : &mf.base;
  std::vector<int64_t> ns;
  for (int64_t n = 1; n <= a.max_gpus; n *= 2) ns.push_back(n);
  const std::vector<StepPrediction> ps = sweep(m, w, hw, ns, meas);

  fs::create_directories(a.out);
  json j;
  j["model"] = {{"name", m.name},
                {"loaded_params", m.loaded_params},
                {"checkpoint_params", m.checkpoint_params},
                {"counted", m.counted},
                {"trainable_params", m.trainable_params},
                {"base_bytes_per_param", m.base_bytes_per_param}};
  for (const Unit& u : m.units) {
    const UnitTimes t = unit_times(u, w, hw, meas);
    j["model"]["units"].push_back({{"name", u.name},
                                   {"kind", u.kind},
                                   {"layers", u.layers},
                                   {"base_params", u.base_params},
                                   {"lora_params", u.lora_params},
                                   {"forward_s_per_micro_batch", t.forward_s},
                                   {"backward_s_per_micro_batch", t.backward_s}});
  }
  j["hardware"] = hardware_json(hw);
  j["workload"] = workload_json(w);
  j["label"] = a.label;
  j["measured_units"] = a.measured.empty() ? json(nullptr) : json(a.measured);
  for (const auto& p : ps) j["predictions"].push_back(prediction_json(p));
  const fs::path dir(a.out);
  write_file(dir / "scaling.json", j.dump(2) + "\n");
  const std::string md = predictions_markdown(m, w, hw, ps, meas, a.label);
  write_file(dir / "scaling.md", md);
  write_plots(dir, ps, a.label);
  std::cout << md;
  std::cout << fmt::format("\nwrote {}/scaling.json, scaling.md, step_time.svg, efficiency.svg, memory.svg\n", a.out);
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
struct ValidateArgs {
  std::string config, bandwidth, measured, out;
  std::vector<std::string> runs;
};

struct RunSpec {
  std::string path;
  int64_t ranks = 1;
};

RunSpec parse_run(const std::string& s) {
  const size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size())
    throw Failure(fmt::format("--runs {}: expected METRICS.jsonl:RANKS", s));
  RunSpec r;
  r.path = s.substr(0, colon);
  const std::string n = s.substr(colon + 1);
  try {
    size_t used = 0;
    r.ranks = std::stoll(n, &used);
    if (used != n.size() || r.ranks < 1) throw std::invalid_argument(n);
  } catch (const std::exception&) {
    throw Failure(fmt::format("--runs {}: the rank count '{}' is not an integer >= 1", s, n));
  }
  return r;
}

// The numeric fields of every logged line of a metrics.jsonl, by name, in line order (NaN where a line
// lacks the field). pairs_per_s is required on every line.
std::map<std::string, std::vector<double>> read_metrics(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Failure(fmt::format("{}: cannot open", path));
  std::map<std::string, std::vector<double>> fields;
  std::string line;
  size_t lines = 0;
  for (int ln = 1; std::getline(f, line); ++ln) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      throw Failure(fmt::format("{}:{}: not a JSON object", path, ln));
    }
    if (!j.is_object() || !j.contains("pairs_per_s") || !j["pairs_per_s"].is_number())
      throw Failure(fmt::format("{}:{}: field 'pairs_per_s': expected a number", path, ln));
    for (const auto& [k, v] : j.items()) {
      if (!v.is_number()) continue;
      auto& col = fields[k];
      col.resize(lines, NAN);
      col.push_back(v.get<double>());
    }
    ++lines;
    for (auto& [k, col] : fields) col.resize(lines, NAN);
  }
  return fields;
}

// The median of a logged field over the lines after the first; NaN when no such line has it.
double median_after_first(const std::map<std::string, std::vector<double>>& fields, const std::string& key) {
  auto it = fields.find(key);
  if (it == fields.end()) return NAN;
  std::vector<double> v;
  for (size_t i = 1; i < it->second.size(); ++i)
    if (std::isfinite(it->second[i])) v.push_back(it->second[i]);
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

struct ValidationConfig {
  ModelDesc model;
  Workload w;
  Strategy strategy = Strategy::full;
  bool pps_all_ranks = true;
  int64_t ranks_per_node = 0;  // hybrid's shard group (parallel.ranks_per_node); 0 = every rank on one node
};

ValidationConfig load_validation_config(const std::string& path) {
  const json j = load_json(path);
  if (!j.is_object()) throw Failure(fmt::format("{}: expected a JSON object", path));
  auto field = [&](const char* k) { return fmt::format("{}: field '{}'", path, k); };
  auto get_int = [&](const char* k, int64_t def, int64_t min) { return j.contains(k) ? integer(j[k], field(k), min) : def; };
  auto need_int = [&](const char* k, int64_t min) {
    if (!j.contains(k)) throw Failure(fmt::format("{}: missing", field(k)));
    return integer(j[k], field(k), min);
  };
  ValidationConfig c;
  const std::string arch = j.value("arch", std::string("bert"));
  c.w.pairs_per_rank = need_int("pairs_per_rank", 1);
  c.w.grad_accum = get_int("grad_accum", 1, 1);
  c.w.lora_rank = get_int("lora_rank", 8, 0);
  c.w.checkpointing = j.contains("checkpointing") ? boolean(j["checkpointing"], field("checkpointing")) : false;
  c.w.deterministic = j.contains("deterministic") ? boolean(j["deterministic"], field("deterministic")) : false;
  c.w.replicate_trainable =
      j.contains("replicate_trainable") ? boolean(j["replicate_trainable"], field("replicate_trainable")) : false;
  const int64_t chunk = get_int("trainable_chunk", 4096, 1);
  c.ranks_per_node = get_int("ranks_per_node", 0, 0);
  if (j.contains("strategy")) {
    if (!j["strategy"].is_string()) throw Failure(fmt::format("{}: expected a string", field("strategy")));
    try {
      c.strategy = parse_strategy(j["strategy"].get<std::string>());
    } catch (const std::invalid_argument& e) {
      throw Failure(fmt::format("{}: {}", field("strategy"), e.what()));
    }
  }
  const std::string counts = j.value("pairs_per_s_counts", std::string("all_ranks"));
  if (counts != "all_ranks" && counts != "one_rank")
    throw Failure(fmt::format("{}: expected \"all_ranks\" or \"one_rank\"", field("pairs_per_s_counts")));
  c.pps_all_ranks = counts == "all_ranks";
  try {
    if (arch == "bert") {
      BertShape s;
      s.vocab_size = need_int("vocab_size", 1);
      s.hidden_size = need_int("hidden_size", 1);
      s.intermediate_size = need_int("intermediate_size", 1);
      s.num_hidden_layers = need_int("num_hidden_layers", 1);
      s.max_position_embeddings = get_int("max_position_embeddings", 512, 1);
      s.type_vocab_size = get_int("type_vocab_size", 2, 0);
      if (j.contains("lora_targets")) {
        if (!j["lora_targets"].is_array()) throw Failure(fmt::format("{}: expected a list of names", field("lora_targets")));
        s.lora_targets.clear();
        for (const auto& t : j["lora_targets"]) {
          if (!t.is_string()) throw Failure(fmt::format("{}: expected a list of names", field("lora_targets")));
          s.lora_targets.push_back(t.get<std::string>());
        }
      }
      if (j.contains("base_bytes_per_param")) s.base_bytes_per_param = positive(j["base_bytes_per_param"], field("base_bytes_per_param"));
      if (j.contains("activation_bytes")) s.activation_bytes = positive(j["activation_bytes"], field("activation_bytes"));
      c.w.text_tokens = need_int("tokens_per_side", 1);
      c.w.image_tokens = 0;
      c.model = bert_model(s, c.w);
    } else if (arch == "phi3_v") {
      c.w.text_tokens = get_int("text_tokens", c.w.text_tokens, 1);
      c.w.image_tokens = get_int("image_tokens", c.w.image_tokens, 0);
      c.w.crops = get_int("crops", c.w.crops, 1);
      c.w.clip_layers_per_unit = get_int("clip_layers_per_unit", c.w.clip_layers_per_unit, 1);
      c.model = phi35v_model(c.w);
    } else {
      throw Failure(fmt::format("{}: '{}' (expected bert or phi3_v)", field("arch"), arch));
    }
    c.model.trainable_chunk = chunk;
  } catch (const std::invalid_argument& e) {
    throw Failure(fmt::format("{}: {}", path, e.what()));
  }
  return c;
}

// The measured link (README.md): {"alpha_us", "bus_bandwidth_GBps", "overlap", "by_ranks": {"N": {alpha_us,
// bus_bandwidth_GBps}}}; one node. by_ranks: the link runs with N ranks at (ranks sharing a CPU's cores slow
// it down).
struct MeasuredLink {
  Hardware base;
  std::map<int64_t, Hardware> by_ranks;
  const Hardware& at(int64_t ranks) const {
    const auto it = by_ranks.find(ranks);
    return it == by_ranks.end() ? base : it->second;
  }
};

MeasuredLink load_bandwidth(const std::string& path) {
  const json j = load_json(path);
  if (!j.is_object()) throw Failure(fmt::format("{}: expected a JSON object", path));
  MeasuredLink ml;
  Hardware& hw = ml.base;
  hw.name = "measured link (" + path + ")";
  hw.gpus_per_node = int64_t(1) << 30;  // every rank on one machine: the one measured link
  hw.workspace_GB = 0;
  hw.peak_tflops = NAN, hw.mfu = NAN;   // compute comes from the measured units only
  // alpha and bandwidth of one object into h; `where` names it.
  auto link = [&](const json& o, Hardware& h, const std::string& where, bool top) {
    for (const auto& [k, v] : o.items()) {
      const std::string w = fmt::format("{}: field '{}'", where, k);
      if (k == "alpha_us")
        h.intra_alpha_us = h.inter_alpha_us = number(v, w);
      else if (k == "bus_bandwidth_GBps")
        h.intra_bw_GBps = h.inter_bw_GBps = positive(v, w);
      else if (top && k == "overlap")
        h.overlap = boolean(v, w);
      else if (!(top && (k == "notes" || k == "by_ranks")) && k != "notes")
        throw Failure(fmt::format("{}: unknown field (known: alpha_us, bus_bandwidth_GBps{})", w,
                                  top ? ", overlap, by_ranks, notes" : ", notes"));
    }
    if (!o.contains("alpha_us") || !o.contains("bus_bandwidth_GBps"))
      throw Failure(fmt::format("{}: alpha_us and bus_bandwidth_GBps are required", where));
    if (h.intra_alpha_us < 0) throw Failure(fmt::format("{}: field 'alpha_us': expected >= 0", where));
  };
  link(j, hw, path, true);
  if (j.contains("by_ranks")) {
    if (!j["by_ranks"].is_object()) throw Failure(fmt::format("{}: field 'by_ranks': expected an object", path));
    for (const auto& [k, v] : j["by_ranks"].items()) {
      const std::string w = fmt::format("{}: by_ranks '{}'", path, k);
      char* end = nullptr;
      const long n = std::strtol(k.c_str(), &end, 10);
      if (!end || *end || n < 2) throw Failure(w + ": expected a rank count >= 2 as the key");
      if (!v.is_object()) throw Failure(w + ": expected an object");
      Hardware h = hw;
      h.name = fmt::format("{} at {} ranks", hw.name, n);
      link(v, h, w, false);
      ml.by_ranks[n] = h;
    }
  }
  return ml;
}

struct FitLinkArgs {
  std::vector<std::string> comm;
  std::string out;
  bool no_overlap = false;
  double min_bytes = 0, max_bytes = 1e300;  // the gathered sizes fitted
};

// bench_comm --json files: {"ranks": p, "samples": [{"collective": "all-gather", "gathered_bytes": S,
// "seconds": t}, ...]}; only our all-gathers are fitted (the trainer's frozen gathers).
int run_fit_link(const FitLinkArgs& a) {
  std::vector<CommSample> samples;
  for (const std::string& path : a.comm) {
    const json j = load_json(path);
    if (!j.is_object() || !j.contains("ranks") || !j.contains("samples") || !j["samples"].is_array())
      throw Failure(fmt::format("{}: expected bench_comm --json output (fields 'ranks' and 'samples')", path));
    const int64_t p = integer(j["ranks"], path + ": field 'ranks'", 2);
    size_t i = 0;
    for (const json& s : j["samples"]) {
      const std::string w = fmt::format("{}: samples[{}]", path, i++);
      if (!s.is_object() || !s.contains("collective") || !s["collective"].is_string())
        throw Failure(w + ": expected an object with 'collective', 'gathered_bytes', 'seconds'");
      if (s["collective"] != "all-gather") continue;
      if (!s.contains("gathered_bytes") || !s.contains("seconds"))
        throw Failure(w + ": 'gathered_bytes' and 'seconds' are required");
      const CommSample cs{p, positive(s["gathered_bytes"], w + ".gathered_bytes"), positive(s["seconds"], w + ".seconds")};
      if (cs.bytes >= a.min_bytes && cs.bytes <= a.max_bytes) samples.push_back(cs);
    }
  }
  if (samples.empty())
    throw Failure("fit-link: no all-gather samples in the --comm files (within --min-bytes / --max-bytes)");
  double rms = 0;
  Link l;
  try {
    l = fit_link(samples, &rms);
  } catch (const std::invalid_argument& e) {
    throw Failure(e.what());
  }
  json out;
  out["alpha_us"] = l.alpha_s * 1e6;
  out["bus_bandwidth_GBps"] = l.bw_Bps / 1e9;
  out["overlap"] = !a.no_overlap;
  // Per rank count, where its samples determine a fit of their own (two sizes or more).
  std::map<int64_t, std::vector<CommSample>> per_p;
  for (const CommSample& s : samples) per_p[s.p].push_back(s);
  if (per_p.size() > 1)
    for (const auto& [p, ss] : per_p) {
      double r = 0;
      try {
        const Link lp = fit_link(ss, &r);
        out["by_ranks"][std::to_string(p)] = {{"alpha_us", lp.alpha_s * 1e6}, {"bus_bandwidth_GBps", lp.bw_Bps / 1e9},
                                              {"notes", fmt::format("{} samples, RMS relative error {:.1f}%", ss.size(),
                                                                    100 * r)}};
        std::printf("  %lld ranks: alpha %.2f us, bus bandwidth %.3f GB/s; RMS relative error %.1f%%\n",
                    static_cast<long long>(p), lp.alpha_s * 1e6, lp.bw_Bps / 1e9, 100 * r);
      } catch (const std::invalid_argument& e) {  // the common fit serves this rank count
        std::printf("  %lld ranks: no fit of its own (%s)\n", static_cast<long long>(p), e.what());
      }
    }
  std::string files;
  for (const auto& f : a.comm) files += (files.empty() ? "" : ", ") + fs::path(f).filename().string();
  out["notes"] = fmt::format("fit-link: {} all-gather timings ({}), RMS relative error {:.1f}%", samples.size(),
                             files, 100 * rms);
  const std::string text = out.dump(2) + "\n";
  std::printf("alpha %.2f us, bus bandwidth %.3f GB/s; %zu samples, RMS relative error %.1f%%\n", l.alpha_s * 1e6,
              l.bw_Bps / 1e9, samples.size(), 100 * rms);
  if (!a.out.empty()) write_file(a.out, text);
  return 0;
}

int run_validate(const ValidateArgs& a) {
  const ValidationConfig c = load_validation_config(a.config);
  const MeasuredLink link = load_bandwidth(a.bandwidth);
  const Hardware& hw = link.base;
  const MeasuredFile mf = load_measured(a.measured);
  std::vector<RunSpec> runs;
  for (const std::string& r : a.runs) runs.push_back(parse_run(r));

  std::string md = fmt::format(
      "# Validation: {} ({} strategy)\n\n{} pairs per rank x {} accumulation steps, {} positions per side, LoRA r={}, "
      "checkpointing {}. Frozen parameters {} in {} units, trainable {}. Link: alpha {:.2f} us, {:.3f} GB/s, overlap "
      "{}{}.\n\n",
      c.model.name, strategy_name(c.strategy), c.w.pairs_per_rank, c.w.grad_accum, c.w.text_tokens + c.w.image_tokens,
      c.w.lora_rank, c.w.checkpointing ? "on" : "off", thousands(c.model.loaded_params), c.model.units.size(),
      thousands(c.model.trainable_params), hw.intra_alpha_us, hw.intra_bw_GBps, hw.overlap ? "on" : "off",
      [&] {
        std::string s;
        for (const auto& [n, h] : link.by_ranks)
          s += fmt::format("; at {} ranks alpha {:.2f} us, {:.3f} GB/s", n, h.intra_alpha_us, h.intra_bw_GBps);
        return s;
      }());
  md += "| ranks | steps used | measured step (s) | predicted step (s) | error | compute (s) | comm exposed / total (s) "
        "| predicted, no overlap (s) | error |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  json out = json::array();
  std::string md2;  // what the trainer logs beside the time: bytes, waits, resident shards
  auto pair = [](double logged, double predicted, const char* f) {  // both in the logged field's unit
    const std::string pr = fmt::format(fmt::runtime(f), predicted);
    return std::isfinite(logged) ? fmt::format(fmt::runtime(f), logged) + " / " + pr : "- / " + pr;
  };
  for (const RunSpec& r : runs) {
    const auto fields = read_metrics(r.path);
    const std::vector<double>& pps = fields.at("pairs_per_s");
    const double step_pairs = double(c.w.pairs_per_rank * c.w.grad_accum * (c.pps_all_ranks ? r.ranks : 1));
    const double measured = median_step_time(pps, step_pairs);
    if (!std::isfinite(measured))
      throw Failure(fmt::format("{}: no logged step with pairs_per_s > 0 after the first line", r.path));
    size_t used = 0;
    for (size_t i = 1; i < pps.size(); ++i) used += pps[i] > 0;
    const MeasuredUnits mu = mf.at(r.ranks);
    Hardware hw_run = link.at(r.ranks);
    if (c.ranks_per_node > 0) hw_run.gpus_per_node = c.ranks_per_node;  // the measured link serves both levels
    Hardware hw_serial = hw_run;
    hw_serial.overlap = false;
    StepPrediction p, q;
    try {
      p = predict_step(c.model, c.w, hw_run, c.strategy, r.ranks, &mu, true);
      q = predict_step(c.model, c.w, hw_serial, c.strategy, r.ranks, &mu, true);
    } catch (const std::invalid_argument& e) {
      throw Failure(fmt::format("{}: {}", a.measured, e.what()));
    }
    const double err = (p.step_s - measured) / measured, err_q = (q.step_s - measured) / measured;
    md += fmt::format("| {} | {} | {:.4f} | {:.4f} | {:+.1f}% | {:.4f} | {:.4f} / {:.4f} | {:.4f} | {:+.1f}% |\n", r.ranks,
                      used, measured, p.step_s, 100 * err, p.compute_s, p.exposed_comm_s, p.comm_s, q.step_s, 100 * err_q);
    const double lf = median_after_first(fields, "comm_frozen_bytes"), lg = median_after_first(fields, "comm_grad_bytes"),
                 lp = median_after_first(fields, "comm_param_bytes"), lw = median_after_first(fields, "comm_wait_s"),
                 lr = median_after_first(fields, "frozen_resident_mb"),
                 lpk = median_after_first(fields, "frozen_peak_gathered_mb");
    const double MiB = 1048576.0;
    md2 += fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", r.ranks, pair(lf, p.frozen_bytes, "{:.0f}"),
                       pair(lg, p.grad_bytes, "{:.0f}"), pair(lp, p.param_bytes, "{:.0f}"),
                       pair(lw, p.exposed_comm_s, "{:.4f}"), pair(lr, p.shard_group > 1 ? p.memory.base / MiB : 0.0, "{:.2f}"),
                       pair(lpk, p.memory.gathered / MiB, "{:.2f}"));
    json jr = prediction_json(p);
    jr["metrics"] = r.path;
    jr["steps_used"] = used;
    jr["measured_step_s"] = measured;
    jr["relative_error"] = err;
    jr["predicted_step_s_no_overlap"] = q.step_s;
    jr["relative_error_no_overlap"] = err_q;
    auto opt = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
    jr["logged"] = {{"comm_frozen_bytes", opt(lf)},     {"comm_grad_bytes", opt(lg)},
                    {"comm_param_bytes", opt(lp)},      {"comm_wait_s", opt(lw)},
                    {"frozen_resident_mb", opt(lr)},    {"frozen_peak_gathered_mb", opt(lpk)}};
    out.push_back(jr);
  }
  md += "\nWhat the trainer logs beside the time (median after the first logged step), logged / predicted; "
        "`comm_wait_s` is the communication compute did not hide:\n\n"
        "| ranks | comm_frozen_bytes | comm_grad_bytes | comm_param_bytes | comm_wait_s vs exposed (s) | "
        "frozen_resident_mb | frozen_peak_gathered_mb |\n|---:|---:|---:|---:|---:|---:|---:|\n" + md2;
  std::cout << md;
  if (!a.out.empty()) {
    fs::create_directories(a.out);
    write_file(fs::path(a.out) / "validation.md", md);
    write_file(fs::path(a.out) / "validation.json", json{{"config", a.config}, {"bandwidth", a.bandwidth},
                                                         {"measured_units", a.measured}, {"runs", out}}.dump(2) + "\n");
    std::cout << fmt::format("\nwrote {}/validation.md, validation.json\n", a.out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"scaling_model: step time, memory and scaling efficiency of the distributed trainer "
               "(benchmarks/scaling/README.md)"};
  app.require_subcommand(1);

  PredictArgs pa;
  CLI::App* pred = app.add_subcommand("predict", "Phi-3.5-vision on 1..max GPUs, every strategy: tables and plots");
  pred->add_option("--hardware", pa.hardware, "Hardware JSON")->default_val(XV_SCALING_DIR "/hardware-h100.json");
  pred->add_option("--measured-units", pa.measured, "Measured per-unit compute times (JSON) instead of FLOPs");
  pred->add_option("--out", pa.out, "Output folder")->default_val("runs/scaling");
  pred->add_option("--set", pa.sets, "Override a hardware field: key=value (repeatable)");
  pred->add_option("--pairs-per-gpu", pa.w.pairs_per_rank, "Pairs per GPU per micro-batch")->default_val(8)->check(CLI::PositiveNumber);
  pred->add_option("--grad-accum", pa.w.grad_accum, "Micro-batches per optimizer step")->default_val(4)->check(CLI::PositiveNumber);
  pred->add_option("--text-tokens", pa.w.text_tokens, "Text positions per side")->default_val(64)->check(CLI::PositiveNumber);
  pred->add_option("--image-tokens", pa.w.image_tokens, "Image positions per side (0: text only)")->default_val(757)->check(CLI::NonNegativeNumber);
  pred->add_option("--crops", pa.w.crops, "CLIP crops per image")->default_val(5)->check(CLI::PositiveNumber);
  pred->add_option("--lora-rank", pa.w.lora_rank, "LoRA rank")->default_val(8)->check(CLI::NonNegativeNumber);
  pred->add_option("--clip-layers-per-unit", pa.w.clip_layers_per_unit, "CLIP layers per FSDP unit")->default_val(8)->check(CLI::PositiveNumber);
  pred->add_flag("--no-checkpointing", pa.no_checkpointing, "Activation checkpointing off");
  pred->add_option("--label", pa.label, "Appended to the titles of the table and the plots");
  pred->add_option("--max-gpus", pa.max_gpus, "Largest GPU count (powers of two from 1)")->default_val(1024)->check(CLI::PositiveNumber);

  ValidateArgs va;
  CLI::App* val = app.add_subcommand("validate", "Predicted vs measured step time of small CPU runs");
  val->add_option("--config", va.config, "Model and workload JSON")->required();
  val->add_option("--bandwidth", va.bandwidth, "Measured link JSON (alpha_us, bus_bandwidth_GBps, overlap)")->required();
  val->add_option("--measured-units", va.measured, "Measured per-unit compute JSON")->required();
  val->add_option("--runs", va.runs, "METRICS.jsonl:RANKS ...")->required()->expected(1, -1);
  val->add_option("--out", va.out, "Also write validation.md and validation.json here");

  FitLinkArgs fa;
  CLI::App* fit = app.add_subcommand("fit-link", "Latency and bandwidth fitted to bench_comm --json timings");
  fit->add_option("--comm", fa.comm, "bench_comm --json files (2 and 3 ranks)")->required()->expected(1, -1);
  fit->add_option("--out", fa.out, "Write the --bandwidth JSON here");
  fit->add_flag("--no-overlap", fa.no_overlap, "Mark the link as making no progress behind compute");
  fit->add_option("--min-bytes", fa.min_bytes, "Fit only gathered sizes >= this (bytes)")->check(CLI::NonNegativeNumber);
  fit->add_option("--max-bytes", fa.max_bytes, "Fit only gathered sizes <= this (bytes)")->check(CLI::PositiveNumber);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (pred->parsed()) return run_predict(pa);
    if (fit->parsed()) return run_fit_link(fa);
    return run_validate(va);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scaling_model: error: %s\n", e.what());
    return 1;
  }
}
