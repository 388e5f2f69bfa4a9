// CLIP text encoders: forward pass against an independent step-by-step
// computation, causal masking, pooled position rules, config.json parsing, the
// HF / OpenCLIP key tables and loader (shapes, dtypes, errors, ignore list), and
// the SDXL conditioning built on them.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <aclora/adapters/safetensors.hpp>
#include <sdxl/conditioning.hpp>
#include <sdxl/text_encoder.hpp>
#include <sdxl/text_encoder_keys.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <unistd.h>

namespace {

namespace fs = std::filesystem;
namespace st = aclora::safetensors;

sdxl::ClipTextConfig tiny_config(sdxl::ClipActivation act, int64_t projection) {
  sdxl::ClipTextConfig c;
  c.vocab_size = 50;
  c.hidden_size = 8;
  c.intermediate_size = 11;
  c.num_layers = 3;
  c.num_heads = 2;
  c.max_positions = 10;
  c.activation = act;
  c.projection_dim = projection;
  c.eos_token_id = 49;
  return c;
}

fs::path temp_path(const std::string& name) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  return fs::temp_directory_path() /
         ("aclora_te_" + std::string(info->name()) + "_" + std::to_string(::getpid()) + "_" + name);
}

std::vector<float> values_of(const torch::Tensor& t) {
  const torch::Tensor c = t.detach().to(torch::kFloat32).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

std::vector<int64_t> shape_of(const torch::Tensor& t) {
  return t.sizes().vec();
}

// Writes the model's parameters under their HF names (F32) plus extra tensors.
void write_hf(sdxl::ClipTextModelImpl& model, const fs::path& path, const std::string& prefix,
              const std::map<std::string, torch::Tensor>& extra = {}) {
  st::Writer writer;
  for (const auto& item : model.named_parameters())
    writer.add(prefix + item.key(), shape_of(item.value()), values_of(item.value()));
  for (const auto& [name, t] : extra)
    writer.add(prefix + name, shape_of(t), values_of(t));
  writer.write(path);
}

// Writes the model's parameters under OpenCLIP names (q, k, v stacked into
// in_proj, text_projection transposed).
void write_open_clip(sdxl::ClipTextModelImpl& model, const fs::path& path,
                     const std::string& prefix) {
  std::map<std::string, torch::Tensor> p;
  for (const auto& item : model.named_parameters())
    p[item.key()] = item.value().detach();
  st::Writer writer;
  const auto add = [&](const std::string& key, const torch::Tensor& t) {
    writer.add(prefix + key, shape_of(t), values_of(t));
  };
  add("token_embedding.weight", p["text_model.embeddings.token_embedding.weight"]);
  add("positional_embedding", p["text_model.embeddings.position_embedding.weight"]);
  for (int64_t n = 0; n < model.config().num_layers; ++n) {
    const std::string l = "text_model.encoder.layers." + std::to_string(n) + ".";
    const std::string r = "transformer.resblocks." + std::to_string(n) + ".";
    for (const char* kind : {"weight", "bias"}) {
      const std::string k(kind);
      add(r + "attn.in_proj_" + k,
          torch::cat({p[l + "self_attn.q_proj." + k], p[l + "self_attn.k_proj." + k],
                      p[l + "self_attn.v_proj." + k]}));
      add(r + "attn.out_proj." + k, p[l + "self_attn.out_proj." + k]);
      add(r + "ln_1." + k, p[l + "layer_norm1." + k]);
      add(r + "ln_2." + k, p[l + "layer_norm2." + k]);
      add(r + "mlp.c_fc." + k, p[l + "mlp.fc1." + k]);
      add(r + "mlp.c_proj." + k, p[l + "mlp.fc2." + k]);
    }
  }
  add("ln_final.weight", p["text_model.final_layer_norm.weight"]);
  add("ln_final.bias", p["text_model.final_layer_norm.bias"]);
  if (model.config().projection_dim > 0)
    add("text_projection", p["text_projection.weight"].t());
  add("logit_scale", torch::tensor({4.6f}));
  writer.write(path);
}

void expect_same_parameters(sdxl::ClipTextModelImpl& a, sdxl::ClipTextModelImpl& b) {
  auto pa = a.named_parameters();
  auto pb = b.named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& item : pa)
    EXPECT_TRUE(torch::equal(item.value(), pb[item.key()])) << item.key();
}

std::string load_error(sdxl::ClipTextModelImpl& model, const fs::path& file,
                       const std::string& prefix, sdxl::TextEncoderNaming naming) {
  const auto reader = st::Reader::open(file);
  try {
    sdxl::load_text_encoder(model, reader, prefix, naming);
  } catch (const sdxl::WeightLoadError& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected sdxl::WeightLoadError";
  return {};
}

// The forward pass spelled out with elementary operations: LayerNorm from mean
// and variance, attention head by head with an explicit causal mask.
torch::Tensor layer_norm_ref(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                             double eps) {
  const auto mean = x.mean(-1, true);
  const auto var = (x - mean).pow(2).mean(-1, true);
  return (x - mean) / torch::sqrt(var + eps) * w + b;
}

struct ReferenceOutput {
  torch::Tensor penultimate, last_hidden;
};

ReferenceOutput reference_forward(sdxl::ClipTextModelImpl& model, const torch::Tensor& ids) {
  const auto& c = model.config();
  auto p = model.named_parameters();
  const int64_t t = ids.size(1);
  const int64_t d = c.hidden_size / c.num_heads;
  torch::Tensor h = p["text_model.embeddings.token_embedding.weight"]
                        .index_select(0, ids.flatten())
                        .view({ids.size(0), t, c.hidden_size}) +
                    p["text_model.embeddings.position_embedding.weight"].slice(0, 0, t);
  ReferenceOutput out;
  for (int64_t n = 0; n < c.num_layers; ++n) {
    if (n == c.num_layers - 1)
      out.penultimate = h;
    const std::string l = "text_model.encoder.layers." + std::to_string(n) + ".";
    const auto lin = [&](const torch::Tensor& x, const std::string& name) {
      return torch::matmul(x, p[l + name + ".weight"].t()) + p[l + name + ".bias"];
    };
    const torch::Tensor x =
        layer_norm_ref(h, p[l + "layer_norm1.weight"], p[l + "layer_norm1.bias"], c.layer_norm_eps);
    const torch::Tensor q = lin(x, "self_attn.q_proj"), k = lin(x, "self_attn.k_proj"),
                        v = lin(x, "self_attn.v_proj");
    std::vector<torch::Tensor> heads;
    for (int64_t head = 0; head < c.num_heads; ++head) {
      const auto qh = q.narrow(-1, head * d, d), kh = k.narrow(-1, head * d, d),
                 vh = v.narrow(-1, head * d, d);
      torch::Tensor scores = torch::matmul(qh, kh.transpose(1, 2)) / std::sqrt(double(d));
      for (int64_t i = 0; i < t; ++i)
        for (int64_t j = i + 1; j < t; ++j)
          scores.select(1, i).select(1, j).fill_(-1e30);
      const auto e = torch::exp(scores - std::get<0>(scores.max(-1, true)));
      heads.push_back(torch::matmul(e / e.sum(-1, true), vh));
    }
    h = h + lin(torch::cat(heads, -1), "self_attn.out_proj");
    torch::Tensor m = lin(
        layer_norm_ref(h, p[l + "layer_norm2.weight"], p[l + "layer_norm2.bias"], c.layer_norm_eps),
        "mlp.fc1");
    m = c.activation == sdxl::ClipActivation::kQuickGelu
            ? m / (1 + torch::exp(-1.702 * m))
            : 0.5 * m * (1 + torch::erf(m / std::sqrt(2.0)));
    h = h + lin(m, "mlp.fc2");
  }
  out.last_hidden = layer_norm_ref(h, p["text_model.final_layer_norm.weight"],
                                   p["text_model.final_layer_norm.bias"], c.layer_norm_eps);
  return out;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace

// Penultimate, last hidden, pooled and projected outputs equal the step-by-step
// computation for both activations.
TEST(ClipTextModel, MatchesStepByStepComputation) {
  torch::NoGradGuard no_grad;
  for (auto act : {sdxl::ClipActivation::kQuickGelu, sdxl::ClipActivation::kGelu}) {
    torch::manual_seed(3);
    sdxl::ClipTextModel model(tiny_config(act, 6));
    const torch::Tensor ids = torch::tensor({{48, 5, 7, 49, 49, 49}, {48, 9, 49, 0, 0, 0}});
    const auto out = model->forward(ids);
    const auto ref = reference_forward(*model, ids);
    EXPECT_EQ(shape_of(out.penultimate), (std::vector<int64_t>{2, 6, 8}));
    EXPECT_LT(max_abs_diff(out.penultimate, ref.penultimate), 1e-5);
    EXPECT_LT(max_abs_diff(out.last_hidden, ref.last_hidden), 1e-5);
    // eos_token_id 49: first position holding 49 (3 and 2).
    const auto pooled_ref = torch::stack({ref.last_hidden[0][3], ref.last_hidden[1][2]});
    EXPECT_LT(max_abs_diff(out.pooled, pooled_ref), 1e-5);
    const auto proj = model->named_parameters()["text_projection.weight"];
    EXPECT_LT(max_abs_diff(out.text_embeds, torch::matmul(pooled_ref, proj.t())), 1e-5);
  }
}

// Attention is causal: changing token j leaves every output before j unchanged.
TEST(ClipTextModel, AttentionIsCausal) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(4);
  sdxl::ClipTextModel model(tiny_config(sdxl::ClipActivation::kGelu, 0));
  const auto a = model->forward(torch::tensor({{48, 1, 2, 3, 4, 49}}));
  const auto b = model->forward(torch::tensor({{48, 1, 2, 30, 4, 49}}));
  EXPECT_TRUE(torch::allclose(a.last_hidden.narrow(1, 0, 3), b.last_hidden.narrow(1, 0, 3)));
  EXPECT_FALSE(torch::allclose(a.last_hidden.narrow(1, 3, 1), b.last_hidden.narrow(1, 3, 1)));
  EXPECT_FALSE(a.text_embeds.defined());
}

// eos_token_id == 2 (legacy OpenAI / SDXL configs): pooled at the largest id.
TEST(ClipTextModel, LegacyEosIdPoolsAtLargestId) {
  torch::NoGradGuard no_grad;
  auto config = tiny_config(sdxl::ClipActivation::kQuickGelu, 0);
  config.eos_token_id = 2;
  torch::manual_seed(5);
  sdxl::ClipTextModel model(config);
  const auto out = model->forward(torch::tensor({{1, 2, 40, 3, 2}}));
  EXPECT_TRUE(torch::equal(out.pooled[0], out.last_hidden[0][2]));
}

// Bad inputs are rejected with a message.
TEST(ClipTextModel, RejectsBadInput) {
  sdxl::ClipTextModel model(tiny_config(sdxl::ClipActivation::kGelu, 0));
  EXPECT_THROW(model->forward(torch::tensor({1, 2})), std::invalid_argument);
  EXPECT_THROW(model->forward(torch::zeros({1, 11}, torch::kInt64)), std::invalid_argument);
  EXPECT_THROW(model->forward(torch::tensor({{1, 50}})), std::invalid_argument);
  EXPECT_THROW(model->forward(torch::zeros({1, 3}, torch::kInt32)), std::invalid_argument);
  auto bad = tiny_config(sdxl::ClipActivation::kGelu, 0);
  bad.num_heads = 3;
  EXPECT_THROW(sdxl::ClipTextModel{bad}, std::invalid_argument);
}

// SDXL base encoders have the published sizes (meta device, no memory).
TEST(ClipTextModel, SdxlBaseParameterCounts) {
  sdxl::BuildOptions meta;
  meta.device = torch::kMeta;
  sdxl::ClipTextModel l(sdxl::ClipTextConfig::sdxl_clip_l(), meta);
  sdxl::ClipTextModel g(sdxl::ClipTextConfig::sdxl_clip_bigg(), meta);
  EXPECT_EQ(sdxl::count_parameters(*l), 123060480);
  EXPECT_EQ(sdxl::count_parameters(*g), 694659840);
  EXPECT_EQ(l->named_parameters().size(), 196u);
  EXPECT_EQ(g->named_parameters().size(), 517u);
}

// config.json of transformers is read, with the projection only for
// CLIPTextModelWithProjection; an unknown activation is an error naming the file.
TEST(ClipTextConfig, ReadsTransformersConfigJson) {
  const fs::path path = temp_path("config.json");
  std::ofstream(path) << R"({"architectures": ["CLIPTextModelWithProjection"], "vocab_size": 1000,
    "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 5, "num_attention_heads": 4,
    "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-05,
    "projection_dim": 32, "eos_token_id": 999, "bos_token_id": 998})";
  const auto c = sdxl::ClipTextConfig::from_json_file(path);
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.hidden_size, 32);
  EXPECT_EQ(c.intermediate_size, 37);
  EXPECT_EQ(c.num_layers, 5);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.activation, sdxl::ClipActivation::kGelu);
  EXPECT_EQ(c.projection_dim, 32);
  EXPECT_EQ(c.eos_token_id, 999);
  std::ofstream(path) << R"({"architectures": ["CLIPTextModel"], "hidden_act": "relu"})";
  try {
    sdxl::ClipTextConfig::from_json_file(path);
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("relu"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find(path.string()), std::string::npos);
  }
  fs::remove(path);
}

// HF-named and OpenCLIP-named files load into identical parameters; the ignore
// list is reported, fp16 storage converts, and every key is accounted for.
TEST(TextEncoderKeys, HuggingFaceAndOpenClipLoadIdentically) {
  torch::manual_seed(6);
  sdxl::ClipTextModel source(tiny_config(sdxl::ClipActivation::kGelu, 6));
  const fs::path hf = temp_path("hf.safetensors");
  const fs::path oc = temp_path("oc.safetensors");
  write_hf(*source, hf, "conditioner.embedders.0.transformer.",
           {{"text_model.embeddings.position_ids", torch::arange(10).to(torch::kFloat32)}});
  write_open_clip(*source, oc, "conditioner.embedders.1.model.");

  sdxl::BuildOptions no_init;
  no_init.initialize = false;
  sdxl::ClipTextModel from_hf(tiny_config(sdxl::ClipActivation::kGelu, 6), no_init);
  sdxl::ClipTextModel from_oc(tiny_config(sdxl::ClipActivation::kGelu, 6), no_init);
  const auto hf_reader = st::Reader::open(hf);
  const auto report_hf =
      sdxl::load_text_encoder(*from_hf, hf_reader, "conditioner.embedders.0.transformer.",
                              sdxl::TextEncoderNaming::kHuggingFace);
  const auto oc_reader = st::Reader::open(oc);
  const auto report_oc = sdxl::load_text_encoder(
      *from_oc, oc_reader, "conditioner.embedders.1.model.", sdxl::TextEncoderNaming::kOpenClip);
  expect_same_parameters(*source, *from_hf);
  expect_same_parameters(*source, *from_oc);
  EXPECT_EQ(report_hf.ignored_keys,
            std::vector<std::string>{
                "conditioner.embedders.0.transformer.text_model.embeddings.position_ids"});
  EXPECT_EQ(report_oc.ignored_keys,
            std::vector<std::string>{"conditioner.embedders.1.model.logit_scale"});
  EXPECT_EQ(report_hf.consumed_keys().size(), hf_reader.names().size());
  EXPECT_EQ(report_oc.consumed_keys().size(), oc_reader.names().size());
  EXPECT_EQ(report_oc.loaded_keys.size(), 2u + 3 * 12 + 2 + 1);  // 12 tensors per resblock
  fs::remove(hf);
  fs::remove(oc);
}

// A transformers 5 CLIPTextModel file (keys without "text_model.") loads through
// the plain HF naming.
TEST(TextEncoderKeys, FlatHuggingFaceNamesLoad) {
  torch::manual_seed(10);
  const auto config = tiny_config(sdxl::ClipActivation::kQuickGelu, 0);
  sdxl::ClipTextModel source(config);
  const fs::path path = temp_path("flat.safetensors");
  st::Writer writer;
  for (const auto& item : source->named_parameters())
    writer.add(item.key().substr(std::string("text_model.").size()), shape_of(item.value()),
               values_of(item.value()));
  writer.add("embeddings.position_ids", {10}, std::vector<std::int64_t>(10, 0));
  writer.write(path);
  sdxl::ClipTextModel loaded(config);
  const auto reader = st::Reader::open(path);
  const auto report =
      sdxl::load_text_encoder(*loaded, reader, "", sdxl::TextEncoderNaming::kHuggingFace);
  expect_same_parameters(*source, *loaded);
  EXPECT_EQ(report.ignored_keys, std::vector<std::string>{"embeddings.position_ids"});
  fs::remove(path);
}

// Half-precision storage converts to the model's dtype (values fp16-exact here).
TEST(TextEncoderKeys, Fp16StorageConverts) {
  torch::manual_seed(7);
  sdxl::ClipTextModel source(tiny_config(sdxl::ClipActivation::kQuickGelu, 0));
  {
    torch::NoGradGuard no_grad;
    for (auto& p : source->parameters())
      p.copy_(p.to(torch::kHalf).to(torch::kFloat32));
  }
  const fs::path path = temp_path("half.safetensors");
  st::Writer writer;
  for (const auto& item : source->named_parameters()) {
    const torch::Tensor half = item.value().detach().to(torch::kHalf).contiguous();
    const auto* bytes = reinterpret_cast<const std::byte*>(half.data_ptr());
    writer.add(item.key(), st::Dtype::F16, shape_of(half),
               std::span<const std::byte>(bytes, half.numel() * 2));
  }
  writer.write(path);
  sdxl::ClipTextModel loaded(tiny_config(sdxl::ClipActivation::kQuickGelu, 0));
  const auto reader = st::Reader::open(path);
  sdxl::load_text_encoder(*loaded, reader, "", sdxl::TextEncoderNaming::kHuggingFace);
  expect_same_parameters(*source, *loaded);
  fs::remove(path);
}

// Missing, unmapped and mis-shaped tensors are errors naming the key, and the
// model is left unchanged.
TEST(TextEncoderKeys, ErrorsNameTheKeyAndLeaveModelUnchanged) {
  torch::manual_seed(8);
  const auto config = tiny_config(sdxl::ClipActivation::kGelu, 6);
  sdxl::ClipTextModel source(config);
  sdxl::ClipTextModel target(config);
  std::map<std::string, torch::Tensor> before;
  for (const auto& item : target->named_parameters())
    before[item.key()] = item.value().clone();
  const auto unchanged = [&] {
    for (const auto& item : target->named_parameters())
      EXPECT_TRUE(torch::equal(item.value(), before[item.key()])) << item.key();
  };
  const fs::path path = temp_path("bad.safetensors");

  write_hf(*source, path, "", {{"text_model.encoder.layers.0.extra.weight", torch::ones({2})}});
  EXPECT_NE(load_error(*target, path, "", sdxl::TextEncoderNaming::kHuggingFace)
                .find("unmapped text encoder tensor text_model.encoder.layers.0.extra.weight"),
            std::string::npos);
  unchanged();

  {
    st::Writer writer;
    for (const auto& item : source->named_parameters()) {
      torch::Tensor t = item.value();
      if (item.key() == "text_model.encoder.layers.1.mlp.fc1.weight")
        t = t.narrow(0, 0, 10);
      writer.add(item.key(), shape_of(t), values_of(t));
    }
    writer.write(path);
  }
  const std::string shape_error =
      load_error(*target, path, "", sdxl::TextEncoderNaming::kHuggingFace);
  EXPECT_NE(shape_error.find(
                "text_model.encoder.layers.1.mlp.fc1.weight has shape [10, 8]; expected [11, 8]"),
            std::string::npos)
      << shape_error;
  unchanged();

  {
    st::Writer writer;
    for (const auto& item : source->named_parameters())
      if (item.key() != "text_projection.weight")
        writer.add(item.key(), shape_of(item.value()), values_of(item.value()));
    writer.write(path);
  }
  EXPECT_NE(load_error(*target, path, "", sdxl::TextEncoderNaming::kHuggingFace)
                .find("missing text encoder tensor text_projection.weight"),
            std::string::npos);
  unchanged();

  {
    st::Writer writer;
    for (const auto& item : source->named_parameters()) {
      if (item.key() == "text_model.final_layer_norm.bias") {
        writer.add(item.key(), {8}, std::vector<std::int32_t>(8, 1));
      } else {
        writer.add(item.key(), shape_of(item.value()), values_of(item.value()));
      }
    }
    writer.write(path);
  }
  EXPECT_NE(load_error(*target, path, "", sdxl::TextEncoderNaming::kHuggingFace)
                .find("text_model.final_layer_norm.bias has dtype I32"),
            std::string::npos);
  unchanged();
  fs::remove(path);
}

// SDXL conditioning: context = both penultimate states side by side, pooled =
// encoder 2's projection; no negative prompt gives zeros, "" is encoded; time ids.
TEST(SdxlConditioning, ContextPooledAndNegatives) {
  const fs::path dir = temp_path("tok");
  fs::create_directories(dir);
  std::ofstream(dir / "vocab.json")
      << R"({"!": 0, "a</w>": 1, "b</w>": 2, "<|startoftext|>": 48, "<|endoftext|>": 49})";
  std::ofstream(dir / "merges.txt") << "#version: 0.2\n";
  auto tok1 = std::make_shared<const sdxl::ClipTokenizer>(sdxl::ClipTokenizer::from_vocab_files(
      dir / "vocab.json", dir / "merges.txt", sdxl::PadToken::kEndOfText, 10));
  auto tok2 = std::make_shared<const sdxl::ClipTokenizer>(sdxl::ClipTokenizer::from_vocab_files(
      dir / "vocab.json", dir / "merges.txt", sdxl::PadToken::kExclamation, 10));
  fs::remove_all(dir);
  torch::manual_seed(9);
  sdxl::ClipTextModel enc1(tiny_config(sdxl::ClipActivation::kQuickGelu, 0));
  auto config2 = tiny_config(sdxl::ClipActivation::kGelu, 6);
  config2.hidden_size = 12;
  sdxl::ClipTextModel enc2(config2);
  const sdxl::SdxlTextConditioner cond(tok1, enc1, tok2, enc2);

  const std::vector<std::string> prompts = {"a b", "b"};
  const auto emb = cond.encode(prompts);
  EXPECT_EQ(shape_of(emb.context), (std::vector<int64_t>{2, 10, 20}));
  EXPECT_EQ(shape_of(emb.pooled), (std::vector<int64_t>{2, 6}));
  torch::NoGradGuard no_grad;
  const auto ids1 = cond.token_ids(0, prompts);
  const auto ids2 = cond.token_ids(1, prompts);
  EXPECT_EQ(ids1[1][3].item<int64_t>(), 49);  // tokenizer pads with the end id
  EXPECT_EQ(ids2[1][3].item<int64_t>(), 0);   // tokenizer_2 pads with "!"
  const auto out1 = enc1->forward(ids1);
  const auto out2 = enc2->forward(ids2);
  EXPECT_TRUE(torch::equal(emb.context, torch::cat({out1.penultimate, out2.penultimate}, -1)));
  EXPECT_TRUE(torch::equal(emb.pooled, out2.text_embeds));

  const auto zeros = cond.encode_negative(std::nullopt, 3);
  EXPECT_EQ(shape_of(zeros.context), (std::vector<int64_t>{3, 10, 20}));
  EXPECT_EQ(zeros.context.abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(zeros.pooled.abs().sum().item<float>(), 0.0f);
  const auto empty = cond.encode_negative(std::vector<std::string>{""}, 2);
  const auto direct = cond.encode({"", ""});
  EXPECT_TRUE(torch::equal(empty.context, direct.context));
  EXPECT_GT(empty.pooled.abs().sum().item<float>(), 0.0f);
  EXPECT_THROW(cond.encode_negative(std::vector<std::string>{"a", "b", "a"}, 2),
               std::invalid_argument);

  const auto time_ids = sdxl::sdxl_time_ids(1024, 768, 0, 16, 1024, 1024);
  EXPECT_TRUE(torch::equal(time_ids, torch::tensor({1024.f, 768.f, 0.f, 16.f, 1024.f, 1024.f})));
  EXPECT_THROW(sdxl::sdxl_time_ids(0, 768, 0, 0, 1024, 1024), std::invalid_argument);
}

namespace {

const fs::path kFixtures = fs::path(ACLORA_FIXTURES_DIR) / "sdxl";

torch::Tensor reference(const st::Reader& reader, const std::string& name) {
  const st::TensorView& view = reader.tensor(name);
  if (view.dtype == st::Dtype::I64) {
    const std::vector<double> values = reader.to_f64(name);  // ids are small: exact
    return torch::tensor(std::vector<int64_t>(values.begin(), values.end())).view(view.shape);
  }
  std::vector<float> values = reader.to_f32(name);
  return torch::from_blob(values.data(), view.shape, torch::kFloat32).clone();
}

// max |actual - expected| / max |expected|, printed for the record.
double relative_error(const std::string& name, const torch::Tensor& actual,
                      const torch::Tensor& expected) {
  EXPECT_EQ(shape_of(actual), shape_of(expected)) << name;
  const double scale = expected.abs().max().item<double>();
  const double err = max_abs_diff(actual, expected) / (scale > 0 ? scale : 1.0);
  std::cout << "[ relative error ] " << name << " " << err << "\n";
  return err;
}

std::vector<std::string> tiny_prompts() {
  return {"a photo of a cat", "A painting of a squirrel eating a burger"};
}

}  // namespace

// The tiny diffusers folder (HF names, config.json) reproduces the reference
// token ids, both encoders' hidden states and pooled outputs, and SDXL's context,
// pooled and negative embeddings within 1e-4 relative (fp32, CPU).
TEST(SdxlTextFixtures, TinyFolderMatchesReference) {
  const auto cond = sdxl::SdxlTextConditioner::from_diffusers_folder(kFixtures / "tiny-sdxl");
  const auto ref = st::Reader::open(kFixtures / "reference.safetensors");
  const auto prompts = tiny_prompts();
  const torch::Tensor ids1 = cond.token_ids(0, prompts);
  const torch::Tensor ids2 = cond.token_ids(1, prompts);
  ASSERT_TRUE(torch::equal(ids1, reference(ref, "text_encoder.input_ids")));
  ASSERT_TRUE(torch::equal(ids2, reference(ref, "text_encoder_2.input_ids")));

  torch::NoGradGuard no_grad;
  const auto out1 = cond.encoder(0)->forward(ids1);
  const auto out2 = cond.encoder(1)->forward(ids2);
  const double tol = 1e-4;
  EXPECT_LT(relative_error("text_encoder.penultimate_hidden", out1.penultimate,
                           reference(ref, "text_encoder.penultimate_hidden")),
            tol);
  EXPECT_LT(relative_error("text_encoder.last_hidden_state", out1.last_hidden,
                           reference(ref, "text_encoder.last_hidden_state")),
            tol);
  EXPECT_LT(
      relative_error("text_encoder.pooled", out1.pooled, reference(ref, "text_encoder.pooled")),
      tol);
  EXPECT_LT(relative_error("text_encoder_2.penultimate_hidden", out2.penultimate,
                           reference(ref, "text_encoder_2.penultimate_hidden")),
            tol);
  EXPECT_LT(relative_error("text_encoder_2.last_hidden_state", out2.last_hidden,
                           reference(ref, "text_encoder_2.last_hidden_state")),
            tol);
  EXPECT_LT(relative_error("text_encoder_2.pooled_projected", out2.text_embeds,
                           reference(ref, "text_encoder_2.pooled_projected")),
            tol);

  const auto emb = cond.encode(prompts);
  EXPECT_LT(relative_error("sdxl.context", emb.context, reference(ref, "sdxl.context")), tol);
  EXPECT_LT(relative_error("sdxl.pooled", emb.pooled, reference(ref, "sdxl.pooled")), tol);
  const auto zero = cond.encode_negative(std::nullopt, 2);
  EXPECT_TRUE(torch::equal(zero.context, reference(ref, "sdxl.negative_context_zero")));
  EXPECT_TRUE(torch::equal(zero.pooled, reference(ref, "sdxl.negative_pooled_zero")));
  const auto empty = cond.encode_negative(std::vector<std::string>{""}, 2);
  EXPECT_LT(relative_error("sdxl.negative_context_empty_string", empty.context,
                           reference(ref, "sdxl.negative_context_empty_string")),
            tol);
  EXPECT_LT(relative_error("sdxl.negative_pooled_empty_string", empty.pooled,
                           reference(ref, "sdxl.negative_pooled_empty_string")),
            tol);
}

// The single-file checkpoint (F16; CLIP-L in HF names, bigG in OpenCLIP names)
// loads into exactly the folder's weights, and with the UNet/VAE prefixes every
// key of the file is accounted for by the text-encoder reports or lies outside
// the conditioner.
TEST(SdxlTextFixtures, SingleFileLoadsSameWeightsAsFolder) {
  const auto cond = sdxl::SdxlTextConditioner::from_diffusers_folder(kFixtures / "tiny-sdxl");
  const auto file = st::Reader::open(kFixtures / "tiny_sdxl_single_file.safetensors");
  sdxl::BuildOptions no_init;
  no_init.initialize = false;
  sdxl::ClipTextModel clip_l(cond.encoder(0)->config(), no_init);
  sdxl::ClipTextModel bigg(cond.encoder(1)->config(), no_init);
  const auto report_l = sdxl::load_text_encoder(
      *clip_l, file, "conditioner.embedders.0.transformer.", sdxl::TextEncoderNaming::kHuggingFace);
  const auto report_g = sdxl::load_text_encoder(*bigg, file, "conditioner.embedders.1.model.",
                                                sdxl::TextEncoderNaming::kOpenClip);
  expect_same_parameters(*cond.encoder(0), *clip_l);
  expect_same_parameters(*cond.encoder(1), *bigg);
  EXPECT_EQ(report_g.ignored_keys,
            std::vector<std::string>{"conditioner.embedders.1.model.logit_scale"});
  size_t conditioner_keys = 0;
  for (const auto& name : file.names())
    if (name.rfind("conditioner.", 0) == 0)
      ++conditioner_keys;
  EXPECT_EQ(report_l.consumed_keys().size() + report_g.consumed_keys().size(), conditioner_keys);
  EXPECT_EQ(conditioner_keys, 150u);
}
