/// @file sdxl_keys.hpp
/// @brief Module names of SDXL LoRAs: diffusers paths <-> the LDM-tree names kohya uses.
///
/// kohya keys are "lora_unet_" / "lora_te1_" / "lora_te2_" + a module path whose dots became
/// underscores; for the UNet that path is in the original LDM (SGM) tree
/// (input_blocks / middle_block / output_blocks). diffusers and PEFT use dotted paths of the
/// diffusers tree (down_blocks / mid_block / up_blocks). The rules below are the
/// config-independent ones of sdxl.md (2 resnets per level, upsampler at slot 2).
#pragma once

#include <array>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aclora::lora {

/// The model a LoRA module belongs to.
enum class Component {
  unet,            ///< the UNet (kohya prefix lora_unet_, diffusers prefix unet.)
  text_encoder,    ///< CLIP ViT-L (lora_te1_ or lora_te_, text_encoder.)
  text_encoder_2,  ///< OpenCLIP bigG (lora_te2_, text_encoder_2.)
};

/// "unet", "text_encoder" or "text_encoder_2" (the diffusers / PEFT folder names).
inline std::string_view component_name(Component component) {
  switch (component) {
    case Component::unet:
      return "unet";
    case Component::text_encoder:
      return "text_encoder";
    case Component::text_encoder_2:
      return "text_encoder_2";
  }
  return "?";
}

/// The kohya key prefix of a component, with its trailing underscore.
inline std::string_view kohya_prefix(Component component) {
  switch (component) {
    case Component::unet:
      return "lora_unet_";
    case Component::text_encoder:
      return "lora_te1_";
    case Component::text_encoder_2:
      return "lora_te2_";
  }
  return "?";
}

namespace detail {

inline std::vector<std::string> split(std::string_view text, char separator) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = text.find(separator, start);
    parts.emplace_back(text.substr(start, end == std::string_view::npos ? text.npos : end - start));
    if (end == std::string_view::npos)
      break;
    start = end + 1;
  }
  return parts;
}

inline std::string join(const std::vector<std::string>& parts, std::size_t first, char separator) {
  std::string out;
  for (std::size_t i = first; i < parts.size(); ++i) {
    if (i > first)
      out += separator;
    out += parts[i];
  }
  return out;
}

inline std::optional<int> to_index(const std::string& text) {
  if (text.empty() || text.size() > 4)
    return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9')
      return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return value;
}

// Path segments that contain underscores, longest first within each length.
inline constexpr std::array<std::string_view, 47> kCompoundSegments = {"final_layer_norm",
                                                                       "time_emb_proj",
                                                                       "conv_norm_out",
                                                                       "transformer_blocks",
                                                                       "proj_in",
                                                                       "proj_out",
                                                                       "to_q",
                                                                       "to_k",
                                                                       "to_v",
                                                                       "to_out",
                                                                       "input_blocks",
                                                                       "output_blocks",
                                                                       "middle_block",
                                                                       "in_layers",
                                                                       "out_layers",
                                                                       "emb_layers",
                                                                       "skip_connection",
                                                                       "time_embed",
                                                                       "label_emb",
                                                                       "self_attn",
                                                                       "q_proj",
                                                                       "k_proj",
                                                                       "v_proj",
                                                                       "out_proj",
                                                                       "text_model",
                                                                       "down_blocks",
                                                                       "up_blocks",
                                                                       "mid_block",
                                                                       "conv_in",
                                                                       "conv_out",
                                                                       "conv_shortcut",
                                                                       "time_embedding",
                                                                       "linear_1",
                                                                       "linear_2",
                                                                       "add_embedding",
                                                                       "layer_norm1",
                                                                       "layer_norm2",
                                                                       "token_embedding",
                                                                       "position_embedding",
                                                                       "text_projection",
                                                                       "norm_out",
                                                                       "proj_attn",
                                                                       "group_norm",
                                                                       "in_proj",
                                                                       "c_fc",
                                                                       "c_proj",
                                                                       "attn_1"};

}  // namespace detail

/// Turns an underscored module path (kohya spelling, prefix removed) back into a dotted
/// path, keeping known multi-word segments whole: "input_blocks_4_1_transformer_blocks_0_
/// attn1_to_out_0" -> "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0".
inline std::string dotted_path(std::string_view underscored) {
  const std::vector<std::string> pieces = detail::split(underscored, '_');
  std::vector<std::string> segments;
  for (std::size_t i = 0; i < pieces.size();) {
    std::size_t taken = 1;
    for (std::size_t length = 3; length >= 2 && taken == 1; --length) {
      if (i + length > pieces.size())
        continue;
      std::string candidate = pieces[i];
      for (std::size_t k = 1; k < length; ++k)
        candidate += "_" + pieces[i + k];
      for (std::string_view compound : detail::kCompoundSegments) {
        if (compound == candidate) {
          taken = length;
          break;
        }
      }
    }
    std::string segment = pieces[i];
    for (std::size_t k = 1; k < taken; ++k)
      segment += "_" + pieces[i + k];
    segments.push_back(std::move(segment));
    i += taken;
  }
  return detail::join(segments, 0, '.');
}

namespace detail {

// Resnet-internal names, LDM <-> diffusers.
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 6> kResnetNames = {{
    {"in_layers.0", "norm1"},
    {"in_layers.2", "conv1"},
    {"emb_layers.1", "time_emb_proj"},
    {"out_layers.0", "norm2"},
    {"out_layers.3", "conv2"},
    {"skip_connection", "conv_shortcut"},
}};

inline std::optional<std::string> resnet_to_diffusers(const std::string& rest) {
  for (const auto& [ldm, diffusers] : kResnetNames) {
    if (rest == ldm)
      return std::string(diffusers);
    if (rest.rfind(std::string(ldm) + ".", 0) == 0)
      return std::string(diffusers) + rest.substr(ldm.size());
  }
  return std::nullopt;
}

inline std::optional<std::string> resnet_to_ldm(const std::string& rest) {
  for (const auto& [ldm, diffusers] : kResnetNames) {
    if (rest == diffusers)
      return std::string(ldm);
    if (rest.rfind(std::string(diffusers) + ".", 0) == 0)
      return std::string(ldm) + rest.substr(diffusers.size());
  }
  return std::nullopt;
}

inline std::string with_rest(std::string head, const std::vector<std::string>& parts,
                             std::size_t first) {
  if (first < parts.size())
    head += "." + join(parts, first, '.');
  return head;
}

inline std::optional<std::string> resnet_path(std::string head,
                                              const std::vector<std::string>& parts,
                                              std::size_t first, bool to_diffusers) {
  const std::string rest = join(parts, first, '.');
  const auto mapped = to_diffusers ? resnet_to_diffusers(rest) : resnet_to_ldm(rest);
  if (!mapped)
    return std::nullopt;
  return head + "." + *mapped;
}

}  // namespace detail

/// A UNet module path of the LDM tree in the diffusers tree ("input_blocks.4.1.proj_in" ->
/// "down_blocks.1.attentions.0.proj_in"); nullopt when the path follows neither rule.
inline std::optional<std::string> unet_ldm_to_diffusers(std::string_view ldm) {
  using detail::to_index;
  const std::vector<std::string> p = detail::split(ldm, '.');
  const auto simple = [&](std::string_view head, std::size_t used) -> std::optional<std::string> {
    return detail::with_rest(std::string(head), p, used);
  };
  if (p.size() >= 2 && p[0] == "time_embed") {
    if (p[1] == "0")
      return simple("time_embedding.linear_1", 2);
    if (p[1] == "2")
      return simple("time_embedding.linear_2", 2);
    return std::nullopt;
  }
  if (p.size() >= 3 && p[0] == "label_emb" && p[1] == "0") {
    if (p[2] == "0")
      return simple("add_embedding.linear_1", 3);
    if (p[2] == "2")
      return simple("add_embedding.linear_2", 3);
    return std::nullopt;
  }
  if (p.size() >= 2 && p[0] == "out") {
    if (p[1] == "0")
      return simple("conv_norm_out", 2);
    if (p[1] == "2")
      return simple("conv_out", 2);
    return std::nullopt;
  }
  if (p.size() >= 3 && p[0] == "input_blocks" && p[1] == "0")
    return p[2] == "0" ? std::optional(detail::with_rest("conv_in", p, 3)) : std::nullopt;
  if (p[0] == "middle_block" && p.size() >= 3) {
    const auto n = to_index(p[1]);
    if (n && (*n == 0 || *n == 2))
      return detail::resnet_path("mid_block.resnets." + std::to_string(*n / 2), p, 2, true);
    if (n && *n == 1)
      return detail::with_rest("mid_block.attentions.0", p, 2);
    return std::nullopt;
  }
  if (p.size() < 4)
    return std::nullopt;
  const auto block = to_index(p[1]);
  const auto slot = to_index(p[2]);
  if (!block || !slot)
    return std::nullopt;
  const int n = *block;
  const int k = *slot;
  if (p[0] == "input_blocks") {
    if (n == 0)
      return k == 0 ? std::optional(detail::with_rest("conv_in", p, 3)) : std::nullopt;
    const int level = (n - 1) / 3;
    const int j = (n - 1) % 3;
    const std::string down = "down_blocks." + std::to_string(level);
    if (j == 2) {
      if (k == 0 && p[3] == "op")
        return detail::with_rest(down + ".downsamplers.0.conv", p, 4);
      return std::nullopt;
    }
    if (k == 0)
      return detail::resnet_path(down + ".resnets." + std::to_string(j), p, 3, true);
    if (k == 1)
      return detail::with_rest(down + ".attentions." + std::to_string(j), p, 3);
    return std::nullopt;
  }
  if (p[0] == "output_blocks") {
    const std::string up = "up_blocks." + std::to_string(n / 3);
    if (k == 0)
      return detail::resnet_path(up + ".resnets." + std::to_string(n % 3), p, 3, true);
    if ((k == 1 || k == 2) && p[3] == "conv" && n % 3 == 2)
      return detail::with_rest(up + ".upsamplers.0.conv", p, 4);
    if (k == 1)
      return detail::with_rest(up + ".attentions." + std::to_string(n % 3), p, 3);
    return std::nullopt;
  }
  return std::nullopt;
}

/// The inverse of unet_ldm_to_diffusers ("down_blocks.1.attentions.0.proj_in" ->
/// "input_blocks.4.1.proj_in"); nullopt when the path follows neither rule.
inline std::optional<std::string> unet_diffusers_to_ldm(std::string_view diffusers) {
  using detail::to_index;
  const std::vector<std::string> p = detail::split(diffusers, '.');
  if (p.empty())
    return std::nullopt;
  if (p[0] == "conv_in")
    return detail::with_rest("input_blocks.0.0", p, 1);
  if (p[0] == "conv_norm_out")
    return detail::with_rest("out.0", p, 1);
  if (p[0] == "conv_out")
    return detail::with_rest("out.2", p, 1);
  if (p.size() >= 2 && (p[0] == "time_embedding" || p[0] == "add_embedding")) {
    const std::string head = p[0] == "time_embedding" ? "time_embed." : "label_emb.0.";
    if (p[1] == "linear_1")
      return detail::with_rest(head + "0", p, 2);
    if (p[1] == "linear_2")
      return detail::with_rest(head + "2", p, 2);
    return std::nullopt;
  }
  if (p[0] == "mid_block" && p.size() >= 4) {
    const auto j = to_index(p[2]);
    if (!j)
      return std::nullopt;
    if (p[1] == "resnets" && *j <= 1)
      return detail::resnet_path("middle_block." + std::to_string(2 * *j), p, 3, false);
    if (p[1] == "attentions" && *j == 0)
      return detail::with_rest("middle_block.1", p, 3);
    return std::nullopt;
  }
  if (p.size() < 4)
    return std::nullopt;
  const auto level = to_index(p[1]);
  const auto j = to_index(p[3]);
  if (!level || !j || *j > 2)
    return std::nullopt;
  if (p[0] == "down_blocks") {
    if (p[2] == "downsamplers" && *j == 0 && p.size() >= 5 && p[4] == "conv")
      return detail::with_rest("input_blocks." + std::to_string(3 * *level + 3) + ".0.op", p, 5);
    if (*j > 1)
      return std::nullopt;
    const std::string block = "input_blocks." + std::to_string(3 * *level + *j + 1);
    if (p[2] == "resnets")
      return detail::resnet_path(block + ".0", p, 4, false);
    if (p[2] == "attentions")
      return detail::with_rest(block + ".1", p, 4);
    return std::nullopt;
  }
  if (p[0] == "up_blocks") {
    if (p[2] == "upsamplers" && *j == 0 && p.size() >= 5 && p[4] == "conv")
      return detail::with_rest("output_blocks." + std::to_string(3 * *level + 2) + ".2.conv", p, 5);
    const std::string block = "output_blocks." + std::to_string(3 * *level + *j);
    if (p[2] == "resnets")
      return detail::resnet_path(block + ".0", p, 4, false);
    if (p[2] == "attentions")
      return detail::with_rest(block + ".1", p, 4);
    return std::nullopt;
  }
  return std::nullopt;
}

/// The kohya module name of a diffusers-tree path: "lora_unet_" + LDM path, or
/// "lora_te1_" / "lora_te2_" + path, dots replaced by underscores. nullopt when a UNet path
/// has no LDM equivalent.
inline std::optional<std::string> kohya_name(Component component, std::string_view path) {
  std::string tree(path);
  // transformers 5 dropped CLIPTextModel's text_model level; kohya names keep it.
  if (component != Component::unet && tree.rfind("encoder.", 0) == 0)
    tree = "text_model." + tree;
  if (component == Component::unet) {
    const auto ldm = unet_diffusers_to_ldm(path);
    if (!ldm)
      return std::nullopt;
    tree = *ldm;
  }
  for (char& c : tree)
    if (c == '.')
      c = '_';
  return std::string(kohya_prefix(component)) + tree;
}

/// A kohya module name split into component and diffusers-tree path. Accepts lora_unet_ in
/// the LDM tree or in the diffusers tree, lora_te1_, lora_te2_ and lora_te_ (= text encoder
/// 1). nullopt for any other prefix or an unmappable UNet path.
struct KohyaTarget {
  Component component;  ///< the model
  std::string path;     ///< dotted, diffusers tree
};

/// Parses a kohya module name (see KohyaTarget).
inline std::optional<KohyaTarget> parse_kohya_name(std::string_view name) {
  const auto strip = [&](std::string_view prefix) -> std::optional<std::string_view> {
    if (name.size() > prefix.size() && name.substr(0, prefix.size()) == prefix)
      return name.substr(prefix.size());
    return std::nullopt;
  };
  if (const auto rest = strip("lora_unet_")) {
    const std::string dotted = dotted_path(*rest);
    if (dotted.rfind("down_blocks.", 0) == 0 || dotted.rfind("up_blocks.", 0) == 0 ||
        dotted.rfind("mid_block.", 0) == 0) {
      if (!unet_diffusers_to_ldm(dotted))
        return std::nullopt;
      return KohyaTarget{Component::unet, dotted};
    }
    const auto diffusers = unet_ldm_to_diffusers(dotted);
    if (!diffusers)
      return std::nullopt;
    return KohyaTarget{Component::unet, *diffusers};
  }
  if (const auto rest = strip("lora_te1_"))
    return KohyaTarget{Component::text_encoder, dotted_path(*rest)};
  if (const auto rest = strip("lora_te2_"))
    return KohyaTarget{Component::text_encoder_2, dotted_path(*rest)};
  if (const auto rest = strip("lora_te_"))
    return KohyaTarget{Component::text_encoder, dotted_path(*rest)};
  return std::nullopt;
}

}  // namespace aclora::lora
