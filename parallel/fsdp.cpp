#include "parallel/fsdp.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace xv::par {

namespace {

void free_tensor(Tensor& t) { std::vector<float>().swap(t.data); }

}  // namespace

// ---- FrozenShards ----

FrozenShards::FrozenShards(Communicator& comm, std::vector<WeightUnit> units, bool prefetch)
    : comm_(comm), prefetch_(prefetch) {
  const int64_t n = comm.size(), r = comm.rank();
  units_.resize(units.size());
  for (size_t i = 0; i < units.size(); ++i) {
    Unit& u = units_[i];
    u.w = std::move(units[i]);
    // A deferred unit (WeightUnit::load) is read whole now, sharded, and emptied below: one unit at a time.
    if (u.w.load && std::any_of(u.w.tensors.begin(), u.w.tensors.end(), [](const Tensor* t) { return t->shape_only(); }))
      u.w.load();
    u.w.load = nullptr;  // the checkpoint is not needed again (its mapping goes with the last loader)
    for (const Tensor* t : u.w.tensors) {
      XV_CHECK(t->numel() == shape_numel(t->shape), "fsdp: unit '{}' has a tensor that is not whole", u.w.name);
      u.total += t->numel();
    }
    u.shard = (u.total + n - 1) / n;
    // This rank's slice [r * shard, (r + 1) * shard) of the unit's flat layout (tensors in order, zero padding).
    u.mine.assign(size_t(u.shard), 0.0f);
    int64_t off = 0;
    const int64_t b = r * u.shard, e = b + u.shard;
    for (const Tensor* t : u.w.tensors) {
      const int64_t tb = std::max(b, off), te = std::min(e, off + t->numel());
      if (tb < te) std::memcpy(u.mine.data() + (tb - b), t->ptr() + (tb - off), size_t(te - tb) * sizeof(float));
      off += t->numel();
    }
    for (Tensor* t : u.w.tensors) free_tensor(*t);
  }
}

FrozenShards::~FrozenShards() {
  for (Unit& u : units_)
    if (u.req) {
      try {
        u.req->wait();
      } catch (...) {
      }
    }
}

int64_t FrozenShards::resident_bytes() const {
  int64_t b = 0;
  for (const Unit& u : units_) b += u.shard * int64_t(sizeof(float));
  return b;
}

void FrozenShards::note_gathered(int64_t delta) {
  gathered_ += delta;
  peak_gathered_ = std::max(peak_gathered_, gathered_);
}

void FrozenShards::start(Unit& u) {
  u.full.assign(size_t(u.shard * comm_.size()), 0.0f);
  note_gathered(int64_t(u.full.size() * sizeof(float)));
  u.req = comm_.iall_gather(u.mine.data(), u.full.data(), size_t(u.shard), DType::f32);
  ++gathers_;
}

void FrozenShards::acquire(int ui, int next) {
  XV_CHECK(ui >= 0 && ui < units(), "fsdp: unit {} of {}", ui, units());
  Unit& u = units_[size_t(ui)];
  XV_CHECK(!u.held, "fsdp: unit '{}' acquired twice", u.w.name);
  if (!u.req) start(u);
  u.req->wait();
  u.req.reset();
  // The flat buffer into the tensors, then the flat buffer goes.
  int64_t off = 0;
  for (Tensor* t : u.w.tensors) {
    const int64_t k = shape_numel(t->shape);
    t->data.assign(u.full.begin() + off, u.full.begin() + off + k);
    off += k;
  }
  note_gathered(u.total * int64_t(sizeof(float)) - int64_t(u.full.size() * sizeof(float)));
  std::vector<float>().swap(u.full);
  u.held = true;
  if (prefetch_ && next >= 0 && next < units() && next != ui) {
    Unit& nu = units_[size_t(next)];
    if (!nu.held && !nu.req) start(nu);
  }
}

void FrozenShards::release(int ui) {
  XV_CHECK(ui >= 0 && ui < units(), "fsdp: unit {} of {}", ui, units());
  Unit& u = units_[size_t(ui)];
  if (!u.held) return;
  for (Tensor* t : u.w.tensors) free_tensor(*t);
  note_gathered(-u.total * int64_t(sizeof(float)));
  u.held = false;
}

// ---- TrainableShards ----

TrainableShards::TrainableShards(std::vector<TrainableTensor> tensors, ops::AdamWParams cfg, TrainableOptions o)
    : tensors_(std::move(tensors)), cfg_(cfg), o_(o) {
  XV_CHECK(o_.world && o_.grad_accum >= 1, "trainable shards: no world communicator");
  const int64_t W = o_.world->size();
  for (const auto& t : tensors_) {
    XV_CHECK(t.value->shape == t.grad->shape, "trainable shards: {}: parameter and gradient shapes differ", t.name);
    offsets_.push_back(total_);
    total_ += t.value->numel();
  }
  const int64_t unit = W * kNormChunk;
  padded_ = std::max<int64_t>(1, (total_ + unit - 1) / unit) * unit;
  if (o_.group) {
    XV_CHECK(W % o_.group->size() == 0, "trainable shards: a shard group of {} ranks in a world of {}",
             o_.group->size(), W);
    const int64_t S = padded_ / o_.group->size();
    own_begin_ = o_.group->rank() * S, own_end_ = own_begin_ + S;
  } else {
    own_begin_ = 0, own_end_ = padded_;
  }
  m_.assign(size_t(own_end_ - own_begin_), 0.0f);
  v_.assign(size_t(own_end_ - own_begin_), 0.0f);
  if (o_.deterministic) micro_.assign(size_t(o_.grad_accum), std::vector<float>(size_t(padded_), 0.0f));
}

void TrainableShards::model_grads_to(float* flat) const {
  std::fill(flat, flat + padded_, 0.0f);
  for (size_t i = 0; i < tensors_.size(); ++i)
    std::memcpy(flat + offsets_[i], tensors_[i].grad->ptr(), tensors_[i].grad->data.size() * sizeof(float));
}

void TrainableShards::take_micro_batch(int64_t m) {
  XV_CHECK(o_.deterministic && m >= 0 && m < o_.grad_accum, "trainable shards: micro-batch {} of {}", m,
           o_.grad_accum);
  model_grads_to(micro_[size_t(m)].data());
}

std::vector<double> TrainableShards::chunk_sums(const float* g, int64_t b, int64_t e) const {
  std::vector<double> s(size_t((e - b) / kNormChunk), 0.0);
  for (size_t c = 0; c < s.size(); ++c) {
    double acc = 0.0;
    const float* p = g + int64_t(c) * kNormChunk;
    for (int64_t i = 0; i < kNormChunk; ++i) acc += double(p[i]) * p[i];
    s[c] = acc;
  }
  return s;
}

double TrainableShards::step(float lr, double max_norm) {
  Communicator& world = *o_.world;
  const int64_t W = world.size(), owned = own_end_ - own_begin_;
  std::vector<float> gown;  // (owned) the summed gradient of this rank's elements
  double sumsq = 0.0;
  auto ordered_total = [](const std::vector<double>& sums) {
    double t = 0.0;
    for (double v : sums) t += v;
    return t;
  };
  if (o_.deterministic) {
    // Every rank's pieces of its world shard, from every micro-batch of every rank; summed in global order.
    const int64_t Sw = padded_ / W, ga = o_.grad_accum;
    std::vector<float> send(size_t(W * ga * Sw)), recv(size_t(W * ga * Sw));
    for (int64_t s = 0; s < W; ++s)
      for (int64_t m = 0; m < ga; ++m)
        std::memcpy(send.data() + (s * ga + m) * Sw, micro_[size_t(m)].data() + s * Sw, size_t(Sw) * sizeof(float));
    world.all_to_all(send.data(), recv.data(), size_t(ga * Sw), DType::f32);
    std::vector<float>().swap(send);
    std::vector<float> wshard(size_t(Sw), 0.0f);
    for (int64_t j = 0; j < W * ga; ++j) {
      const float* p = recv.data() + ((j % W) * ga + j / W) * Sw;
      for (int64_t i = 0; i < Sw; ++i) wshard[size_t(i)] += p[i];
    }
    std::vector<float>().swap(recv);
    // The norm over world shards (the same chunks as any other world size).
    const std::vector<double> mine = chunk_sums(wshard.data(), world.rank() * Sw, (world.rank() + 1) * Sw);
    std::vector<double> all(mine.size() * size_t(W));
    world.all_gather(mine.data(), all.data(), mine.size(), DType::f64);
    sumsq = ordered_total(all);
    if (own_begin_ == world.rank() * Sw && owned == Sw) {
      gown = std::move(wshard);
    } else {
      std::vector<float> whole(static_cast<size_t>(padded_));
      world.all_gather(wshard.data(), whole.data(), size_t(Sw), DType::f32);
      gown.assign(whole.begin() + own_begin_, whole.begin() + own_end_);
    }
  } else {
    std::vector<float> flat(static_cast<size_t>(padded_));
    model_grads_to(flat.data());
    if (!o_.group) {
      if (W > 1) world.all_reduce(flat.data(), flat.size(), DType::f32);
      gown = std::move(flat);
      sumsq = ordered_total(chunk_sums(gown.data(), 0, padded_));
    } else {
      gown.resize(size_t(owned));
      o_.group->reduce_scatter(flat.data(), gown.data(), size_t(owned), DType::f32);
      if (o_.across && o_.across->size() > 1) o_.across->all_reduce(gown.data(), gown.size(), DType::f32);
      const std::vector<double> mine = chunk_sums(gown.data(), own_begin_, own_end_);
      std::vector<double> all(mine.size() * size_t(o_.group->size()));
      o_.group->all_gather(mine.data(), all.data(), mine.size(), DType::f64);
      sumsq = ordered_total(all);
    }
  }
  const double norm = std::sqrt(sumsq);
  if (max_norm > 0.0) {
    const float coef = float(std::min(1.0, max_norm / (norm + 1e-6)));
    for (float& g : gown) g *= coef;
  }
  if (!std::isfinite(norm)) return norm;  // the caller stops; nothing is updated
  ++t_;
  // AdamW on this rank's elements, in place in the model's tensors (the padding has none: its moments stay 0).
  for_segments(own_begin_, own_end_, [&](size_t i, int64_t k, int64_t f, int64_t n) {
    const int64_t o = f - own_begin_;
    ops::adamw_update(tensors_[i].value->ptr() + k, gown.data() + o, m_.data() + o, v_.data() + o, n, lr, t_, cfg_);
  });
  if (o_.group && o_.group->size() > 1) {  // every rank's updated elements to every rank
    std::vector<float> mine(static_cast<size_t>(owned), 0.0f), all(static_cast<size_t>(padded_));
    for_segments(own_begin_, own_end_, [&](size_t i, int64_t k, int64_t f, int64_t n) {
      std::memcpy(mine.data() + (f - own_begin_), tensors_[i].value->ptr() + k, size_t(n) * sizeof(float));
    });
    o_.group->all_gather(mine.data(), all.data(), size_t(owned), DType::f32);
    for_segments(0, padded_, [&](size_t i, int64_t k, int64_t f, int64_t n) {
      std::memcpy(tensors_[i].value->ptr() + k, all.data() + f, size_t(n) * sizeof(float));
    });
  }
  return norm;
}

}  // namespace xv::par
