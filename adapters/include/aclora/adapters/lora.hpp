/// @file lora.hpp
/// @brief LoRA files (kohya, PEFT, diffusers, LyCORIS) as aclora modules, and writers.
///
/// @code
/// aclora::lora::LoraFile file = aclora::lora::open_lora("my_lora.safetensors");
/// for (const auto& module : file.modules)  // views into the mapped file
///   std::cout << module.name << " rank " << module.rank << " alpha " << module.alpha << "\n";
/// @endcode
#pragma once

#include "aclora/adapters/lora/detect.hpp"
#include "aclora/adapters/lora/diffusers.hpp"
#include "aclora/adapters/lora/kohya.hpp"
#include "aclora/adapters/lora/model.hpp"
#include "aclora/adapters/lora/module_builder.hpp"
#include "aclora/adapters/lora/open.hpp"
#include "aclora/adapters/lora/output.hpp"
#include "aclora/adapters/lora/peft.hpp"
#include "aclora/adapters/lora/peft_config.hpp"
#include "aclora/adapters/lora/sdxl_keys.hpp"
#include "aclora/adapters/lora/writer.hpp"
