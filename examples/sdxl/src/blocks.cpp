// Leaf layers (layers.hpp), shared blocks (blocks.hpp) and the recomputing
// gradient checkpoint, in one translation unit to keep LibTorch compiles few.
#include "sdxl/blocks.hpp"

#include "sdxl/autocast.hpp"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <torch/autograd.h>
#include <torch/nn/init.h>
#include <torch/version.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace sdxl {

namespace {

// PyTorch's default Linear/Conv initialisation: kaiming_uniform(a = sqrt 5) on
// the weight, i.e. U(+-1/sqrt(fan_in)), and the same bound for the bias.
void default_init(torch::Tensor& weight, torch::Tensor& bias, int64_t fan_in) {
  torch::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  weight.uniform_(-bound, bound);
  if (bias.defined()) {
    bias.uniform_(-bound, bound);
  }
}

void affine_init(torch::Tensor& weight, torch::Tensor& bias) {
  torch::NoGradGuard no_grad;
  weight.fill_(1.0);
  bias.zero_();
}

}  // namespace

// ---------------------------------------------------------------- leaf layers

LinearImpl::LinearImpl(int64_t in, int64_t out, bool with_bias, const BuildOptions& options)
    : in_features(in), out_features(out) {
  weight = register_parameter("weight", torch::empty({out, in}, options.tensor_options()));
  if (with_bias) {
    bias = register_parameter("bias", torch::empty({out}, options.tensor_options()));
  }
  if (options.initializes()) {
    default_init(weight, bias, in);
  }
}

torch::Tensor LinearImpl::forward(const torch::Tensor& input) {
  return with_adapter(input, torch::linear(input, weight, bias));
}

aclora::train::LayerGeometry LinearImpl::geometry() const {
  return aclora::train::LayerGeometry{aclora::train::LayerKind::linear, in_features, out_features};
}

Conv2dImpl::Conv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride_, int64_t padding_,
                       const BuildOptions& options)
    : stride(stride_), padding(padding_) {
  weight = register_parameter("weight",
                              torch::empty({out, in, kernel, kernel}, options.tensor_options()));
  bias = register_parameter("bias", torch::empty({out}, options.tensor_options()));
  if (options.initializes()) {
    default_init(weight, bias, in * kernel * kernel);
  }
}

torch::Tensor Conv2dImpl::forward(const torch::Tensor& input) {
  return with_adapter(input,
                      torch::conv2d(input, weight, bias, {stride, stride}, {padding, padding}));
}

aclora::train::LayerGeometry Conv2dImpl::geometry() const {
  return aclora::train::conv2d_geometry(weight, stride, padding);
}

GroupNormImpl::GroupNormImpl(int64_t groups_, int64_t channels, double eps_,
                             const BuildOptions& options)
    : groups(groups_), eps(eps_) {
  if (groups <= 0 || channels % groups != 0) {
    throw std::invalid_argument("GroupNorm: " + std::to_string(channels) +
                                " channels are not divisible into " + std::to_string(groups) +
                                " groups");
  }
  weight = register_parameter("weight", torch::empty({channels}, options.tensor_options()));
  bias = register_parameter("bias", torch::empty({channels}, options.tensor_options()));
  if (options.initializes()) {
    affine_init(weight, bias);
  }
}

namespace {

// Normalisation in the parameters' dtype: under autocast a bf16 / fp16 input
// meets fp32 weights, which CUDA autocast handles by running norms in fp32 but
// the CPU kernels of LibTorch 1.13 reject. Casting up does what CUDA does.
torch::Tensor in_dtype_of(const torch::Tensor& input, const torch::Tensor& weight) {
  return input.scalar_type() == weight.scalar_type() ? input : input.to(weight.scalar_type());
}

}  // namespace

torch::Tensor GroupNormImpl::forward(const torch::Tensor& input) {
  return torch::group_norm(in_dtype_of(input, weight), groups, weight, bias, eps);
}

LayerNormImpl::LayerNormImpl(int64_t features_, double eps_, const BuildOptions& options)
    : features(features_), eps(eps_) {
  weight = register_parameter("weight", torch::empty({features}, options.tensor_options()));
  bias = register_parameter("bias", torch::empty({features}, options.tensor_options()));
  if (options.initializes()) {
    affine_init(weight, bias);
  }
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& input) {
  return torch::layer_norm(in_dtype_of(input, weight), {features}, weight, bias, eps);
}

torch::Tensor dot_product_attention(const torch::Tensor& q, const torch::Tensor& k,
                                    const torch::Tensor& v) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v);
#else
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
  torch::Tensor weights = torch::matmul(q, k.transpose(-1, -2)) * scale;
  return torch::matmul(torch::softmax(weights, -1).to(v.scalar_type()), v);
#endif
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t total = 0;
  for (const auto& parameter : module.parameters()) {
    total += parameter.numel();
  }
  return total;
}

// ------------------------------------------------------ gradient checkpointing

namespace {

using BlockFunction = std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>;

// The states of the default generators a block draws from (LibTorch's CPU generator and the
// CUDA generator of each device among its inputs), as PyTorch's checkpoint forks them.
class GeneratorStates {
 public:
  GeneratorStates() = default;

  // The current states of the CPU generator and of each CUDA device's among `inputs`.
  static GeneratorStates of_inputs(const std::vector<torch::Tensor>& inputs) {
    std::vector<at::Generator> generators{at::detail::getDefaultCPUGenerator()};
    std::vector<torch::Device> devices;
    for (const auto& input : inputs) {
      if (input.defined() && input.is_cuda() &&
          std::find(devices.begin(), devices.end(), input.device()) == devices.end()) {
        devices.push_back(input.device());
        generators.push_back(at::globalContext().defaultGenerator(input.device()));
      }
    }
    return of(std::move(generators));
  }

  // The current states of the generators these states are of.
  GeneratorStates now() const {
    std::vector<at::Generator> generators;
    for (const auto& [generator, state] : states_)
      generators.push_back(generator);
    return of(std::move(generators));
  }

  // Puts every generator back into its state here.
  void restore() const {
    for (auto [generator, state] : states_) {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
  }

 private:
  static GeneratorStates of(std::vector<at::Generator> generators) {
    GeneratorStates out;
    for (auto& generator : generators) {
      std::lock_guard<std::mutex> lock(generator.mutex());
      torch::Tensor state = generator.get_state();
      out.states_.emplace_back(std::move(generator), std::move(state));
    }
    return out;
  }

  std::vector<std::pair<at::Generator, torch::Tensor>> states_;
};

// Runs its scope with the generators in `recorded` states, then returns them to the states
// they had before (so draws after the recompute are those a run without it makes).
class ReplayedGenerators {
 public:
  explicit ReplayedGenerators(const GeneratorStates& recorded) : current_(recorded.now()) {
    recorded.restore();
  }
  ~ReplayedGenerators() { current_.restore(); }
  ReplayedGenerators(const ReplayedGenerators&) = delete;
  ReplayedGenerators& operator=(const ReplayedGenerators&) = delete;

 private:
  GeneratorStates current_;
};

// What the recompute needs from the forward pass, carried through the autograd context
// (saved_data holds IValues): the block function, and the autocast and generator states
// the forward pass ran with.
struct ForwardRecord : torch::CustomClassHolder {
  explicit ForwardRecord(BlockFunction f) : fn(std::move(f)) {}
  BlockFunction fn;
  AutocastState autocast{};
  GeneratorStates generators;
};

class RecomputeFunction : public torch::autograd::Function<RecomputeFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx,
                               const c10::intrusive_ptr<ForwardRecord>& record,
                               const torch::Tensor& a, const torch::Tensor& b,
                               const torch::Tensor& /*anchor*/) {
    record->autocast = AutocastState::current();
    record->generators = GeneratorStates::of_inputs({a, b});
    ctx->saved_data["record"] = c10::IValue::make_capsule(record);
    ctx->save_for_backward({a, b});
    torch::NoGradGuard no_grad;
    return record->fn(a, b);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto record =
        c10::static_intrusive_pointer_cast<ForwardRecord>(ctx->saved_data["record"].toCapsule());
    const auto saved = ctx->get_saved_variables();
    auto prepare = [](const torch::Tensor& t) {
      return t.defined() ? t.detach().requires_grad_(t.requires_grad()) : t;
    };
    torch::Tensor a = prepare(saved[0]);
    torch::Tensor b = prepare(saved[1]);
    torch::Tensor output;
    {
      // The forward pass again: same autocast, same random draws (dropout masks).
      ReplayedGenerators replay(record->generators);
      torch::AutoGradMode grad_mode(true);
      AutocastScope autocast(record->autocast);
      output = record->fn(a, b);
    }
    // Accumulates into the parameters' .grad and into a.grad / b.grad.
    if (output.requires_grad()) {
      torch::autograd::backward({output}, {grad_outputs[0]});
    }
    auto grad_of = [](const torch::Tensor& t) {
      return t.defined() && t.requires_grad() ? t.grad() : torch::Tensor();
    };
    return {torch::Tensor(), grad_of(a), grad_of(b), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed(const BlockFunction& fn, const torch::Tensor& a,
                           const torch::Tensor& b) {
  if (!torch::GradMode::is_enabled()) {
    return fn(a, b);
  }
  // The anchor requires grad so that the output does too even when a and b do
  // not: the parameters inside fn (e.g. LoRA factors) still need gradients.
  static thread_local const torch::Tensor anchor = torch::zeros({0}).requires_grad_(true);
  return RecomputeFunction::apply(c10::make_intrusive<ForwardRecord>(fn), a, b, anchor);
}

// ---------------------------------------------------------------------- blocks

ResnetBlock2DImpl::ResnetBlock2DImpl(int64_t in, int64_t out, int64_t temb_channels, int64_t groups,
                                     double eps, const BuildOptions& options) {
  norm1 = register_module("norm1", GroupNorm(groups, in, eps, options));
  conv1 = register_module("conv1", Conv2d(in, out, 3, 1, 1, options));
  if (temb_channels > 0) {
    time_emb_proj = register_module("time_emb_proj", Linear(temb_channels, out, true, options));
  }
  norm2 = register_module("norm2", GroupNorm(groups, out, eps, options));
  conv2 = register_module("conv2", Conv2d(out, out, 3, 1, 1, options));
  if (in != out) {
    conv_shortcut = register_module("conv_shortcut", Conv2d(in, out, 1, 1, 0, options));
  }
}

torch::Tensor ResnetBlock2DImpl::compute(const torch::Tensor& x, const torch::Tensor& temb) {
  torch::Tensor h = conv1(torch::silu(norm1(x)));
  if (time_emb_proj) {
    if (!temb.defined()) {
      throw std::invalid_argument("ResnetBlock2D: time embedding missing");
    }
    h = h + time_emb_proj(torch::silu(temb)).unsqueeze(-1).unsqueeze(-1);
  }
  h = conv2(torch::silu(norm2(h)));
  return (conv_shortcut ? conv_shortcut(x) : x) + h;
}

torch::Tensor ResnetBlock2DImpl::forward(const torch::Tensor& x, const torch::Tensor& temb) {
  if (gradient_checkpointing && is_training()) {
    return checkpointed(
        [this](const torch::Tensor& a, const torch::Tensor& b) { return compute(a, b); }, x, temb);
  }
  return compute(x, temb);
}

Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t padding_, const BuildOptions& options)
    : padding(padding_) {
  conv = register_module("conv", Conv2d(channels, channels, 3, 2, padding, options));
}

torch::Tensor Downsample2DImpl::forward(const torch::Tensor& x) {
  if (padding == 0) {
    // (left, right, top, bottom): the VAE pads only right and bottom.
    return conv(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  }
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels, const BuildOptions& options) {
  conv = register_module("conv", Conv2d(channels, channels, 3, 1, 1, options));
}

torch::Tensor Upsample2DImpl::forward(const torch::Tensor& x, std::vector<int64_t> size) {
  if (size.empty()) {
    size = {x.size(2) * 2, x.size(3) * 2};
  }
  torch::Tensor input = x;
  // Older nearest-neighbour kernels lack bf16 on some devices; the values are
  // copied, so the round trip through fp32 is exact.
  const bool upcast = x.scalar_type() == torch::kBFloat16;
  if (upcast) {
    input = input.to(torch::kFloat32);
  }
  torch::Tensor up = torch::upsample_nearest2d(input, size);
  if (upcast) {
    up = up.to(torch::kBFloat16);
  }
  return conv(up);
}

AttentionImpl::AttentionImpl(int64_t query_dim, int64_t context_dim, int64_t heads_,
                             int64_t head_dim, bool qkv_bias, const BuildOptions& options)
    : heads(heads_) {
  const int64_t inner = heads * head_dim;
  to_q = register_module("to_q", Linear(query_dim, inner, qkv_bias, options));
  to_k = register_module("to_k", Linear(context_dim, inner, qkv_bias, options));
  to_v = register_module("to_v", Linear(context_dim, inner, qkv_bias, options));
  to_out->push_back(Linear(inner, query_dim, true, options));
  to_out->push_back(Placeholder());
  register_module("to_out", to_out);
}

torch::Tensor AttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const torch::Tensor& source = context.defined() ? context : x;
  const int64_t batch = x.size(0);
  auto split_heads = [&](const torch::Tensor& t) {
    return t.view({batch, t.size(1), heads, -1}).transpose(1, 2);
  };
  torch::Tensor q = split_heads(to_q(x));
  torch::Tensor k = split_heads(to_k(source));
  torch::Tensor v = split_heads(to_v(source));
  torch::Tensor attended = dot_product_attention(q, k, v);
  attended = attended.transpose(1, 2).reshape({batch, x.size(1), -1});
  return to_out[0]->as<LinearImpl>()->forward(attended);
}

GEGLUImpl::GEGLUImpl(int64_t dim, int64_t inner, const BuildOptions& options) {
  proj = register_module("proj", Linear(dim, inner * 2, true, options));
}

torch::Tensor GEGLUImpl::forward(const torch::Tensor& x) {
  auto halves = proj(x).chunk(2, -1);
  return halves[0] * torch::gelu(halves[1]);
}

FeedForwardImpl::FeedForwardImpl(int64_t dim, const BuildOptions& options) {
  geglu = GEGLU(dim, dim * 4, options);
  out = Linear(dim * 4, dim, true, options);
  net->push_back(geglu);
  net->push_back(Placeholder());
  net->push_back(out);
  register_module("net", net);
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  return out(geglu(x));
}

BasicTransformerBlockImpl::BasicTransformerBlockImpl(int64_t dim, int64_t heads, int64_t head_dim,
                                                     int64_t context_dim,
                                                     const BuildOptions& options) {
  norm1 = register_module("norm1", LayerNorm(dim, 1e-5, options));
  attn1 = register_module("attn1", Attention(dim, dim, heads, head_dim, false, options));
  norm2 = register_module("norm2", LayerNorm(dim, 1e-5, options));
  attn2 = register_module("attn2", Attention(dim, context_dim, heads, head_dim, false, options));
  norm3 = register_module("norm3", LayerNorm(dim, 1e-5, options));
  ff = register_module("ff", FeedForward(dim, options));
}

torch::Tensor BasicTransformerBlockImpl::compute(const torch::Tensor& x,
                                                 const torch::Tensor& context) {
  torch::Tensor h = x + attn1(norm1(x));
  h = h + attn2(norm2(h), context);
  return h + ff(norm3(h));
}

torch::Tensor BasicTransformerBlockImpl::forward(const torch::Tensor& x,
                                                 const torch::Tensor& context) {
  if (gradient_checkpointing && is_training()) {
    return checkpointed(
        [this](const torch::Tensor& a, const torch::Tensor& b) { return compute(a, b); }, x,
        context);
  }
  return compute(x, context);
}

Transformer2DImpl::Transformer2DImpl(int64_t channels, int64_t heads, int64_t depth,
                                     int64_t context_dim, int64_t groups,
                                     const BuildOptions& options) {
  if (heads <= 0 || channels % heads != 0) {
    throw std::invalid_argument("Transformer2D: " + std::to_string(channels) +
                                " channels do not split into " + std::to_string(heads) + " heads");
  }
  norm = register_module("norm", GroupNorm(groups, channels, 1e-6, options));
  proj_in = register_module("proj_in", Linear(channels, channels, true, options));
  for (int64_t i = 0; i < depth; ++i) {
    blocks.emplace_back(channels, heads, channels / heads, context_dim, options);
    transformer_blocks->push_back(blocks.back());
  }
  register_module("transformer_blocks", transformer_blocks);
  proj_out = register_module("proj_out", Linear(channels, channels, true, options));
}

torch::Tensor Transformer2DImpl::forward(const torch::Tensor& x, const torch::Tensor& context) {
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  torch::Tensor h = norm(x).permute({0, 2, 3, 1}).reshape({batch, height * width, channels});
  h = proj_in(h);
  for (auto& block : blocks) {
    h = block(h, context);
  }
  h = proj_out(h);
  return h.reshape({batch, height, width, channels}).permute({0, 3, 1, 2}) + x;
}

}  // namespace sdxl
