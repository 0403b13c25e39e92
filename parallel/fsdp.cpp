#include "parallel/fsdp.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace xv::par {

namespace {

// The communicator must move the buffers' kind of memory (docs/distributed.md: NCCL for device buffers).
void check_buffers(const Communicator& comm, Device d, const char* what) {
  XV_CHECK(comm.buffers() == d.kind, "{}: the tensors live on {}, but the {} communicator moves {} buffers "
           "(parallel/comm_select.h picks the communicator for a device)", what, d.str(), comm.backend(),
           comm.buffers() == DeviceKind::cpu ? "host" : "device");
}

// The dtype of the flat 1-D view of tensor t's elements [k, k + n).
View flat_part(const Tensor& t, int64_t k, int64_t n) { return t.flat().col_range(k, n); }

}  // namespace

// ---- FrozenShards ----

FrozenShards::FrozenShards(Communicator& comm, std::vector<WeightUnit> units, bool prefetch)
    : comm_(comm), prefetch_(prefetch) {
  const int64_t n = comm.size(), r = comm.rank();
  units_.resize(units.size());
  for (size_t i = 0; i < units.size(); ++i) {
    Unit& u = units_[i];
    u.w = std::move(units[i]);
    XV_CHECK(!u.w.tensors.empty(), "fsdp: unit '{}' has no tensors", u.w.name);
    // A deferred unit (WeightUnit::load) is read whole now, sharded, and released below: one unit at a time.
    if (u.w.load && std::any_of(u.w.tensors.begin(), u.w.tensors.end(), [](const Tensor* t) { return t->shape_only(); }))
      u.w.load();
    u.w.load = nullptr;  // the checkpoint is not needed again (its mapping goes with the last loader)
    u.dtype = u.w.tensors.front()->dtype();
    u.device = u.w.tensors.front()->device();
    for (const Tensor* t : u.w.tensors) {
      XV_CHECK(!t->shape_only(), "fsdp: unit '{}' has a tensor that is not whole", u.w.name);
      XV_CHECK(t->dtype() == u.dtype && t->device() == u.device, "fsdp: unit '{}' mixes {} on {} with {} on {}",
               u.w.name, dtype_name(u.dtype), u.device.str(), dtype_name(t->dtype()), t->device().str());
      u.shapes.push_back(t->shape());
      u.total += t->numel();
    }
    check_buffers(comm, u.device, "fsdp");
    u.shard = (u.total + n - 1) / n;
    // This rank's slice [r * shard, (r + 1) * shard) of the unit's flat layout (tensors in order, zero padding).
    u.mine = Tensor({u.shard}, u.dtype, u.device);
    int64_t off = 0;
    const int64_t b = r * u.shard, e = b + u.shard;
    for (const Tensor* t : u.w.tensors) {
      const int64_t tb = std::max(b, off), te = std::min(e, off + t->numel());
      if (tb < te) ops::copy(flat_part(*t, tb - off, te - tb), flat_part(u.mine, tb - b, te - tb));
      off += t->numel();
    }
    for (Tensor* t : u.w.tensors) t->release();
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
  for (const Unit& u : units_) b += u.shard * int64_t(dtype_size(u.dtype));
  return b;
}

void FrozenShards::note_gathered(int64_t delta) {
  gathered_ += delta;
  peak_gathered_ = std::max(peak_gathered_, gathered_);
}

void FrozenShards::start(Unit& u) {
  u.full = Tensor({u.shard * comm_.size()}, u.dtype, u.device);
  note_gathered(int64_t(u.full.nbytes()));
  u.req = comm_.iall_gather(u.mine.raw(), u.full.raw(), size_t(u.shard), u.dtype);
  ++gathers_;
}

void FrozenShards::acquire(int ui, int next) {
  XV_CHECK(ui >= 0 && ui < units(), "fsdp: unit {} of {}", ui, units());
  Unit& u = units_[size_t(ui)];
  XV_CHECK(!u.held, "fsdp: unit '{}' acquired twice", u.w.name);
  if (!u.req) start(u);
  u.req->wait();
  u.req.reset();
  // The tensors point into the gathered buffer; on the CPU a 16-bit unit is widened to f32 once, here.
  const Tensor buf = u.device.is_cpu() && u.dtype != DType::F32 ? ops::cast(u.full, DType::F32) : std::move(u.full);
  u.full = Tensor();
  int64_t off = 0;
  for (size_t i = 0; i < u.w.tensors.size(); ++i) {
    *u.w.tensors[i] = buf.alias(off, u.shapes[i]);
    off += shape_numel(u.shapes[i]);
  }
  u.held_bytes = int64_t(buf.nbytes());
  note_gathered(u.held_bytes - int64_t(u.shard * comm_.size()) * int64_t(dtype_size(u.dtype)));
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
  for (size_t i = 0; i < u.w.tensors.size(); ++i) *u.w.tensors[i] = Tensor::shape_only(u.shapes[i], u.dtype, u.device);
  note_gathered(-u.held_bytes);
  u.held = false;
}

// ---- TrainableShards ----

TrainableShards::TrainableShards(std::vector<TrainableTensor> tensors, ops::AdamWParams cfg, TrainableOptions o)
    : tensors_(std::move(tensors)), cfg_(cfg), o_(o) {
  XV_CHECK(o_.world && o_.grad_accum >= 1, "trainable shards: no world communicator");
  XV_CHECK(!tensors_.empty(), "trainable shards: no trainable tensors");
  const int64_t W = o_.world->size();
  device_ = tensors_.front().value->device();
  for (const auto& t : tensors_) {
    XV_CHECK(t.value->shape() == t.grad->shape(), "trainable shards: {}: parameter and gradient shapes differ", t.name);
    XV_CHECK(t.value->dtype() == DType::F32 && t.grad->dtype() == DType::F32 && t.value->device() == device_ &&
                 t.grad->device() == device_,
             "trainable shards: {}: trainable tensors are F32 on one device ({}), this one is {} on {}", t.name,
             device_.str(), dtype_name(t.value->dtype()), t.value->device().str());
    offsets_.push_back(total_);
    total_ += t.value->numel();
  }
  for (Communicator* c : {o_.world, o_.group, o_.across})
    if (c) check_buffers(*c, device_, "trainable shards");
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
  m_ = Tensor({own_end_ - own_begin_}, DType::F32, device_);
  v_ = Tensor({own_end_ - own_begin_}, DType::F32, device_);
  if (o_.deterministic)
    for (int64_t m = 0; m < o_.grad_accum; ++m) micro_.emplace_back(Shape{padded_}, DType::F32, device_);
}

void TrainableShards::model_grads_to(Tensor& flat) const {
  ops::fill(flat, 0.0f);
  for (size_t i = 0; i < tensors_.size(); ++i)
    ops::copy(tensors_[i].grad->flat(), flat_part(flat, offsets_[i], tensors_[i].grad->numel()));
}

void TrainableShards::take_micro_batch(int64_t m) {
  XV_CHECK(o_.deterministic && m >= 0 && m < o_.grad_accum, "trainable shards: micro-batch {} of {}", m,
           o_.grad_accum);
  model_grads_to(micro_[size_t(m)]);
}

double TrainableShards::step(float lr, double max_norm) {
  Communicator& world = *o_.world;
  const int64_t W = world.size(), owned = own_end_ - own_begin_;
  Tensor gown;  // (owned) the summed gradient of this rank's elements
  double sumsq = 0.0;
  auto ordered_total = [](const std::vector<double>& sums) {
    double t = 0.0;
    for (double v : sums) t += v;
    return t;
  };
  auto part = [](const Tensor& t, int64_t b, int64_t n) { return flat_part(t, b, n); };
  if (o_.deterministic) {
    // Every rank's pieces of its world shard, from every micro-batch of every rank; summed in global order.
    const int64_t Sw = padded_ / W, ga = o_.grad_accum;
    Tensor send({W * ga * Sw}, DType::F32, device_), recv({W * ga * Sw}, DType::F32, device_);
    for (int64_t s = 0; s < W; ++s)
      for (int64_t m = 0; m < ga; ++m) ops::copy(part(micro_[size_t(m)], s * Sw, Sw), part(send, (s * ga + m) * Sw, Sw));
    world.all_to_all(send.raw(), recv.raw(), size_t(ga * Sw), DType::F32);
    send = Tensor();
    Tensor wshard({Sw}, DType::F32, device_);
    for (int64_t j = 0; j < W * ga; ++j) ops::add(wshard.flat(), part(recv, ((j % W) * ga + j / W) * Sw, Sw));
    recv = Tensor();
    // The norm over world shards (the same chunks as any other world size).
    const std::vector<double> mine = ops::sum_squares_chunks(wshard, kNormChunk);
    std::vector<double> all(mine.size() * size_t(W));
    world.all_gather(mine.data(), all.data(), mine.size(), DType::F64);
    sumsq = ordered_total(all);
    if (own_begin_ == world.rank() * Sw && owned == Sw) {
      gown = std::move(wshard);
    } else {
      Tensor whole({padded_}, DType::F32, device_);
      world.all_gather(wshard.raw(), whole.raw(), size_t(Sw), DType::F32);
      gown = Tensor({owned}, DType::F32, device_);
      ops::copy(part(whole, own_begin_, owned), gown.flat());
    }
  } else {
    Tensor flat({padded_}, DType::F32, device_);
    model_grads_to(flat);
    if (!o_.group) {
      if (W > 1) world.all_reduce(flat.raw(), size_t(padded_), DType::F32);
      gown = std::move(flat);
      sumsq = ordered_total(ops::sum_squares_chunks(gown, kNormChunk));
    } else {
      gown = Tensor({owned}, DType::F32, device_);
      o_.group->reduce_scatter(flat.raw(), gown.raw(), size_t(owned), DType::F32);
      if (o_.across && o_.across->size() > 1) o_.across->all_reduce(gown.raw(), size_t(owned), DType::F32);
      const std::vector<double> mine = ops::sum_squares_chunks(gown, kNormChunk);
      std::vector<double> all(mine.size() * size_t(o_.group->size()));
      o_.group->all_gather(mine.data(), all.data(), mine.size(), DType::F64);
      sumsq = ordered_total(all);
    }
  }
  const double norm = std::sqrt(sumsq);
  if (!std::isfinite(norm)) return norm;  // the caller stops; nothing is updated
  const float clip = max_norm > 0.0 ? float(std::min(1.0, max_norm / (norm + 1e-6))) : 1.0f;
  ++t_;
  // AdamW on this rank's elements, in place in the model's tensors (the padding has none: its moments stay 0):
  // one multi-tensor update, the clipping coefficient applied inside it.
  std::vector<ops::AdamWSegment> segs;
  for_segments(own_begin_, own_end_, [&](size_t i, int64_t k, int64_t f, int64_t n) {
    const int64_t o = f - own_begin_;
    segs.push_back({part(*tensors_[i].value, k, n), part(gown, o, n), part(m_, o, n), part(v_, o, n)});
  });
  ops::adamw_update_multi(segs, clip, lr, t_, cfg_);
  if (o_.group && o_.group->size() > 1) {  // every rank's updated elements to every rank
    Tensor mine({owned}, DType::F32, device_), all({padded_}, DType::F32, device_);
    for_segments(own_begin_, own_end_, [&](size_t i, int64_t k, int64_t f, int64_t n) {
      ops::copy(part(*tensors_[i].value, k, n), part(mine, f - own_begin_, n));
    });
    o_.group->all_gather(mine.raw(), all.raw(), size_t(owned), DType::F32);
    for_segments(0, padded_, [&](size_t i, int64_t k, int64_t f, int64_t n) {
      ops::copy(part(all, f, n), part(*tensors_[i].value, k, n));
    });
  }
  return norm;
}

}  // namespace xv::par
