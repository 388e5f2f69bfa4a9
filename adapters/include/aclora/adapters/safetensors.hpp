#pragma once
/// @file
/// @brief safetensors files: the container our LoRA files use.
///
/// @code
/// namespace st = aclora::safetensors;
/// st::Reader file = st::Reader::open("lora.safetensors");   // validated, mapped
/// std::vector<float> down = file.to_f32("lora_unet_..._to_q.lora_down.weight");
///
/// st::Writer out;
/// out.set_metadata("ss_network_dim", "16");
/// out.add("x.alpha", {}, std::vector<float>{16.0f});
/// out.write("out.safetensors");                             // atomic
/// @endcode

#include "aclora/adapters/safetensors/convert.hpp"
#include "aclora/adapters/safetensors/dtype.hpp"
#include "aclora/adapters/safetensors/error.hpp"
#include "aclora/adapters/safetensors/half.hpp"
#include "aclora/adapters/safetensors/header.hpp"
#include "aclora/adapters/safetensors/mapped_file.hpp"
#include "aclora/adapters/safetensors/reader.hpp"
#include "aclora/adapters/safetensors/shape.hpp"
#include "aclora/adapters/safetensors/tensor_view.hpp"
#include "aclora/adapters/safetensors/writer.hpp"
