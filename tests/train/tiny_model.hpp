// A small LibTorch model shaped like a diffusion UNet's pieces (a 3x3 conv, attention-like
// linears, a feed-forward pair, a stock torch::nn::Linear head), for the training-layer tests.
#pragma once

#include <torch/torch.h>
#include <aclora/adapters/train/layers.hpp>

#include <cstdint>
#include <vector>

namespace train_test {

// to_q / to_k / to_v / to_out and a feed-forward pair, with a residual.
class BlockImpl : public torch::nn::Module {
 public:
  explicit BlockImpl(std::int64_t width) {
    to_q = register_module("to_q", aclora::train::Linear(width, width, false));
    to_k = register_module("to_k", aclora::train::Linear(width, width, false));
    to_v = register_module("to_v", aclora::train::Linear(width, width, false));
    to_out = register_module("to_out", aclora::train::Linear(width, width));
    ff_in = register_module("ff_in", aclora::train::Linear(width, 2 * width));
    ff_out = register_module("ff_out", aclora::train::Linear(2 * width, width));
  }
  // x [B, N, width]
  torch::Tensor forward(const torch::Tensor& x) {
    const torch::Tensor q = to_q(x), k = to_k(x), v = to_v(x);
    const torch::Tensor weights =
        torch::softmax(torch::matmul(q, k.transpose(1, 2)) / std::sqrt(double(q.size(-1))), -1);
    torch::Tensor h = x + to_out(torch::matmul(weights, v));
    return h + ff_out(torch::gelu(ff_in(h)));
  }

  aclora::train::Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr}, to_out{nullptr};
  aclora::train::Linear ff_in{nullptr}, ff_out{nullptr};
};
TORCH_MODULE(Block);

// conv (3 -> width, 3x3) -> tokens -> blocks -> mean -> stock head (width -> outputs).
class TinyNetImpl : public torch::nn::Module {
 public:
  explicit TinyNetImpl(std::int64_t width = 8, std::int64_t blocks = 2, std::int64_t outputs = 4) {
    conv = register_module("conv", aclora::train::Conv2d(3, width, 3, 1, 1));
    list = register_module("blocks", torch::nn::ModuleList());
    for (std::int64_t i = 0; i < blocks; ++i) {
      block_list.push_back(Block(width));
      list->push_back(block_list.back());
    }
    head = register_module("head", torch::nn::Linear(width, outputs));
  }
  // x [B, 3, H, W] -> [B, outputs]
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = conv(x).flatten(2).transpose(1, 2);  // [B, HW, width]
    for (auto& block : block_list)
      h = block(h);
    return head(h.mean(1));
  }

  aclora::train::Conv2d conv{nullptr};
  torch::nn::ModuleList list{nullptr};
  std::vector<Block> block_list;
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(TinyNet);

}  // namespace train_test
