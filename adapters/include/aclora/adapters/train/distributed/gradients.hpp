/// @file gradients.hpp
/// @brief aclora::train::distributed::GradientSum: data-parallel gradients, summed over the
/// ranks in buckets (like DDP's), overlapped with the backward pass, with the step's scalars
/// (loss sum, counts) alongside.
#pragma once

#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "aclora/adapters/train/distributed/process_group.hpp"

namespace aclora::train::distributed {

/// Sums the gradients of a fixed list of parameters over the ranks, once per optimizer step.
///
/// The gradients are packed into flat buckets of about `bucket_bytes` (one dtype and device
/// each, in reverse parameter order: the order in which a backward pass produces them). After
/// overlap_next_backward(), the next backward starts each bucket's all-reduce as soon as the
/// last of its gradients is computed (a hook on every parameter), so communication runs
/// while the earlier layers' gradients are still being computed; sum() starts the buckets
/// left, waits, and writes the sums back. Buckets start in the same order on every rank.
class GradientSum {
 public:
  /// @param parameters the trained tensors (the same list, in the same order, on every rank)
  /// @param group the run's process group (must outlive this)
  /// @param bucket_bytes the size a bucket is filled to (a larger parameter gets a bucket of
  /// its own)
  GradientSum(std::vector<torch::Tensor> parameters, ProcessGroup& group,
              std::size_t bucket_bytes = std::size_t{25} << 20)
      : parameters_(std::move(parameters)), group_(&group), slots_(parameters_.size()) {
    for (std::size_t i = parameters_.size(); i-- > 0;) {
      const torch::Tensor& p = parameters_[i];
      const std::size_t bytes = static_cast<std::size_t>(p.numel()) * p.element_size();
      const bool fits = !buckets_.empty() && buckets_.back().dtype == p.scalar_type() &&
                        buckets_.back().device == p.device() &&
                        buckets_.back().bytes + bytes <= bucket_bytes;
      if (!fits)
        buckets_.push_back(Bucket{p.scalar_type(), p.device()});
      Bucket& bucket = buckets_.back();
      slots_[i] = Slot{buckets_.size() - 1, bucket.elements};
      bucket.members.push_back(i);
      bucket.bytes += bytes;
      bucket.elements += p.numel();
    }
    for (Bucket& bucket : buckets_)
      bucket.flat = torch::empty({bucket.elements},
                                 torch::TensorOptions().dtype(bucket.dtype).device(bucket.device));
    for (std::size_t i = 0; i < parameters_.size(); ++i)
      hooks_.push_back(parameters_[i].register_hook(
          [this, i](const torch::Tensor& gradient) { on_gradient(i, gradient); }));
  }

  GradientSum(const GradientSum&) = delete;
  GradientSum& operator=(const GradientSum&) = delete;

  ~GradientSum() {
    for (std::size_t i = 0; i < parameters_.size(); ++i)
      parameters_[i].remove_hook(hooks_[i]);
  }

  /// Makes the next backward pass start the buckets' sums as their gradients complete: call
  /// it before the backward of this rank's last micro-batch of the step (the gradients of
  /// the earlier ones are then already accumulated).
  void overlap_next_backward(std::int64_t step) {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = true;
    step_ = step;
  }

  /// Replaces every parameter's gradient by its sum over the ranks (a parameter without a
  /// gradient on this rank counts as zero) and returns `scalars` summed over the ranks.
  /// Every rank must call it once per optimizer step, with as many scalars.
  /// @throws DistributedError when a rank fails or the collective times out.
  std::vector<double> sum(std::vector<double> scalars, std::int64_t step) {
    std::unique_lock<std::mutex> lock(mutex_);
    armed_ = false;
    step_ = step;
    while (launched_ < buckets_.size())
      launch(launched_, /*from_gradients=*/true);
    // A hook that fired twice for one parameter in the overlapped backward (a graph that uses
    // it twice in separate passes) makes that bucket's sum incomplete: every rank then sums
    // again from the accumulated gradients. The scalars carry the flag, so all ranks agree.
    scalars.push_back(twice_ ? 1.0 : 0.0);
    std::vector<double> totals =
        group_->all_reduce(scalars, c10d::ReduceOp::SUM, "the all-reduce of the losses" + where());
    const bool again = totals.back() > 0.0;
    totals.pop_back();
    last_overlapped_ = again ? 0 : overlapped_;
    if (again) {
      for (PendingCollective& pending : pending_)
        group_->wait(pending);
      reset();
      while (launched_ < buckets_.size())
        launch(launched_, /*from_gradients=*/true);
    }
    for (std::size_t b = 0; b < buckets_.size(); ++b) {
      group_->wait(pending_[b]);
      const Bucket& bucket = buckets_[b];
      for (std::size_t i : bucket.members) {
        torch::Tensor& p = parameters_[i];
        const torch::Tensor summed =
            bucket.flat.narrow(0, slots_[i].offset, p.numel()).view(p.sizes());
        if (p.grad().defined())
          p.mutable_grad().copy_(summed);
        else
          p.mutable_grad() = summed.clone();
      }
    }
    reset();
    return totals;
  }

  /// The number of buckets.
  std::size_t bucket_count() const { return buckets_.size(); }
  /// How many buckets the last sum() found started by the backward pass (overlapped).
  std::size_t overlapped_buckets() const { return last_overlapped_; }

 private:
  struct Bucket {
    torch::Dtype dtype;
    torch::Device device;
    std::vector<std::size_t> members;
    std::size_t bytes = 0;
    std::int64_t elements = 0;
    torch::Tensor flat;
    std::size_t ready = 0;  // members whose slot the overlapped backward filled
  };
  struct Slot {
    std::size_t bucket = 0;
    std::int64_t offset = 0;
    bool filled = false;
  };

  std::string where() const { return " of step " + std::to_string(step_ + 1); }

  torch::Tensor slot_of(std::size_t i) {
    return buckets_[slots_[i].bucket].flat.narrow(0, slots_[i].offset, parameters_[i].numel());
  }

  // The hook: the gradient this backward adds to parameter i (its accumulated gradient, from
  // the step's earlier micro-batches, is still in .grad: the hook runs before accumulation).
  void on_gradient(std::size_t i, const torch::Tensor& gradient) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!armed_)
      return;
    Slot& slot = slots_[i];
    if (slot.filled) {
      twice_ = true;
      return;
    }
    torch::NoGradGuard no_grad;
    const torch::Tensor& accumulated = parameters_[i].grad();
    torch::Tensor target = slot_of(i);
    if (accumulated.defined())
      torch::add_out(target, accumulated.reshape({-1}), gradient.reshape({-1}));
    else
      target.copy_(gradient.reshape({-1}));
    slot.filled = true;
    Bucket& bucket = buckets_[slot.bucket];
    ++bucket.ready;
    while (launched_ < buckets_.size() &&
           buckets_[launched_].ready == buckets_[launched_].members.size()) {
      ++overlapped_;
      launch(launched_, /*from_gradients=*/false);
    }
  }

  // Starts bucket b's sum (the next in order); from_gradients: packs the members the
  // backward did not fill from their accumulated gradients (zero when none).
  void launch(std::size_t b, bool from_gradients) {
    Bucket& bucket = buckets_[b];
    if (from_gradients) {
      torch::NoGradGuard no_grad;
      for (std::size_t i : bucket.members) {
        if (slots_[i].filled)
          continue;
        torch::Tensor target = slot_of(i);
        if (parameters_[i].grad().defined())
          target.copy_(parameters_[i].grad().reshape({-1}));
        else
          target.zero_();
      }
    }
    pending_.push_back(group_->all_reduce_sum_async(
        bucket.flat, "the all-reduce of gradient bucket " + std::to_string(b + 1) + " of " +
                         std::to_string(buckets_.size()) + where()));
    ++launched_;
  }

  void reset() {
    for (Slot& slot : slots_)
      slot.filled = false;
    for (Bucket& bucket : buckets_)
      bucket.ready = 0;
    pending_.clear();
    launched_ = 0;
    overlapped_ = 0;
    twice_ = false;
  }

  std::vector<torch::Tensor> parameters_;
  ProcessGroup* group_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::vector<unsigned> hooks_;
  std::vector<PendingCollective> pending_;
  std::mutex mutex_;
  bool armed_ = false;
  bool twice_ = false;
  std::size_t launched_ = 0;
  std::size_t overlapped_ = 0;
  std::size_t last_overlapped_ = 0;
  std::int64_t step_ = 0;
};

}  // namespace aclora::train::distributed
